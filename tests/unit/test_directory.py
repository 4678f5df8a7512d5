"""Membership from the directory (discovery = directory), against fake switches.

The directory's Host rows are handed to each core as the directory client would, with
``alive`` as a reaper beside the cluster judges the hosts' heartbeats (the pure
`Liveness`, on the test's clock: no agent sees a heartbeat); time is driven by the
test."""

from __future__ import annotations

import pytest

from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow, Liveness, LivenessRow
from dove_ryu.config import ConfigError, from_mapping
from tests.unit.test_core import (
    BROADCAST,
    KEY_HEX,
    MAC_A,
    MAC_B,
    MAC_C,
    Net,
    arp_request,
    eth,
    ip,
    local,
    three_hosts,
    tunnelled,
)
from tests.unit.test_metrics import scrape_of

pytestmark = pytest.mark.unit

INTERVAL = 2.0  # announce_interval: the hosts' heartbeat interval
REAPERS: dict[int, Liveness] = {}  # the reaper beside each test's directory


def directory_net() -> Net:
    net = three_hosts(discovery="directory", directory="tcp:10.99.0.250:6641", peers="")
    REAPERS[id(net)] = Liveness()
    return net


def reaper(net: Net) -> Liveness:
    return REAPERS[id(net)]


def host_rows(net: Net, beat: int, silent: tuple[int, ...] = ()) -> list[HostRow]:
    """Every host's row as the directory shows it, marked dead when the reaper judged
    its heartbeat stopped; hosts in ``silent`` keep the heartbeat they had at beat 1
    (they died after registering)."""
    judge = reaper(net)
    judge.rows(
        net.now, [LivenessRow(f"h{n}", 1 if n in silent else beat, INTERVAL) for n in net.hosts]
    )
    dead = judge.dead(net.now)
    return [
        HostRow(f"h{n}", ip(n), h.core.served(), alive=f"h{n}" not in dead)
        for n, h in net.hosts.items()
    ]


def publish(net: Net, beat: int, silent: tuple[int, ...] = ()) -> None:
    """Every host's row, as the directory shows it at heartbeat ``beat``."""
    rows = host_rows(net, beat, silent)
    for h in net.hosts.values():
        net.apply(h, h.core.directory_rows(net.now, DirectoryView(rows)))
    net.deliver()


def beat_for(net: Net, seconds: float, silent: tuple[int, ...] = ()) -> None:
    """Let time pass with the live hosts raising their heartbeats every interval."""
    beat = 2
    end = net.now + seconds
    while net.now < end:
        net.advance(INTERVAL)
        publish(net, beat, silent)
        beat += 1


def test_members_come_from_the_directory_without_peers_or_announcements() -> None:
    net = directory_net()
    h1 = net.hosts[1]
    assert h1.core.p.members.hosts(5001) == []  # no peers, no announcements

    publish(net, 1)

    assert h1.core.p.members.hosts(5001) == [ip(2)]
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(1, 2), (2, 1)]
    net.send(1, 1, eth(MAC_A, MAC_B))
    released = net.deliver()
    assert [(s.host, s.delivery.tun_dst) for s in tunnelled(released)] == [(1, str(ip(2)))]
    assert h1.core.status(net.now)["directory"] == {
        "reachable": True,
        "alive": {str(ip(2)): "h2", str(ip(3)): "h3"},
    }


def test_a_host_whose_heartbeat_stops_is_no_member_after_three_and_a_half_intervals() -> None:
    net = directory_net()
    publish(net, 1)
    h1 = net.hosts[1]

    beat_for(net, 3 * INTERVAL, silent=(2,))
    assert h1.core.p.members.serves(5001, ip(2))  # still within its lifetime

    beat_for(net, 2 * INTERVAL, silent=(2,))
    assert not h1.core.p.members.serves(5001, ip(2))
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(1, 2)]


def test_while_the_directory_is_away_members_stay_and_get_a_fresh_lifetime_back() -> None:
    net = directory_net()
    publish(net, 1)
    h1 = net.hosts[1]
    h1.core.directory_unreachable(net.now)
    reaper(net).unreachable()  # the directory is down: its reapers see nothing either

    net.advance(10 * INTERVAL)  # no rows at all meanwhile

    assert h1.core.p.members.serves(5001, ip(2))
    assert h1.core.status(net.now)["directory"]["reachable"] is False  # type: ignore[index]
    assert h1.core.counters["directory_lost"] == 1
    assert scrape_of(h1.core).value("dove_directory_reachable") == 0
    publish(net, 1)  # back, same heartbeats: everyone gets a fresh lifetime
    net.advance(3 * INTERVAL)
    publish(net, 1)
    assert h1.core.p.members.serves(5001, ip(2))


