"""Membership from the directory (``discovery = directory``, paper IV-B).

Every agent keeps its own row in the directory's Host table: its address, what it
serves, and a heartbeat counter it raises every ``announce_interval``.  An agent
sees the rows of the hosts that serve an instance it serves (conditional
monitoring, `dove_ryu.adapters.directory`) and takes a host as a member while its
heartbeat moves: a row whose heartbeat stood still for 3.5 of its intervals belongs
to a host that died (its row may stay; the host is no member any more).  Liveness
is judged on this agent's clock only, so hosts' clocks need not agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.agent.membership import LIFETIME_INTERVALS


@dataclass(frozen=True)
class HostRow:
    """A Host row of the directory, as the agent needs it."""

    name: str
    underlay_ip: IPv4Address
    instances: frozenset[int]
    heartbeat: int
    heartbeat_interval: float  # seconds between the host's heartbeats


@dataclass
class _Seen:
    row: HostRow
    moved_at: float  # when its heartbeat last changed (or the row first appeared)


class DirectoryMembers:
    """The hosts the directory shows, and which of them are alive.

    While the directory cannot be reached nothing is judged: the members stay as they
    were (established traffic keeps flowing), and when it answers again every host
    gets a fresh lifetime to show its heartbeat moving."""

    def __init__(self, me: IPv4Address) -> None:
        self.me = me
        self._seen: dict[IPv4Address, _Seen] = {}
        self.reachable = False  # whether the directory answers (the rows are current)
        self._frozen: dict[IPv4Address, frozenset[int]] = {}  # alive when it went away

    def rows(self, now: float, rows: list[HostRow]) -> None:
        """The Host rows the directory shows now (all of those we monitor)."""
        back = not self.reachable
        self.reachable = True
        current = {r.underlay_ip: r for r in rows if r.underlay_ip != self.me}
        for ip in [ip for ip in self._seen if ip not in current]:
            del self._seen[ip]
        for ip, row in current.items():
            seen = self._seen.get(ip)
            if back or seen is None or seen.row.heartbeat != row.heartbeat:
                self._seen[ip] = _Seen(row, now)
            else:
                seen.row = row

    def unreachable(self, now: float) -> None:
        """The directory stopped answering: keep what we know as it is."""
        if self.reachable:
            self._frozen = self.alive(now)
        self.reachable = False

    def alive(self, now: float) -> dict[IPv4Address, frozenset[int]]:
        """What each live host serves: a row counts while its heartbeat moves."""
        if not self.reachable:
            return dict(self._frozen)
        return {
            ip: s.row.instances
            for ip, s in self._seen.items()
            if now - s.moved_at <= s.row.heartbeat_interval * LIFETIME_INTERVALS
        }

    def next_expiry(self, now: float) -> float:
        """When the first of the live hosts expires if its heartbeat stays put."""
        if not self.reachable:
            return math.inf
        ends = [
            s.moved_at + s.row.heartbeat_interval * LIFETIME_INTERVALS for s in self._seen.values()
        ]
        return min((e for e in ends if e >= now), default=math.inf)

    def names(self) -> dict[IPv4Address, str]:
        return {ip: s.row.name for ip, s in self._seen.items()}
