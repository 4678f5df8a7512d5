"""The DOVE encapsulation header: fixed 12-byte header, TLV extensions, payload.

The DOVE header (paper section IV-B, Fig. 3) is the OTV header extended with a version,
DOVE-layer fragmentation and optional TLV extensions. This module frames and unframes it; it
knows nothing about what the message types or TLV types mean (see ``messages.py``).

Wire format, network byte order::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version|I|F|E|R|  Message type |     TLV extension length      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Instance ID (24 bits, VNI)           |   Reserved    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Fragment ID          |M|      Fragment index         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |       TLV extensions (TLV extension length bytes) ...         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |       Payload (rest of the datagram) ...                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Version  current version is 1; any other version is rejected.
    I (0x8)  the instance ID field is valid; when clear the field must be 0.
    F (0x4)  this is a fragment; when clear fragment ID, M and index must be 0.
    E (0x2)  TLV extensions are present; set exactly when the extension length is non-zero.
    R (0x1)  reserved, must be 0. The reserved byte after the instance ID must be 0 too.
    M        more fragments follow this one.

Each TLV extension is::

    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |C|   Type      |            Length             |  Value ...    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Types with the high bit (C) set are critical: a receiver that does not know one must reject
the whole message. Unknown non-critical TLVs are skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Sequence
from dataclasses import dataclass

DOVE_VERSION = 1

FLAG_INSTANCE = 0x8
FLAG_FRAGMENT = 0x4
FLAG_EXTENSIONS = 0x2
FLAG_RESERVED = 0x1

HEADER_LEN = 12
TLV_HEADER_LEN = 3
CRITICAL_BIT = 0x80
MAX_INSTANCE_ID = (1 << 24) - 1
MAX_FRAG_INDEX = 0x7FFF
MORE_FRAGMENTS_BIT = 0x8000
# Largest frame we build or accept: fits a 1500-byte underlay MTU under IPv4 + UDP with room
# for an outer tunnel, so control messages never need IP fragmentation.
MAX_FRAME_LEN = 1400

_HEADER = struct.Struct("!BBH3sBHH")
_TLV = struct.Struct("!BH")


class MalformedMessage(ValueError):
    """A frame that cannot be parsed or violates the protocol.

    ``reason`` is a short slug ("truncated", "bad_version", ...) usable as a counter label.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_critical(tlv_type: int) -> bool:
    """True if a receiver that does not know ``tlv_type`` must reject the message."""
    return bool(tlv_type & CRITICAL_BIT)


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DoveHeader:
    """The fixed part of a DOVE header; flags are the low 4 bits of byte 0 (I, F, E, R)."""

    version: int = DOVE_VERSION
    flags: int = 0
    msg_type: int
    instance_id: int = 0
    frag_id: int = 0
    frag_index: int = 0
    more_fragments: bool = False

    def __post_init__(self) -> None:
        _check_uint("version", self.version, 4)
        _check_uint("flags", self.flags, 4)
        _check_uint("msg_type", self.msg_type, 8)
        _check_uint("instance_id", self.instance_id, 24)
        _check_uint("frag_id", self.frag_id, 16)
        _check_uint("frag_index", self.frag_index, 15)
        if self.flags & FLAG_RESERVED:
            raise ValueError("reserved flag bit 0x1 must be 0")
        if not self.flags & FLAG_INSTANCE and self.instance_id:
            raise ValueError("instance_id set but I flag clear")
        if not self.flags & FLAG_FRAGMENT and (
            self.frag_id or self.frag_index or self.more_fragments
        ):
            raise ValueError("fragment fields set but F flag clear")

    @property
    def has_instance(self) -> bool:
        return bool(self.flags & FLAG_INSTANCE)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & FLAG_FRAGMENT)

    @property
    def has_extensions(self) -> bool:
        return bool(self.flags & FLAG_EXTENSIONS)


@dataclass(frozen=True)
class Tlv:
    """One TLV extension; ``type`` >= 0x80 means critical."""

    type: int
    value: bytes

    def __post_init__(self) -> None:
        _check_uint("TLV type", self.type, 8)
        if not isinstance(self.value, bytes):
            raise ValueError(f"TLV value must be bytes, got {type(self.value).__name__}")
        if len(self.value) > 0xFFFF:
            raise ValueError(f"TLV value too long ({len(self.value)} bytes)")


