"""DHCP answered on the host (docs/routing.md), against fake switches: a VM port with
an address has its DHCP requests answered by its own host's agent, out of its own
port, and they never reach the flood group or the tunnel; a port without an address
gets nothing from the agent (its DHCP is plain layer 2).  Also the settings and the
``dove-ips`` prefix the answer is made of."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from dove_ryu.adapters import metrics
from dove_ryu.adapters.ovsdb import EXT_INSTANCE, EXT_IPS, EXT_MAC, parse_vm_port
from dove_ryu.agent.dhcp import SERVER_ID, SERVER_MAC
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import Subnet, router_mac
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.dhcp_packet import (
    CLIENT_PORT,
    IPPROTO_UDP,
    SERVER_PORT,
    MessageType,
    Option,
    ServerMessage,
    build_client,
    parse_server,
)
from dove_ryu.openflow.packet import ETH_TYPE_IPV4
from tests.fakeswitch import pkt_to_bytes
from tests.unit.test_core import KEY_HEX, Net, Seen, local, purpose_is, tunnelled, vm

pytestmark = pytest.mark.unit

MAC_A = "02:00:00:00:01:01"  # 10.0.1.5, on host 1
MAC_N = "02:00:00:00:01:02"  # no address, on host 1
MAC_B = "02:00:00:00:01:03"  # 10.0.1.6, on host 2
A = IPv4Address("10.0.1.5")


def net(**settings: str) -> Net:
    return Net(
        {
            1: [vm("a", 1, 5001, MAC_A, "10.0.1.5"), vm("n", 2, 5001, MAC_N)],
            2: [vm("b", 1, 5001, MAC_B, "10.0.1.6")],
        },
        **settings,
    )


def dhcp(frame: bytes) -> dict[str, Any]:
    """A client's frame as the fake switch sees a packet."""
    return {
        "eth_dst": "ff:ff:ff:ff:ff:ff",
        "eth_src": frame[6:12].hex(":"),
        "eth_type": ETH_TYPE_IPV4,
        "ip_proto": IPPROTO_UDP,
        "udp_src": CLIENT_PORT,
        "udp_dst": SERVER_PORT,
        "payload": frame[14:],
    }


def answers(seen: list[Seen]) -> list[ServerMessage]:
    return [parse_server(pkt_to_bytes(s.delivery.pkt)) for s in seen]


def counters(n: Net, host: int = 1) -> dict[str, int]:
    return dict(n.hosts[host].core.p.stats.counters)


def test_discover_and_request_are_answered_out_of_the_vms_port_only() -> None:
    n = net()
    before = len(n.packet_ins)

    offered = n.send(1, 1, dhcp(build_client(MAC_A, MessageType.DISCOVER, 41)))

    assert len(n.packet_ins) == before + 1  # the request reached the agent
    punt = n.packet_ins[-1][1]
    assert cookies.decode(punt.cookie or 0) == cookies.Cookie(Purpose.DHCP, 5001, 1)
    assert tunnelled(offered) == [] and local(offered) == [(1, 1)]  # no flood, no tunnel
    (offer,) = answers(offered)
    assert (offer.msg_type, offer.xid, offer.yiaddr) == (MessageType.OFFER, 41, A)
    assert (offer.eth_src, offer.eth_dst) == (SERVER_MAC, MAC_A)
    assert offer.address(Option.SERVER_ID) == SERVER_ID
    assert offer.address(Option.SUBNET_MASK) == IPv4Address("255.255.255.0")  # no prefix: /24
    assert Option.ROUTER not in offer.options
    assert struct.unpack("!H", offer.options[Option.INTERFACE_MTU]) == (1450,)

    request = build_client(MAC_A, MessageType.REQUEST, 41, requested_ip=A, server_id=SERVER_ID)
    acked = n.send(1, 1, dhcp(request))

    (ack,) = answers(acked)
    assert tunnelled(acked) == [] and local(acked) == [(1, 1)]
    assert (ack.msg_type, ack.yiaddr) == (MessageType.ACK, A)
    assert struct.unpack("!I", ack.options[Option.LEASE_TIME]) == (86400,)
    assert counters(n)["dhcp_offers"] == 1 and counters(n)["dhcp_acks"] == 1
    assert n.hosts[1].core.p.stats.packet_ins["dhcp"] == 2
    assert counters(n, 2).get("dhcp_offers", 0) == 0  # nothing reached another host


def test_a_request_for_another_address_is_naked_and_one_for_another_server_ignored() -> None:
    n = net()
    wrong = build_client(MAC_A, MessageType.REQUEST, requested_ip=IPv4Address("10.0.1.6"))

    (nak,) = answers(n.send(1, 1, dhcp(wrong)))

    assert nak.msg_type is MessageType.NAK and nak.eth_dst == "ff:ff:ff:ff:ff:ff"
    elsewhere = build_client(
        MAC_A, MessageType.REQUEST, requested_ip=A, server_id=IPv4Address("10.0.1.254")
    )
    assert n.send(1, 1, dhcp(elsewhere)) == []  # it chose another server: silence
    renew = build_client(MAC_A, MessageType.REQUEST, ciaddr=A, src_ip=A)
    (ack,) = answers(n.send(1, 1, dhcp(renew)))
    assert ack.msg_type is MessageType.ACK and ack.ip_dst == A
    assert n.send(1, 1, dhcp(build_client(MAC_A, MessageType.RELEASE, ciaddr=A))) == []
    c = counters(n)
    assert (c["dhcp_naks"], c["dhcp_other_server"], c["dhcp_acks"], c["dhcp_releases"]) == (
        1,
        1,
        1,
        1,
    )


