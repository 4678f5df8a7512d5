"""Migration and un-learning in the core, against fake switches (issue #4)."""

from __future__ import annotations

import time

import pytest

from dove_ryu.protocol.messages import EndpointHere, LearnReply, Unlearn, encode
from tests.unit.test_core import (
    KEY,
    MAC_A,
    MAC_B,
    Net,
    arp_request,
    eth,
    ip,
    local,
    tunnelled,
    vm,
)

pytestmark = pytest.mark.unit

B = vm("b", 1, 5001, MAC_B, "192.168.1.2")


def two_talking() -> Net:
    """a on host 1, b on host 2, host 3 serves 5001 too; a has talked to b."""
    net = Net(
        {
            1: [vm("a", 1, 5001, MAC_A, "192.168.1.1")],
            2: [B],
            3: [vm("c", 1, 5001, "02:00:00:00:03:09", "192.168.1.9")],
        }
    )
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B).endpoint.host == ip(2)
    return net


def move_b(net: Net, to: int, frm: int = 2) -> None:
    """b's port leaves host ``frm`` and appears on host ``to`` (arrival first, as OVSDB
    on two hosts may well report it)."""
    net.now += 0.2
    new = net.hosts[to]
    new_ports = [p for p in new.core.p.ports.by_name.values()] + [
        vm("b", 7, 5001, MAC_B, "192.168.1.2")
    ]
    net.apply(new, new.core.ports_changed(net.now, new_ports))
    old = net.hosts[frm]
    net.apply(
        old,
        old.core.ports_changed(
            net.now, [p for p in old.core.p.ports.by_name.values() if p.mac != MAC_B]
        ),
    )


def test_a_move_is_followed_by_hosts_that_had_learned_the_vm() -> None:
    net = two_talking()
    before = net.hosts[1].core.p.learned.get(5001, MAC_B).endpoint.seq
    move_b(net, to=3)
    net.deliver()
    entry = net.hosts[1].core.p.learned.get(5001, MAC_B)
    assert entry is not None and entry.endpoint.host == ip(3) and entry.endpoint.seq > before
    seen = net.send(1, 1, eth(MAC_A, MAC_B))
    assert local(seen) == [(3, 7)]
    assert [s.delivery.tun_dst for s in tunnelled(seen)] == [str(ip(3))]


def test_an_older_location_never_overrides_a_newer_one() -> None:
    net = two_talking()
    old_seq = net.hosts[1].core.p.learned.get(5001, MAC_B).endpoint.seq
    move_b(net, to=3)
    net.deliver()
    h1 = net.hosts[1].core
    t = time.time_ns() // 1000
    stale = [
        EndpointHere(5001, MAC_B, (), ip(2), old_seq),
        LearnReply(5001, 1, MAC_B, (), ip(2), old_seq),
    ]
    for i, msg in enumerate(stale):
        frame = encode(msg, sender=ip(2), receiver=ip(1), counter=t + i, key=KEY)
        net.apply(net.hosts[1], h1.control_message(net.now, frame, ip(2)))
    assert h1.p.learned.get(5001, MAC_B).endpoint.host == ip(3)
    assert h1.counters["endpoint_stale"] == 1


def test_traffic_still_sent_to_the_old_host_is_forwarded_and_the_sender_unlearns() -> None:
    """Host 1 missed both the announcement and the un-learn (say, they were lost)."""
    net = two_talking()
    move_b(net, to=3)
    net.queue = [(src, d) for src, d in net.queue if d.dst != str(ip(1))]  # lost
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B).endpoint.host == ip(2)  # stale

    seen = net.send(1, 1, eth(MAC_A, MAC_B))
    assert (3, 7) in local(seen)  # host 2 sent it on to host 3: not lost
    assert net.hosts[2].core.counters["forwarded_to_new_host"] == 1
    net.deliver()  # host 2's UNLEARN reaches host 1
    assert net.hosts[1].core.p.learned.get(5001, MAC_B) is None
    net.send(1, 1, eth(MAC_A, MAC_B))
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B).endpoint.host == ip(3)


