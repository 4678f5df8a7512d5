"""Behaviour of the host core against fake switches, with the test driving time.

Two or three cores, each with its own `FakeSwitch`, joined by a tiny network that
carries control datagrams between cores and tunnelled packets between switches.
Tests ask where packets go, not which messages were sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import pytest

from dove_ryu.agent.host import HostCore
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import VmPort
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.ofmsg import (
    CoreOutput,
    Datagram,
    Output,
    PacketIn,
    SetField,
    order_messages,
)
from dove_ryu.openflow.packet import ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP
from dove_ryu.protocol.messages import (
    Announce,
    LearnReply,
    LearnRequest,
    Message,
    decode,
    encode,
)
from tests.fakeswitch import Delivery, FakeSwitch, Flow, pkt_to_bytes

pytestmark = pytest.mark.unit

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
TUN = 100
T0 = 1000.0
BROADCAST = "ff:ff:ff:ff:ff:ff"


def ip(n: int) -> IPv4Address:
    """Underlay address of host n."""
    return IPv4Address(f"10.99.0.{n}")


def vm(name: str, ofport: int, instance: int, mac: str, *ips: str) -> VmPort:
    return VmPort(name, ofport, instance, mac, tuple(IPv4Address(i) for i in ips))


# A unicast frame of no protocol the pipeline looks into (IEEE 802 local experimental):
# a port with addresses sends IPv4 only from them, and these frames carry no IPv4 header.
ETH_TYPE_OPAQUE = 0x88B5


def eth(src: str, dst: str, eth_type: int = ETH_TYPE_OPAQUE) -> dict[str, Any]:
    return {"eth_src": src, "eth_dst": dst, "eth_type": eth_type, "payload": b"x" * 46}


def arp_request(sha: str, spa: str, tpa: str, src: str | None = None) -> dict[str, Any]:
    return {
        "eth_src": src or sha,
        "eth_dst": BROADCAST,
        "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REQUEST,
        "arp_sha": sha,
        "arp_spa": spa,
        "arp_tha": "00:00:00:00:00:00",
        "arp_tpa": tpa,
    }


def purpose_is(purpose: Purpose, instance: int | None = None) -> Callable[[Flow], bool]:
    def pick(flow: Flow) -> bool:
        c = cookies.decode(flow.cookie)
        return c is not None and c.purpose is purpose and instance in (None, c.instance)

    return pick


@dataclass
class Host:
    n: int
    ip: IPv4Address
    core: HostCore
    switch: FakeSwitch


@dataclass
class Sent:
    src: IPv4Address
    dst: IPv4Address
    message: Message


@dataclass
class Seen:
    """A packet a switch put on one of its ports."""

    host: int
    delivery: Delivery

    @property
    def port(self) -> int | None:
        return self.delivery.port


class Net:
    """Hosts, their fake switches, and the underlay between them.  Datagrams wait in
    ``queue`` until `deliver`; packets (tunnelled ones included) move at once."""

    def __init__(self, layout: dict[int, list[VmPort]], **settings: str) -> None:
        self.now = T0
        self.hosts: dict[int, Host] = {}
        self.queue: list[tuple[IPv4Address, Datagram]] = []
        self.sent: list[Sent] = []
        self.seen: list[Seen] = []
        self.packet_ins: list[tuple[int, Delivery]] = []
        peers = ",".join(str(ip(n)) for n in (1, 2, 3))
        for n in sorted(layout):
            cfg = from_mapping(
                {
                    "underlay_ip": str(ip(n)),
                    "auth_key": KEY_HEX,
                    "peers": peers,
                    "host_name": f"h{n}",
                    **settings,
                }
            )
            self.hosts[n] = Host(n, ip(n), HostCore(cfg, self.now), FakeSwitch(tunnel_port=TUN))
        for host in self.hosts.values():
            self.apply(host, host.core.switch_connected(self.now, TUN))
        for n, host in self.hosts.items():
            self.apply(host, host.core.ports_changed(self.now, layout[n]))
        self.deliver()

    def by_ip(self, addr: IPv4Address | str) -> Host | None:
        return next((h for h in self.hosts.values() if h.ip == IPv4Address(addr)), None)

    def apply(self, host: Host, out: CoreOutput) -> None:
        """What the shell does with a core's output: datagrams out, messages to the switch."""
        for dgram in out.datagrams:
            self.queue.append((host.ip, dgram))
            env = decode(dgram.payload, key=host.core.p.channel.keys)
            self.sent.append(Sent(host.ip, IPv4Address(dgram.dst), env.message))
        gen = host.core.p.takeover.generation
        deliveries = host.switch.apply(order_messages(out.ofmsgs, gen))
        assert not host.switch.errors, host.switch.errors
        self._handle(host, deliveries)

    def _handle(self, host: Host, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            if d.controller:
                assert d.cookie is not None
                self.packet_ins.append((host.n, d))
                tun_src = IPv4Address(d.tun_src) if d.tun_src else None
                punt = PacketIn(d.cookie, d.in_port, d.data, d.metadata, tun_src)
                punted = host.core.packet_in(self.now, punt)
                self.apply(host, punted)
                continue
            self.seen.append(Seen(host.n, d))
            if d.port == TUN:
                assert d.tun_dst is not None
                peer = self.by_ip(d.tun_dst)
                if peer is not None:
                    tun = {"tunnel_id": d.tunnel_id, "tun_ipv4_src": str(host.ip)}
                    if d.tun_metadata0 is not None:  # the DOVE Geneve option
                        tun["tun_metadata0"] = d.tun_metadata0
                    self._handle(peer, peer.switch.process(TUN, d.pkt, tun))

    def send(self, n: int, port: int, pkt: dict[str, Any]) -> list[Seen]:
        """A VM on host n sends a packet; returns every packet it put on a port."""
        start = len(self.seen)
        host = self.hosts[n]
        self._handle(host, host.switch.process(port, pkt))
        return self.seen[start:]

    def deliver(self) -> list[Seen]:
        """Carry queued datagrams (and whatever they cause) until the underlay is quiet."""
        start = len(self.seen)
        while self.queue:
            src, dgram = self.queue.pop(0)
            dst = self.by_ip(dgram.dst)
            if dst is not None:
                self.apply(dst, dst.core.control_message(self.now, dgram.payload, src))
        return self.seen[start:]

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for host in self.hosts.values():
                self.apply(host, host.core.tick(self.now))
            self.deliver()

    def learn_requests(self, src: int | None = None) -> list[Sent]:
        return [
            s
            for s in self.sent
            if isinstance(s.message, LearnRequest) and (src is None or s.src == ip(src))
        ]


def local(seen: list[Seen], n: int | None = None) -> list[tuple[int, int | None]]:
    """(host, port) of each packet delivered to a VM port (not into the tunnel)."""
    return sorted((s.host, s.port) for s in seen if s.port != TUN and n in (None, s.host))


def tunnelled(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if s.port == TUN]


MAC_A = "02:00:00:00:01:01"
MAC_A2 = "02:00:00:00:01:02"
MAC_B = "02:00:00:00:02:01"
MAC_C = "02:00:00:00:03:01"
MAC_X = "02:00:00:00:01:03"


def three_hosts(**settings: str) -> Net:
    """a (5001) and a2 (5001) and x (5002) on host 1, b (5001) on host 2, c (5002) on host 3."""
    return Net(
        {
            1: [
                vm("a", 1, 5001, MAC_A, "192.168.1.1"),
                vm("a2", 2, 5001, MAC_A2, "192.168.1.3"),
                vm("x", 3, 5002, MAC_X, "192.168.2.1"),
            ],
            2: [vm("b", 1, 5001, MAC_B, "192.168.1.2")],
            3: [vm("c", 1, 5002, MAC_C, "192.168.2.3")],
        },
        **settings,
    )


# ------------------------------------------------------------------------ learning


def test_unicast_miss_is_learned_from_members_only_and_released_into_the_tunnel() -> None:
    net = three_hosts()
    h1 = net.hosts[1]
    assert set(h1.core.p.members.hosts(5001)) == {ip(2)}
    net.sent.clear()

    held = net.send(1, 1, eth(MAC_A, MAC_B))

    assert held == []  # waiting for the answer
    assert len(net.packet_ins) == 1
    cookie = cookies.decode(net.packet_ins[0][1].cookie or 0)
    assert cookie is not None and (cookie.purpose, cookie.instance) == (Purpose.INSTANCE, 5001)
    requests = net.learn_requests(src=1)
    assert [(r.dst, r.message.mac) for r in requests] == [(ip(2), MAC_B)]  # type: ignore[union-attr]

    released = net.deliver()

    assert any(
        isinstance(s.message, LearnReply) and s.src == ip(2) and s.dst == ip(1) for s in net.sent
    )
    assert h1.switch.flows() and any(
        f.match.get("eth_dst") == MAC_B for f in h1.switch.flows() if purpose_is(Purpose.LEARNED)(f)
    )
    out = tunnelled(released)
    assert [(s.host, s.delivery.tunnel_id, s.delivery.tun_dst) for s in out] == [
        (1, 5001, str(ip(2)))
    ]
    assert local(released) == [(2, 1)]  # host 2 hands it to b
    assert released[-1].delivery.pkt["eth_src"] == MAC_A

    again = net.send(1, 1, eth(MAC_A, MAC_B))

    assert len(net.packet_ins) == 1
    assert local(again) == [(2, 1)]
    assert [s.delivery.tun_dst for s in tunnelled(again)] == [str(ip(2))]


def test_arp_for_remote_vm_is_resolved_and_answered_on_the_host() -> None:
    net = three_hosts()
    request = arp_request(MAC_A, "192.168.1.1", "192.168.1.2")

    assert net.send(1, 1, request) == []
    asked = net.learn_requests(src=1)
    assert [(r.dst, r.message.ip) for r in asked] == [(ip(2), IPv4Address("192.168.1.2"))]  # type: ignore[union-attr]

    answered = net.deliver()

    assert tunnelled(answered) == []  # the ARP request never crosses the underlay
    assert local(answered) == [(1, 1)]  # out the port it came in on
    reply = answered[0].delivery.pkt
    assert reply["eth_src"] == MAC_B and reply["eth_dst"] == MAC_A
    assert reply["arp_op"] == ARP_REPLY
    assert (reply["arp_sha"], reply["arp_spa"]) == (MAC_B, "192.168.1.2")
    assert (reply["arp_tha"], reply["arp_tpa"]) == (MAC_A, "192.168.1.1")

    # The next request is answered by the flow, without the agent.
    again = net.send(1, 1, request)
    assert len(net.packet_ins) == 1
    assert local(again) == [(1, 1)] and again[0].delivery.pkt["arp_op"] == ARP_REPLY


def test_answering_host_learns_the_requester_so_replies_need_no_learn() -> None:
    net = three_hosts()
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    assert len(net.packet_ins) == 1
    learned = net.hosts[2].core.p.learned.get(5001, MAC_A)
    assert learned is not None and learned.endpoint.host == ip(1)

    # b answers a: its ARP and its unicast go straight into the tunnel, no packet-in.
    arp = net.send(2, 1, arp_request(MAC_B, "192.168.1.2", "192.168.1.1"))
    assert local(arp) == [(2, 1)] and arp[0].delivery.pkt["arp_op"] == ARP_REPLY
    back = net.send(2, 1, eth(MAC_B, MAC_A))
    assert local(back) == [(1, 1)]
    assert len(net.packet_ins) == 1


def test_a_request_nobody_answers_teaches_nobody() -> None:
    net = three_hosts()
    net.send(1, 1, eth(MAC_A, "02:00:00:00:09:09"))
    net.deliver()
    assert net.hosts[2].core.p.learned.get(5001, MAC_A) is None


def test_arp_for_local_vm_is_answered_without_the_agent() -> None:
    net = three_hosts()
    seen = net.send(1, 2, arp_request(MAC_A2, "192.168.1.3", "192.168.1.1"))
    assert net.packet_ins == []
    assert local(seen) == [(1, 2)]
    assert seen[0].delivery.pkt["arp_sha"] == MAC_A


# ----------------------------------------------------------------------- isolation


def twin_tenants() -> Net:
    """Tenants 5001 and 5002 use the same MACs and IPs on hosts 1 and 2; host 3 serves
    only 5002."""
    return Net(
        {
            1: [
                vm("a1", 1, 5001, MAC_A, "10.0.0.1"),
                vm("b1", 2, 5002, MAC_A, "10.0.0.1"),
            ],
            2: [
                vm("a2", 1, 5001, MAC_B, "10.0.0.2"),
                vm("b2", 2, 5002, MAC_B, "10.0.0.2"),
            ],
            3: [vm("b3", 1, 5002, MAC_C, "10.0.0.3")],
        }
    )


def test_tenants_with_identical_addresses_stay_apart() -> None:
    net = twin_tenants()
    tenant_port = {5001: 1, 5002: 2}
    for instance, port in tenant_port.items():
        start = len(net.seen)
        for n, pkt in [
            (1, arp_request(MAC_A, "10.0.0.1", "10.0.0.2")),
            (1, eth(MAC_A, MAC_B)),
            (1, eth(MAC_A, BROADCAST)),
            (2, eth(MAC_B, MAC_A)),
            (2, eth(MAC_B, BROADCAST)),
        ]:
            net.send(n, port, pkt)
            net.deliver()  # resolve misses before the next tenant's turn
        seen = net.seen[start:]
        assert {s.port for s in seen if s.port != TUN and s.host in (1, 2)} == {port}
        assert bool(local(seen, n=3)) == (instance == 5002)  # host 3 serves only 5002
        assert {s.delivery.tunnel_id for s in tunnelled(seen)} == {instance}
        # The ARP answer names the tenant's own peer.
        assert any(
            s.delivery.pkt.get("arp_op") == ARP_REPLY and s.delivery.pkt["eth_src"] == MAC_B
            for s in seen
        )
        # Each unicast reached its tenant's VM on the far host.
        assert local(seen, n=2).count((2, port)) == 2  # a->b, a's broadcast
        assert local(seen, n=1).count((1, port)) == 3  # ARP reply, b->a, b's broadcast


def test_tunnelled_packet_from_non_member_is_dropped() -> None:
    net = twin_tenants()
    sw = net.hosts[1].switch
    nonmember = Cookie(Purpose.DROP_NONMEMBER).value
    before = sw.hits(lambda f: f.cookie == nonmember)

    # Host 3 serves 5002 only: its 5001 traffic is refused, its 5002 traffic accepted.
    spoofed = sw.process(TUN, eth(MAC_C, MAC_A), {"tunnel_id": 5001, "tun_ipv4_src": str(ip(3))})
    stranger = sw.process(TUN, eth(MAC_C, MAC_A), {"tunnel_id": 5001, "tun_ipv4_src": "10.99.0.77"})
    genuine = sw.process(TUN, eth(MAC_C, MAC_A), {"tunnel_id": 5002, "tun_ipv4_src": str(ip(3))})

    assert spoofed == [] and stranger == []
    assert sw.hits(lambda f: f.cookie == nonmember) == before + 2
    assert [d.port for d in genuine] == [2]


# ------------------------------------------------------------------- port security


def test_port_security_drops_forged_sources() -> None:
    net = three_hosts()
    sw = net.hosts[1].switch
    spoof = purpose_is(Purpose.DROP_SPOOF)

    assert net.send(1, 1, eth(MAC_B, MAC_A2)) == []  # a pretends to be b
    assert sw.hits(spoof) == 1
    assert net.send(1, 1, arp_request(MAC_B, "192.168.1.1", "192.168.1.3", src=MAC_A)) == []
    assert net.send(1, 1, arp_request(MAC_A, "192.168.1.3", "192.168.1.3")) == []  # a2's IP
    assert sw.hits(spoof) == 3
    assert sw.hits(purpose_is(Purpose.DROP_SPOOF, 5001)) == 2  # the per-port ARP guard
    assert net.packet_ins == []
    # The real addresses pass.
    assert local(net.send(1, 1, eth(MAC_A, MAC_A2))) == [(1, 2)]
    assert local(net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.3"))) == [(1, 1)]


# ---------------------------------------------------------------------- flooding


def test_broadcast_reaches_instance_ports_and_member_hosts_only() -> None:
    net = three_hosts()

    seen = net.send(1, 1, eth(MAC_A, BROADCAST))

    assert local(seen) == [(1, 2), (2, 1)]  # a2 here, b on host 2; not x, not c, not a
    assert [(s.delivery.tunnel_id, s.delivery.tun_dst) for s in tunnelled(seen)] == [
        (5001, str(ip(2)))
    ]

    from_tunnel = net.send(2, 1, eth(MAC_B, BROADCAST))

    assert local(from_tunnel) == [(1, 1), (1, 2)]
    # Host 1 does not send it back into the tunnel (only host 2's copy is tunnelled).
    assert [s.host for s in tunnelled(from_tunnel)] == [2]
    assert net.hosts[1].switch.in_port_drops >= 1

    other = net.send(1, 3, eth(MAC_X, "01:00:5e:00:00:01"))  # multicast in 5002
    assert local(other) == [(3, 1)]
    assert [s.delivery.tun_dst for s in tunnelled(other)] == [str(ip(3))]


# ------------------------------------------------------------------ control plane


def signed_frame(
    msg: Message, sender: IPv4Address, key: bytes = KEY, receiver: IPv4Address | None = None
) -> bytes:
    """A frame for host 1 (unless told otherwise)."""
    return encode(
        msg, sender=sender, counter=time.time_ns() // 1000, key=key, receiver=receiver or ip(1)
    )


def test_bad_control_messages_are_counted_not_raised() -> None:
    net = three_hosts()
    core = net.hosts[1].core
    good = signed_frame(Announce(frozenset({5001})), ip(2))

    cases: list[tuple[bytes, IPv4Address, str]] = [
        (
            signed_frame(Announce(frozenset({5001})), ip(2), OTHER_KEY),
            ip(2),
            "drop_control_bad_mac",
        ),
        (good, ip(3), "drop_control_sender_mismatch"),
        (good, ip(2), ""),
        (good, ip(2), "drop_control_replay"),
        (
            signed_frame(Announce(frozenset({5001})), ip(2), receiver=ip(3)),
            ip(2),
            "drop_control_wrong_receiver",
        ),
        (
            encode(
                Announce(frozenset({5001})), sender=ip(2), counter=time.time_ns() // 1000, key=KEY
            ),
            ip(2),
            "drop_control_wrong_receiver",
        ),  # names no receiver
        (b"\x00garbage", ip(2), "drop_control_truncated"),
        (b"\xff" * 64, ip(2), ""),
    ]
    for data, src, counter in cases:
        before = dict(core.counters)
        out = core.control_message(net.now, data, src)
        assert out.ofmsgs == [] and out.datagrams == []
        drops = {k: v for k, v in core.counters.items() if v != before.get(k)}
        if counter:
            assert drops.get(counter) == before.get(counter, 0) + 1, (counter, drops)
        elif data is not good:
            assert any(k.startswith("drop_control_") for k in drops), drops

    reply = LearnReply(5001, 999_999, MAC_B, (), ip(2), 1)
    out = core.control_message(net.now, signed_frame(reply, ip(2)), ip(2))
    assert out.ofmsgs == [] and out.datagrams == []
    assert core.counters["learn_reply_unsolicited"] == 1
    assert core.p.learned.get(5001, MAC_B) is None


# ------------------------------------------------------------------------- bounds


def test_spraying_random_destinations_stays_bounded() -> None:
    limits = {
        "max_pending_per_instance": "16",
        "learn_rate_per_instance": "30",
        "max_learned_per_instance": "32",
    }
    net = three_hosts(**limits)
    h1, h2 = net.hosts[1], net.hosts[2]
    baseline = h1.switch.flow_count()
    rng = random.Random(5001)
    start, max_pending, max_flows, answered = net.now, 0, 0, 0

    def answer_half() -> None:
        """Host 2 answers every other LEARN from host 1 (for endpoints it has not got)."""
        nonlocal answered
        for src, dgram in list(net.queue):
            msg = decode(dgram.payload, key=KEY).message
            if src != ip(1) or not isinstance(msg, LearnRequest):
                continue
            net.queue.remove((src, dgram))
            answered += 1
            if answered % 2 or msg.mac is None:
                continue
            reply = LearnReply(5001, msg.request_id, msg.mac, (IPv4Address(answered),), ip(2), 1)
            data = h2.core.p.channel.datagram(ip(1), reply).payload
            net.apply(h1, h1.core.control_message(net.now, data, ip(2)))

    for i in range(10_000):
        dst = "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))
        net.now += 0.001
        net.send(1, 1, eth(MAC_A, dst))
        answer_half()
        max_pending = max(max_pending, len(h1.core.p.resolver))
        if i % 100 == 99:
            for host in net.hosts.values():
                net.apply(host, host.core.tick(net.now))
            answer_half()
            net.deliver()
            max_flows = max(max_flows, h1.switch.flow_count())

    elapsed = net.now - start
    first_sends = {s.message.request_id for s in net.learn_requests(src=1)}  # type: ignore[union-attr]
    assert h1.core.counters["packet_in"] == 10_000
    assert max_pending <= 16
    assert len(first_sends) <= 30 + 30 * elapsed  # token bucket: burst + rate * time
    assert h1.core.counters["drop_learn_rate_limited"] > 0
    assert h1.core.counters["drop_pending_full"] > 0
    assert len(h1.core.p.learned) <= 32
    assert h1.core.counters["learned"] > 32  # it was full and evicted
    # One l2 flow and one ARP answer per learned endpoint, no leftovers.
    assert max_flows <= baseline + 2 * 32
    assert h1.switch.flow_count() <= baseline + 2 * 32


def test_unanswered_learn_is_retried_then_given_up_and_negatively_cached() -> None:
    net = three_hosts()
    core = net.hosts[1].core
    ghost = "02:00:00:00:09:09"

    for _ in range(3):
        net.send(1, 1, eth(MAC_A, ghost))
    net.deliver()
    assert len(core.p.resolver) == 1
    assert len(net.learn_requests(src=1)) == 1

    net.advance(3.5)

    assert core.counters["learn_retransmits"] == 3
    assert core.counters["learn_timeouts"] == 1
    assert core.counters["held_dropped"] == 3
    assert len(core.p.resolver) == 0
    sent = net.learn_requests(src=1)
    assert len(sent) == 4 and {s.dst for s in sent} == {ip(2)}
    assert [s for s in net.seen if s.delivery.pkt.get("eth_dst") == ghost] == []

    net.send(1, 1, eth(MAC_A, ghost))
    assert core.counters["drop_negative_cached"] == 1
    assert len(net.learn_requests(src=1)) == 4

    net.advance(2.5)
    net.send(1, 1, eth(MAC_A, ghost))
    assert len(net.learn_requests(src=1)) == 5


def test_idle_learned_flow_is_forgotten() -> None:
    net = three_hosts()
    h1 = net.hosts[1]
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    assert net.send(1, 1, eth(MAC_A, MAC_B))
    assert len(net.packet_ins) == 1

    removed = h1.switch.expire(purpose_is(Purpose.LEARNED))
    assert len(removed) == 1
    entry = h1.core.p.learned.get(5001, MAC_B)
    assert entry is not None
    age = net.now - entry.learned_at  # the flow was installed when the entry was learned
    for flow in removed:
        net.apply(h1, h1.core.flow_removed(net.now, flow.cookie, dict(flow.match), True, age))

    assert h1.core.p.learned.get(5001, MAC_B) is None
    assert not any(map(purpose_is(Purpose.ARP_LEARNED), h1.switch.flows()))
    assert net.send(1, 1, eth(MAC_A, MAC_B)) == []
    assert len(net.packet_ins) == 2
    assert len(net.learn_requests(src=1)) == 2


def test_removal_echoes_do_not_forget() -> None:
    """Our own deletes (resync) come back as FLOW_REMOVED; so does the idle timeout of
    a flow that was replaced since: neither says anything about the entry we hold."""
    net = three_hosts()
    h1 = net.hosts[1]
    net.send(1, 1, eth(MAC_A, MAC_B))
    net.deliver()
    flow = next(f for f in h1.switch.flows() if purpose_is(Purpose.LEARNED)(f))
    deleted = h1.core.flow_removed(net.now, flow.cookie, dict(flow.match), False, 1.0)
    assert deleted.ofmsgs == [] and h1.core.p.learned.get(5001, MAC_B) is not None
    older_flow = h1.core.flow_removed(net.now + 10, flow.cookie, dict(flow.match), True, 300.0)
    assert older_flow.ofmsgs == [] and h1.core.p.learned.get(5001, MAC_B) is not None


def test_a_local_vm_wins_over_what_was_learned_about_it() -> None:
    """b arrives on host 1 (say, migrated) while host 1 still has b learned at host 2."""
    net = three_hosts()
    h1 = net.hosts[1]
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    assert h1.core.p.learned.get(5001, MAC_B) is not None
    ports = [*h1.core.p.ports.by_name.values(), vm("b-here", 9, 5001, MAC_B, "192.168.1.2")]
    net.apply(h1, h1.core.ports_changed(net.now, ports))
    assert h1.core.p.learned.get(5001, MAC_B) is None
    assert not any(map(purpose_is(Purpose.LEARNED, 5001), h1.switch.flows()))
    assert local(net.send(1, 1, eth(MAC_A, MAC_B))) == [(1, 9)]
    arp = net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    assert local(arp) == [(1, 1)] and arp[0].delivery.pkt["arp_sha"] == MAC_B


# -------------------------------------------------------------------- port removal


def test_port_removal_deletes_its_flows_and_last_port_takes_the_instance() -> None:
    net = three_hosts()
    h1, h2 = net.hosts[1], net.hosts[2]
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    a, a2, x = (h1.core.p.ports.by_name[n] for n in ("a", "a2", "x"))

    net.apply(h1, h1.core.ports_changed(net.now, [a, x]))
    net.deliver()

    port_purposes = (Purpose.LOCAL_PORT, Purpose.LOCAL_ENDPOINT, Purpose.ARP_LOCAL)

    def tagged(instance: int, tag: int) -> list[Flow]:
        """The flows made for the VM port ``tag`` of ``instance``."""
        return [
            f
            for f in h1.switch.flows()
            if (c := cookies.decode(f.cookie))
            and c.purpose in (*port_purposes, Purpose.DROP_SPOOF)
            and (c.instance, c.tag) == (instance, tag)
        ]

    assert tagged(5001, 2) == []
    assert Output(2) not in {act for b in h1.switch.groups[5001] for act in b}
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(2, 1)]
    assert local(net.send(2, 1, eth(MAC_B, MAC_A2))) == []
    assert {cookies.decode(f.cookie).purpose for f in tagged(5001, 1)} >= set(port_purposes)  # type: ignore[union-attr]

    net.apply(h1, h1.core.ports_changed(net.now, [x]))
    net.deliver()

    assert 5001 not in h1.switch.groups
    # For a while (the VMs just left) members' packets still come in, to egress_check
    # only, so the agent can forward them and tell the senders to un-learn.
    lingering = [
        f for f in h1.switch.flows() if (c := cookies.decode(f.cookie)) and c.instance == 5001
    ]
    assert lingering and {(f.table_id, f.goto_table) for f in lingering} == {(0, 60)}
    net.advance(61)
    assert [
        f for f in h1.switch.flows() if (c := cookies.decode(f.cookie)) and c.instance == 5001
    ] == []
    assert 5002 in h1.switch.groups
    # Host 2 heard that host 1 left 5001: no member flow, no flood bucket towards it.
    assert not h2.core.p.members.serves(5001, ip(1))
    buckets = h2.switch.groups[5001]
    assert SetField("tun_ipv4_dst", str(ip(1))) not in {a for b in buckets for a in b}
    assert SetField("tun_ipv4_dst", str(ip(1))) in {
        a for b in net.hosts[3].switch.groups[5002] for a in b
    }  # host 1 still serves 5002
    assert net.send(2, 1, eth(MAC_B, BROADCAST)) == []


def test_reconnect_resync_keeps_flooding() -> None:
    """The switch kept its tables over a controller reconnect; the resync must not
    leave it without groups (or fail to add them)."""
    net = three_hosts()
    h1 = net.hosts[1]

    net.apply(h1, h1.core.switch_connected(net.now, TUN, h1.switch.found()))

    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(1, 2), (2, 1)]


