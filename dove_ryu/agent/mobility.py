"""What a host remembers about its VMs coming and going (paper section IV-C).

When a VM leaves, its old host un-learns it everywhere it was learned
(proactively, the paper's optimisation) and, for a while, answers traffic that
still arrives for it: it tells the sender to un-learn (reactively) and, when it
knows where the VM went, forwards the packet there instead of dropping it.
Locations carry a sequence number so that an older answer never overrides a
newer one (as EVPN's MAC-mobility sequence does).  Everything here is bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address

Key = tuple[int, str]  # (instance, MAC)

SEQ_MAX = 2**64 - 1
SEQ_TICKS_PER_SECOND = 1_000_000


def next_seq(known: int, wall_clock: float) -> int:
    """The sequence number of a VM arriving here: above any this host has seen for it,
    and above the clock in microseconds, so that a host that never heard of the VM's
    earlier locations still outranks them while hosts' clocks agree (NTP); when they do
    not, the old host's reactive un-learn still moves the traffic."""
    return max(known + 1, int(wall_clock * SEQ_TICKS_PER_SECOND)) & SEQ_MAX


@dataclass
class Departed:
    """A VM that left this host: where it went (once known) and whom we told."""

    seq: int
    expires: float
    new_host: IPv4Address | None = None
    told: dict[IPv4Address, float] = field(default_factory=dict)  # host -> last UNLEARN


class Mobility:
    def __init__(
        self,
        ttl: float = 60.0,
        max_departed: int = 4096,
        max_learners: int = 256,
        unlearn_interval: float = 0.2,
    ) -> None:
        self.ttl = ttl
        self.max_departed = max_departed
        self.max_learners = max_learners
        self.unlearn_interval = unlearn_interval
        self.learners: dict[Key, set[IPv4Address]] = {}
        self.departed: OrderedDict[Key, Departed] = OrderedDict()

    def note_learner(self, key: Key, host: IPv4Address) -> None:
        """``host`` asked where a local VM is: it must be told when the VM goes."""
        hosts = self.learners.setdefault(key, set())
        if len(hosts) < self.max_learners:
            hosts.add(host)

    def learners_of(self, key: Key) -> set[IPv4Address]:
        return set(self.learners.get(key, ()))

    def arrived(self, key: Key) -> None:
        """The VM is (back) here: nothing about its departure holds any more."""
        self.departed.pop(key, None)

    def depart(self, key: Key, seq: int, now: float) -> set[IPv4Address]:
        """The VM left: remember it for a while; returns the hosts that had learned it."""
        self.departed[key] = Departed(seq, now + self.ttl)
        self.departed.move_to_end(key)
        while len(self.departed) > self.max_departed:
            self.departed.popitem(last=False)
        return self.learners.pop(key, set())

    def lookup(self, key: Key, now: float) -> Departed | None:
        entry = self.departed.get(key)
        if entry is not None and entry.expires <= now:
            del self.departed[key]
            return None
        return entry

    def went_to(self, key: Key, host: IPv4Address, seq: int, now: float) -> bool:
        """A newer location was announced for a VM that left: forward to it from now on."""
        entry = self.lookup(key, now)
        if entry is None or seq <= entry.seq:
            return False
        entry.new_host = host
        entry.seq = seq
        return True

    def should_tell(self, entry: Departed, host: IPv4Address, now: float) -> bool:
        """Rate-limits reactive UNLEARNs: a stream of late packets costs one message."""
        last = entry.told.get(host)
        if last is not None and now - last < self.unlearn_interval:
            return False
        entry.told[host] = now
        return True
