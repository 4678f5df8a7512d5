"""Control messages between DOVE agents, carried in DOVE frames as TLVs.

Every message carries SENDER and COUNTER, then its own TLVs, then AUTH last. AUTH is the
HMAC-SHA256 (truncated to 16 bytes) of every frame byte before the AUTH TLV, computed with the
header's extension length already counting the AUTH TLV. ``decode`` checks framing, then the
MAC, and only then reads the message; anti-replay is the caller's next step (``ReplayGuard``).
A message signed with another key than key 0 names it (KEY_ID, one byte, before AUTH and so
covered by the MAC); the receiver picks its key of that id before verifying (``KeyRing``).

============  ====  =========================================================
Message       Type  TLVs (besides SENDER, COUNTER, AUTH); instance in header
============  ====  =========================================================
Announce      1     INSTANCES, optionally PROXY or GATEWAY, INSTANCE_RANGE, INCARNATION
                    (no instance, I clear)
LearnRequest  2     REQUEST_ID, exactly one of MAC / IPV4 / IPV6,
                    optionally REQUESTER_MAC, REQUESTER_SEQ, REQUESTER_IPV4 * n,
                    REQUESTER_IPV6 * n or (not both) ROUTED_REQUESTER
LearnReply    3     REQUEST_ID, MAC, HOST, SEQ, IPV4 * n, IPV6 * n
Unlearn       4     MAC, HOST, SEQ
Endpoint      5     MAC, HOST, SEQ, IPV4 * n, IPV6 * n
Frame         6     FRAME_DATA: a piece of an overlay frame, F set in the header
Endpoints     7     HOST, ENDPOINT_ENTRY * n (no instance, I clear)
Listening     8     PROXY or GATEWAY, standby (no instance, I clear)
============  ====  =========================================================

An Announce too long for one frame is split (``split_announce``): each part carries
INSTANCE_RANGE (lo, hi: 3 bytes each) and says "of instances lo..hi I serve exactly
these"; the parts' ranges cover 0..2**24-1 together.  An Announce without the TLV
covers every instance.  Endpoints batches ENDPOINT: each ENDPOINT_ENTRY is one
endpoint of ``HOST`` (``ENTRY_LAYOUT``); an entry that does not decode is refused
alone and counted (``Endpoints.refused``), the others are kept.

PROXY (non-critical) says the sender is a VAN proxy of a site, active or standby, with
its priority.  Frame carries, between two proxies, an overlay frame too big for the
inter-site path: the header's fragment ID, index and M flag (paper Fig. 3) put it back
together on the far side.  ROUTED_REQUESTER (non-critical) is the requester of a
routed miss, who lives in another subnet of the same router: its instance (3 bytes),
MAC (6), SEQ (8) and IPv4 addresses (4 each) in one value, so that an agent that does
not know it skips the requester whole and never takes it for one of the request's
own instance.  GATEWAY (non-critical) says the sender is an external
gateway (docs/routing.md), active or standby, with its priority: hosts send what their
routers route off their subnets to the active one.

IPV6 and REQUESTER_IPV6 (non-critical, 16 bytes each, repeatable) carry an endpoint's
IPv6 addresses and a requester's: an agent that predates them skips them and knows
the endpoint by its MAC and IPv4 addresses only.  A LEARN for an IPv6 target carries
it in IPV6 alone: such an agent refuses that request (neither MAC nor IPV4) and counts it.

Listening is the hello of a VAN proxy or a gateway that has just started and not yet
decided (agent/election.py): "I am here, with this priority, and not yet active", so
that two started together see each other before either claims.  It is a message type of
its own, not an Announce: a statically configured proxy cannot tell its partner from
its site's hosts, so it goes to all of them, and an Announce (with a role or without)
would make them act on it (a restarted active proxy saying "standby" or "no instances"
would be dropped).  Hosts ignore it; agents that predate it refuse it as an unknown
type (counted, ``control_bad_msg_type``) and act on nothing.

Every instance a message carries is an instance id (1..2**24-1) and every MAC a VM's
(unicast), by the same checks as OVSDB port marks and dovectl (``dove_ryu.model``):
building a message with anything else raises ValueError, decoding one MalformedMessage.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address

from dove_ryu.model import check_instance, endpoint_mac, normalize_mac
from dove_ryu.protocol.auth import MAC_LEN, AuthError, KeyRing, compute_mac, verify_mac
from dove_ryu.protocol.header import (
    FLAG_EXTENSIONS,
    FLAG_FRAGMENT,
    FLAG_INSTANCE,
    HEADER_LEN,
    MAX_FRAG_INDEX,
    MAX_FRAME_LEN,
    TLV_HEADER_LEN,
    DoveHeader,
    MalformedMessage,
    Tlv,
    is_critical,
    pack_frame,
    unpack_frame,
)

# Location sequence numbers are 64 bits: a host that never heard of a VM's earlier
# locations starts from the clock in microseconds, which must not wrap.
SEQ_LIMIT = 2**64 - 1


class MsgType(IntEnum):
    ANNOUNCE = 1
    LEARN_REQUEST = 2
    LEARN_REPLY = 3
    UNLEARN = 4
    ENDPOINT = 5
    FRAME = 6
    ENDPOINTS = 7
    LISTENING = 8


class TlvType(IntEnum):
    SENDER = 0x81
    COUNTER = 0x82
    REQUEST_ID = 0x83
    MAC = 0x84
    IPV4 = 0x05
    HOST = 0x86
    SEQ = 0x87
    INSTANCES = 0x88
    # The address the message is for, so that a message captured on its way to one
    # host cannot be replayed to another (each receiver keeps its own replay window).
    RECEIVER = 0x89
    # Non-critical: who is asking, so the answering host can learn it at once and
    # the reverse direction needs no LEARN of its own.  Older agents skip them.
    REQUESTER_MAC = 0x09
    REQUESTER_IPV4 = 0x0A
    REQUESTER_SEQ = 0x0B
    PROXY = 0x0C
    GATEWAY = 0x0D
    # Non-critical: a requester in another instance (a routed miss), all in one value.
    ROUTED_REQUESTER = 0x0E
    # Issue 13 (docs/control-plane.md).  Non-critical: an endpoint's IPv6 addresses (16
    # bytes each, repeatable; in a LEARN request the IPv6 target) and the requester's.
    IPV6 = 0x0F
    REQUESTER_IPV6 = 0x10
    # Non-critical: the sender's incarnation (start time in microseconds), so that peers
    # see a restarted agent and answer its announcement with their own.
    INCARNATION = 0x11
    # Non-critical: which deployment key signed the message (key rotation).
    KEY_ID = 0x12
    # Issue 14 (docs/interop.md).  Non-critical, in Announce: the encapsulations the
    # sender accepts (bit 0 VXLAN, bit 1 Geneve); absent: VXLAN only.
    ENCAPSULATIONS = 0x13
    # Critical: an Announce that covers only instances lo..hi (a split announcement).
    INSTANCE_RANGE = 0x8B
    # Critical, repeatable: one endpoint of a batched ENDPOINTS message (MsgType 7).
    ENDPOINT_ENTRY = 0x8C
    FRAME_DATA = 0x8A
    AUTH = 0xFF


_AUTH_TLV_LEN = TLV_HEADER_LEN + MAC_LEN
SITE_NAME_MAX = 15
_KEY_ID_TLV_LEN = TLV_HEADER_LEN + 1
# Largest overhead of an Announce: header, SENDER, COUNTER, RECEIVER, KEY_ID, INSTANCES
# header, PROXY, INSTANCE_RANGE, INCARNATION, ENCAPSULATIONS, AUTH.
_ANNOUNCE_OVERHEAD = (
    (3 + 1)
    + HEADER_LEN
    + (3 + 4)
    + (3 + 8)
    + (3 + 4)
    + _KEY_ID_TLV_LEN
    + 3
    + (3 + 2 + SITE_NAME_MAX)
    + (3 + 6)
    + (3 + 8)
    + _AUTH_TLV_LEN
)
# Overhead of a Frame message around its FRAME_DATA bytes.
FRAME_OVERHEAD = HEADER_LEN + (3 + 4) + (3 + 8) + (3 + 4) + _KEY_ID_TLV_LEN + 3 + _AUTH_TLV_LEN
MAX_ANNOUNCE_INSTANCES = (MAX_FRAME_LEN - _ANNOUNCE_OVERHEAD) // 3
MAX_RANGE = 2**24 - 1  # INSTANCE_RANGE's bounds: 0..MAX_RANGE, the whole id space
# Overhead of an Endpoints message around its entries: header, SENDER, COUNTER,
# RECEIVER, KEY_ID, HOST, AUTH.
ENDPOINTS_OVERHEAD = (
    HEADER_LEN + (3 + 4) + (3 + 8) + (3 + 4) + _KEY_ID_TLV_LEN + (3 + 4) + _AUTH_TLV_LEN
)


def _check_ips(ips: object) -> None:
    """A tuple of distinct IPv4 addresses."""
    if not isinstance(ips, tuple):
        raise ValueError("ips must be a tuple")
    for ip in ips:
        _check_ip("ips entry", ip)
    if len(set(ips)) != len(ips):
        raise ValueError("ips must not repeat")


def _check_ips6(ips: object) -> None:
    """A tuple of distinct IPv6 addresses."""
    if not isinstance(ips, tuple):
        raise ValueError("ips6 must be a tuple")
    for ip in ips:
        if not isinstance(ip, IPv6Address):
            raise ValueError(f"ips6 entry must be an IPv6Address, got {ip!r}")
    if len(set(ips)) != len(ips):
        raise ValueError("ips6 must not repeat")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_ip(name: str, value: object) -> None:
    if not isinstance(value, IPv4Address):
        raise ValueError(f"{name} must be an IPv4Address, got {value!r}")


_SITE_RE = re.compile(rf"^[A-Za-z0-9_.-]{{1,{SITE_NAME_MAX}}}$")


@dataclass(frozen=True)
class ProxyRole:
    """The sender is a VAN proxy of ``site``; of a site's proxies one is active."""

    site: str
    active: bool
    priority: int

    def __post_init__(self) -> None:
        if not isinstance(self.site, str) or not _SITE_RE.match(self.site):
            raise ValueError(f"site must be 1-{SITE_NAME_MAX} of [A-Za-z0-9_.-], got {self.site!r}")
        _check_range("priority", self.priority, 0, 255)