def pack_frame(
    header: DoveHeader,
    tlvs: Sequence[Tlv],
    payload: bytes = b"",
    *,
    max_len: int = MAX_FRAME_LEN,
) -> bytes:
    """Serialise a frame. The header's E flag must be set exactly when ``tlvs`` is non-empty.

    Raises ValueError for anything ``unpack_frame`` would reject, including frames longer
    than ``max_len``.
    """
    if header.version != DOVE_VERSION:
        raise ValueError(f"version must be {DOVE_VERSION}, got {header.version}")
    if header.has_extensions != bool(tlvs):
        raise ValueError("E flag must be set exactly when TLVs are present")
    ext = b"".join(_TLV.pack(t.type, len(t.value)) + t.value for t in tlvs)
    if len(ext) > 0xFFFF:
        raise ValueError(f"TLV extension area too long ({len(ext)} bytes)")
    frag_field = header.frag_index | (MORE_FRAGMENTS_BIT if header.more_fragments else 0)
    fixed = _HEADER.pack(
        (header.version << 4) | header.flags,
        header.msg_type,
        len(ext),
        header.instance_id.to_bytes(3, "big"),
        0,
        header.frag_id,
        frag_field,
    )
    frame = fixed + ext + bytes(payload)
    if len(frame) > max_len:
        raise ValueError(f"frame of {len(frame)} bytes exceeds the {max_len}-byte limit")
    return frame


def unpack_frame(
    data: bytes,
    *,
    known_tlvs: Container[int] | None = None,
    max_len: int = MAX_FRAME_LEN,
) -> tuple[DoveHeader, list[Tlv], bytes]:
    """Parse a frame into (header, TLVs in wire order, payload).

    With ``known_tlvs`` given, an unknown critical TLV rejects the frame and unknown
    non-critical TLVs are dropped; without it every TLV is returned. Raises MalformedMessage.
    """
    if len(data) > max_len:
        raise MalformedMessage("too_long", f"{len(data)} bytes")
    if len(data) < HEADER_LEN:
        raise MalformedMessage("truncated", f"{len(data)} bytes, header needs {HEADER_LEN}")
    vf, msg_type, ext_len, inst, reserved, frag_id, frag_field = _HEADER.unpack_from(data)
    version, flags = vf >> 4, vf & 0x0F
    if version != DOVE_VERSION:
        raise MalformedMessage("bad_version", str(version))
    if flags & FLAG_RESERVED or reserved:
        raise MalformedMessage("reserved_bits")
    instance_id = int.from_bytes(inst, "big")
    if not flags & FLAG_INSTANCE and instance_id:
        raise MalformedMessage("reserved_bits", "instance id without I flag")
    if not flags & FLAG_FRAGMENT and (frag_id or frag_field):
        raise MalformedMessage("reserved_bits", "fragment fields without F flag")
    if bool(flags & FLAG_EXTENSIONS) != bool(ext_len):
        raise MalformedMessage("bad_tlv_length", "E flag disagrees with extension length")
    end = HEADER_LEN + ext_len
    if end > len(data):
        raise MalformedMessage("truncated", f"extension area needs {ext_len} bytes")
    tlvs: list[Tlv] = []
    pos = HEADER_LEN
    while pos < end:
        if pos + TLV_HEADER_LEN > end:
            raise MalformedMessage("bad_tlv_length", "TLV header overruns extension area")
        tlv_type, tlv_len = _TLV.unpack_from(data, pos)
        pos += TLV_HEADER_LEN
        if pos + tlv_len > end:
            raise MalformedMessage("bad_tlv_length", f"TLV 0x{tlv_type:02x} overruns area")
        value = bytes(data[pos : pos + tlv_len])
        pos += tlv_len
        if known_tlvs is not None and tlv_type not in known_tlvs:
            if is_critical(tlv_type):
                raise MalformedMessage("unknown_critical_tlv", f"0x{tlv_type:02x}")
            continue
        tlvs.append(Tlv(tlv_type, value))
    header = DoveHeader(
        version=version,
        flags=flags,
        msg_type=msg_type,
        instance_id=instance_id,
        frag_id=frag_id,
        frag_index=frag_field & MAX_FRAG_INDEX,
        more_fragments=bool(frag_field & MORE_FRAGMENTS_BIT),
    )
    return header, tlvs, bytes(data[end:])
