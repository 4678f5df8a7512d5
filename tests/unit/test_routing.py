"""A host's distributed router on fake switches (docs/routing.md, "The host"): where a
routed packet goes, with which MACs and TTL, what reaches the agent and what not."""

from __future__ import annotations

import struct
import time
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from dove_ryu.model import Router, Subnet, router_mac
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.packet import ARP_REPLY, ETH_TYPE_IPV4
from dove_ryu.protocol.auth import compute_mac
from dove_ryu.protocol.header import FLAG_EXTENSIONS, FLAG_INSTANCE, DoveHeader, Tlv, pack_frame
from dove_ryu.protocol.messages import LearnRequest, MsgType, Requester, TlvType
from tests.unit.test_core import (
    KEY,
    TUN,
    Net,
    Seen,
    arp_request,
    ip,
    purpose_is,
    signed_frame,
    vm,
)

pytestmark = pytest.mark.unit

T1_NET0, T1_NET1 = 5001, 5101  # tenant 1's two subnets
T2_NET0, T2_NET1 = 5002, 5102  # tenant 2: the same address plan
MAC_A, MAC_C, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0c", "02:00:00:00:00:0b"
MAC_X = "02:00:00:00:00:1a"
GW0, GW1 = "10.0.0.254", "10.0.1.254"


def _router(router_id: int, net0: int, net1: int) -> Router:
    return Router(
        router_id,
        (Subnet(net0, IPv4Interface(f"{GW0}/24")), Subnet(net1, IPv4Interface(f"{GW1}/24"))),
    )


ROUTERS = [_router(1, T1_NET0, T1_NET1), _router(2, T2_NET0, T2_NET1)]