@dataclass(frozen=True)
class GatewayRole:
    """The sender is an external gateway; of the gateways one is active."""

    active: bool
    priority: int

    def __post_init__(self) -> None:
        if not isinstance(self.active, bool):
            raise ValueError(f"active must be a bool, got {self.active!r}")
        _check_range("priority", self.priority, 0, 255)


@dataclass(frozen=True)
class Announce:
    """Membership heartbeat: "the sender serves these instances" (and, from a proxy,
    its site and whether it is the site's active proxy)."""

    instances: frozenset[int]
    proxy: ProxyRole | None = None
    gateway: GatewayRole | None = None
    # A part of a split announcement: (lo, hi), the instances it speaks for; None: all.
    covers: tuple[int, int] | None = None
    # The sender's start time (microseconds, INCARNATION): a new value from a known
    # sender is a restarted agent, which its peers answer at once.  None: not said.
    incarnation: int | None = None
    # The encapsulations the sender accepts (ENCAPSULATIONS: bit 0 VXLAN, bit 1 Geneve).
    # None: not said (an older agent), which means VXLAN only.
    encapsulations: int | None = None

    def __post_init__(self) -> None:
        if self.incarnation is not None and not 0 <= self.incarnation < 1 << 64:
            raise ValueError(f"incarnation {self.incarnation} is not 64 bits")
        if self.encapsulations is not None:
            _check_range("encapsulations", self.encapsulations, 1, 0xFF)
        if self.proxy is not None and self.gateway is not None:
            raise ValueError("an Announce is from a proxy or from a gateway, not both")
        if not isinstance(self.instances, frozenset):
            raise ValueError("instances must be a frozenset")
        for inst in self.instances:
            check_instance(inst)
        if len(self.instances) > MAX_ANNOUNCE_INSTANCES:
            raise ValueError(
                f"{len(self.instances)} instances exceed {MAX_ANNOUNCE_INSTANCES} per Announce"
            )
        if self.covers is not None:
            if not isinstance(self.covers, tuple) or len(self.covers) != 2:
                raise ValueError(f"covers must be a (lo, hi) tuple, got {self.covers!r}")
            lo, hi = self.covers
            _check_range("covers lo", lo, 0, MAX_RANGE)
            _check_range("covers hi", hi, lo, MAX_RANGE)
            if any(not lo <= i <= hi for i in self.instances):
                raise ValueError(f"an instance outside the range {lo}..{hi}")

    def in_scope(self, instance: int) -> bool:
        """Whether this announcement speaks for ``instance`` (a part: only its range)."""
        return self.covers is None or self.covers[0] <= instance <= self.covers[1]