def test_a_vm_back_in_its_instance_while_the_switch_was_away_keeps_its_instance() -> None:
    """The instance's VMs left (it lingers), then one came back while the controller
    connection was down: after the resync the instance is served as before, and is
    not deleted when its (cancelled) lingering would have ended."""
    net = three_hosts(departure_memory="5")
    h1 = net.hosts[1]
    ports = list(h1.core.p.ports.by_name.values())
    net.apply(h1, h1.core.ports_changed(net.now, [p for p in ports if p.instance != 5001]))
    h1.core.switch_disconnected()
    net.apply(h1, h1.core.ports_changed(net.now, ports))
    net.apply(h1, h1.core.switch_connected(net.now, TUN, h1.switch.found()))
    net.deliver()

    net.advance(6.0)  # past departure_memory

    assert 5001 in h1.core.p.ports.instances
    assert local(net.send(2, 1, eth(MAC_B, BROADCAST))) == [(1, 1), (1, 2)]


# -------------------------------------------------------------------------- config


GOOD = {"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX}


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"auth_key": KEY_HEX}, "underlay_ip"),
        ({**GOOD, "underlay_ip": " "}, "underlay_ip"),
        ({**GOOD, "underlay_ip": "10.99.0.300"}, "underlay_ip"),
        ({**GOOD, "auth_key": "not-hex"}, "auth_key"),
        ({**GOOD, "auth_key": "abcd"}, "auth_key"),
        ({**GOOD, "learn_timeout": "soon"}, "learn_timeout"),
        ({**GOOD, "learn_retries": "-1"}, "learn_retries"),
        ({**GOOD, "max_learned_per_instance": "1.5"}, "max_learned_per_instance"),
        ({**GOOD, "control_port": "70000"}, "control_port"),
        ({**GOOD, "peers": "10.99.0.2,x"}, "peers"),
        ({**GOOD, "bogus_setting": "1"}, "bogus_setting"),
    ],
)
def test_config_errors_name_the_setting(values: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{setting}\b"):
        from_mapping(values)


def test_config_accepts_a_good_mapping_and_drops_itself_from_peers() -> None:
    cfg = from_mapping(
        {"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX, "peers": "10.99.0.1, 10.99.0.2"}
    )
    assert cfg.host.peers == (ip(2),) and cfg.host.auth_key == KEY


def test_an_older_announcement_arriving_late_does_not_undo_a_newer_one() -> None:
    net = three_hosts()
    core = net.hosts[1].core
    t = time.time_ns() // 1000
    newer = encode(
        Announce(frozenset({5001})), sender=ip(2), counter=t + 10, key=KEY, receiver=ip(1)
    )
    older = encode(Announce(frozenset()), sender=ip(2), counter=t + 5, key=KEY, receiver=ip(1))
    core.control_message(net.now, newer, ip(2))
    core.control_message(net.now, older, ip(2))
    assert core.p.members.serves(5001, ip(2))
    assert core.counters["announce_stale"] == 1


def test_a_miss_for_a_learned_target_puts_back_one_flow_then_only_forwards() -> None:
    """The flow raced an idle timeout: the first miss reinstalls the forwarding flow; the
    packets already in flight behind it go straight into the tunnel, no flow-mod each."""
    net = three_hosts()
    h1 = net.hosts[1]
    net.send(1, 1, arp_request(MAC_A, "192.168.1.1", "192.168.1.2"))
    net.deliver()
    cookie = Cookie(Purpose.INSTANCE, 5001, 2).value  # the instance's l2-miss flow
    frame = pkt_to_bytes(eth(MAC_A, MAC_B))
    first = h1.core.packet_in(net.now, PacketIn(cookie, 1, frame))
    kinds = [type(m).__name__ for m in first.ofmsgs]
    assert kinds.count("FlowMod") == 1 and kinds.count("PacketOut") == 1
    second = h1.core.packet_in(net.now + 0.01, PacketIn(cookie, 1, frame))
    assert [type(m).__name__ for m in second.ofmsgs] == ["PacketOut"]
    actions = second.ofmsgs[0].actions  # type: ignore[union-attr]
    assert SetField("tun_ipv4_dst", str(ip(2))) in actions and Output(TUN) in actions
    later = h1.core.packet_in(net.now + 5, PacketIn(cookie, 1, frame))
    assert [type(m).__name__ for m in later.ofmsgs].count("FlowMod") == 1


def test_a_miss_before_any_member_is_known_is_held_until_one_announces() -> None:
    cfg = from_mapping(
        {"underlay_ip": str(ip(1)), "auth_key": KEY_HEX, "peers": f"{ip(2)}", "host_name": "h1"}
    )
    core = HostCore(cfg, T0)
    core.switch_connected(T0, TUN)
    core.ports_changed(T0, [vm("a", 1, 5001, MAC_A, "192.168.1.1")])
    cookie = Cookie(Purpose.INSTANCE, 5001, 2).value
    held = core.packet_in(T0, PacketIn(cookie, 1, pkt_to_bytes(eth(MAC_A, MAC_B))))
    assert held.datagrams == [] and len(core.p.resolver) == 1
    announce = encode(
        Announce(frozenset({5001})),
        sender=ip(2),
        receiver=ip(1),
        counter=time.time_ns() // 1000,
        key=KEY,
    )
    out = core.control_message(T0 + 0.05, announce, ip(2))
    asked = [decode(d.payload, key=KEY).message for d in out.datagrams if d.dst == str(ip(2))]
    assert any(isinstance(m, LearnRequest) and m.mac == MAC_B for m in asked)