def test_a_stopped_vm_is_unlearned_everywhere() -> None:
    net = two_talking()
    old = net.hosts[2]
    net.apply(old, old.core.ports_changed(net.now, []))
    told = {s.dst for s in net.sent if isinstance(s.message, Unlearn) and s.src == ip(2)}
    assert told == {ip(1), ip(3)}  # the host that learned b, and every member
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B) is None


def test_unlearn_about_another_host_is_refused() -> None:
    net = two_talking()
    h1 = net.hosts[1].core
    frame = encode(
        Unlearn(5001, MAC_B, ip(2), 2**32 - 1),
        sender=ip(3),
        receiver=ip(1),
        counter=time.time_ns() // 1000,
        key=KEY,
    )
    h1.control_message(net.now, frame, ip(3))
    assert h1.p.learned.get(5001, MAC_B) is not None
    assert h1.counters["drop_unlearn_for_other_host"] == 1


def test_moving_back_and_forth_leaves_nothing_behind() -> None:
    net = Net(
        {
            1: [vm("a", 1, 5001, MAC_A, "192.168.1.1")],
            2: [B, vm("b2", 2, 5001, "02:00:00:00:02:02", "192.168.1.4")],
            3: [vm("c", 1, 5001, "02:00:00:00:03:09", "192.168.1.9")],
        }
    )

    def talk(b_at: int, b_port: int) -> None:
        net.send(1, 1, eth(MAC_A, MAC_B))
        net.send(b_at, b_port, eth(MAC_B, MAC_A))
        net.deliver()

    talk(2, 1)
    flows_before = {n: h.switch.flow_count() for n, h in net.hosts.items()}
    learned_before = {n: len(h.core.p.learned) for n, h in net.hosts.items()}
    where = 2
    for _ in range(20):
        to = 3 if where == 2 else 2
        move_b(net, to=to, frm=where)
        net.deliver()
        where = to
    net.advance(61)  # departures and lingering instances are forgotten
    talk(2, 7)
    assert {n: len(h.core.p.learned) for n, h in net.hosts.items()} == learned_before
    assert {n: h.switch.flow_count() for n, h in net.hosts.items()} == flows_before


def test_unplugged_before_plugged_is_followed_too() -> None:
    """Live migration unplugs first: the UNLEARN arrives before the new host's ENDPOINT,
    which must still be followed, without a LEARN of its own."""
    net = two_talking()
    old, new = net.hosts[2], net.hosts[3]
    net.apply(old, old.core.ports_changed(net.now, []))
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B) is None
    net.now += 0.2
    ports = [*new.core.p.ports.by_name.values(), vm("b", 7, 5001, MAC_B, "192.168.1.2")]
    net.apply(new, new.core.ports_changed(net.now, ports))
    net.deliver()
    entry = net.hosts[1].core.p.learned.get(5001, MAC_B)
    assert entry is not None and entry.endpoint.host == ip(3)
    asked = len(net.learn_requests(src=1))
    assert local(net.send(1, 1, eth(MAC_A, MAC_B))) == [(3, 7)]
    assert len(net.learn_requests(src=1)) == asked


def test_a_packet_racing_a_new_ports_flows_is_delivered_not_unlearned() -> None:
    """The new host announced the VM before OVS had its port's delivery flow: the packet
    that arrives in that moment reaches the VM, and nobody is told to un-learn it."""
    net = two_talking()
    h2 = net.hosts[2]
    delivery = [
        f for f in h2.switch.flows() if f.table_id == 40 and f.match.get("eth_dst") == MAC_B
    ]
    assert delivery
    h2.switch.tables[40] = [f for f in h2.switch.tables[40] if f not in delivery]
    seen = net.send(1, 1, eth(MAC_A, MAC_B))
    assert (2, 1) in local(seen)
    assert h2.core.counters["not_here_but_local"] == 1
    assert not any(isinstance(s.message, Unlearn) for s in net.sent)
