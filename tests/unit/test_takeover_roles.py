"""A restarted proxy's and a restarted gateway's agent take over their predecessor's
flows (docs/control-plane.md, section 1), on fake switches: nothing deleted until the
state settles, the datapath whole before any peer spoke, the active one keeps its role,
the gateway's connections and its next hop's MAC carry on."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

import pytest

from dove_ryu.agent import make_core
from dove_ryu.agent.gateway import GatewayCore
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import CtFlushZone, OfMsg
from dove_ryu.protocol.messages import Announce
from tests.fakesites import TUN, Node, Sites, echo
from tests.fakeswitch import Flow
from tests.unit.test_gateway import (
    EXT_MAC,
    EXT_PORT,
    GW1,
    H1,
    NEXT_HOP_MAC,
    ROUTERS,
    TUNNEL,
    VM2,
    Gateway,
    back_in,
    ip_of,
    out_of,
    started,
)
from tests.unit.test_proxy import PX1, PX2, WAN11, learned_at, tunnelled

pytestmark = pytest.mark.unit


def generations(flows: list[Flow]) -> Counter[int]:
    return Counter(cookies.generation(f.cookie) for f in flows)


# ------------------------------------------------------------------------- proxy


def restart_proxy(sites: Sites, name: str) -> Node:
    """The proxy's agent starts again (a new core, the same switch): it takes over what
    the switch holds, as the shell does once it has read it."""
    node = sites.node(name)
    node.core = make_core(node.core.p.cfg, sites.now)
    sites.down.discard(name)
    sites.apply(node, node.core.switch_connected(sites.now, TUN, node.switch.found()))
    return node


def crossed(sites: Sites) -> Sites:
    sites.advance(3.0)  # both proxies of each site started together: px1 active
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b) and sites.ping(b, a)
    assert sites.status("s1px1")["active"]
    return sites


def test_a_restarted_proxy_adopts_both_sides_and_forwards_before_anyone_spoke() -> None:
    sites = crossed(Sites())
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    px = sites.node("s1px1")
    before = len(px.switch.flows())
    px.switch.deleted.clear()

    px = restart_proxy(sites, "s1px1")

    assert px.core.p.takeover.generation == 1
    assert px.switch.deleted == [] and len(px.switch.flows()) == before
    assert set(generations(px.switch.flows())) == {1}
    members = set(px.core.p.members.hosts(5001))
    assert {IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2")} <= members  # site side
    assert any(str(m).startswith("172.31.0.2") for m in members)  # site 2's proxy
    assert learned_at(sites, "s1px1", 5001, b.mac) is not None
    assert learned_at(sites, "s1px1", 5001, a.mac) is not None
    # Both ways through its datapath, with no packet-in at the restarted proxy.
    punted = px.core.counters.get("packet_in", 0)
    h1 = sites.node("s1hv1")
    assert tunnelled(h1.switch.process(a.ofport, echo(a, b.mac, b.ip, 8))) == [(5001, str(PX1))]
    replies = b.echo_replies()
    sites.send(a, echo(a, b.mac, b.ip, 8))
    sites.send(b, echo(b, a.mac, a.ip, 8))
    assert a.echo_replies() >= 1 and b.echo_replies() > replies
    assert px.core.counters.get("packet_in", 0) == punted


def test_a_restarted_active_proxy_keeps_its_role_and_says_nothing_until_it_has() -> None:
    """px1 (active) is away for less than the dead interval (3.5 hellos of 0.2 s) less
    the hello it needs to hear, and comes back: it listens silently, hears px2 say
    standby, claims at once; px2 never takes over, no host or remote proxy hears px1
    say "standby"."""
    sites = crossed(Sites())
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    sites.stop("s1px1")
    sites.advance(0.2, step=0.05)
    sites.sent.clear()

    px = restart_proxy(sites, "s1px1")
    assert sites.status("s1px1")["state"] == "listening"
    sites.advance(3.0, step=0.05)

    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert "proxy_became_active" not in sites.counters("s1px2")
    said = [s for s in sites.sent if s.src in (PX1, WAN11) and isinstance(s.message, Announce)]
    assert said and all(s.message.proxy and s.message.proxy.active for s in said)
    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX1)  # no failover at the hosts
    remote = sites.status("s2px1")["remote_proxies"]
    assert remote[str(WAN11)]["active"]
    # Settled: the new generation alone, and the stream goes on.
    assert not px.core.p.takeover.settling
    assert set(generations(px.switch.flows())) == {1}
    assert sites.ping(a, b) and sites.ping(b, a)
    assert sites.status("s1px1")["takeover"]["generation"] == 1


def test_a_restarted_standby_proxy_stays_standby() -> None:
    sites = crossed(Sites())
    sites.stop("s1px2")
    sites.advance(0.3)
    restart_proxy(sites, "s1px2")
    sites.advance(3.0, step=0.05)
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert sites.status("s1px2")["state"] == "standby"
    assert "proxy_stepped_down" not in sites.counters("s1px1")
    assert learned_at(sites, "s1hv1", 5001, sites.vm("t1s2vm1").mac) == str(PX1)
    assert str(PX2) in sites.status("s1px1")["partners"]


# ----------------------------------------------------------------------- gateway


def restart_gateway(g: Gateway) -> GatewayCore:
    """The gateway's agent starts again over the same switch: OVSDB's marks and
    external port first, then the switch's flows (as the shell reads them)."""
    found = g.switch.found()
    g.core = GatewayCore(g.cfg, g.now)
    g.do(g.core.routers_changed(g.now, ROUTERS, [GW1]))
    g.do(g.core.external_port(g.now, EXT_PORT, EXT_MAC))
    g.sent.clear()
    out = g.core.switch_connected(g.now, TUNNEL, found)
    assert not [m for m in out.ofmsgs if isinstance(m, CtFlushZone)]
    g.do(out)
    return g.core


