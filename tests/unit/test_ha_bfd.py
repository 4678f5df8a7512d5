"""Failover between a site's proxies (and between the gateways) when hellos stop, with the
datapath's liveness by BFD (agent/election.py): a partner whose agent restarts while its
datapath forwards (BFD up) keeps its role for ``ha_agent_grace``; a partner whose BFD
session is down (or that has none) is dead after the dead interval, as before.

The proxies run on fake switches (tests.fakesites), the time driven by the test; the BFD
state is handed to the cores as the shell does (``bfd_changed``), and ``ha_partners``
says which partners get a BFD tunnel port."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu.agent.election import Election, Outcome
from dove_ryu.config import ProxyConfig
from dove_ryu.protocol.messages import ProxyRole
from tests.fakesites import Sites, proxy_ip
from tests.unit.test_proxy import WAN11, learned_at
from tests.unit.test_takeover_roles import crossed, restart_proxy

pytestmark = pytest.mark.unit

HELLO = 0.2  # proxy_hello_interval's default: the dead interval is 0.7 s
PX1, PX2 = proxy_ip(1), proxy_ip(2)


def bfd(sites: Sites, name: str, up: bool, partner: IPv4Address = PX1) -> None:
    node = sites.node(name)
    sites.apply(node, node.core.bfd_changed(sites.now, {partner: up}))


def sites_with_bfd(**settings: str) -> Sites:
    sites = crossed(Sites(proxy_settings=settings))
    bfd(sites, "s1px2", True)
    return sites


def test_a_silent_active_proxy_whose_datapath_answers_bfd_keeps_its_role_while_away() -> None:
    sites = sites_with_bfd()
    sites.stop("s1px1")  # its agent only: the datapath forwards, BFD stays up
    sites.advance(3.0, step=0.05)  # over 4 dead intervals
    standby = sites.status("s1px2")
    assert not standby["active"]
    assert standby["partners"][str(PX1)] == {
        "active": True, "priority": 200, "bfd": True, "held": True,
    }  # fmt: skip
    assert sites.counters("s1px2")["ha_failover_held"] == 1
    assert sites.counters("s1px2").get("proxy_became_active", 0) == 0
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b) and sites.ping(b, a)  # still through s1px1's datapath

    restart_proxy(sites, "s1px1")
    sites.advance(1.0, step=0.05)
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert sites.status("s1px2")["partners"][str(PX1)]["held"] is False
    assert sites.counters("s1px2").get("proxy_became_active", 0) == 0
    assert sites.ping(a, b) and sites.ping(b, a)


def test_hosts_and_remote_proxies_keep_a_silent_active_proxy_while_its_partner_holds_it() -> None:
    """Its partner holds its role while BFD is up (up to ha_agent_grace): its site's hosts
    and the other sites' proxies keep it too, though its announcements (every second here)
    stopped for longer than their 3.5 intervals.  Dropping it would forget the endpoints
    learned behind it, and traffic would stall until it is back and they are learned
    again (the Mininet restart test lost pings whenever an agent start outlasted that)."""
    sites = sites_with_bfd()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    host = a.node.name
    assert learned_at(sites, host, 5001, b.mac) == str(PX1)
    assert learned_at(sites, "s2px1", 5001, a.mac) == str(WAN11)
    left = {n: sites.counters(n).get("member_left", 0) for n in (host, "s2px1")}
    sites.stop("s1px1")  # its agent only: the datapath forwards, BFD stays up
    sites.advance(5.0, step=0.05)  # 5 announce intervals, well within the grace (15 s)
    assert not sites.status("s1px2")["active"]
    assert sites.node(host).core.p.members.serves(5001, PX1)
    assert sites.node("s2px1").core.p.members.serves(5001, WAN11)
    assert learned_at(sites, host, 5001, b.mac) == str(PX1)
    assert learned_at(sites, "s2px1", 5001, a.mac) == str(WAN11)
    assert {n: sites.counters(n).get("member_left", 0) for n in (host, "s2px1")} == left

    restart_proxy(sites, "s1px1")
    sites.advance(1.0, step=0.05)
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert learned_at(sites, host, 5001, b.mac) == str(PX1)
    assert sites.ping(a, b) and sites.ping(b, a)


def test_a_proxy_held_past_the_grace_is_replaced_by_its_partner_everywhere() -> None:
    """The hold ends with the partner's: the standby takes over and its claim moves
    what was learned behind the silent proxy (no expiry needed for that)."""
    sites = sites_with_bfd(ha_agent_grace="6")
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    sites.stop("s1px1")
    sites.advance_until(lambda: sites.status("s1px2")["active"], 7.0, step=0.05)
    sites.advance(0.5, step=0.05)
    assert learned_at(sites, a.node.name, 5001, b.mac) == str(PX2)
    assert not sites.node("s2px1").core.p.members.serves(5001, WAN11)
    assert sites.ping(a, b) and sites.ping(b, a)


@pytest.mark.parametrize("up", [None, False], ids=["no-bfd", "bfd-down"])
def test_without_bfd_or_with_bfd_down_the_standby_takes_over_after_the_dead_interval(
    up: bool | None,
) -> None:
    sites = crossed(Sites())
    if up is not None:
        bfd(sites, "s1px2", up)
    sites.stop("s1px1")
    stopped = sites.now
    sites.advance_until(lambda: sites.status("s1px2")["active"], 1.0, step=0.05)
    assert sites.now - stopped <= 4 * HELLO
    assert sites.counters("s1px2").get("ha_failover_held", 0) == 0


def test_bfd_going_down_while_held_fails_over_at_once() -> None:
    sites = sites_with_bfd()
    sites.stop("s1px1")
    sites.advance(2.0, step=0.05)
    assert not sites.status("s1px2")["active"]
    bfd(sites, "s1px2", False)  # now the datapath is gone too
    assert sites.status("s1px2")["active"]
    assert sites.counters("s1px2")["proxy_became_active"] == 1


def test_an_agent_away_longer_than_the_grace_is_gone_for_good() -> None:
    sites = sites_with_bfd(ha_agent_grace="3")
    sites.stop("s1px1")
    stopped = sites.now
    sites.advance(2.5, step=0.05)
    assert not sites.status("s1px2")["active"]
    sites.advance_until(lambda: sites.status("s1px2")["active"], 1.0, step=0.05)
    assert sites.now - stopped <= 3.0 + HELLO
    assert str(PX1) not in sites.status("s1px2")["partners"]


def test_the_partners_that_get_a_bfd_port() -> None:
    sites = crossed(Sites())
    assert sites.node("s1px2").core.ha_partners(sites.now) == frozenset({PX1})
    assert sites.node("s1px1").core.ha_partners(sites.now) == frozenset({PX2})
    # A restarted agent leaves the ports as they are while it listens (it does not know
    # its partners yet; removing the port would bring BFD down and fail it over).
    px = restart_proxy(sites, "s1px1")
    assert px.core.ha_partners(sites.now) is None
    sites.advance(1.0)
    assert px.core.ha_partners(sites.now) == frozenset({PX2})
    # A partner gone (its BFD down) loses its port.
    sites.stop("s1px2")
    sites.advance(1.0)
    assert px.core.ha_partners(sites.now) == frozenset()


def test_the_election_alone_declared_partners_and_bfd_per_partner() -> None:
    me, other, third = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")
    e = Election("px", me, ProxyConfig(proxy_hello_interval=HELLO, ha_agent_grace=10), 0.0)
    assert e.ha_partners(0.0, [other]) is None  # listening
    e.heard(0.05, other, ProxyRole("s1", False, 50))
    e.claim_early(0.05)  # a standby it would have beaten, but its switch is not read yet:
    assert e.listening(0.05) and e.decide(0.06) is Outcome.UNCHANGED  # no empty claim
    e.ready = True  # the switch taken over: now it claims
    assert e.decide(0.07) is Outcome.BECAME_ACTIVE
    e.heard(0.1, other, ProxyRole("s1", True, 200))
    e.heard(0.1, third, ProxyRole("s1", False, 50))
    e.decide(2.0)  # both silent, no BFD: gone
    assert not e.partners
    assert e.ha_partners(2.0, [me, other]) == frozenset({other})  # declared, never itself
    e.bfd_changed({other: True, third: False})
    e.heard(2.1, other, ProxyRole("s1", True, 200))
    e.heard(2.1, third, ProxyRole("s1", False, 50))
    e.decide(5.0)
    assert set(e.partners) == {other}  # only the partner whose datapath answers
    e.decide(12.2)
    assert not e.partners  # the grace is from its last hello


def test_bfd_ports_are_added_for_new_partners_and_removed_for_those_gone() -> None:
    from dove_ryu.adapters import bfd as bfd_ports
    from dove_ryu.config import from_mapping

    cfg = from_mapping(
        {"underlay_ip": "10.0.0.1", "auth_key": "ab" * 16, "role": "proxy", "site": "s1",
         "wan_ip": "172.31.0.11"}
    )  # fmt: skip
    other, gone = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")
    args = bfd_ports.change_args(cfg, frozenset({other}), {gone: "dbfd0a000003"})
    text = " ".join(args)
    assert "--may-exist add-port br-dove dbfd0a000002" in text
    assert "options:remote_ip=10.0.0.2 options:key=16777215" in text
    assert "bfd:enable=true" in text and "local_ip" not in text  # a proxy: two legs
    assert "--if-exists del-port br-dove dbfd0a000003" in text
    assert bfd_ports.change_args(cfg, frozenset({other}), {other: "dbfd0a000002"}) == []
