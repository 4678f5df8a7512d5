"""Two proxies (or gateways) of a site started at nearly the same moment on a loaded
machine (agent/election.py): the higher priority one becomes active whichever agent
starts first, with one transition and none after, and a start-up stall before the BFD
sessions are up fails nothing over.

Without `Listening` hellos a listening proxy said nothing, and the listening times of
priorities 200 and 100 differ by 0.27 s: the lower one, its partner's agent a little
late, heard nobody and claimed, and nothing pre-empts an active proxy.  The proxies run
on fake switches (tests.fakesites), the time driven by the test."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu.agent.election import BFD_SETUP, Election, Outcome
from dove_ryu.config import ProxyConfig
from dove_ryu.protocol import messages as msgs
from dove_ryu.protocol.header import FLAG_EXTENSIONS, DoveHeader, MalformedMessage, Tlv
from dove_ryu.protocol.messages import TlvType
from tests.fakesites import PROXY_PRIORITY, Sites, proxy_ip
from tests.unit.test_gateway import GW1, GW2, Gateway
from tests.unit.test_protocol import _signed

pytestmark = pytest.mark.unit

PX1, PX2 = proxy_ip(1), proxy_ip(2)
DELAYS = [0.0, 0.3, 0.6, 1.0, 1.5, 2.0]


def transitions(sites: Sites, name: str) -> int:
    counters = sites.counters(name)
    return counters.get("proxy_became_active", 0) + counters.get("proxy_stepped_down", 0)


def start_sites(first: int, delay: float, switch_late: float = 0.0) -> Sites:
    """Site 2 and the hosts start at once; site 1's proxy ``first`` too, its other one
    ``delay`` later.  ``switch_late``: both of site 1's agents start at once, px1's
    switch is taken over that much later (a slow switch read)."""
    sites = Sites(start=False)
    for node in list(sites.nodes.values()):
        sites.connect(node)
    for k in (1, 2):
        sites.start_proxy(2, k)
    if switch_late:
        px1 = sites._node("s1px1", 1, PX1, 1)  # its agent, no switch yet
        sites.nodes["s1px1"] = px1
        sites.start_proxy(1, 2)
        sites.advance(switch_late, step=0.05)
        sites.connect(px1)
        return sites
    sites.start_proxy(1, first)
    if delay:
        sites.advance(delay, step=0.05)
    sites.start_proxy(1, 3 - first)
    return sites


@pytest.mark.parametrize("delay", DELAYS)
@pytest.mark.parametrize("first", [1, 2], ids=["px1-first", "px2-first"])
def test_the_higher_priority_proxy_becomes_active_whichever_starts_first(
    first: int, delay: float
) -> None:
    sites = start_sites(first, delay)
    sites.advance(8.0, step=0.05)  # well past the longest listening time
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert sites.status("s1px2")["state"] == "standby"
    assert transitions(sites, "s1px1") == 1  # became active, once
    assert transitions(sites, "s1px2") == 0  # never active
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b) and sites.ping(b, a)


@pytest.mark.parametrize("late", [0.5, 1.0, 2.0])
def test_a_better_partner_still_taking_over_its_switch_is_waited_for(late: float) -> None:
    """Both agents start together, px1's switch is read ``late`` s later: px2 hears px1
    listen and waits for it instead of claiming when its own listening is over."""
    sites = start_sites(2, 0.0, switch_late=late)
    sites.advance(8.0, step=0.05)
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert transitions(sites, "s1px1") == 1 and transitions(sites, "s1px2") == 0


def test_the_better_one_claims_as_soon_as_it_hears_the_other_listen() -> None:
    """No need to wait out its listening time: a partner that listens would lose."""
    sites = start_sites(1, 0.0)
    sites.advance_until(lambda: sites.status("s1px1")["active"], 1.0, step=0.05)
    assert sites.status("s1px2")["state"] == "standby"  # it heard px1 active


def test_a_lone_proxy_claims_once_its_listening_is_over() -> None:
    sites = Sites(start=False)
    sites.start_proxy(1, 2)
    sites.advance_until(lambda: sites.status("s1px2")["active"], 4.0, step=0.05)


def test_hosts_ignore_listening_hellos() -> None:
    """A static proxy sends them to all its site's peers: hosts neither count the
    listener as a member nor drop anything."""
    sites = start_sites(2, 1.0)
    sent = [s for s in sites.sent if isinstance(s.message, msgs.Listening)]
    assert sent, "px2 sent Listening while it waited"
    host = sites.node("s1hv1")
    assert not host.core.p.members.serves(5001, PX2)
    dropped = [k for k in sites.counters("s1hv1") if k.startswith(("control_", "drop_"))]
    assert dropped == ["control_received"]


def test_a_stall_at_start_before_bfd_is_set_up_fails_nothing_over() -> None:
    """Both started; px1 active; px1's agent stalls for 1.5 s (a loaded machine) before
    the BFD ports are there (the shell reports BFD, none yet): px2 holds px1, px1 speaks
    again and nothing moved.  Once px2's port to px1 is there and down, failover is
    as fast as before."""
    sites = start_sites(1, 0.0)
    px2 = sites.node("s1px2")
    sites.apply(px2, px2.core.bfd_changed(sites.now, {}))  # the watcher: no ports yet
    sites.advance_until(lambda: sites.status("s1px1")["active"], 2.0, step=0.05)
    sites.stop("s1px1")
    sites.advance(1.5, step=0.05)
    assert not sites.status("s1px2")["active"]
    assert sites.status("s1px2")["partners"][str(PX1)]["held"]
    sites.down.discard("s1px1")
    sites.advance(1.0, step=0.05)
    assert transitions(sites, "s1px1") == 1 and transitions(sites, "s1px2") == 0
    assert not sites.status("s1px2")["partners"][str(PX1)]["held"]

    sites.advance(BFD_SETUP)  # px2 has long stopped listening: its port is there, down
    sites.apply(px2, px2.core.bfd_changed(sites.now, {PX1: False}))
    sites.stop("s1px1")
    stopped = sites.now
    sites.advance_until(lambda: sites.status("s1px2")["active"], 1.0, step=0.05)
    assert sites.now - stopped <= 0.8


def test_no_bfd_ports_long_after_the_start_is_no_bfd() -> None:
    """The start-up hold ends BFD_SETUP after listening: a partner that never got a
    port is then dead after the dead interval (as one with no BFD)."""
    sites = start_sites(1, 0.0)
    px2 = sites.node("s1px2")
    sites.apply(px2, px2.core.bfd_changed(sites.now, {}))
    sites.advance(BFD_SETUP + 5.0)
    sites.stop("s1px1")
    stopped = sites.now
    sites.advance_until(lambda: sites.status("s1px2")["active"], 1.0, step=0.05)
    assert sites.now - stopped <= 0.8


# ------------------------------------------------------- the election alone, both roles


class Pair:
    """Two elections exchanging hellos (Listening while they listen), each one's agent
    starting at its own time; what each decides, in order."""

    def __init__(self, roles: dict[IPv4Address, tuple[int, float]], gateway: bool) -> None:
        self.gateway = gateway
        self.starts = {h: at for h, (_, at) in roles.items()}
        self.priority = {h: p for h, (p, _) in roles.items()}
        self.e: dict[IPv4Address, Election] = {}
        self.log: list[tuple[IPv4Address, Outcome]] = []

    def role(self, h: IPv4Address) -> msgs.ProxyRole | msgs.GatewayRole:
        active = self.e[h].active
        if self.gateway:
            return msgs.GatewayRole(active, self.priority[h])
        return msgs.ProxyRole("s1", active, self.priority[h])

    def run(self, until: float, step: float = 0.05) -> None:
        now = 0.0
        while now < until:
            now = round(now + step, 6)
            for h, at in self.starts.items():
                if h not in self.e and now >= at:
                    cfg = ProxyConfig(proxy_priority=self.priority[h])
                    self.e[h] = Election(str(h), h, cfg, now)
                    self.e[h].switch_read(False)  # a fresh start
            for h, e in self.e.items():
                outcome = e.decide(now)
                if outcome is not Outcome.UNCHANGED:
                    self.log.append((h, outcome))
                if e.hello_due(now):
                    for other, peer in self.e.items():
                        if other == h:
                            continue
                        if e.listening(now):
                            peer.heard_listening(now, h, self.role(h))
                        else:
                            peer.heard(now, h, self.role(h))
                        peer.claim_early(now)


@pytest.mark.parametrize("gateway", [False, True], ids=["proxies", "gateways"])
@pytest.mark.parametrize("delay", [-2.0, -1.0, -0.3, 0.0, 0.3, 1.0, 1.5, 2.0])
def test_the_election_alone_the_better_one_wins_whatever_the_start_order(
    gateway: bool, delay: float
) -> None:
    """``delay``: how much later the better one's agent starts (negative: earlier)."""
    hi, lo = GW1, GW2
    pair = Pair({hi: (200, max(delay, 0.0)), lo: (100, max(-delay, 0.0))}, gateway)
    pair.run(10.0)
    assert pair.log == [(hi, Outcome.BECAME_ACTIVE)]