def split_announce(
    instances: Iterable[int],
    proxy: ProxyRole | None = None,
    gateway: GatewayRole | None = None,
    per_part: int = MAX_ANNOUNCE_INSTANCES,
    incarnation: int | None = None,
    encapsulations: int | None = None,
) -> list[Announce]:
    """The announcement of ``instances``: one Announce when they fit a frame, else parts
    of at most ``per_part`` instances whose ranges cover 0..2**24-1 together, each
    range ending at its last instance (the last one at the top of the id space)."""
    ordered = sorted(set(instances))
    if len(ordered) <= per_part:
        return [
            Announce(
                frozenset(ordered),
                proxy,
                gateway,
                incarnation=incarnation,
                encapsulations=encapsulations,
            )
        ]
    parts = []
    lo = 0
    for at in range(0, len(ordered), per_part):
        chunk = ordered[at : at + per_part]
        hi = chunk[-1] if at + per_part < len(ordered) else MAX_RANGE
        parts.append(
            Announce(
                frozenset(chunk),
                proxy,
                gateway,
                covers=(lo, hi),
                incarnation=incarnation,
                encapsulations=encapsulations,
            )
        )
        lo = hi + 1
    return parts


@dataclass(frozen=True)
class Requester:
    """The local endpoint whose packet caused a LEARN request; ``instance`` is set
    when it lives in another instance than the request's (a routed miss: another
    subnet of the same router), None when it is the request's own."""

    mac: str
    ips: tuple[IPv4Address, ...] = ()
    seq: int = 1
    instance: int | None = None
    ips6: tuple[IPv6Address, ...] = ()  # not carried for a routed requester

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", endpoint_mac(self.mac))
        if self.instance is not None:
            check_instance(self.instance)
        _check_range("seq", self.seq, 0, SEQ_LIMIT)
        _check_ips(self.ips)
        _check_ips6(self.ips6)


@dataclass(frozen=True)
class LearnRequest:
    """Where is the endpoint with this MAC (or this IPv4 or IPv6 address) in ``instance``?"""

    instance: int
    request_id: int
    mac: str | None = None
    ip: IPv4Address | None = None
    requester: Requester | None = None
    ip6: IPv6Address | None = None

    def __post_init__(self) -> None:
        check_instance(self.instance)
        _check_range("request_id", self.request_id, 0, 0xFFFFFFFF)
        if [self.mac, self.ip, self.ip6].count(None) != 2:
            raise ValueError("exactly one of mac, ip and ip6 must be set")
        if self.ip6 is not None and not isinstance(self.ip6, IPv6Address):
            raise ValueError(f"ip6 must be an IPv6Address, got {self.ip6!r}")
        if self.mac is not None:
            object.__setattr__(self, "mac", normalize_mac(self.mac))
        if self.ip is not None:
            _check_ip("ip", self.ip)
        if self.requester is not None and self.requester.instance == self.instance:
            raise ValueError("a requester of the request's own instance names no instance")


@dataclass(frozen=True)
class LearnReply:
    """The endpoint ``mac`` (with ``ips``) lives on ``host``, at location sequence ``seq``."""

    instance: int
    request_id: int
    mac: str
    ips: tuple[IPv4Address, ...]
    host: IPv4Address
    seq: int
    ips6: tuple[IPv6Address, ...] = ()

    def __post_init__(self) -> None:
        check_instance(self.instance)
        _check_range("request_id", self.request_id, 0, 0xFFFFFFFF)
        object.__setattr__(self, "mac", endpoint_mac(self.mac))
        _check_ips(self.ips)
        _check_ips6(self.ips6)
        _check_ip("host", self.host)
        _check_range("seq", self.seq, 0, SEQ_LIMIT)


@dataclass(frozen=True)
class Unlearn:
    """Forget the location of ``mac`` on ``host`` (older than or equal to ``seq``)."""

    instance: int
    mac: str
    host: IPv4Address
    seq: int

    def __post_init__(self) -> None:
        check_instance(self.instance)
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        _check_ip("host", self.host)
        _check_range("seq", self.seq, 0, SEQ_LIMIT)


