"""Frames too big for the inter-site path, carried in DOVE-layer fragments.

A proxy whose next hop is across the WAN cannot send a VXLAN packet larger than
``wan_mtu`` (no outer IP fragmentation, by design): the agent cuts the frame into
authenticated FRAME messages that carry the DOVE header's fragment id, index and
M bit (paper Fig. 3), and the far proxy puts them back together.  Bounded in
count, size and time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.protocol.header import MAX_FRAG_INDEX, MAX_FRAME_LEN
from dove_ryu.protocol.messages import FRAME_OVERHEAD, FrameFragment

UDP_IP_OVERHEAD = 28  # IPv4 + UDP headers around a fragment datagram
REASSEMBLY_TIMEOUT = 2.0  # seconds a partial frame waits for its other pieces
REASSEMBLY_MAX_FRAMES = 256  # partial frames kept at once; more are dropped and counted
MAX_FRAME_BYTES = 16384


class Fragmenter:
    def __init__(self, wan_mtu: int) -> None:
        self.room = min(wan_mtu - UDP_IP_OVERHEAD, MAX_FRAME_LEN) - FRAME_OVERHEAD
        self.next_frag_id = 0

    def split(self, instance: int, data: bytes) -> list[FrameFragment] | None:
        """The pieces of one frame, or None if it needs more than the header can number."""
        pieces = [data[i : i + self.room] for i in range(0, len(data), self.room)]
        if len(pieces) - 1 > MAX_FRAG_INDEX:
            return None
        self.next_frag_id = (self.next_frag_id + 1) & 0xFFFF
        last = len(pieces) - 1
        return [
            FrameFragment(instance, self.next_frag_id, index, index < last, piece)
            for index, piece in enumerate(pieces)
        ]


@dataclass
class Partial:
    first_seen: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None  # number of pieces, known once the last one arrived


class Reassembly:
    """Frames arriving in DOVE-layer fragments, put back together; bounded in count,
    size and time."""

    def __init__(self) -> None:
        self.partial: dict[tuple[IPv4Address, int, int], Partial] = {}

    def add(self, now: float, sender: IPv4Address, frag: FrameFragment) -> bytes | str:
        """The whole frame once complete, else a reason string ("pending" while waiting)."""
        key = (sender, frag.instance, frag.frag_id)
        part = self.partial.get(key)
        if part is None:
            if len(self.partial) >= REASSEMBLY_MAX_FRAMES:
                return "reassembly_full"
            part = self.partial[key] = Partial(now)
        if frag.index in part.pieces:
            return "fragment_duplicate"
        if not frag.more:
            part.total = frag.index + 1
        if part.total is not None and len(part.pieces) >= part.total:
            del self.partial[key]
            return "fragment_inconsistent"
        part.pieces[frag.index] = frag.data
        if sum(len(p) for p in part.pieces.values()) > MAX_FRAME_BYTES:
            del self.partial[key]
            return "frame_too_long"
        if part.total is None or len(part.pieces) < part.total:
            return "pending"
        del self.partial[key]
        if set(part.pieces) != set(range(part.total)):
            return "fragment_inconsistent"
        return b"".join(part.pieces[i] for i in range(part.total))

    def expire(self, now: float) -> int:
        old = [k for k, p in self.partial.items() if now - p.first_seen > REASSEMBLY_TIMEOUT]
        for key in old:
            del self.partial[key]
        return len(old)