@pytest.mark.parametrize("delay", [0.0, 1.0, 2.0])
def test_equal_priorities_the_higher_address_wins(delay: float) -> None:
    pair = Pair({GW1: (100, delay), GW2: (100, 0.0)}, gateway=False)
    pair.run(10.0)
    assert pair.log == [(GW2, Outcome.BECAME_ACTIVE)]


def test_the_gateways_exchange_listening_hellos() -> None:
    """A gateway that listens sends Listening to the declared gateways and its peers;
    one that hears a worse gateway listen claims at once, one that hears a better one
    waits for it."""
    better = Gateway(GW1, priority=200)
    better.later(0.2)
    said = [(dst, m) for dst, m in better.sent if isinstance(m, msgs.Listening)]
    assert (str(GW2), msgs.Listening(msgs.GatewayRole(False, 200))) in said
    better.hear(msgs.Listening(msgs.GatewayRole(False, 100)), GW2)
    assert better.core.active

    worse = Gateway(GW2, priority=100)
    worse.hear(msgs.Listening(msgs.GatewayRole(False, 200)), GW1)
    for _ in range(20):  # GW1 keeps listening (its switch is slow): we wait
        worse.later(0.25)
        worse.hear(msgs.Listening(msgs.GatewayRole(False, 200)), GW1)
    assert not worse.core.active
    worse.hear(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 200)), GW1)
    worse.later(0.5)
    assert not worse.core.active and worse.core.status(worse.now)["state"] == "standby"