@dataclass(frozen=True)
class EndpointHere:
    """``mac`` (with ``ips``) now lives on ``host``, at location sequence ``seq``: sent by
    the host a VM arrives on, to the hosts serving the instance (a move, or a start)."""

    instance: int
    mac: str
    ips: tuple[IPv4Address, ...]
    host: IPv4Address
    seq: int
    ips6: tuple[IPv6Address, ...] = ()

    def __post_init__(self) -> None:
        check_instance(self.instance)
        object.__setattr__(self, "mac", endpoint_mac(self.mac))
        _check_ip("host", self.host)
        _check_range("seq", self.seq, 0, SEQ_LIMIT)
        _check_ips(self.ips)
        _check_ips6(self.ips6)


@dataclass(frozen=True)
class Endpoints:
    """A batch of ENDPOINT: each entry is an ``EndpointHere`` of ``host`` (the sender).
    ``refused``: entries of a received batch that did not decode (``bad_tlv_value``
    reasons, one per entry), dropped alone; always empty when sending."""

    host: IPv4Address
    entries: tuple[EndpointHere, ...]
    refused: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_ip("host", self.host)
        if not isinstance(self.entries, tuple) or not (self.entries or self.refused):
            raise ValueError("entries must be a non-empty tuple")
        for entry in self.entries:
            if not isinstance(entry, EndpointHere) or entry.host != self.host:
                raise ValueError(f"entry {entry!r} is not an endpoint of {self.host}")


# ENDPOINT_ENTRY's value: instance (3), MAC (6), SEQ (8), the IPv4 count (1) and
# addresses (4 each), then the IPv6 count (1) and addresses (16 each).  A value that
# ends after the IPv4 addresses has no IPv6 ones.
ENTRY_LAYOUT = "instance:3 mac:6 seq:8 n4:1 ipv4:4*n4 [n6:1 ipv6:16*n6]"
_ENTRY_FIXED = 3 + 6 + 8


def entry_len(ep: EndpointHere) -> int:
    """Bytes an ENDPOINT_ENTRY TLV of ``ep`` takes in a frame."""
    return TLV_HEADER_LEN + _ENTRY_FIXED + 1 + 4 * len(ep.ips) + 1 + 16 * len(ep.ips6)


def batch_endpoints(host: IPv4Address, entries: Iterable[EndpointHere]) -> list[Endpoints]:
    """``entries`` in as few Endpoints messages as fit a frame each, in order."""
    room = MAX_FRAME_LEN - ENDPOINTS_OVERHEAD
    batches: list[list[EndpointHere]] = []
    used = room
    for ep in entries:
        size = entry_len(ep)
        if used + size > room:
            batches.append([])
            used = 0
        batches[-1].append(ep)
        used += size
    return [Endpoints(host, tuple(batch)) for batch in batches]


@dataclass(frozen=True)
class FrameFragment:
    """Piece ``index`` of overlay frame ``frag_id`` of an instance; ``more`` unless last."""

    instance: int
    frag_id: int
    index: int
    more: bool
    data: bytes

    def __post_init__(self) -> None:
        check_instance(self.instance)
        _check_range("frag_id", self.frag_id, 0, 0xFFFF)
        _check_range("index", self.index, 0, MAX_FRAG_INDEX)
        if not isinstance(self.data, bytes) or not self.data:
            raise ValueError("data must be non-empty bytes")


@dataclass(frozen=True)
class Listening:
    """A proxy's or gateway's hello while it listens after a start: its role, never
    active (agent/election.py)."""

    role: ProxyRole | GatewayRole

    def __post_init__(self) -> None:
        if not isinstance(self.role, (ProxyRole, GatewayRole)):
            raise ValueError(f"role must be a ProxyRole or GatewayRole, got {self.role!r}")
        if self.role.active:
            raise ValueError("a listening agent is not active")


Message = (
    Announce
    | LearnRequest
    | LearnReply
    | Unlearn
    | EndpointHere
    | Endpoints
    | FrameFragment
    | Listening
)


@dataclass(frozen=True)
class Envelope:
    """An authenticated message with who sent it and its anti-replay counter."""

    sender: IPv4Address
    counter: int
    message: Message
    receiver: IPv4Address | None = None  # bound into the MAC when the sender names it
    key_id: int = 0  # the deployment key that signed it

    def __post_init__(self) -> None:
        _check_ip("sender", self.sender)
        _check_range("counter", self.counter, 0, 2**64 - 1)
        _check_range("key_id", self.key_id, 0, 255)
        if self.receiver is not None:
            _check_ip("receiver", self.receiver)


# --- encoding ---------------------------------------------------------------------------


def _u64(value: int) -> bytes:
    return struct.pack("!Q", value)


def _u32(value: int) -> bytes:
    return struct.pack("!I", value)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _location(message: LearnReply | EndpointHere | Unlearn) -> list[Tlv]:
    """Where an endpoint is: MAC, HOST, SEQ, and its addresses when the message has them."""
    tlvs = [
        Tlv(TlvType.MAC, _mac_bytes(message.mac)),
        Tlv(TlvType.HOST, message.host.packed),
        Tlv(TlvType.SEQ, _u64(message.seq)),
    ]
    tlvs.extend(Tlv(TlvType.IPV4, ip.packed) for ip in getattr(message, "ips", ()))
    tlvs.extend(Tlv(TlvType.IPV6, ip.packed) for ip in getattr(message, "ips6", ()))
    return tlvs


@functools.lru_cache(maxsize=256)
def _announce_tlvs(message: Announce) -> tuple[Tlv, ...]:
    """An Announce's TLVs.  Cached: an agent sends the same parts to every peer each
    round, and only the envelope (receiver, counter, MAC) differs between them."""
    packed = b"".join(i.to_bytes(3, "big") for i in sorted(message.instances))
    tlvs = [Tlv(TlvType.INSTANCES, packed)]
    if message.covers is not None:
        lo, hi = message.covers
        tlvs.append(Tlv(TlvType.INSTANCE_RANGE, lo.to_bytes(3, "big") + hi.to_bytes(3, "big")))
    if message.proxy is not None:
        tlvs.append(_role_tlv(message.proxy))
    if message.gateway is not None:
        tlvs.append(_role_tlv(message.gateway))
    if message.incarnation is not None:
        tlvs.append(Tlv(TlvType.INCARNATION, message.incarnation.to_bytes(8, "big")))
    if message.encapsulations is not None:
        tlvs.append(Tlv(TlvType.ENCAPSULATIONS, bytes([message.encapsulations])))
    return tuple(tlvs)


