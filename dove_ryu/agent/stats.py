"""What the agent counts, kept by the core and read by the metrics adapter.

The core owns the numbers (`Stats`); `dove_ryu.adapters.metrics` only renders a
copy of them, so nothing here imports the adapters.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dove_ryu.openflow.cookies import Cookie, Purpose, decode
from dove_ryu.openflow.flows import TAG_ARP_MISS, TAG_L2_MISS, TAG_ROUTE_MISS
from dove_ryu.openflow.nd_flows import TAG_ND_MISS
from dove_ryu.openflow.packet import BadPacket, Frame, parse

# Seconds, 1 ms .. 2 s.  An answer at the first try takes milliseconds; one that
# needed retransmits comes after learn_timeout (0.3 s by default) and its multiples.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# Why the pipeline sent a packet to the agent, from the cookie of the flow that did.
PACKET_IN_REASONS = (
    "l2_miss",
    "arp_miss",
    "nd_miss",
    "route_miss",
    "ttl_expired",
    "not_here",
    "wan_oversize",
    "dhcp",
    "external",
    "unexpected",
)


def packet_in_reason(cookie: Cookie | None) -> str:
    """One of `PACKET_IN_REASONS` for the (decoded) cookie of a packet-in."""
    if cookie is None:
        return "unexpected"
    if cookie.purpose is Purpose.EGRESS_MISS:
        return "not_here"
    if cookie.purpose is Purpose.WAN_OVERSIZE:
        return "wan_oversize"
    if cookie.purpose is Purpose.DHCP:
        return "dhcp"
    if cookie.purpose is Purpose.ROUTE_TTL:
        return "ttl_expired"
    if cookie.purpose is Purpose.EXTERNAL:  # a gateway: ARP from outside, next hop unknown
        return "external"
    if cookie.purpose is Purpose.INSTANCE and cookie.tag == TAG_ROUTE_MISS:
        return "route_miss"
    if cookie.purpose is Purpose.INSTANCE and cookie.tag == TAG_L2_MISS:
        return "l2_miss"
    if cookie.purpose is Purpose.INSTANCE and cookie.tag == TAG_ARP_MISS:
        return "arp_miss"
    if cookie.purpose is Purpose.INSTANCE and cookie.tag == TAG_ND_MISS:
        return "nd_miss"
    return "unexpected"


class LatencyHistogram:
    """Observations counted per bucket (upper bounds, inclusive), with their sum."""

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        if not self.bounds or list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be increasing")
        if not all(math.isfinite(b) for b in self.bounds):
            raise ValueError("histogram bounds must be finite (+Inf is implied)")
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(le, observations <= le) for every bound, then (+Inf, count)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def copy(self) -> LatencyHistogram:
        other = LatencyHistogram(self.bounds)
        other.counts, other.sum = list(self.counts), self.sum
        return other


class LogLimiter:
    """At most ``burst`` lines per reason per ``period`` seconds; the rest are counted."""

    def __init__(self, burst: int = 5, period: float = 10.0) -> None:
        self.burst, self.period = burst, period
        self.windows: dict[str, tuple[float, int]] = {}

    def allow(self, reason: str, now: float) -> bool:
        start, n = self.windows.get(reason, (now, 0))
        if now - start >= self.period:
            start, n = now, 0
        self.windows[reason] = (start, n + 1)
        return n < self.burst


class Stats:
    """The counters every part of one agent adds to, and its rate-limited drop log.

    Counter names are the operator's vocabulary (``dovectl counters``, the metrics'
    ``events_total{event}``); a drop is ``drop_<reason>``."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.counters: Counter[str] = Counter()
        self.packet_ins: Counter[str] = Counter()  # by `packet_in_reason`
        self.learn_latency = LatencyHistogram()  # seconds from first LEARN to its answer
        self.log_limit = LogLimiter()

    def count(self, event: str, n: int = 1) -> None:
        self.counters[event] += n

    def punted(self, cookie: int) -> Cookie | None:
        """Count a packet-in, by why it came; returns its decoded cookie (None: not ours)."""
        self.counters["packet_in"] += 1
        decoded = decode(cookie)
        self.packet_ins[packet_in_reason(decoded)] += 1
        return decoded

    def parsed(self, now: float, data: bytes, reason: str = "packet_in_malformed") -> Frame | None:
        """The frame in ``data``, or None (dropped and counted as ``reason``)."""
        try:
            return parse(data)
        except BadPacket as e:
            self.drop(reason, now, str(e))
            return None

    def drop(self, reason: str, now: float, detail: str = "") -> None:
        """Something was refused: count it, and say so (a few lines per reason)."""
        self.counters[f"drop_{reason}"] += 1
        if self.log_limit.allow(reason, now):
            self.log.warning("%s: dropped (%s) %s", self.name, reason, detail)


@dataclass(frozen=True)
class InstanceCounts:
    local: int  # VM ports here
    learned: int  # remote endpoints learned
    members: int  # other hosts (for a proxy: and remote proxies) serving the instance


@dataclass(frozen=True)
class StatsView:
    """What the metrics show of one agent, copied out of its core (cheap: counts per
    instance, never the endpoints)."""

    host: str
    role: str
    site: str
    underlay_ip: str
    wan_ip: str  # a proxy's inter-site leg; "" on a host
    connected: bool
    proxy_active: bool | None  # None on a host
    pending: int
    counters: Mapping[str, int]
    packet_ins: Mapping[str, int]
    instances: Mapping[int, InstanceCounts]
    latency: LatencyHistogram
    directory_reachable: bool | None = None  # None unless discovery = directory
