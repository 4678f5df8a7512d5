"""Distributed routing in directory mode (docs/routing.md, "The host"), on fake switches.

A host monitors the Host rows of the instances it serves and of the other instances
of their routers (it routes into those), and the Endpoint rows of those the directory
resolves (`dove_ryu.adapters.directory.conditions`).  Each host here is handed exactly
the rows its conditions select, as the directory's monitor would send them; the
layout: host 1 serves only a (tenant 1, subnet 0), host 2 only b (tenant 1, subnet 1)
and x (tenant 2, subnet 0, a's address), host 3 nothing."""

from __future__ import annotations

from typing import Any

import pytest

from dove_ryu.adapters.directory import conditions
from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow
from dove_ryu.model import router_mac
from dove_ryu.openflow.cookies import Purpose
from tests.unit.test_core import TUN, Net, ip, purpose_is, vm
from tests.unit.test_routing import (
    MAC_A,
    MAC_B,
    MAC_X,
    ROUTERS,
    T1_NET0,
    T1_NET1,
    T2_NET0,
    T2_NET1,
    ipv4,
    ttl_of,
)

pytestmark = pytest.mark.unit


def directory_routed_net() -> Net:
    net = Net(
        {
            1: [vm("a", 1, T1_NET0, MAC_A, "10.0.0.1")],
            2: [vm("b", 1, T1_NET1, MAC_B, "10.0.1.2"), vm("x", 2, T2_NET0, MAC_X, "10.0.0.1")],
            3: [],
        },
        discovery="directory",
        directory="tcp:10.99.0.250:6641",
        peers="",
    )
    for host in net.hosts.values():
        net.apply(host, host.core.routers_changed(net.now, ROUTERS, []))
    net.deliver()
    return net


def _selects(clause: Any, row: Any) -> bool:
    """One clause of a monitor condition, on a parsed row (the shapes `conditions` makes)."""
    if clause is True:
        return True
    column, op, value = clause
    if op == "includes":
        return set(value[1]) <= set(row.instances)
    assert op == "=="
    return bool(getattr(row, column) == value)


def monitored(net: Net, n: int, resolution: dict[int, str]) -> DirectoryView:
    """What host ``n``'s directory client is sent: every host's row and every VM's
    Endpoint row, filtered by the conditions it would set (as the client computes them)."""
    core = net.hosts[n].core
    served, routed = core.served(), core.routed() - core.served()
    resolved = frozenset(i for i, m in resolution.items() if m != "learn") & (served | routed)
    where = conditions(f"h{n}", served, resolved=resolved, routed=routed)
    hosts = [HostRow(f"h{k}", ip(k), h.core.served()) for k, h in net.hosts.items()]
    endpoints: list[EndpointRow] = [e for h in net.hosts.values() for e in h.core.local_endpoints()]
    name_of: dict[str, Any] = {r.name: r for r in hosts}
    return DirectoryView(
        [r for r in hosts if any(_selects(c, r) for c in where["Host"])],
        [
            e
            for e in endpoints
            if any(_selects(c, e) for c in where["Endpoint"]) and e.host in name_of
        ],
        {i: m for i, m in resolution.items() if any(c[2] == i for c in where["Instance"])},
    )


def show(net: Net, resolution: dict[int, str]) -> None:
    for n, h in net.hosts.items():
        net.apply(h, h.core.directory_rows(net.now, monitored(net, n, resolution)))
    net.deliver()


def test_a_host_monitors_the_hosts_of_its_routers_other_subnets_without_registering_them() -> None:
    got = conditions(
        "hv1",
        frozenset({5001}),
        resolved=frozenset({5101, 5009}),
        routed=frozenset({5101}),
    )
    assert got["Host"] == [
        ["name", "==", "hv1"],
        ["instances", "includes", ["set", [5001]]],
        ["instances", "includes", ["set", [5101]]],
    ]
    assert got["Instance"] == [["id", "==", 5001], ["id", "==", 5101]]
    assert got["Endpoint"] == [["host", "==", "hv1"], ["instance", "==", 5101]]

    net = directory_routed_net()
    h1, h3 = net.hosts[1].core, net.hosts[3].core
    assert h1.served() == frozenset({T1_NET0})  # what its Host row says it serves
    assert h1.routed() == frozenset({T1_NET0, T1_NET1})
    assert h3.routed() == frozenset()  # no VM of a routed subnet: nothing routed into


