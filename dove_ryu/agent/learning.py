"""Bounded learning state: what was learned, what is being resolved, how fast.

Everything here has a hard size limit, so a VM that sprays random addresses
costs a bounded amount of memory and control traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.model import Endpoint, LearnedEndpoint
from dove_ryu.protocol.messages import Requester

Target = str | IPv4Address  # a MAC (str) or an IPv4 address


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Pending:
    """A LEARN in flight, with the packets waiting for its answer."""

    instance: int
    target: Target
    request_id: int
    first_sent: float
    next_retry: float
    attempts: int = 1
    held: list[tuple[int, bytes]] = field(default_factory=list)
    requester: Requester | None = None  # the local VM whose packet missed
    # A proxy relays LEARNs: who asked it (host, their request id), and which side
    # the question goes to.
    waiters: list[tuple[IPv4Address, int]] = field(default_factory=list)
    toward_wan: bool = False


class PendingTable:
    """LEARNs in flight, keyed by (instance, target, direction) and by request id.

    Only a proxy asks in two directions (into its site, towards the other sites);
    the same target can be in flight both ways there."""

    MAX_HELD = 4  # packets kept per target; the rest are counted and dropped

    def __init__(self, max_per_instance: int) -> None:
        self.max_per_instance = max_per_instance
        self.by_key: dict[tuple[int, Target, bool], Pending] = {}
        self.by_id: dict[int, Pending] = {}
        self.count: dict[int, int] = {}

    def get(self, instance: int, target: Target, toward_wan: bool = False) -> Pending | None:
        return self.by_key.get((instance, target, toward_wan))

    def full(self, instance: int) -> bool:
        return self.count.get(instance, 0) >= self.max_per_instance

    def add(self, pending: Pending) -> None:
        self.by_key[(pending.instance, pending.target, pending.toward_wan)] = pending
        self.by_id[pending.request_id] = pending
        self.count[pending.instance] = self.count.get(pending.instance, 0) + 1

    def remove(self, pending: Pending) -> None:
        self.by_key.pop((pending.instance, pending.target, pending.toward_wan), None)
        self.by_id.pop(pending.request_id, None)
        left = self.count.get(pending.instance, 1) - 1
        if left:
            self.count[pending.instance] = left
        else:
            self.count.pop(pending.instance, None)

    def drop_instance(self, instance: int) -> None:
        for p in [p for p in self.by_key.values() if p.instance == instance]:
            self.remove(p)

    def __len__(self) -> int:
        return len(self.by_key)


class NegativeCache:
    """Targets that nobody answered for, not asked again for a while."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self.entries: OrderedDict[tuple[int, Target, bool], float] = OrderedDict()

    def add(self, instance: int, target: Target, now: float, toward_wan: bool = False) -> None:
        key = (instance, target, toward_wan)
        self.entries[key] = now + self.ttl
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def __contains__(self, key: tuple[int, Target]) -> bool:
        return (*key, False) in self.entries

    def active(self, instance: int, target: Target, now: float, toward_wan: bool = False) -> bool:
        key = (instance, target, toward_wan)
        expiry = self.entries.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self.entries[key]
            return False
        return True


class LearnedTable:
    """Remote endpoints learned per instance, oldest first, bounded per instance."""

    def __init__(self, max_per_instance: int) -> None:
        self.max_per_instance = max_per_instance
        self.by_instance: dict[int, OrderedDict[str, LearnedEndpoint]] = {}
        self.by_ip: dict[tuple[int, IPv4Address], str] = {}

    def get(self, instance: int, mac: str) -> LearnedEndpoint | None:
        table = self.by_instance.get(instance)
        return table.get(mac) if table else None

    def get_by_ip(self, instance: int, ip: IPv4Address) -> LearnedEndpoint | None:
        mac = self.by_ip.get((instance, ip))
        return self.get(instance, mac) if mac else None

    def put(self, entry: LearnedEndpoint) -> tuple[LearnedEndpoint | None, list[LearnedEndpoint]]:
        """Store an entry; returns (the entry it replaced, entries evicted to make room)."""
        ep = entry.endpoint
        table = self.by_instance.setdefault(ep.instance, OrderedDict())
        old = table.pop(ep.mac, None)
        if old:
            self._unindex(old.endpoint)
        evicted = []
        while len(table) >= self.max_per_instance:
            _, victim = table.popitem(last=False)
            self._unindex(victim.endpoint)
            evicted.append(victim)
        table[ep.mac] = entry
        for ip in ep.ips:
            stale_mac = self.by_ip.get((ep.instance, ip))
            if stale_mac and stale_mac != ep.mac:
                # The address moved to another MAC: the older claim loses it.
                stale = table.get(stale_mac)
                if stale:
                    stale.endpoint = Endpoint(
                        stale.endpoint.instance,
                        stale.endpoint.mac,
                        tuple(i for i in stale.endpoint.ips if i != ip),
                        stale.endpoint.host,
                        stale.endpoint.seq,
                    )
            self.by_ip[(ep.instance, ip)] = ep.mac
        return old, evicted

    def remove(self, instance: int, mac: str) -> LearnedEndpoint | None:
        table = self.by_instance.get(instance)
        if not table or mac not in table:
            return None
        entry = table.pop(mac)
        self._unindex(entry.endpoint)
        if not table:
            del self.by_instance[instance]
        return entry

    def drop_instance(self, instance: int) -> None:
        for entry in list(self.by_instance.get(instance, {}).values()):
            self.remove(instance, entry.endpoint.mac)

    def _unindex(self, ep: Endpoint) -> None:
        for ip in ep.ips:
            if self.by_ip.get((ep.instance, ip)) == ep.mac:
                del self.by_ip[(ep.instance, ip)]

    def entries(self) -> list[LearnedEndpoint]:
        return [e for t in self.by_instance.values() for e in t.values()]

    def __len__(self) -> int:
        return sum(len(t) for t in self.by_instance.values())