def punted(g: Gateway) -> int:
    return g.core.counters.get("packet_in", 0)


def test_a_restarted_gateway_keeps_its_connections_members_and_next_hop() -> None:
    g = started()
    (first,) = out_of(g, 1)  # a connection through source NAT, and its reply learned
    back_in(g, "203.0.113.11")
    g.learns(5001, H1)
    assert len(g.switch.conntrack) == 1
    g.switch.deleted.clear()

    core = restart_gateway(g)

    assert core.p.takeover.generation == 1
    assert g.switch.deleted == []  # nothing flushed: not a flow, not a connection
    assert len(g.switch.conntrack) == 1
    assert H1 in core.p.members.hosts(5001)  # from its classify flows
    assert core.p.external.macs[core.p.external.nexthop] == NEXT_HOP_MAC
    assert core.counters["takeover_external_macs_adopted"] == 1
    # Out and back in through the datapath before any peer or ARP reply was heard.
    before = punted(g)
    (sent,) = out_of(g, 1)
    assert sent.port == EXT_PORT and sent.pkt["eth_dst"] == NEXT_HOP_MAC
    assert ip_of(sent) == ip_of(first)
    (reply,) = back_in(g, "203.0.113.11")
    assert reply.port == TUNNEL and reply.tun_dst == str(H1) and ip_of(reply)[1] == VM2
    assert punted(g) == before


def test_a_restarted_active_gateway_settles_on_the_new_generation_alone() -> None:
    g = started()
    out_of(g, 1)
    restart_gateway(g)
    g.hear(Announce(frozenset({5001})), H1)
    g.hear(Announce(frozenset({6001})), IPv4Address("10.99.0.2"))
    g.later(1.5)
    assert g.core.active  # no partner: it claims once its listening is over
    assert not g.core.p.takeover.settling
    assert set(generations(g.switch.flows())) == {1}
    assert len(g.switch.conntrack) == 1
    assert g.core.status(g.now)["takeover"]["generation"] == 1


def test_an_external_port_change_replaces_only_what_named_the_old_port() -> None:
    g = started()
    out_of(g, 1)
    g.switch.deleted.clear()
    new_port = 7
    out = g.core.external_port(g.now, new_port, EXT_MAC)
    assert not [m for m in out.ofmsgs if _is_delete(m)]  # no flush
    g.do(out)
    g.later(0.1)  # the next tick sweeps the old generation's leftovers
    assert g.switch.deleted
    for gone in g.switch.deleted:
        assert f"{EXT_PORT}" in repr(gone.match) + repr(gone.actions)
    assert set(generations(g.switch.flows())) == {1}
    assert len(g.switch.conntrack) == 1
    (sent,) = out_of(g, 1)
    assert sent.port == new_port and sent.pkt["eth_dst"] == NEXT_HOP_MAC


def _is_delete(msg: OfMsg) -> bool:
    return bool(getattr(msg, "is_delete", False))


def test_the_member_cookie_is_what_the_take_over_reads() -> None:
    g = started()
    members = [
        f
        for f in g.switch.flows()
        if (d := cookies.decode(f.cookie)) and d.purpose is Purpose.MEMBER
    ]
    assert {f.match.get("tun_ipv4_src") for f in members} >= {str(H1)}


def test_dovectl_status_shows_the_take_over(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dove_ryu.ctl import dovectl

    sites = crossed(Sites())
    sites.stop("s1px1")
    restart_proxy(sites, "s1px1")
    monkeypatch.setattr(dovectl, "query", lambda path, request: sites.status("s1px1"))
    assert dovectl.main(["--admin-socket", "x", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(listening)" in lines[0]
    takeover = [line for line in lines if line.startswith("take-over: ")]
    assert takeover[0].startswith("take-over: generation 1, settling (stale generations 0;")
