"""IPv6 at layer 2 (issue 13, point 3): the marks, the protocol's IPv6 TLVs, the
Neighbor Discovery responder and IPv6 port security, on the fake switch."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from dove_ryu.adapters.ovsdb import parse_vm_port
from dove_ryu.model import Endpoint, VmPort, link_local
from dove_ryu.openflow import flows
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.nd_flows import NA_SOLICITED_OVERRIDE, NO_LLADDR, TAG_ND_MISS
from dove_ryu.openflow.ofmsg import GroupCommand
from dove_ryu.openflow.packet import (
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_ROUTER_ADVERT,
    build_nd,
    multicast_mac,
    parse,
    solicited_node,
)
from dove_ryu.protocol.messages import (
    EndpointHere,
    LearnReply,
    LearnRequest,
    Requester,
    TlvType,
    decode,
    encode,
)
from tests.fakeswitch import FakeSwitch

pytestmark = pytest.mark.unit

KEY = bytes(range(16))
TUNNEL = 1
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
A6, B6 = IPv6Address("fd00::1"), IPv6Address("fd00::2")
PORT_A = VmPort("a-p", 2, 5001, MAC_A, (IPv4Address("10.0.0.1"),), 24, (A6,))
REMOTE_B = Endpoint(5001, MAC_B, (), IPv4Address("10.99.0.2"), 5, (B6,))


# ------------------------------------------------------------------ marks


def test_dove_ips_takes_ipv6_addresses_next_to_ipv4_ones() -> None:
    marks = {"dove-instance": "5001", "attached-mac": MAC_A, "dove-ips": "fd00::1/64,10.0.0.1/24"}
    port = parse_vm_port("a-p", 2, marks)
    assert port.ips == (IPv4Address("10.0.0.1"),) and port.prefixlen == 24
    assert port.ips6 == (A6,) and not port.ipv6_router
    assert port.sources6 == (A6, link_local(MAC_A))
    only6 = parse_vm_port("a-p", 2, {**marks, "dove-ips": "fd00::1"})
    assert only6.ips == () and only6.prefixlen is None and only6.addressed


@pytest.mark.parametrize("bad", ["ff02::1", "::", "fd00::1,fd00::1", "fd00::zz"])
def test_an_ipv6_address_no_vm_can_own_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="dove-ips"):
        parse_vm_port("a-p", 2, {"dove-instance": "5001", "attached-mac": MAC_A, "dove-ips": bad})


def test_the_router_mark() -> None:
    marks = {"dove-instance": "5001", "attached-mac": MAC_A, "dove-ipv6-router": "true"}
    assert parse_vm_port("a-p", 2, marks).ipv6_router
    with pytest.raises(ValueError, match="dove-ipv6-router"):
        parse_vm_port("a-p", 2, {**marks, "dove-ipv6-router": "yes"})


def test_link_local_is_the_modified_eui64_of_the_mac() -> None:
    assert link_local("52:54:00:12:34:56") == IPv6Address("fe80::5054:ff:fe12:3456")


# ------------------------------------------------------------------ protocol


def _round_trip(message: Any) -> Any:
    return decode(encode(message, sender=IPv4Address("10.99.0.1"), counter=1, key=KEY), key=KEY)


def test_ipv6_travels_in_its_own_tlvs() -> None:
    who = Requester(MAC_A, (IPv4Address("10.0.0.1"),), 3, ips6=(A6, link_local(MAC_A)))
    request = LearnRequest(5001, 7, ip6=B6, requester=who)
    assert _round_trip(request).message == request
    reply = LearnReply(5001, 7, MAC_B, (), IPv4Address("10.99.0.2"), 5, (B6,))
    assert _round_trip(reply).message == reply
    here = EndpointHere(5001, MAC_B, (IPv4Address("10.0.0.2"),), IPv4Address("10.99.0.2"), 6, (B6,))
    assert _round_trip(here).message == here


def test_the_ipv6_tlvs_are_not_critical() -> None:
    assert TlvType.IPV6 < 0x80 and TlvType.REQUESTER_IPV6 < 0x80


def test_a_learn_names_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LearnRequest(5001, 7, ip=IPv4Address("10.0.0.2"), ip6=B6)


# ------------------------------------------------------------------ the pipeline


def _switch(port: VmPort = PORT_A) -> FakeSwitch:
    sw = FakeSwitch(tunnel_port=TUNNEL)
    sw.apply(flows.pipeline_defaults(TUNNEL))
    member = [IPv4Address("10.99.0.2")]
    sw.apply([flows.flood_group(5001, [port.ofport], member, TUNNEL, GroupCommand.ADD)])
    sw.apply(flows.instance_flows(5001))
    sw.apply(flows.local_port_flows(port))
    sw.apply(flows.learned_flows(REMOTE_B, TUNNEL, 60))
    return sw


def _ns(
    src: IPv6Address, target: IPv6Address, sll: str | None = MAC_A, mac: str = MAC_A
) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": multicast_mac(solicited_node(target)),
        "eth_type": ETH_TYPE_IPV6,
        "ip_proto": 58,
        "ipv6_src": str(src),
        "ipv6_dst": str(solicited_node(target)),
        "icmpv6_type": ND_NEIGHBOR_SOLICIT,
        "ipv6_nd_target": str(target),
        "ipv6_nd_sll": sll or NO_LLADDR,
    }


def _drops(sw: FakeSwitch, port: VmPort = PORT_A) -> int:
    cookie = Cookie(Purpose.DROP_SPOOF, port.instance, port.ofport).value
    return sw.hits(lambda f: f.cookie == cookie)


def test_a_solicitation_for_a_learned_address_is_answered_on_the_host() -> None:
    sw = _switch()
    out = sw.process(PORT_A.ofport, _ns(A6, B6))
    assert len(out) == 1 and out[0].port == PORT_A.ofport and not out[0].controller
    na = out[0].pkt
    assert na["icmpv6_type"] == ND_NEIGHBOR_ADVERT
    assert (na["eth_src"], na["eth_dst"]) == (MAC_B, MAC_A)
    assert (na["ipv6_src"], na["ipv6_dst"]) == (str(B6), str(A6))
    assert na["ipv6_nd_tll"] == MAC_B and na["nd_options_type"] == 2
    assert na["nd_reserved"] == NA_SOLICITED_OVERRIDE


def test_an_unknown_target_goes_to_the_agent_and_is_not_flooded() -> None:
    sw = _switch()
    out = sw.process(PORT_A.ofport, _ns(A6, IPv6Address("fd00::77")))
    assert [(d.controller, d.cookie) for d in out] == [
        (True, Cookie(Purpose.INSTANCE, 5001, TAG_ND_MISS).value)
    ]


def test_a_duplicate_address_probe_is_flooded_not_answered() -> None:
    sw = _switch()
    out = sw.process(PORT_A.ofport, _ns(IPv6Address("::"), A6, sll=None))
    assert out and all(d.pkt["icmpv6_type"] == ND_NEIGHBOR_SOLICIT for d in out)
    assert all(not d.controller for d in out)


def test_ipv6_sources_are_checked() -> None:
    sw = _switch()

    def udp6(src: str) -> dict[str, Any]:
        return {
            "eth_src": MAC_A, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IPV6, "ip_proto": 17,
            "ipv6_src": src, "ipv6_dst": str(B6),
        }  # fmt: skip

    assert sw.process(PORT_A.ofport, udp6(str(A6)))[0].tun_dst == "10.99.0.2"
    assert sw.process(PORT_A.ofport, udp6(str(link_local(MAC_A))))[0].tun_dst == "10.99.0.2"
    before = _drops(sw)
    assert sw.process(PORT_A.ofport, udp6("fd00::99")) == []
    assert sw.process(PORT_A.ofport, udp6("fe80::99")) == []
    assert _drops(sw) == before + 2


def test_an_ipv6_only_port_sends_no_ipv4_but_dhcp() -> None:
    port = VmPort("a-p", 2, 5001, MAC_A, ips6=(A6,))
    sw = _switch(port)
    ipv4 = {"eth_src": MAC_A, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IPV4, "ip_proto": 17,
            "ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2"}  # fmt: skip
    before = _drops(sw, port)
    assert sw.process(port.ofport, ipv4) == []
    assert _drops(sw, port) == before + 1


def test_neighbor_discovery_speaks_only_for_the_port() -> None:
    sw = _switch()
    before = _drops(sw)
    # A solicitation whose link-layer option is another MAC (cache poisoning).
    assert sw.process(PORT_A.ofport, _ns(A6, B6, sll="02:00:00:00:00:09")) == []
    # An advertisement for an address that is not the port's, or with another MAC.
    na = {**_ns(A6, B6), "icmpv6_type": ND_NEIGHBOR_ADVERT, "ipv6_nd_tll": MAC_A}
    del na["ipv6_nd_sll"]
    assert sw.process(PORT_A.ofport, na) == []
    assert sw.process(PORT_A.ofport, {**na, "ipv6_nd_target": str(A6), "ipv6_nd_tll": MAC_B}) == []
    assert _drops(sw) == before + 3
    # Its own advertisement goes on.
    ok = {**na, "ipv6_nd_target": str(A6), "eth_dst": MAC_B, "ipv6_dst": str(B6)}
    assert sw.process(PORT_A.ofport, ok)[0].tun_dst == "10.99.0.2"


def test_router_advertisements_only_from_a_port_marked_a_router() -> None:
    ra = {"eth_src": MAC_A, "eth_dst": "33:33:00:00:00:01", "eth_type": ETH_TYPE_IPV6,
          "ip_proto": 58, "ipv6_src": str(link_local(MAC_A)), "ipv6_dst": "ff02::1",
          "icmpv6_type": ND_ROUTER_ADVERT}  # fmt: skip
    sw = _switch()
    assert sw.process(PORT_A.ofport, ra) == []
    router = VmPort("a-p", 2, 5001, MAC_A, ips6=(A6,), ipv6_router=True)
    sw = _switch(router)
    assert [d.tun_dst for d in sw.process(router.ofport, ra)] == ["10.99.0.2"]


def test_the_agent_reads_a_solicitation_and_builds_the_advertisement() -> None:
    ns = build_nd(
        ND_NEIGHBOR_SOLICIT, MAC_A, "33:33:ff:00:00:02", A6, solicited_node(B6), B6, MAC_A
    )
    nd = parse(ns).nd
    assert nd is not None and (nd.kind, nd.src, nd.target, nd.lladdr) == (
        ND_NEIGHBOR_SOLICIT, A6, B6, MAC_A,
    )  # fmt: skip
    na = parse(build_nd(ND_NEIGHBOR_ADVERT, MAC_B, MAC_A, B6, A6, B6, MAC_B)).nd
    assert na is not None and (na.kind, na.lladdr) == (ND_NEIGHBOR_ADVERT, MAC_B)
