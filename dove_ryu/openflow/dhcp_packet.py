"""DHCPv4 (RFC 2131, options RFC 2132) as the host's agent speaks it: a client's message
read out of its Ethernet/IPv4/UDP frame, and the server's answer built into one.

Pure: bytes in, values out, and back.  Only what the agent needs: the client's message
type, transaction, hardware address and the two options that name an address or a
server (50, 54); the answer's address and the options of `Lease`.  Whatever does not
parse raises `BadDhcp`, which the agent counts as a drop.

NOTE: hand-written rather than taken from scapy or os-ken's packet library: the core
imports no framework (house style, point 1), and the subset is a few dozen lines.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network

from dove_ryu.openflow.packet import (
    ETH_TYPE_IPV4,
    internet_checksum,
    ipv4_header,
    mac_bytes,
    mac_str,
)

SERVER_PORT = 67
CLIENT_PORT = 68
IPPROTO_UDP = 17
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
BROADCAST_IP = IPv4Address("255.255.255.255")
ANY_IP = IPv4Address(0)

_BOOTREQUEST, _BOOTREPLY = 1, 2
_HTYPE_ETHERNET = 1
_MAGIC = 0x63825363
_FLAG_BROADCAST = 0x8000
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128sI")  # the fixed part, magic cookie last
_MIN_BOOTP = 300  # RFC 1542 2.1: some clients drop a shorter reply
_IP_TTL = 64


class Option(IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    INTERFACE_MTU = 26
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    END = 255


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


CLIENT_TYPES = frozenset(
    {
        MessageType.DISCOVER,
        MessageType.REQUEST,
        MessageType.DECLINE,
        MessageType.RELEASE,
        MessageType.INFORM,
    }
)


class BadDhcp(ValueError):
    """Not a client's DHCP message we can read; the text says why."""


@dataclass(frozen=True)
class ClientMessage:
    """What the agent reads of a client's message."""

    eth_src: str
    msg_type: MessageType
    xid: int
    flags: int
    ciaddr: IPv4Address  # the client's address when it has one (renewing, INFORM)
    chaddr: str  # the client's hardware address, as it says it
    requested_ip: IPv4Address | None  # option 50
    server_id: IPv4Address | None  # option 54

    @property
    def wants_broadcast(self) -> bool:
        return bool(self.flags & _FLAG_BROADCAST)


@dataclass(frozen=True)
class Lease:
    """What a server hands out: the address and the options that go with it."""

    address: IPv4Address
    prefixlen: int
    server_id: IPv4Address
    lease_time: int  # seconds
    mtu: int
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()

    @property
    def netmask(self) -> IPv4Address:
        return IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask


# ----------------------------------------------------------------------- parsing