def _role_tlv(role: ProxyRole | GatewayRole) -> Tlv:
    value = bytes([1 if role.active else 0, role.priority])
    if isinstance(role, ProxyRole):
        return Tlv(TlvType.PROXY, value + role.site.encode())
    return Tlv(TlvType.GATEWAY, value)


def _entry(ep: EndpointHere) -> Tlv:
    value = ep.instance.to_bytes(3, "big") + _mac_bytes(ep.mac) + _u64(ep.seq)
    value += bytes([len(ep.ips)]) + b"".join(ip.packed for ip in ep.ips)
    value += bytes([len(ep.ips6)]) + b"".join(ip.packed for ip in ep.ips6)
    return Tlv(TlvType.ENDPOINT_ENTRY, value)


def _body(message: Message) -> tuple[MsgType, int | None, list[Tlv]]:
    """(message type, instance or None, message-specific TLVs)."""
    if isinstance(message, Announce):
        return MsgType.ANNOUNCE, None, list(_announce_tlvs(message))
    if isinstance(message, Endpoints):
        tlvs = [Tlv(TlvType.HOST, message.host.packed), *map(_entry, message.entries)]
        return MsgType.ENDPOINTS, None, tlvs
    if isinstance(message, FrameFragment):
        return MsgType.FRAME, message.instance, [Tlv(TlvType.FRAME_DATA, message.data)]
    if isinstance(message, Listening):
        return MsgType.LISTENING, None, [_role_tlv(message.role)]
    if isinstance(message, LearnRequest):
        tlvs = [Tlv(TlvType.REQUEST_ID, _u32(message.request_id))]
        if message.mac is not None:
            tlvs.append(Tlv(TlvType.MAC, _mac_bytes(message.mac)))
        if message.ip is not None:
            tlvs.append(Tlv(TlvType.IPV4, message.ip.packed))
        if message.ip6 is not None:
            tlvs.append(Tlv(TlvType.IPV6, message.ip6.packed))
        who = message.requester
        if who is not None and who.instance is not None:
            value = who.instance.to_bytes(3, "big") + _mac_bytes(who.mac) + _u64(who.seq)
            value += b"".join(ip.packed for ip in who.ips)
            tlvs.append(Tlv(TlvType.ROUTED_REQUESTER, value))
        elif who is not None:
            tlvs.append(Tlv(TlvType.REQUESTER_MAC, _mac_bytes(who.mac)))
            tlvs.append(Tlv(TlvType.REQUESTER_SEQ, _u64(who.seq)))
            tlvs.extend(Tlv(TlvType.REQUESTER_IPV4, ip.packed) for ip in who.ips)
            tlvs.extend(Tlv(TlvType.REQUESTER_IPV6, ip.packed) for ip in who.ips6)
        return MsgType.LEARN_REQUEST, message.instance, tlvs
    if isinstance(message, LearnReply):
        request = Tlv(TlvType.REQUEST_ID, _u32(message.request_id))
        return MsgType.LEARN_REPLY, message.instance, [request, *_location(message)]
    if isinstance(message, EndpointHere):
        return MsgType.ENDPOINT, message.instance, _location(message)
    if isinstance(message, Unlearn):
        return MsgType.UNLEARN, message.instance, _location(message)
    raise ValueError(f"not a control message: {message!r}")


def encode(
    message: Message,
    *,
    sender: IPv4Address,
    counter: int,
    key: bytes,
    receiver: IPv4Address | None = None,
    key_id: int = 0,
) -> bytes:
    """Build the authenticated frame for ``message``, signed with ``key`` (whose id is
    ``key_id``: named in the frame unless 0). Raises ValueError if over the limit."""
    envelope = Envelope(sender, counter, message, receiver, key_id)  # validates the fields
    msg_type, instance, body = _body(message)
    tlvs = [
        Tlv(TlvType.SENDER, envelope.sender.packed),
        Tlv(TlvType.COUNTER, struct.pack("!Q", envelope.counter)),
        *([Tlv(TlvType.RECEIVER, receiver.packed)] if receiver is not None else []),
        # Key 0 is not named: its frames stay what agents before key ids sent and read.
        *([Tlv(TlvType.KEY_ID, bytes([key_id]))] if key_id else []),
        *body,
        Tlv(TlvType.AUTH, bytes(MAC_LEN)),  # placeholder: ext_len must count AUTH
    ]
    flags = FLAG_EXTENSIONS | (FLAG_INSTANCE if instance is not None else 0)
    if isinstance(message, FrameFragment):
        header = DoveHeader(
            flags=flags | FLAG_FRAGMENT,
            msg_type=msg_type,
            instance_id=message.instance,
            frag_id=message.frag_id,
            frag_index=message.index,
            more_fragments=message.more,
        )
    else:
        header = DoveHeader(flags=flags, msg_type=msg_type, instance_id=instance or 0)
    frame = pack_frame(header, tlvs)
    signed = frame[:-_AUTH_TLV_LEN]
    return frame[:-MAC_LEN] + compute_mac(key, signed)


# --- decoding ---------------------------------------------------------------------------