def test_a_host_added_to_the_directory_is_a_member_at_once() -> None:
    net = directory_net()
    publish(net, 1)
    h1 = net.hosts[1]
    newcomer = HostRow("h9", ip(9), frozenset({5001}))
    rows = host_rows(net, 1)

    net.apply(h1, h1.core.directory_rows(net.now, DirectoryView([*rows, newcomer])))

    assert h1.core.p.members.serves(5001, ip(9))
    net.apply(h1, h1.core.directory_rows(net.now, DirectoryView(rows)))  # and gone with its row
    assert not h1.core.p.members.serves(5001, ip(9))


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"discovery": "directory"}, "directory: missing"),
        ({"directory": "tcp:10.0.0.1:6641"}, "directory: only with discovery = directory"),
        ({"discovery": "directory", "directory": "tcp:10.0.0.1"}, "is not tcp:IP:PORT"),
        ({"discovery": "directory", "directory": "udp:10.0.0.1:6641"}, "is not tcp:IP:PORT"),
        ({"discovery": "directory", "directory": "tcp:host:6641"}, "not an IPv4 address"),
        (
            {"discovery": "directory", "directory": "ssl:10.0.0.1:6642"},
            "directory_private_key: missing",
        ),
    ],
)
def test_directory_settings_are_checked(values: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        from_mapping({"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX, **values})


def test_directory_settings_are_taken() -> None:
    cfg = from_mapping(
        {
            "underlay_ip": "10.99.0.1",
            "auth_key": KEY_HEX,
            "discovery": "directory",
            "directory": "tcp:10.99.0.241:6641, tcp:10.99.0.242:6641,ssl:10.99.0.243:6641",
            "directory_private_key": "/etc/dove-ryu/hv1-privkey.pem",
            "directory_certificate": "/etc/dove-ryu/hv1-cert.pem",
            "directory_ca_cert": "/etc/dove-ryu/cacert.pem",
        }
    )
    assert cfg.host.directory == (
        "tcp:10.99.0.241:6641",
        "tcp:10.99.0.242:6641",
        "ssl:10.99.0.243:6641",
    )


# ------------------------------------------------------------------- push


def push_view(net: Net, beat: int = 1, skip: tuple[str, ...] = ()) -> DirectoryView:
    """The directory as every host sees it: hosts, their VMs, instance 5001 in push mode."""
    hosts = host_rows(net, beat)
    endpoints = [
        row for h in net.hosts.values() for row in h.core.local_endpoints() if row.mac not in skip
    ]
    return DirectoryView(hosts, endpoints, {5001: "push"})


def show(net: Net, view: DirectoryView) -> None:
    for h in net.hosts.values():
        net.apply(h, h.core.directory_rows(net.now, view))
    net.deliver()


def test_push_installs_the_instances_endpoints_before_the_first_packet() -> None:
    net = directory_net()
    show(net, push_view(net))
    h1 = net.hosts[1]
    assert h1.core.p.learned.get(5001, MAC_B) is not None  # before any packet
    assert h1.core.p.learned.get(5002, MAC_C) is None  # 5002 resolves by LEARN
    asked = len(net.learn_requests())

    seen = net.send(1, 1, eth(MAC_A, MAC_B))

    assert net.packet_ins == [] and len(net.learn_requests()) == asked
    assert local(seen) == [(2, 1)]
    assert h1.core.counters["endpoint_pushed"] == 1  # b: a and a2 are h1's own


def test_a_pushed_endpoint_idled_out_comes_back_from_the_copy_without_a_learn() -> None:
    net = directory_net()
    show(net, push_view(net))
    h1 = net.hosts[1]
    entry = h1.core.p.learned.get(5001, MAC_B)
    assert entry is not None
    net.now += 400
    (flow,) = h1.switch.expire(lambda f: f.match.get("eth_dst") == MAC_B)
    net.apply(h1, h1.core.flow_removed(net.now, flow.cookie, dict(flow.match), True, 400.0))
    assert h1.core.p.learned.get(5001, MAC_B) is None
    asked = len(net.learn_requests())

    seen = net.send(1, 1, eth(MAC_A, MAC_B))

    assert local(seen) == [(2, 1)] and len(net.learn_requests()) == asked
    assert h1.core.counters["resolved_from_directory"] == 1


def test_a_row_that_goes_takes_its_flows_and_a_newer_location_moves_them() -> None:
    net = directory_net()
    show(net, push_view(net))
    h1 = net.hosts[1]
    show(net, push_view(net, skip=(MAC_B,)))
    assert h1.core.p.learned.get(5001, MAC_B) is None
    moved = push_view(net)
    b = next(e for e in moved.endpoints if e.mac == MAC_B)
    newer = EndpointRow(b.instance, b.mac, b.ips, "h3", b.seq + 1)
    older = EndpointRow(b.instance, b.mac, b.ips, "h2", b.seq)
    show(net, DirectoryView(moved.hosts, [*moved.endpoints, newer, older], moved.resolution))
    entry = h1.core.p.learned.get(5001, MAC_B)
    assert entry is not None and entry.endpoint.host == ip(3)


def test_lookup_resolves_a_miss_from_the_directory_without_a_learn() -> None:
    net = directory_net()
    view = push_view(net)
    show(net, DirectoryView(view.hosts, view.endpoints, {5001: "lookup"}))
    h1 = net.hosts[1]
    assert h1.core.p.learned.get(5001, MAC_B) is None  # nothing ahead of the packet
    asked = len(net.learn_requests())

    arp = net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    seen = net.send(1, 1, eth(MAC_A, MAC_B))

    assert local(arp) == [(1, 1)] and local(seen) == [(2, 1)]
    assert len(net.learn_requests()) == asked
    assert h1.core.counters["resolved_from_directory"] == 1  # the ARP; then the flows knew
    assert len(net.packet_ins) == 1


def test_lookup_falls_back_to_learn_for_an_endpoint_whose_host_stopped() -> None:
    net = directory_net()
    endpoints = push_view(net).endpoints
    h1 = net.hosts[1]
    for beat in range(1, 6):  # h2's heartbeat stands still; its rows stay
        hosts = host_rows(net, beat, silent=(2,))
        show(net, DirectoryView(hosts, endpoints, {5001: "lookup"}))
        net.advance(INTERVAL)
    assert h1.core.p.members.hosts(5001) == []

    net.send(1, 1, eth(MAC_A, MAC_B))

    assert h1.core.counters.get("resolved_from_directory", 0) == 0
    assert h1.core.p.learned.get(5001, MAC_B) is None
    # A LEARN, waiting for a member of the instance (h2 was its only other one).
    assert h1.core.status(net.now)["pending"] == 1 and h1.core.counters["learn_no_members"] == 1


def test_a_switch_a_vtep_controller_registered_is_an_external_vtep_not_a_member() -> None:
    """A Host row of role vtep (a hardware_vtep switch, docs/interop.md section 3) runs
    no agent: hosts flood to it and learn behind it in the datapath, and never count
    it as a member (a LEARN to it would go unanswered).  Its row gone, so is it."""
    from ipaddress import IPv4Address

    from dove_ryu.openflow.ofmsg import SetField

    net = directory_net()
    h1 = net.hosts[1]
    tor = HostRow("tor1", IPv4Address("10.99.0.60"), frozenset({5001}), role="vtep")

    def show(extra: list[HostRow]) -> None:
        for h in net.hosts.values():
            net.apply(h, h.core.directory_rows(net.now, DirectoryView(host_rows(net, 1) + extra)))

    def flooded_to_tor() -> bool:
        buckets = h1.switch.groups[5001]
        return any(SetField("tun_ipv4_dst", "10.99.0.60") in b for b in buckets)

    show([tor])
    assert h1.core.p.members.hosts(5001) == [ip(2)]
    assert [v.name for v in h1.core.p.vteps.all()] == ["tor1"]
    assert flooded_to_tor()
    assert not h1.switch.errors

    show([])
    assert h1.core.p.vteps.all() == [] and not flooded_to_tor()


def test_a_vtep_row_with_an_instance_no_vtep_may_serve_is_refused_and_counted() -> None:
    """A vtep row naming BFD's VNI (16777215) is refused, counted once and logged, and
    the host goes on (its other rows are taken)."""
    from ipaddress import IPv4Address

    net = directory_net()
    h1 = net.hosts[1]
    bad = HostRow("tor9", IPv4Address("10.99.0.69"), frozenset({0xFFFFFF}), role="vtep")
    for beat in (1, 2):
        net.apply(h1, h1.core.directory_rows(net.now, DirectoryView(host_rows(net, beat) + [bad])))
    assert h1.core.p.vteps.all() == []
    assert h1.core.counters["vtep_row_refused"] == 1
    assert h1.core.p.members.hosts(5001) == [ip(2)]
