"""Just enough Ethernet/ARP parsing for packet-ins, without a framework."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from dove_ryu.model import is_multicast

ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_ROUTER_SOLICIT, ND_ROUTER_ADVERT = 133, 134
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT, ND_REDIRECT = 135, 136, 137
ARP_REQUEST = 1
ARP_REPLY = 2


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass(frozen=True)
class Arp:
    op: int
    sha: str
    spa: IPv4Address
    tha: str
    tpa: IPv4Address


@dataclass(frozen=True)
class Neighbor:
    """An ICMPv6 Neighbor Solicitation or Advertisement (``kind`` 135 or 136)."""

    kind: int
    src: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    lladdr: str | None  # the source (NS) or target (NA) link-layer address option


@dataclass(frozen=True)
class Frame:
    dst: str
    src: str
    eth_type: int
    arp: Arp | None = None
    nd: Neighbor | None = None

    @property
    def is_multicast(self) -> bool:
        return is_multicast(self.dst)


class BadPacket(ValueError):
    pass


def parse(data: bytes) -> Frame:
    """Parse an Ethernet frame; raises BadPacket when it is too short to be one."""
    if len(data) < 14:
        raise BadPacket("short ethernet frame")
    dst, src = mac_str(data[0:6]), mac_str(data[6:12])
    (eth_type,) = struct.unpack_from("!H", data, 12)
    offset = 14
    if eth_type == ETH_TYPE_VLAN:
        if len(data) < 18:
            raise BadPacket("short vlan frame")
        (eth_type,) = struct.unpack_from("!H", data, 16)
        offset = 18
    arp = None
    if eth_type == ETH_TYPE_ARP:
        if len(data) < offset + 28:
            raise BadPacket("short arp packet")
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", data, offset)
        if (htype, ptype, hlen, plen) != (1, ETH_TYPE_IPV4, 6, 4):
            raise BadPacket("arp is not ethernet/ipv4")
        body = data[offset + 8 : offset + 28]
        arp = Arp(
            op=op,
            sha=mac_str(body[0:6]),
            spa=IPv4Address(body[6:10]),
            tha=mac_str(body[10:16]),
            tpa=IPv4Address(body[16:20]),
        )
    nd = _neighbor(data, offset) if eth_type == ETH_TYPE_IPV6 else None
    return Frame(dst=dst, src=src, eth_type=eth_type, arp=arp, nd=nd)


def _neighbor(data: bytes, offset: int) -> Neighbor | None:
    """The NS or NA right after a plain IPv6 header (as ND sends it), else None."""
    icmp = offset + 40
    if len(data) < icmp + 24 or data[offset + 6] != IPPROTO_ICMPV6:
        return None
    kind = data[icmp]
    if kind not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        return None
    want = 1 if kind == ND_NEIGHBOR_SOLICIT else 2
    lladdr, at = None, icmp + 24
    while at + 8 <= len(data) and data[at + 1]:
        if data[at] == want:
            lladdr = mac_str(data[at + 2 : at + 8])
        at += data[at + 1] * 8
    return Neighbor(
        kind=kind,
        src=IPv6Address(data[offset + 8 : offset + 24]),
        dst=IPv6Address(data[offset + 24 : offset + 40]),
        target=IPv6Address(data[icmp + 8 : icmp + 24]),
        lladdr=lladdr,
    )


def solicited_node(ip: IPv6Address) -> IPv6Address:
    """The solicited-node multicast group of ``ip`` (RFC 4291 2.7.1)."""
    return IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + ip.packed[13:])


def multicast_mac(ip: IPv6Address) -> str:
    return mac_str(b"\x33\x33" + ip.packed[12:])


def build_nd(
    kind: int,
    src_mac: str,
    dst_mac: str,
    src: IPv6Address,
    dst: IPv6Address,
    target: IPv6Address,
    lladdr: str | None,
    flags: int = 0,
) -> bytes:
    """An Ethernet frame with an NS (135) or NA (136) for ``target``; ``lladdr`` goes in
    the source (NS) or target (NA) link-layer address option; ``flags`` are an NA's
    R/S/O bits in the top byte of the reserved word."""
    body = struct.pack("!I", flags) + target.packed
    if lladdr is not None:
        option = 1 if kind == ND_NEIGHBOR_SOLICIT else 2
        body += bytes([option, 1]) + mac_bytes(lladdr)
    icmp = bytes([kind, 0, 0, 0]) + body
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(pseudo + icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, 255) + src.packed + dst.packed
    eth = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_TYPE_IPV6)
    return eth + ip6 + icmp


def build_arp(
    op: int, src_mac: str, dst_mac: str, sha: str, spa: IPv4Address, tha: str, tpa: IPv4Address
) -> bytes:
    """An Ethernet ARP frame (used by tests and tools)."""
    return (
        mac_bytes(dst_mac)
        + mac_bytes(src_mac)
        + struct.pack("!H", ETH_TYPE_ARP)
        + struct.pack("!HHBBH", 1, ETH_TYPE_IPV4, 6, 4, op)
        + mac_bytes(sha)
        + spa.packed
        + mac_bytes(tha)
        + tpa.packed
    )


IP_DONT_FRAGMENT = 0x4000
IPPROTO_ICMP = 1
ICMP_UNREACHABLE, ICMP_FRAG_NEEDED = 3, 4


ICMP_TIME_EXCEEDED = 11
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8


def internet_checksum(data: bytes) -> int:
    """The ones'-complement sum of RFC 1071 (IPv4 header, ICMP, UDP with its pseudo-header)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(
    src: bytes, dst: bytes, proto: int, payload_len: int, ttl: int = 64, tos: int = 0
) -> bytes:
    """A 20-byte IPv4 header (no options, id 0), its checksum filled in."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, 0, 0, ttl, proto, 0, src, dst
    )
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]


def _icmp_error(kind: int, code: int, rest: int, quoted: bytes) -> bytes:
    icmp = struct.pack("!BBHI", kind, code, 0, rest) + quoted
    return icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]


def ipv4_dst(frame: bytes) -> IPv4Address | None:
    """The destination of an untagged IPv4 frame, else None."""
    if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != ETH_TYPE_IPV4:
        return None
    return IPv4Address(frame[30:34])


def frag_needed(frame: bytes, mtu: int) -> bytes | None:
    """The ICMP "fragmentation needed" (RFC 1191) that answers an untagged IPv4 frame
    with DF set, as if its destination sent it; None for any other frame."""
    if ipv4_dst(frame) is None:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl + 8:
        return None
    (flags,) = struct.unpack_from("!H", ip, 6)
    if not flags & IP_DONT_FRAGMENT or ip[9] == IPPROTO_ICMP and ip[ihl] == ICMP_UNREACHABLE:
        return None  # never answer an error with an error
    icmp = _icmp_error(ICMP_UNREACHABLE, ICMP_FRAG_NEEDED, mtu, ip[: ihl + 8])
    header = ipv4_header(ip[16:20], ip[12:16], IPPROTO_ICMP, len(icmp))
    return frame[6:12] + frame[0:6] + struct.pack("!H", ETH_TYPE_IPV4) + header + icmp


def time_exceeded(frame: bytes, gateway_mac: str, gateway_ip: IPv4Address) -> bytes | None:
    """ICMP time exceeded in transit (RFC 792) for an untagged IPv4 frame, from the
    gateway back to its sender; None for anything else (never an error for an error)."""
    if ipv4_dst(frame) is None:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl:
        return None
    if (
        ip[9] == IPPROTO_ICMP
        and len(ip) > ihl
        and ip[ihl] not in (ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST)
    ):
        return None
    icmp = _icmp_error(ICMP_TIME_EXCEEDED, 0, 0, ip[: ihl + 8])
    header = ipv4_header(gateway_ip.packed, ip[12:16], IPPROTO_ICMP, len(icmp))
    eth = frame[6:12] + mac_bytes(gateway_mac) + struct.pack("!H", ETH_TYPE_IPV4)
    return eth + header + icmp