_KNOWN_TLVS = frozenset(int(t) for t in TlvType)
_REPEATABLE = frozenset(
    {
        TlvType.IPV4,
        TlvType.REQUESTER_IPV4,
        TlvType.IPV6,
        TlvType.REQUESTER_IPV6,
        TlvType.ENDPOINT_ENTRY,
    }
)
_ALLOWED: dict[MsgType, frozenset[int]] = {
    MsgType.ANNOUNCE: frozenset(
        {
            TlvType.INSTANCES,
            TlvType.PROXY,
            TlvType.GATEWAY,
            TlvType.INSTANCE_RANGE,
            TlvType.INCARNATION,
            TlvType.ENCAPSULATIONS,
        }
    ),
    MsgType.LEARN_REQUEST: frozenset(
        {
            TlvType.REQUEST_ID,
            TlvType.MAC,
            TlvType.IPV4,
            TlvType.IPV6,
            TlvType.REQUESTER_MAC,
            TlvType.REQUESTER_IPV4,
            TlvType.REQUESTER_IPV6,
            TlvType.REQUESTER_SEQ,
            TlvType.ROUTED_REQUESTER,
        }
    ),
    MsgType.LEARN_REPLY: frozenset(
        {TlvType.REQUEST_ID, TlvType.MAC, TlvType.HOST, TlvType.SEQ, TlvType.IPV4, TlvType.IPV6}
    ),
    MsgType.UNLEARN: frozenset({TlvType.MAC, TlvType.HOST, TlvType.SEQ}),
    MsgType.ENDPOINT: frozenset(
        {TlvType.MAC, TlvType.HOST, TlvType.SEQ, TlvType.IPV4, TlvType.IPV6}
    ),
    MsgType.FRAME: frozenset({TlvType.FRAME_DATA}),
    MsgType.ENDPOINTS: frozenset({TlvType.HOST, TlvType.ENDPOINT_ENTRY}),
    MsgType.LISTENING: frozenset({TlvType.PROXY, TlvType.GATEWAY}),
}
_COMMON = frozenset({TlvType.SENDER, TlvType.COUNTER, TlvType.RECEIVER, TlvType.KEY_ID})


class _Fields:
    """TLV values of one message by type, with typed accessors that raise MalformedMessage."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self._values = values

    def has(self, tlv_type: TlvType) -> bool:
        return tlv_type in self._values

    def raw(self, tlv_type: TlvType, size: int | None = None) -> bytes:
        found = self._values.get(tlv_type)
        if not found:
            raise MalformedMessage("missing_tlv", tlv_type.name)
        value = found[0]
        if size is not None and len(value) != size:
            raise MalformedMessage("bad_tlv_value", f"{tlv_type.name} length {len(value)}")
        return value

    def uint(self, tlv_type: TlvType, size: int) -> int:
        return int.from_bytes(self.raw(tlv_type, size), "big")

    def ip(self, tlv_type: TlvType) -> IPv4Address:
        return IPv4Address(self.raw(tlv_type, 4))

    def mac(self, tlv_type: TlvType = TlvType.MAC) -> str:
        return ":".join(f"{b:02x}" for b in self.raw(tlv_type, 6))

    def all(self, tlv_type: TlvType) -> list[bytes]:
        return self._values.get(tlv_type, [])

    def ips(self, tlv_type: TlvType = TlvType.IPV4) -> tuple[IPv4Address, ...]:
        values = self._values.get(tlv_type, [])
        if any(len(v) != 4 for v in values):
            raise MalformedMessage("bad_tlv_value", f"{tlv_type.name} length")
        return tuple(IPv4Address(v) for v in values)

    def ips6(self, tlv_type: TlvType = TlvType.IPV6) -> tuple[IPv6Address, ...]:
        values = self._values.get(tlv_type, [])
        if any(len(v) != 16 for v in values):
            raise MalformedMessage("bad_tlv_value", f"{tlv_type.name} length")
        return tuple(IPv6Address(v) for v in values)


def _instance(header: DoveHeader, want: bool) -> int:
    """The header's instance, for a message type that has one (``want``)."""
    if header.has_instance != want:
        raise MalformedMessage("bad_instance", "I flag does not match message type")
    if want:
        try:
            check_instance(header.instance_id)
        except ValueError as e:
            raise MalformedMessage("bad_instance", str(e)) from None
    return header.instance_id


def _announce(header: DoveHeader, f: _Fields) -> Announce:
    _instance(header, False)
    raw = f.raw(TlvType.INSTANCES)
    if len(raw) % 3:
        raise MalformedMessage("bad_tlv_value", "INSTANCES length not a multiple of 3")
    ids = [int.from_bytes(raw[i : i + 3], "big") for i in range(0, len(raw), 3)]
    if len(set(ids)) != len(ids):
        raise MalformedMessage("bad_tlv_value", "INSTANCES repeats an instance")
    proxy, gateway = _roles(f)
    covers = None
    if f.has(TlvType.INSTANCE_RANGE):
        raw = f.raw(TlvType.INSTANCE_RANGE, 6)
        covers = (int.from_bytes(raw[:3], "big"), int.from_bytes(raw[3:], "big"))
    incarnation = f.uint(TlvType.INCARNATION, 8) if f.has(TlvType.INCARNATION) else None
    encapsulations = None
    if f.has(TlvType.ENCAPSULATIONS):
        encapsulations = f.uint(TlvType.ENCAPSULATIONS, 1)
        if encapsulations == 0:
            raise MalformedMessage("bad_tlv_value", "ENCAPSULATIONS accepts none")
    return Announce(frozenset(ids), proxy, gateway, covers, incarnation, encapsulations)