def test_the_members_of_the_other_subnet_are_known_and_accepted_from_the_tunnel() -> None:
    net = directory_routed_net()
    show(net, {})
    h1 = net.hosts[1]
    assert h1.core.p.members.hosts(T1_NET1) == [ip(2)]
    accepted = {
        (f.match["tunnel_id"], f.match["tun_ipv4_src"])
        for f in h1.switch.flows(0)
        if purpose_is(Purpose.MEMBER)(f)
    }
    assert (T1_NET0, str(ip(2))) in accepted  # b's host sends routed packets into a's subnet


def _routed_ping(net: Net) -> list[Any]:
    return net.send(1, 1, ipv4("10.0.0.1", "10.0.1.2", MAC_A, router_mac(T1_NET0)))


def test_push_gives_the_first_routed_packet_its_neighbor_flow_and_no_learn() -> None:
    net = directory_routed_net()
    show(net, {T1_NET0: "push", T1_NET1: "push"})
    h1 = net.hosts[1]
    assert h1.core.p.learned.get(T1_NET1, MAC_B) is not None  # pushed before any packet
    assert h1.core.p.learned.get(T2_NET1, MAC_X) is None  # tenant 2 is not routed here

    seen = _routed_ping(net) + net.deliver()

    at_b = [s for s in seen if s.host == 2 and s.port == 1]
    assert len(at_b) == 1 and at_b[0].delivery.pkt["eth_dst"] == MAC_B and ttl_of(at_b[0]) == 63
    tunnel = [s for s in seen if s.host == 1 and s.port == TUN]
    assert [(s.delivery.tunnel_id, s.delivery.tun_dst) for s in tunnel] == [(T1_NET1, str(ip(2)))]
    assert net.packet_ins == [] and net.learn_requests() == []
    # And the answer: b's host had a pushed too.
    back = net.send(2, 1, ipv4("10.0.1.2", "10.0.0.1", MAC_B, router_mac(T1_NET1)))
    assert [(s.host, s.port) for s in back if s.port != TUN] == [(1, 1)]
    assert net.packet_ins == [] and net.learn_requests() == []


def test_lookup_answers_a_routed_miss_from_the_directory_copy() -> None:
    net = directory_routed_net()
    show(net, {T1_NET0: "lookup", T1_NET1: "lookup"})
    h1 = net.hosts[1]
    assert h1.core.p.learned.get(T1_NET1, MAC_B) is None  # nothing ahead of the packet

    seen = _routed_ping(net) + net.deliver()

    assert [(s.host, s.port) for s in seen if s.port != TUN] == [(2, 1)]
    assert h1.core.counters["resolved_from_directory"] == 1
    assert net.learn_requests() == []


def test_learn_asks_the_other_subnets_members_from_the_directory() -> None:
    net = directory_routed_net()
    show(net, {})

    seen = _routed_ping(net) + net.deliver()

    assert [(s.host, s.port) for s in seen if s.port != TUN] == [(2, 1)]  # not lost
    assert {(s.message.instance, s.dst) for s in net.learn_requests(1)} == {(T1_NET1, ip(2))}


def test_routers_going_take_the_other_subnets_monitoring_and_pushed_endpoints() -> None:
    net = directory_routed_net()
    show(net, {T1_NET0: "push", T1_NET1: "push"})
    h1 = net.hosts[1]
    assert h1.core.p.learned.get(T1_NET1, MAC_B) is not None

    net.apply(h1, h1.core.routers_changed(net.now, [], []))

    assert h1.core.routed() == frozenset()
    assert h1.core.p.learned.get(T1_NET1, MAC_B) is None
    assert not [f for f in h1.switch.flows() if f.match.get("eth_dst") == MAC_B]