def test_priorities_used_here_are_the_emulations() -> None:
    assert PROXY_PRIORITY == {1: 200, 2: 100}


# ------------------------------------------------------------------------ the message


KEY = b"k" * 32


@pytest.mark.parametrize(
    "role", [msgs.ProxyRole("s1", False, 100), msgs.GatewayRole(False, 7)], ids=["proxy", "gw"]
)
def test_listening_round_trips(role: msgs.ProxyRole | msgs.GatewayRole) -> None:
    data = msgs.encode(msgs.Listening(role), sender=GW1, counter=1, key=KEY, receiver=GW2)
    assert msgs.decode(data, key=KEY).message == msgs.Listening(role)


def test_a_listening_agent_is_never_active_nor_without_a_role() -> None:
    with pytest.raises(ValueError):
        msgs.Listening(msgs.GatewayRole(True, 7))
    header = DoveHeader(flags=FLAG_EXTENSIONS, msg_type=msgs.MsgType.LISTENING)
    common = [Tlv(TlvType.SENDER, GW1.packed), Tlv(TlvType.COUNTER, bytes(8))]
    for body in ([Tlv(TlvType.GATEWAY, bytes([1, 7]))], []):  # "active"; no role
        with pytest.raises(MalformedMessage):
            msgs.decode(_signed(header, [*common, *body], KEY), key=KEY)