def _roles(f: _Fields) -> tuple[ProxyRole | None, GatewayRole | None]:
    """PROXY and GATEWAY (never both)."""
    proxy = None
    if f.has(TlvType.PROXY):
        raw = f.raw(TlvType.PROXY)
        if len(raw) < 3 or raw[0] > 1:
            raise MalformedMessage("bad_tlv_value", "PROXY")
        try:
            proxy = ProxyRole(raw[2:].decode("ascii"), bool(raw[0]), raw[1])
        except (UnicodeDecodeError, ValueError):
            raise MalformedMessage("bad_tlv_value", "PROXY site") from None
    gateway = None
    if f.has(TlvType.GATEWAY):
        raw = f.raw(TlvType.GATEWAY, 2)
        if raw[0] > 1 or proxy is not None:
            raise MalformedMessage("bad_tlv_value", "GATEWAY")
        gateway = GatewayRole(bool(raw[0]), raw[1])
    return proxy, gateway


def _listening(header: DoveHeader, f: _Fields) -> Listening:
    _instance(header, False)
    proxy, gateway = _roles(f)
    role = proxy or gateway
    if role is None:
        raise MalformedMessage("missing_tlv", "PROXY or GATEWAY")
    if role.active:
        raise MalformedMessage("bad_tlv_value", "a listening agent says active")
    return Listening(role)


def _endpoints(header: DoveHeader, f: _Fields) -> Endpoints:
    _instance(header, False)
    host = f.ip(TlvType.HOST)
    entries: list[EndpointHere] = []
    refused: list[str] = []
    for raw in f.all(TlvType.ENDPOINT_ENTRY):
        try:
            entries.append(_endpoint_entry(raw, host))
        except ValueError as e:  # MalformedMessage included: this entry only
            refused.append(str(e))
    if not entries and not refused:
        raise MalformedMessage("missing_tlv", "ENDPOINT_ENTRY")
    return Endpoints(host, tuple(entries), tuple(refused))


def _endpoint_entry(raw: bytes, host: IPv4Address) -> EndpointHere:
    """One ENDPOINT_ENTRY value (``ENTRY_LAYOUT``)."""
    at = _ENTRY_FIXED + 1
    if len(raw) < at:
        raise MalformedMessage("bad_tlv_value", f"ENDPOINT_ENTRY length {len(raw)}")
    n4 = raw[_ENTRY_FIXED]
    ips_end = at + 4 * n4
    rest = len(raw) - ips_end
    # The IPv6 count may be missing (an entry made before IPv6): no IPv6 addresses.
    if rest < 0 or (rest and (rest - 1 != 16 * raw[ips_end])):
        raise MalformedMessage("bad_tlv_value", f"ENDPOINT_ENTRY length {len(raw)}")
    ips = tuple(IPv4Address(raw[i : i + 4]) for i in range(at, ips_end, 4))
    ips6 = tuple(IPv6Address(raw[i : i + 16]) for i in range(ips_end + 1, len(raw), 16))
    return EndpointHere(
        instance=int.from_bytes(raw[0:3], "big"),
        mac=":".join(f"{b:02x}" for b in raw[3:9]),
        ips=ips,
        host=host,
        ips6=ips6,
        seq=int.from_bytes(raw[9:17], "big"),
    )


def _frame(header: DoveHeader, f: _Fields) -> FrameFragment:
    if not header.is_fragment:
        raise MalformedMessage("bad_tlv_value", "Frame without the F flag")
    data = f.raw(TlvType.FRAME_DATA)
    return FrameFragment(
        _instance(header, True), header.frag_id, header.frag_index, header.more_fragments, data
    )


def _learn_request(header: DoveHeader, f: _Fields) -> LearnRequest:
    instance = _instance(header, True)
    request_id = f.uint(TlvType.REQUEST_ID, 4)
    has_mac, has_ip, has_ip6 = f.has(TlvType.MAC), f.has(TlvType.IPV4), f.has(TlvType.IPV6)
    if not has_mac and not has_ip and not has_ip6:
        raise MalformedMessage("missing_tlv", "MAC, IPV4 or IPV6")
    if has_mac + has_ip + has_ip6 > 1:
        raise MalformedMessage("bad_tlv_value", "more than one of MAC, IPV4 and IPV6")
    ips, ips6 = f.ips(), f.ips6()
    if (has_ip and len(ips) != 1) or (has_ip6 and len(ips6) != 1):
        raise MalformedMessage("bad_tlv_value", "more than one target address")
    requester = None
    if f.has(TlvType.REQUESTER_MAC):
        try:
            requester = Requester(
                mac=f.mac(TlvType.REQUESTER_MAC),
                ips=f.ips(TlvType.REQUESTER_IPV4),
                seq=f.uint(TlvType.REQUESTER_SEQ, 8),
                ips6=f.ips6(TlvType.REQUESTER_IPV6),
            )
        except ValueError as e:
            raise MalformedMessage("bad_tlv_value", f"requester: {e}") from None
    if f.has(TlvType.ROUTED_REQUESTER):
        if requester is not None:
            raise MalformedMessage("bad_tlv_value", "both REQUESTER_MAC and ROUTED_REQUESTER")
        requester = _routed_requester(f.raw(TlvType.ROUTED_REQUESTER), instance)
    if has_mac:
        return LearnRequest(instance, request_id, mac=f.mac(), requester=requester)
    if has_ip6:
        return LearnRequest(instance, request_id, ip6=ips6[0], requester=requester)
    return LearnRequest(instance, request_id, ip=ips[0], requester=requester)


_ROUTED_REQUESTER_FIXED = 3 + 6 + 8  # instance, MAC, SEQ; then IPv4 * n


