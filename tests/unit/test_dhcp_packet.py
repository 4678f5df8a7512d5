"""The DHCPv4 codec: a client's message read out of its frame, the server's answer
built (and read back as a client would), and anything malformed refused with
`BadDhcp`, never another exception."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address

import pytest

from dove_ryu.openflow.dhcp_packet import (
    BROADCAST_IP,
    BROADCAST_MAC,
    BadDhcp,
    Lease,
    MessageType,
    Option,
    build_client,
    build_reply,
    parse_client,
    parse_server,
)

pytestmark = pytest.mark.unit

MAC = "02:00:00:00:01:01"
SERVER_MAC = "0a:d0:00:00:13:89"
ADDRESS = IPv4Address("10.0.1.5")
GATEWAY = IPv4Address("10.0.1.1")
LEASE = Lease(
    address=ADDRESS,
    prefixlen=24,
    server_id=GATEWAY,
    lease_time=86400,
    mtu=1450,
    router=GATEWAY,
    dns=(IPv4Address("192.0.2.53"), IPv4Address("192.0.2.54")),
)


def _checksum_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_a_clients_discover_and_request_are_read() -> None:
    discover = parse_client(build_client(MAC, MessageType.DISCOVER, 0xCAFE, broadcast=True))
    assert discover.msg_type is MessageType.DISCOVER
    assert (discover.xid, discover.chaddr, discover.eth_src) == (0xCAFE, MAC, MAC)
    assert discover.wants_broadcast and discover.requested_ip is None

    request = parse_client(
        build_client(MAC, MessageType.REQUEST, 7, requested_ip=ADDRESS, server_id=GATEWAY)
    )
    assert request.msg_type is MessageType.REQUEST
    assert (request.requested_ip, request.server_id) == (ADDRESS, GATEWAY)
    assert not request.wants_broadcast

    renew = parse_client(build_client(MAC, MessageType.REQUEST, ciaddr=ADDRESS, src_ip=ADDRESS))
    assert renew.ciaddr == ADDRESS and renew.requested_ip is None


def test_an_ack_carries_the_lease_and_its_options_with_good_checksums() -> None:
    request = parse_client(build_client(MAC, MessageType.REQUEST, 9, requested_ip=ADDRESS))
    frame = build_reply(request, MessageType.ACK, SERVER_MAC, GATEWAY, LEASE)

    answer = parse_server(frame)

    assert answer.msg_type is MessageType.ACK and answer.xid == 9
    assert (answer.eth_src, answer.eth_dst) == (SERVER_MAC, MAC)  # unicast: no broadcast flag
    assert (answer.ip_src, answer.ip_dst, answer.yiaddr) == (GATEWAY, ADDRESS, ADDRESS)
    assert answer.address(Option.SUBNET_MASK) == IPv4Address("255.255.255.0")
    assert answer.address(Option.ROUTER) == GATEWAY
    assert answer.address(Option.SERVER_ID) == GATEWAY
    assert answer.options[Option.DNS] == b"".join(d.packed for d in LEASE.dns)
    assert struct.unpack("!H", answer.options[Option.INTERFACE_MTU]) == (1450,)
    assert struct.unpack("!I", answer.options[Option.LEASE_TIME]) == (86400,)
    assert struct.unpack("!I", answer.options[Option.RENEWAL_TIME]) == (43200,)
    assert struct.unpack("!I", answer.options[Option.REBINDING_TIME]) == (75600,)
    ip = frame[14:34]
    assert _checksum_ok(ip)
    udp = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert _checksum_ok(pseudo + udp)
    assert len(udp) - 8 >= 300  # the BOOTP minimum some clients insist on


def test_an_offer_without_router_or_dns_leaves_them_out() -> None:
    request = parse_client(build_client(MAC, MessageType.DISCOVER, broadcast=True))
    plain = Lease(ADDRESS, 16, IPv4Address("169.254.169.254"), 3600, 1450)

    answer = parse_server(
        build_reply(request, MessageType.OFFER, SERVER_MAC, plain.server_id, plain)
    )

    assert answer.msg_type is MessageType.OFFER
    assert (answer.eth_dst, answer.ip_dst) == (BROADCAST_MAC, BROADCAST_IP)  # asked for it
    assert answer.address(Option.SUBNET_MASK) == IPv4Address("255.255.0.0")
    assert Option.ROUTER not in answer.options and Option.DNS not in answer.options


def test_a_nak_is_broadcast_and_carries_no_lease() -> None:
    request = parse_client(build_client(MAC, MessageType.REQUEST, requested_ip=GATEWAY))

    answer = parse_server(build_reply(request, MessageType.NAK, SERVER_MAC, GATEWAY, LEASE))

    assert answer.msg_type is MessageType.NAK
    assert (answer.eth_dst, answer.ip_dst, answer.yiaddr) == (
        BROADCAST_MAC,
        BROADCAST_IP,
        IPv4Address(0),
    )
    assert set(answer.options) == {Option.MESSAGE_TYPE, Option.SERVER_ID}


def test_an_answer_to_inform_goes_to_the_client_and_has_no_lease() -> None:
    request = parse_client(build_client(MAC, MessageType.INFORM, ciaddr=ADDRESS, src_ip=ADDRESS))

    answer = parse_server(build_reply(request, MessageType.ACK, SERVER_MAC, GATEWAY, LEASE))

    assert (answer.ip_dst, answer.yiaddr) == (ADDRESS, IPv4Address(0))
    assert Option.LEASE_TIME not in answer.options and Option.ROUTER in answer.options


def _bad(frame: bytes, why: str) -> None:
    with pytest.raises(BadDhcp, match=why):
        parse_client(frame)


def test_what_is_not_a_clients_dhcp_message_is_refused_with_a_reason() -> None:
    good = build_client(MAC, MessageType.DISCOVER)
    _bad(good[:10], "short ethernet")
    _bad(good[:12] + b"\x08\x06" + good[14:], "not IPv4")
    _bad(good[:23] + b"\x06" + good[24:], "not UDP")  # ip_proto TCP
    _bad(good[:34] + struct.pack("!H", 67) + good[36:], "not a client's")
    _bad(good[:100], "IPv4 lengths")  # truncated below its total length
    _bad(good[:42] + b"\x02" + good[43:], "BOOTREQUEST")
    magic = 42 + 236
    _bad(good[:magic] + b"\0\0\0\0" + good[magic + 4 :], "magic")
    options = magic + 4
    offer_type = good[:options] + bytes((53, 1, 2)) + good[options + 3 :]
    _bad(offer_type, "not a client's")
    no_end = good[: options + 3]
    fixed = _fix_lengths(no_end)
    _bad(fixed, "without an end")
    runs_past = _fix_lengths(good[:options] + bytes((53, 1, 1, 50, 9, 1)))
    _bad(runs_past, "runs past")
    short_ip = _fix_lengths(good[:options] + bytes((53, 1, 3, 50, 2, 1, 2, 255)))
    _bad(short_ip, "requested_ip is 2 bytes")


def _fix_lengths(frame: bytes) -> bytes:
    """``frame`` with its IPv4 and UDP lengths made to fit what it holds."""
    ip_len, udp_len = len(frame) - 14, len(frame) - 34
    return (
        frame[:16]
        + struct.pack("!H", ip_len)
        + frame[18:38]
        + struct.pack("!H", udp_len)
        + frame[40:]
    )


def test_garbage_and_truncations_raise_bad_dhcp_and_nothing_else() -> None:
    rng = random.Random(12)
    good = build_client(MAC, MessageType.REQUEST, requested_ip=ADDRESS, server_id=GATEWAY)
    for cut in range(len(good)):
        with pytest.raises(BadDhcp):
            parse_client(good[:cut])
    for _ in range(2000):
        frame = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        try:
            parse_client(bytes(frame))
        except BadDhcp:
            pass
    for _ in range(500):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(400)))
        try:
            parse_client(noise)
        except BadDhcp:
            pass