def test_a_port_without_an_address_gets_no_dhcp_flow_and_its_dhcp_is_layer_2() -> None:
    n = net()
    h1 = n.hosts[1]
    dhcp_flows = [f for f in h1.switch.flows() if purpose_is(Purpose.DHCP)(f)]
    assert [f.match["in_port"] for f in dhcp_flows] == [1]
    before = len(n.packet_ins)

    flooded = n.send(1, 2, dhcp(build_client(MAC_N, MessageType.DISCOVER)))

    assert len(n.packet_ins) == before  # the agent never saw it
    assert (1, 1) in local(flooded)  # the instance's other VM port, through the flood group
    assert [s.delivery.tunnel_id for s in tunnelled(flooded)] == [5001]  # and host 2
    assert counters(n).get("dhcp_offers", 0) == 0


def test_a_vm_cannot_ask_for_another_vms_lease_nor_crash_the_agent() -> None:
    n = net()
    forged = build_client(MAC_B, MessageType.DISCOVER)  # chaddr of b, from a's MAC
    frame = bytes.fromhex(MAC_A.replace(":", "")).join((forged[:6], forged[12:]))
    assert n.send(1, 1, dhcp(frame)) == []
    truncated = build_client(MAC_A, MessageType.DISCOVER)[:200]
    assert n.send(1, 1, dhcp(truncated)) == []
    c = counters(n)
    assert (c["drop_dhcp_foreign"], c["drop_dhcp_malformed"]) == (1, 1)
    assert c.get("dhcp_offers", 0) == 0


def test_a_routed_instance_is_told_its_subnet_and_router() -> None:
    n = net()
    gateway = IPv4Interface("10.0.1.1/26")
    n.hosts[1].core.p.dhcp.subnet_of = lambda i: Subnet(i, gateway) if i == 5001 else None

    (offer,) = answers(n.send(1, 1, dhcp(build_client(MAC_A, MessageType.DISCOVER))))

    assert offer.eth_src == router_mac(5001)
    assert offer.ip_src == gateway.ip
    assert offer.address(Option.ROUTER) == gateway.ip
    assert offer.address(Option.SERVER_ID) == gateway.ip
    assert offer.address(Option.SUBNET_MASK) == IPv4Address("255.255.255.192")


def test_the_dhcp_settings_and_the_prefix_of_the_mark_reach_the_answer() -> None:
    n = net(dhcp_dns="192.0.2.53, 192.0.2.54", dhcp_mtu="1400", dhcp_lease_time="600")
    port = parse_vm_port("a", 1, {EXT_INSTANCE: "5001", EXT_MAC: MAC_A, EXT_IPS: "10.0.1.5/20"})
    assert port.prefixlen == 20 and port.ips == (A,)
    n.apply(n.hosts[1], n.hosts[1].core.ports_changed(n.now, [port]))

    (offer,) = answers(n.send(1, 1, dhcp(build_client(MAC_A, MessageType.DISCOVER))))

    assert offer.address(Option.SUBNET_MASK) == IPv4Address("255.255.240.0")
    assert offer.options[Option.DNS] == IPv4Address("192.0.2.53").packed + bytes([192, 0, 2, 54])
    assert struct.unpack("!H", offer.options[Option.INTERFACE_MTU]) == (1400,)
    assert struct.unpack("!I", offer.options[Option.LEASE_TIME]) == (600,)


def test_a_port_removed_takes_its_dhcp_flow_along() -> None:
    n = net()
    h1 = n.hosts[1]
    n.apply(h1, h1.core.ports_changed(n.now, [vm("n", 2, 5001, MAC_N)]))
    assert not [f for f in h1.switch.flows() if purpose_is(Purpose.DHCP)(f)]


def test_prefixes_in_the_mark() -> None:
    marks = {EXT_INSTANCE: "5001", EXT_MAC: MAC_A}
    assert parse_vm_port("a", 1, {**marks, EXT_IPS: "10.0.1.5"}).prefixlen is None
    assert parse_vm_port("a", 1, {**marks, EXT_IPS: "10.0.1.5/32,10.0.2.5/24"}).prefixlen == 32
    for bad in ("10.0.1.5/33", "10.0.1.5/x"):
        with pytest.raises(ValueError, match=EXT_IPS):
            parse_vm_port("a", 1, {**marks, EXT_IPS: bad})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("dhcp_dns", "192.0.2.300"),
        ("dhcp_mtu", "67"),
        ("dhcp_mtu", "9001"),
        ("dhcp_lease_time", "0"),
        ("dhcp_lease_time", "59"),
        ("dhcp_lease_time", "4294967295"),
    ],
)
def test_bad_dhcp_settings_are_refused_by_name(name: str, text: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_mapping({"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX, name: text})


def test_dhcp_settings_default() -> None:
    cfg = from_mapping({"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX})
    assert (cfg.dhcp.dhcp_dns, cfg.dhcp.dhcp_mtu, cfg.dhcp.dhcp_lease_time) == ((), 1450, 86400)


def test_the_dhcp_counters_show_in_prometheus() -> None:
    n = net()
    n.send(1, 1, dhcp(build_client(MAC_A, MessageType.DISCOVER)))
    n.send(1, 1, dhcp(build_client(MAC_A, MessageType.REQUEST, requested_ip=A)))
    n.send(1, 1, dhcp(build_client(MAC_A, MessageType.DISCOVER)[:100]))

    text = metrics.render(metrics.snapshot(n.hosts[1].core, {}))

    assert 'dove_events_total{event="dhcp_offers"} 1.0' in text
    assert 'dove_events_total{event="dhcp_acks"} 1.0' in text
    assert 'dove_drops_total{reason="dhcp_malformed"} 1.0' in text
    assert 'dove_packet_ins_total{reason="dhcp"} 3.0' in text
