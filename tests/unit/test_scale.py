"""The control plane at size (issue 13 point 4): split announcements, batched ENDPOINT."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dove_ryu.agent.membership import Membership
from dove_ryu.model import MAX_INSTANCE
from dove_ryu.protocol.auth import compute_mac
from dove_ryu.protocol.header import MAX_FRAME_LEN, MalformedMessage
from dove_ryu.protocol.messages import (
    MAX_ANNOUNCE_INSTANCES,
    MAX_RANGE,
    Announce,
    EndpointHere,
    Endpoints,
    ProxyRole,
    TlvType,
    batch_endpoints,
    decode,
    encode,
    split_announce,
)
from tests.unit.test_core import KEY, Net, ip, vm

pytestmark = pytest.mark.unit

SENDER = IPv4Address("10.0.0.1")
ME = IPv4Address("10.0.0.2")


def _wire(msg: object, counter: int = 1) -> object:
    frame = encode(msg, sender=SENDER, counter=counter, key=KEY, receiver=ME)  # type: ignore[arg-type]
    assert len(frame) <= MAX_FRAME_LEN
    return decode(frame, key=KEY).message


# ------------------------------------------------------------------ the codec


@settings(max_examples=60, deadline=None)
@given(st.frozensets(st.integers(1, MAX_INSTANCE), max_size=3000))
def test_split_parts_cover_the_whole_id_space_and_every_instance_once(ids: frozenset) -> None:
    parts = split_announce(ids)
    if len(ids) <= MAX_ANNOUNCE_INSTANCES:
        assert parts == [Announce(ids)]  # fits: unsplit, the full set (older agents take it)
        return
    assert parts[0].covers is not None and parts[0].covers[0] == 0
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.covers is not None and after.covers is not None
        assert after.covers[0] == before.covers[1] + 1  # contiguous, no gap, no overlap
    assert parts[-1].covers is not None and parts[-1].covers[1] == MAX_RANGE
    assert sorted(i for p in parts for i in p.instances) == sorted(ids)
    assert all(p.in_scope(i) for p in parts for i in p.instances)


def test_5000_instances_round_trip_in_parts_that_fit_a_frame() -> None:
    ids = frozenset(range(10, 50_010, 10))
    role = ProxyRole("site1", True, 200)
    parts = split_announce(ids, proxy=role)
    assert len(parts) == -(-5000 // MAX_ANNOUNCE_INSTANCES)
    decoded = [_wire(p, n + 1) for n, p in enumerate(parts)]
    assert decoded == parts
    assert frozenset().union(*(p.instances for p in parts)) == ids


def test_a_range_must_hold_its_instances() -> None:
    with pytest.raises(ValueError):
        Announce(frozenset({5}), covers=(6, 10))
    with pytest.raises(ValueError):
        Announce(frozenset(), covers=(10, 6))
    frame = encode(Announce(frozenset({7}), covers=(0, 7)), sender=SENDER, counter=1, key=KEY)
    # The same frame with the range shrunk below its instance, re-signed: refused.
    bad = bytearray(frame)
    at = bad.find(bytes([TlvType.INSTANCE_RANGE, 0, 6]))
    bad[at + 3 : at + 9] = bytes([0, 0, 0, 0, 0, 6])
    bad[-16:] = compute_mac(KEY, bytes(bad[:-19]))
    with pytest.raises(MalformedMessage):
        decode(bytes(bad), key=KEY)


def _ep(n: int, host: IPv4Address = SENDER, ips: int = 1) -> EndpointHere:
    addrs = tuple(IPv4Address(f"192.168.{n % 250}.{k + 1}") for k in range(ips))
    return EndpointHere(5000 + n, f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}", addrs, host, n + 1)


def test_endpoints_batch_into_few_frames_and_round_trip() -> None:
    eps = [_ep(n, ips=n % 3) for n in range(200)]
    batches = batch_endpoints(SENDER, eps)
    assert len(batches) <= 200 * 30 // (MAX_FRAME_LEN - 100) + 1  # ~27 bytes an entry
    assert [e for b in batches for e in b.entries] == eps
    for batch in batches:
        assert _wire(batch) == batch


def test_a_bad_entry_is_refused_alone_and_ipv6_addresses_are_room_not_errors() -> None:
    batch = Endpoints(SENDER, (_ep(1), _ep(2)))
    frame = bytearray(encode(batch, sender=SENDER, counter=1, key=KEY))
    # Entry 2's MAC made multicast: that entry is refused, entry 1 kept.
    at = frame.find(bytes.fromhex("020000000002"))
    frame[at] = 0x03
    frame[-16:] = compute_mac(KEY, bytes(frame[:-19]))
    got = decode(bytes(frame), key=KEY).message
    assert isinstance(got, Endpoints)
    assert got.entries == (_ep(1),) and len(got.refused) == 1


# ---------------------------------------------------------------- membership


def test_a_part_replaces_membership_only_within_its_range_and_renews_the_rest() -> None:
    members = Membership(announce_interval=1.0)
    members.served_by(0.0, SENDER, frozenset({10, 20, 30, 40}))
    change = members.served_by(3.0, SENDER, frozenset({25}), covers=(15, 35))
    assert sorted(change.left) == [20, 30] and change.joined == [25]
    assert members.instances() == [10, 25, 40]
    # 3.0 + 3.5 intervals: 10 and 40 were renewed by the part although not in it.
    assert members.expired(5.0) == []
    assert sorted(i for i, _ in members.expired(6.6)) == [10, 25, 40]
    # Unsplit: the full set again.
    members.served_by(7.0, SENDER, frozenset({40}))
    assert members.instances() == [40]


# --------------------------------------------------------------- real cores


MANY = 2000


def _big_net() -> Net:
    """Host 1 serves MANY instances (one VM each), host 2 one of them."""
    ports = [
        vm(f"v{n}", n + 1, 10_000 + n, f"02:00:00:01:{n >> 8:02x}:{n & 0xFF:02x}")
        for n in range(MANY)
    ]
    layout = {1: ports, 2: [vm("b", 1, 10_000, "02:00:00:02:00:01")]}
    return Net(layout, peers=f"{ip(1)},{ip(2)}", departure_memory="0.5", announce_interval="1")


def _members_at_2(net: Net) -> set[int]:
    mem = net.hosts[2].core.p.members
    return {i for i in mem.instances() if mem.serves(i, ip(1))}


def test_a_host_serving_2000_instances_keeps_full_membership_at_its_peer() -> None:
    net = _big_net()
    assert _members_at_2(net) == {10_000 + n for n in range(MANY)}
    parts = [s for s in net.sent if isinstance(s.message, Announce) and s.src == ip(1)]
    assert parts and all(s.message.covers is not None for s in parts)
    net.advance(10.0)  # many rounds: nothing expires, nothing is dropped
    assert len(_members_at_2(net)) == MANY
    assert "drop_announce_truncated" not in net.hosts[1].core.counters


def test_a_lost_part_costs_until_the_next_round_and_is_no_missed_heartbeat() -> None:
    net = _big_net()
    core1 = net.hosts[1].core
    lost = 10_000 + MANY - 1  # in the last part
    ports = [p for p in core1.p.ports.all() if p.instance != lost]
    out = core1.ports_changed(net.now, ports)
    # Its VM stops; the underlay loses the last part of every announcement for a while.
    net.apply(net.hosts[1], out)

    def lose_last_parts() -> None:
        net.queue = [
            (src, d)
            for src, d in net.queue
            if not (
                src == ip(1)
                and isinstance(m := decode(d.payload, key=KEY).message, Announce)
                and m.covers is not None
                and m.covers[1] == MAX_RANGE
            )
        ]

    lose_last_parts()
    net.deliver()
    assert lost in _members_at_2(net)  # not heard yet
    for _ in range(60):  # 6 s of announcements (1 s interval), each last part lost
        net.now += 0.1
        for host in net.hosts.values():
            net.apply(host, host.core.tick(net.now))
        lose_last_parts()
        net.deliver()
    # The other parts kept the whole sender alive: nothing of the last range expired.
    assert _members_at_2(net) == {10_000 + n for n in range(MANY)}
    net.advance(1.5)  # the next round arrives whole
    assert _members_at_2(net) == {10_000 + n for n in range(MANY - 1)}


def test_vms_starting_together_are_announced_in_batches() -> None:
    net = Net({1: [], 2: [vm("b", 1, 7000, "02:00:00:02:00:01")]}, peers=f"{ip(1)},{ip(2)}")
    net.advance(2.0)
    net.sent.clear()
    ports = [
        vm(f"v{n}", n + 1, 7000, f"02:00:00:01:00:{n:02x}", f"10.7.0.{n + 1}") for n in range(120)
    ]
    net.apply(net.hosts[1], net.hosts[1].core.ports_changed(net.now, ports))
    net.deliver()
    batches = [s.message for s in net.sent if isinstance(s.message, Endpoints)]
    singles = [s.message for s in net.sent if isinstance(s.message, EndpointHere)]
    assert not singles and 1 < len(batches) <= 4
    assert sum(len(b.entries) for b in batches) == 120
    assert net.hosts[2].core.counters["endpoint_received"] == 120  # each entry taken as one