def _routed_requester(raw: bytes, instance: int) -> Requester:
    """ROUTED_REQUESTER's value: a requester of another instance than ``instance``."""
    if len(raw) < _ROUTED_REQUESTER_FIXED or (len(raw) - _ROUTED_REQUESTER_FIXED) % 4:
        raise MalformedMessage("bad_tlv_value", f"ROUTED_REQUESTER length {len(raw)}")
    at = _ROUTED_REQUESTER_FIXED
    ips = tuple(IPv4Address(raw[i : i + 4]) for i in range(at, len(raw), 4))
    try:
        who = Requester(
            mac=":".join(f"{b:02x}" for b in raw[3:9]),
            ips=ips,
            seq=int.from_bytes(raw[9:17], "big"),
            instance=int.from_bytes(raw[0:3], "big"),
        )
    except ValueError as e:
        raise MalformedMessage("bad_tlv_value", f"ROUTED_REQUESTER: {e}") from None
    if who.instance == instance:
        raise MalformedMessage("bad_tlv_value", "ROUTED_REQUESTER names the request's instance")
    return who


def _learn_reply(header: DoveHeader, f: _Fields) -> LearnReply:
    return LearnReply(
        instance=_instance(header, True),
        request_id=f.uint(TlvType.REQUEST_ID, 4),
        mac=f.mac(),
        ips=f.ips(),
        host=f.ip(TlvType.HOST),
        seq=f.uint(TlvType.SEQ, 8),
        ips6=f.ips6(),
    )


def _endpoint(header: DoveHeader, f: _Fields) -> EndpointHere:
    return EndpointHere(
        instance=_instance(header, True),
        mac=f.mac(),
        ips=f.ips(),
        host=f.ip(TlvType.HOST),
        seq=f.uint(TlvType.SEQ, 8),
        ips6=f.ips6(),
    )


def _unlearn(header: DoveHeader, f: _Fields) -> Unlearn:
    return Unlearn(
        instance=_instance(header, True),
        mac=f.mac(),
        host=f.ip(TlvType.HOST),
        seq=f.uint(TlvType.SEQ, 8),
    )


_DECODERS: dict[MsgType, Callable[[DoveHeader, _Fields], Message]] = {
    MsgType.ANNOUNCE: _announce,
    MsgType.LEARN_REQUEST: _learn_request,
    MsgType.LEARN_REPLY: _learn_reply,
    MsgType.UNLEARN: _unlearn,
    MsgType.ENDPOINT: _endpoint,
    MsgType.FRAME: _frame,
    MsgType.ENDPOINTS: _endpoints,
    MsgType.LISTENING: _listening,
}


def _key_id(tlvs: list[Tlv]) -> int:
    """The id of the key the frame names (KEY_ID), 0 when it names none."""
    found = [t.value for t in tlvs if t.type == TlvType.KEY_ID]
    if not found:
        return 0
    if len(found) > 1 or len(found[0]) != 1:
        raise MalformedMessage("bad_tlv_value", "KEY_ID must appear once, one byte long")
    return found[0][0]


def decode(data: bytes, *, key: bytes | KeyRing) -> Envelope:
    """Parse and authenticate a frame.

    ``key`` is the receiver's `KeyRing` (or one key, held as key 0): the frame's KEY_ID
    picks the key to verify it with.  Raises MalformedMessage for framing or content
    problems and AuthError for a missing or wrong MAC or a key id the ring does not hold
    ("unknown_key"). The MAC is verified before any other TLV value is interpreted.
    """
    ring = key if isinstance(key, KeyRing) else KeyRing.single(key)
    header, tlvs, payload = unpack_frame(data)
    if payload:
        raise MalformedMessage("trailing_bytes", f"{len(payload)} bytes after TLVs")
    if header.is_fragment and header.msg_type != MsgType.FRAME:
        # Control messages always fit one frame; only overlay frames are fragmented.
        raise MalformedMessage("fragmented", "control messages are never fragmented")
    auth_at = [i for i, t in enumerate(tlvs) if t.type == TlvType.AUTH]
    if not auth_at:
        raise AuthError("no_auth")
    if auth_at != [len(tlvs) - 1]:
        raise MalformedMessage("bad_tlv_value", "AUTH must appear once, as the last TLV")
    tag = tlvs[-1].value
    if len(tag) != MAC_LEN:
        raise MalformedMessage("bad_tlv_value", f"AUTH length {len(tag)}")
    key_id = _key_id(tlvs)
    secret = ring.get(key_id)
    if secret is None:
        raise AuthError("unknown_key", f"key id {key_id}", key_id=key_id)
    # No payload and AUTH last: the AUTH TLV is the final bytes of the frame.
    if not verify_mac(secret, bytes(data[: len(data) - _AUTH_TLV_LEN]), tag):
        raise AuthError("bad_mac", f"key id {key_id}" if key_id else "")

    try:
        msg_type = MsgType(header.msg_type)
    except ValueError:
        raise MalformedMessage("bad_msg_type", str(header.msg_type)) from None
    allowed = _ALLOWED[msg_type] | _COMMON
    values: dict[int, list[bytes]] = {}
    for tlv in tlvs[:-1]:
        if tlv.type not in allowed:
            if tlv.type not in _KNOWN_TLVS and is_critical(tlv.type):
                raise MalformedMessage("unknown_critical_tlv", f"0x{tlv.type:02x}")
            if is_critical(tlv.type):
                raise MalformedMessage("unexpected_tlv", f"0x{tlv.type:02x} in {msg_type.name}")
            continue  # unknown or unused non-critical TLV: skip
        if tlv.type in values and tlv.type not in _REPEATABLE:
            raise MalformedMessage("bad_tlv_value", f"duplicate TLV 0x{tlv.type:02x}")
        values.setdefault(tlv.type, []).append(tlv.value)

    fields = _Fields(values)
    sender = fields.ip(TlvType.SENDER)
    counter = fields.uint(TlvType.COUNTER, 8)
    receiver = fields.ip(TlvType.RECEIVER) if fields.has(TlvType.RECEIVER) else None
    try:
        message = _DECODERS[msg_type](header, fields)
        return Envelope(sender, counter, message, receiver, key_id)
    except ValueError as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage("bad_tlv_value", str(exc)) from exc