def ipv4(src: str, dst: str, eth_src: str, eth_dst: str, ttl: int = 64) -> dict[str, Any]:
    """An ICMP echo, as the bytes a VM sends (the fake switch shows its IPv4 fields)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0,
        ttl,
        1,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    return {
        "eth_src": eth_src,
        "eth_dst": eth_dst,
        "eth_type": ETH_TYPE_IPV4,
        "payload": header + icmp,
    }


def ttl_of(seen: Seen) -> int:
    return int(seen.delivery.pkt["payload"][8])


@pytest.fixture
def net() -> Net:
    """Host 1: a (tenant 1, subnet 0) and c (tenant 1, subnet 1); host 2: b (tenant 1,
    subnet 1) and x (tenant 2, subnet 0, a's address)."""
    net = Net(
        {
            1: [
                vm("a", 1, T1_NET0, MAC_A, "10.0.0.1"),
                vm("c", 2, T1_NET1, MAC_C, "10.0.1.3"),
            ],
            2: [
                vm("b", 1, T1_NET1, MAC_B, "10.0.1.2"),
                vm("x", 2, T2_NET0, MAC_X, "10.0.0.1"),
            ],
            3: [],
        }
    )
    for host in net.hosts.values():
        net.apply(host, host.core.routers_changed(net.now, ROUTERS, []))
    net.deliver()
    return net


def test_arp_for_the_gateway_is_answered_on_the_host_with_the_gateway_mac(net: Net) -> None:
    (reply,) = net.send(1, 1, arp_request(MAC_A, "10.0.0.1", GW0))
    assert reply.port == 1 and reply.host == 1
    assert reply.delivery.pkt["arp_op"] == ARP_REPLY
    assert reply.delivery.pkt["arp_sha"] == router_mac(T1_NET0)
    assert net.packet_ins == []


def test_a_routed_packet_leaves_on_the_tunnel_in_the_destination_instance_first_one_too(
    net: Net,
) -> None:
    ping = ipv4("10.0.0.1", "10.0.1.2", MAC_A, router_mac(T1_NET0))
    first = net.send(1, 1, ping) + net.deliver()
    # The LEARN for the destination names a as its requester, in a's own instance.
    (learn, *_) = [s for s in net.learn_requests(1) if isinstance(s.message, LearnRequest)]
    assert learn.message.instance == T1_NET1
    who = learn.message.requester
    assert who is not None and (who.mac, who.ips, who.instance) == (
        MAC_A,
        (IPv4Address("10.0.0.1"),),
        T1_NET0,
    )
    at_b = [s for s in first if s.host == 2 and s.port == 1]
    assert len(at_b) == 1, first  # held, then released: the first packet is not lost
    pkt = at_b[0].delivery.pkt
    assert (pkt["eth_src"], pkt["eth_dst"]) == (router_mac(T1_NET1), MAC_B)
    assert ttl_of(at_b[0]) == 63
    # Steady state: straight through, no packet-in, in b's instance to b's host.
    before = len(net.packet_ins)
    again = net.send(1, 1, ping)
    tunnel = [s for s in again if s.host == 1 and s.port == TUN]
    assert [(s.delivery.tunnel_id, s.delivery.tun_dst) for s in tunnel] == [(T1_NET1, str(ip(2)))]
    assert ttl_of(tunnel[0]) == 63
    assert [s for s in again if s.host == 2 and s.port == 1]
    assert len(net.packet_ins) == before
    # The answer comes back the same way, routed on b's host.
    back = net.send(2, 1, ipv4("10.0.1.2", "10.0.0.1", MAC_B, router_mac(T1_NET1))) + net.deliver()
    at_a = [s for s in back if s.host == 1 and s.port == 1]
    assert len(at_a) == 1 and at_a[0].delivery.pkt["eth_src"] == router_mac(T1_NET0)


def test_between_subnets_on_the_same_host_no_agent_and_no_tunnel(net: Net) -> None:
    seen = net.send(1, 1, ipv4("10.0.0.1", "10.0.1.3", MAC_A, router_mac(T1_NET0)))
    assert [(s.host, s.port) for s in seen] == [(1, 2)]
    assert seen[0].delivery.pkt["eth_dst"] == MAC_C and ttl_of(seen[0]) == 63
    assert net.packet_ins == []


def test_ttl_expiring_is_dropped_counted_and_answered_from_the_gateway(net: Net) -> None:
    seen = net.send(1, 1, ipv4("10.0.0.1", "10.0.1.3", MAC_A, router_mac(T1_NET0), ttl=1))
    assert net.hosts[1].core.counters["ttl_expired"] == 1
    assert [(s.host, s.port) for s in seen] == [(1, 1)]  # only the answer, back to a
    answer = seen[0].delivery.pkt
    assert answer["eth_src"] == router_mac(T1_NET0) and answer["eth_dst"] == MAC_A
    payload = answer["payload"]
    assert IPv4Address(payload[12:16]) == IPv4Address(GW0) and payload[20] == 11


def test_tenants_with_identical_plans_stay_apart(net: Net) -> None:
    """x (tenant 2) has a's address and sends to b's: routed in tenant 2's router,
    where nobody has it; b never sees it and tenant 1's hosts are never asked."""
    seen = net.send(2, 2, ipv4("10.0.0.1", "10.0.1.2", MAC_X, router_mac(T2_NET0))) + net.deliver()
    assert [s for s in seen if s.port != TUN] == []
    asked = {s.message.instance for s in net.learn_requests(2)}
    assert net.hosts[2].core.counters["route_misses"] == 1 and asked <= {T2_NET1}
    # And tenant 1's routed traffic never shows on x's port.
    seen = net.send(1, 1, ipv4("10.0.0.1", "10.0.1.2", MAC_A, router_mac(T1_NET0))) + net.deliver()
    assert not [s for s in seen if s.host == 2 and s.port == 2]
    # x cannot use tenant 1's gateway MAC either: it is not its subnet's router port.
    seen = net.send(2, 2, ipv4("10.0.0.1", "10.0.1.2", MAC_X, router_mac(T1_NET0))) + net.deliver()
    assert not [s for s in seen if s.port == 1]


def test_a_vm_spoofing_the_gateway_is_dropped(net: Net) -> None:
    drops = net.hosts[1].switch.hits(purpose_is(Purpose.DROP_SPOOF))
    claim = arp_request(MAC_A, GW0, "10.0.0.9")
    assert net.send(1, 1, claim) == []
    from_gw_mac = ipv4("10.0.0.1", "10.0.1.3", router_mac(T1_NET0), router_mac(T1_NET0))
    assert net.send(1, 1, from_gw_mac) == []
    from_gw_ip = ipv4(GW0, "10.0.1.3", MAC_A, router_mac(T1_NET0))
    assert net.send(1, 1, from_gw_ip) == []
    assert net.hosts[1].switch.hits(purpose_is(Purpose.DROP_SPOOF)) >= drops + 2
    assert net.packet_ins == []


def test_an_unrouted_instance_gets_no_routing_flow_and_routers_going_remove_them() -> None:
    net = Net({1: [vm("a", 1, T1_NET0, MAC_A, "10.0.0.1")], 2: []})
    routing = (Purpose.ROUTER_PORT, Purpose.ROUTE, Purpose.ROUTE_TTL, Purpose.NEIGHBOR)
    count = lambda: sum(  # noqa: E731
        len([f for f in net.hosts[1].switch.flows() if purpose_is(p)(f)]) for p in routing
    )
    assert count() == 0
    net.apply(net.hosts[1], net.hosts[1].core.routers_changed(net.now, ROUTERS, []))
    assert count() > 0
    net.apply(net.hosts[1], net.hosts[1].core.routers_changed(net.now, [], []))
    assert count() == 0


def test_a_gateway_and_the_routers_other_members_are_accepted_from_the_tunnel(net: Net) -> None:
    gateway = IPv4Address("10.99.0.200")
    host2 = net.hosts[2]
    net.apply(host2, host2.core.routers_changed(net.now, ROUTERS, [gateway]))
    accepted = {
        (f.match["tunnel_id"], f.match["tun_ipv4_src"])
        for f in host2.switch.flows(0)
        if purpose_is(Purpose.MEMBER)(f)
    }
    # Host 1 serves T1_NET0 and T1_NET1 (b's); host 2 accepts host 1 in both, and the
    # gateway in every routed instance it serves; tenant 2's subnet accepts no one of
    # tenant 1.
    assert (T1_NET1, str(ip(1))) in accepted
    assert (T1_NET1, str(gateway)) in accepted and (T2_NET0, str(gateway)) in accepted
    assert (T2_NET0, str(ip(1))) not in accepted


def test_a_first_routed_ping_costs_one_learn_and_the_reply_no_packet_in(net: Net) -> None:
    """b's host answers the LEARN for b and gleans a (the requester) into a's subnet,
    with its neighbor flow: b's reply is routed back without asking anyone."""
    net.send(1, 1, ipv4("10.0.0.1", "10.0.1.2", MAC_A, router_mac(T1_NET0)))
    net.deliver()
    learned = net.hosts[2].core.p.learned.get(T1_NET0, MAC_A)
    assert learned is not None and learned.endpoint.host == ip(1)
    assert net.hosts[2].core.counters["learned_from_request"] == 1
    assert any(
        f.match.get("ipv4_dst") == "10.0.0.1"
        for f in net.hosts[2].switch.flows()
        if purpose_is(Purpose.NEIGHBOR, T1_NET0)(f)
    )
    before = len(net.packet_ins)
    back = net.send(2, 1, ipv4("10.0.1.2", "10.0.0.1", MAC_B, router_mac(T1_NET1))) + net.deliver()
    at_a = [s for s in back if s.host == 1 and s.port == 1]
    assert len(at_a) == 1 and at_a[0].delivery.pkt["eth_src"] == router_mac(T1_NET0)
    assert len(net.packet_ins) == before  # none on b's host (nor on a's)
    sent = [h.core.counters.get("learn_requests_sent", 0) for h in net.hosts.values()]
    assert sum(sent) == 1, sent
    # a's host knows b's host learned a from the request (it is told if a moves).
    assert ip(2) in net.hosts[1].core.p.mobility.learners_of((T1_NET0, MAC_A))


@pytest.mark.parametrize(
    ("sender", "instance", "why"),
    [
        (1, T2_NET0, "drop_glean_not_routed"),  # another tenant's router (host 2 routes it)
        (1, 7777, "drop_glean_not_routed"),  # no router's subnet at all
        (3, T1_NET0, "drop_glean_nonmember"),  # a sibling, but host 3 does not serve it
    ],
)
def test_a_routed_requester_is_gleaned_only_into_a_sibling_from_its_member(
    net: Net, sender: int, instance: int, why: str
) -> None:
    core = net.hosts[2].core
    who = Requester("02:00:00:00:00:99", (IPv4Address("10.0.0.9"),), 1, instance)
    forged = LearnRequest(T1_NET1, 77, ip=IPv4Address("10.0.1.2"), requester=who)
    out = core.control_message(
        net.now, signed_frame(forged, ip(sender), receiver=ip(2)), ip(sender)
    )
    assert len(out.datagrams) == 1  # b is answered for all the same
    assert core.counters[why] == 1
    assert core.p.learned.get(instance, who.mac) is None
    assert core.p.learned.get(T1_NET1, who.mac) is None
    assert core.counters.get("learned_from_request", 0) == 0


def test_a_malformed_routed_requester_is_a_counted_drop(net: Net) -> None:
    core = net.hosts[2].core
    header = DoveHeader(
        flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=MsgType.LEARN_REQUEST, instance_id=T1_NET1
    )
    tlvs = [
        Tlv(TlvType.SENDER, ip(1).packed),
        Tlv(TlvType.COUNTER, struct.pack("!Q", time.time_ns() // 1000)),
        Tlv(TlvType.RECEIVER, ip(2).packed),
        Tlv(TlvType.REQUEST_ID, bytes(4)),
        Tlv(TlvType.IPV4, IPv4Address("10.0.1.2").packed),
        Tlv(TlvType.ROUTED_REQUESTER, bytes.fromhex("0013ed 02000000000a 00")),  # short
        Tlv(TlvType.AUTH, bytes(16)),
    ]
    frame = pack_frame(header, tlvs)
    frame = frame[:-16] + compute_mac(KEY, frame[:-19])
    before = core.counters.get("drop_control_bad_tlv_value", 0)
    out = core.control_message(net.now, frame, ip(1))
    assert out.datagrams == [] and out.ofmsgs == []
    assert core.counters["drop_control_bad_tlv_value"] == before + 1