def _ipv4_udp_payload(frame: bytes) -> bytes:
    """The UDP payload of a client's frame (Ethernet, IPv4, UDP 68 -> 67)."""
    if len(frame) < 14:
        raise BadDhcp("short ethernet frame")
    if struct.unpack_from("!H", frame, 12)[0] != ETH_TYPE_IPV4:
        raise BadDhcp("not IPv4")
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4:
        raise BadDhcp("bad IPv4 header")
    ihl = (ip[0] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", ip, 2)
    if ihl < 20 or total < ihl + 8 or total > len(ip):
        raise BadDhcp("bad IPv4 lengths")
    (fragment,) = struct.unpack_from("!H", ip, 6)
    if fragment & 0x3FFF:  # more fragments, or an offset
        raise BadDhcp("fragmented")
    if ip[9] != IPPROTO_UDP:
        raise BadDhcp("not UDP")
    # NOTE: checksums are not checked: the frame comes straight from the VM's port,
    # and a veth with offload may hand it over with a partial UDP checksum.
    sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
    if (sport, dport) != (CLIENT_PORT, SERVER_PORT):
        raise BadDhcp(f"UDP {sport} -> {dport}, not a client's")
    if length < 8 or ihl + length > total:
        raise BadDhcp("bad UDP length")
    return ip[ihl + 8 : ihl + length]


def _options(data: bytes) -> dict[int, bytes]:
    """The options after the magic cookie; the first of a repeated code wins."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == Option.END:
            return found
        if code == Option.PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            raise BadDhcp(f"option {code} runs past the packet")
        found.setdefault(code, data[i + 2 : i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    raise BadDhcp("options without an end")


def _address_option(options: dict[int, bytes], code: Option) -> IPv4Address | None:
    value = options.get(code)
    if value is None:
        return None
    if len(value) != 4:
        raise BadDhcp(f"option {code.name.lower()} is {len(value)} bytes, not 4")
    return IPv4Address(value)


def parse_client(frame: bytes) -> ClientMessage:
    """A client's DHCP message out of its Ethernet frame; `BadDhcp` if it is none."""
    bootp = _ipv4_udp_payload(frame)
    if len(bootp) < _BOOTP.size:
        raise BadDhcp("short BOOTP message")
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yi, _si, _gi, chaddr, _sn, _f, magic = (
        _BOOTP.unpack_from(bootp)
    )
    if op != _BOOTREQUEST:
        raise BadDhcp("not a BOOTREQUEST")
    if (htype, hlen) != (_HTYPE_ETHERNET, 6):
        raise BadDhcp("hardware address is not Ethernet")
    if magic != _MAGIC:
        raise BadDhcp("no DHCP magic cookie")
    options = _options(bootp[_BOOTP.size :])
    if Option.OVERLOAD in options:
        raise BadDhcp("option overload is not supported")
    kind = options.get(Option.MESSAGE_TYPE, b"")
    if len(kind) != 1 or kind[0] not in CLIENT_TYPES:
        raise BadDhcp(f"message type {kind.hex() or 'missing'} is not a client's")
    return ClientMessage(
        eth_src=mac_str(frame[6:12]),
        msg_type=MessageType(kind[0]),
        xid=xid,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        chaddr=mac_str(chaddr[:6]),
        requested_ip=_address_option(options, Option.REQUESTED_IP),
        server_id=_address_option(options, Option.SERVER_ID),
    )


# ----------------------------------------------------------------------- building


def _option(code: Option, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def _lease_options(lease: Lease, with_times: bool) -> bytes:
    out = _option(Option.SUBNET_MASK, lease.netmask.packed)
    if lease.router is not None:
        out += _option(Option.ROUTER, lease.router.packed)
    if lease.dns:
        out += _option(Option.DNS, b"".join(d.packed for d in lease.dns))
    out += _option(Option.INTERFACE_MTU, struct.pack("!H", lease.mtu))
    if with_times:  # RFC 2131 3.4: an answer to INFORM carries no lease
        # T1 and T2 as RFC 2131 4.4.5 suggests: half, and seven eighths, of the lease.
        out += _option(Option.LEASE_TIME, struct.pack("!I", lease.lease_time))
        out += _option(Option.RENEWAL_TIME, struct.pack("!I", lease.lease_time // 2))
        out += _option(Option.REBINDING_TIME, struct.pack("!I", lease.lease_time * 7 // 8))
    return out


def build_reply(
    request: ClientMessage,
    msg_type: MessageType,
    server_mac: str,
    server_id: IPv4Address,
    lease: Lease | None = None,
) -> bytes:
    """The server's OFFER, ACK or NAK to ``request``, as an Ethernet frame.

    OFFER and ACK need ``lease`` (an ACK to INFORM gives its options but no address).
    Where it goes (RFC 2131 4.1, no relay): a NAK is broadcast; an answer to a client
    that has an address (``ciaddr``) goes to it; else broadcast if the client asked
    for it, else to the offered address at the client's hardware address."""
    if msg_type not in (MessageType.OFFER, MessageType.ACK, MessageType.NAK):
        raise ValueError(f"a server does not send {msg_type.name}")
    if msg_type is not MessageType.NAK and lease is None:
        raise ValueError(f"{msg_type.name} needs a lease")
    inform = request.msg_type is MessageType.INFORM
    nak = msg_type is MessageType.NAK
    yiaddr = lease.address if lease is not None and not (inform or nak) else ANY_IP
    ciaddr = ANY_IP if nak else request.ciaddr
    options = _option(Option.MESSAGE_TYPE, bytes((msg_type,)))
    options += _option(Option.SERVER_ID, server_id.packed)
    if lease is not None and not nak:
        options += _lease_options(lease, with_times=not inform)
    options += bytes((Option.END,))
    bootp = _BOOTP.pack(
        _BOOTREPLY,
        _HTYPE_ETHERNET,
        6,
        0,
        request.xid,
        0,
        request.flags & _FLAG_BROADCAST,
        ciaddr.packed,
        yiaddr.packed,
        ANY_IP.packed,  # siaddr: no next server (no boot file)
        ANY_IP.packed,
        mac_bytes(request.chaddr) + bytes(10),
        bytes(64),
        bytes(128),
        _MAGIC,
    )
    bootp += options
    bootp += bytes(max(0, _MIN_BOOTP - len(bootp)))
    if nak or (request.ciaddr == ANY_IP and request.wants_broadcast):
        eth_dst, ip_dst = BROADCAST_MAC, BROADCAST_IP
    elif request.ciaddr != ANY_IP:
        eth_dst, ip_dst = request.chaddr, request.ciaddr
    else:
        eth_dst, ip_dst = request.chaddr, yiaddr
    return _frame(server_mac, eth_dst, server_id, ip_dst, bootp)


def _frame(
    src_mac: str, dst_mac: str, src_ip: IPv4Address, dst_ip: IPv4Address, payload: bytes
) -> bytes:
    """Ethernet, IPv4 and UDP (67 -> 68) around ``payload``, checksums filled in."""
    udp_length = 8 + len(payload)
    pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, IPPROTO_UDP, udp_length)
    udp = struct.pack("!HHHH", SERVER_PORT, CLIENT_PORT, udp_length, 0) + payload
    udp_sum = internet_checksum(pseudo + udp) or 0xFFFF  # RFC 768: a zero result is sent as ones
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    # Low delay, as DHCP servers mark their answers.
    header = ipv4_header(src_ip.packed, dst_ip.packed, IPPROTO_UDP, udp_length, _IP_TTL, 0x10)
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_TYPE_IPV4) + header + udp


def build_client(
    mac: str,
    msg_type: MessageType,
    xid: int = 0x1234,
    *,
    requested_ip: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    ciaddr: IPv4Address = ANY_IP,
    broadcast: bool = False,
    src_ip: IPv4Address = ANY_IP,
) -> bytes:
    """A client's message in its frame, broadcast (tests and tools)."""
    options = _option(Option.MESSAGE_TYPE, bytes((msg_type,)))
    if requested_ip is not None:
        options += _option(Option.REQUESTED_IP, requested_ip.packed)
    if server_id is not None:
        options += _option(Option.SERVER_ID, server_id.packed)
    options += bytes((Option.END,))
    bootp = _BOOTP.pack(
        _BOOTREQUEST,
        _HTYPE_ETHERNET,
        6,
        0,
        xid,
        0,
        _FLAG_BROADCAST if broadcast else 0,
        ciaddr.packed,
        ANY_IP.packed,
        ANY_IP.packed,
        ANY_IP.packed,
        mac_bytes(mac) + bytes(10),
        bytes(64),
        bytes(128),
        _MAGIC,
    )
    payload = bootp + options
    udp_length = 8 + len(payload)
    udp = struct.pack("!HHHH", CLIENT_PORT, SERVER_PORT, udp_length, 0) + payload
    header = ipv4_header(src_ip.packed, BROADCAST_IP.packed, IPPROTO_UDP, udp_length)
    return (
        mac_bytes(BROADCAST_MAC) + mac_bytes(mac) + struct.pack("!H", ETH_TYPE_IPV4) + header + udp
    )


# --------------------------------------------------------------- reading an answer


@dataclass(frozen=True)
class ServerMessage:
    """A server's answer as a client reads it (tests and tools)."""

    eth_dst: str
    eth_src: str
    ip_src: IPv4Address
    ip_dst: IPv4Address
    msg_type: MessageType
    xid: int
    yiaddr: IPv4Address
    options: dict[int, bytes]

    def address(self, code: Option) -> IPv4Address | None:
        return _address_option(self.options, code)


def parse_server(frame: bytes) -> ServerMessage:
    """A server's answer out of its frame; `BadDhcp` if it is none."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_TYPE_IPV4:
        raise BadDhcp("not an IPv4 frame")
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != IPPROTO_UDP or struct.unpack_from("!HH", ip, ihl) != (SERVER_PORT, CLIENT_PORT):
        raise BadDhcp("not UDP 67 -> 68")
    (udp_length,) = struct.unpack_from("!H", ip, ihl + 4)
    bootp = ip[ihl + 8 : ihl + udp_length]
    if len(bootp) < _BOOTP.size:
        raise BadDhcp("short BOOTP message")
    fields = _BOOTP.unpack_from(bootp)
    if fields[0] != _BOOTREPLY or fields[-1] != _MAGIC:
        raise BadDhcp("not a DHCP BOOTREPLY")
    options = _options(bootp[_BOOTP.size :])
    kind = options.get(Option.MESSAGE_TYPE, b"\0")
    return ServerMessage(
        eth_dst=mac_str(frame[0:6]),
        eth_src=mac_str(frame[6:12]),
        ip_src=IPv4Address(ip[12:16]),
        ip_dst=IPv4Address(ip[16:20]),
        msg_type=MessageType(kind[0]),
        xid=fields[4],
        yiaddr=IPv4Address(fields[8]),
        options=options,
    )
