"""Membership and endpoints from the directory (``discovery = directory``, paper IV-B).

Every agent keeps its own row in the directory's Host table: its address, what it
serves, and a heartbeat counter it raises every ``announce_interval``.  An agent
sees the rows of the hosts that serve an instance it serves (conditional
monitoring, `dove_ryu.adapters.directory`) and takes a host as a member while its
heartbeat moves: a row whose heartbeat stood still for 3.5 of its intervals belongs
to a host that died (its row may stay; the host is no member any more).  Liveness
is judged on this agent's clock only, so hosts' clocks need not agree.

Every host also publishes its VMs as Endpoint rows (instance, MAC, IPs, its name,
location sequence number).  An instance whose Instance row says ``resolution = push``
has its endpoints sent to every host that serves it ahead of time, as OVN does: the
host installs their flows before the first packet (`Published`); ``learn`` (the
default, and for instances with no row) resolves by LEARN as in static mode.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.agent.membership import LIFETIME_INTERVALS
from dove_ryu.model import Endpoint
from dove_ryu.protocol.messages import ProxyRole

RESOLUTIONS = ("learn", "lookup", "push")


@dataclass(frozen=True)
class HostRow:
    """A Host row of the directory, as the agent needs it."""

    name: str
    underlay_ip: IPv4Address
    instances: frozenset[int]
    heartbeat: int
    heartbeat_interval: float  # seconds between the host's heartbeats
    role: str = "host"  # or "proxy": a VAN proxy's row (site leg, what it stands for)
    site: str = ""  # a proxy's site; hosts have none (one directory per site)


@dataclass(frozen=True)
class EndpointRow:
    """An Endpoint row: a VM, as the host it runs on published it."""

    instance: int
    mac: str
    ips: tuple[IPv4Address, ...]
    host: str  # the host's name (its Host row)
    seq: int


@dataclass(frozen=True)
class DirectoryView:
    """What the agent monitors of the directory: the Host rows of the hosts serving
    what it serves, those instances' Endpoint rows, and their resolution modes."""

    hosts: list[HostRow]
    endpoints: list[EndpointRow] = field(default_factory=list)
    resolution: dict[int, str] = field(default_factory=dict)  # instance -> mode


class Published:
    """The endpoints of ``push`` and ``lookup`` instances, as the directory has them now:
    per MAC the row with the highest sequence number, on a live host whose row we see.

    A ``push`` instance's endpoints get their flows ahead of any packet; a ``lookup``
    instance's are looked up here on a miss, instead of asking the members (paper IV-B:
    the directory answers; the agent monitors the rows of the instances it serves, so
    the question costs no round trip), and get their flows then."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.resolution: dict[int, str] = {}
        self._view = DirectoryView([])
        self.installed: dict[tuple[int, str], Endpoint] = {}  # what the host put in flows
        self._by_mac: dict[tuple[int, str], Endpoint] = {}
        self._by_ip: dict[tuple[int, IPv4Address], Endpoint] = {}
        # What `live` last computed from, and a count of its changes (`pushed` users
        # skip their pass while it stands): a heartbeat must not cost a pass over
        # every endpoint.
        self._live_from: tuple[object, ...] = ()
        self.generation = 0

    def mode(self, instance: int) -> str:
        return self.resolution.get(instance, "learn")

    def update(self, view: DirectoryView) -> None:
        """The rows as the directory shows them now; `live` then says which hosts are
        alive (the endpoints of a host whose heartbeat stopped are not taken)."""
        self.resolution = dict(view.resolution)
        self._view = view

    def live(self, alive: Collection[IPv4Address]) -> None:
        """Take the endpoints of the hosts that are alive now (their rows may stay after
        the host died: a lookup must then fall back to LEARN, not install a flow to it)."""
        where = {h.name: h.underlay_ip for h in self._view.hosts if h.underlay_ip in alive}
        # The endpoint rows come as the same list while none changed (compared by
        # identity first, so a heartbeat costs no pass over them).
        source = (self._view.endpoints, where, self.resolution)
        if source == self._live_from:
            return
        self._live_from = source
        self.generation += 1
        best: dict[tuple[int, str], Endpoint] = {}
        for row in self._view.endpoints:
            host = where.get(row.host)
            if host is None or row.host == self.me or self.mode(row.instance) == "learn":
                continue
            key = (row.instance, row.mac)
            if key not in best or best[key].seq < row.seq:
                best[key] = Endpoint(row.instance, row.mac, row.ips, host, row.seq)
        self._by_mac = best
        self._by_ip = {(e.instance, ip): e for e in best.values() for ip in e.ips}

    def pushed(self) -> dict[tuple[int, str], Endpoint]:
        """The endpoints of ``push`` instances: their flows go in ahead."""
        return {k: e for k, e in self._by_mac.items() if self.mode(e.instance) == "push"}

    def find(self, instance: int, target: str | IPv4Address) -> Endpoint | None:
        if isinstance(target, str):
            return self._by_mac.get((instance, target))
        return self._by_ip.get((instance, target))


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
        self._frozen: dict[IPv4Address, HostRow] = {}  # alive when it went away

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
            self._frozen = self.alive_rows(now)
        self.reachable = False

    def alive(self, now: float) -> dict[IPv4Address, frozenset[int]]:
        """What each live host serves: a row counts while its heartbeat moves."""
        return {ip: row.instances for ip, row in self.alive_rows(now).items()}

    def alive_rows(self, now: float) -> dict[IPv4Address, HostRow]:
        """The rows of the live hosts."""
        if not self.reachable:
            return dict(self._frozen)
        return {
            ip: s.row
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


class ActiveProxies:
    """Which VAN proxy stands for the other sites, as a host judges from the live rows
    it sees (directory mode).

    A proxy's row lists the instances it stands for while it is its site's active
    proxy; a standby's lists none (so a host, monitoring the rows that serve its
    instances, sees only active ones).  Of two rows of one site that say so (the old
    proxy dead and its heartbeat not yet judged stopped, or two proxies that have not
    settled their election yet), the one that said so last is taken, as in static mode
    an announcement saying "active" displaces the proxy before it; the other is a
    standby here, serving nothing, until it is the only one.  Two seen first together
    (this agent just started) are told apart by their heartbeats: the one whose
    heartbeat has moved since is alive."""

    def __init__(self) -> None:
        # When each row began to list instances, and its heartbeat then.
        self._since: dict[IPv4Address, tuple[float, int]] = {}

    def roles(self, now: float, rows: dict[IPv4Address, HostRow]) -> dict[IPv4Address, ProxyRole]:
        """The live proxies' roles, the active one of each site first."""
        claims = {ip: r for ip, r in rows.items() if r.role == "proxy" and r.instances}
        self._since = {ip: self._since.get(ip, (now, r.heartbeat)) for ip, r in claims.items()}

        def rank(ip: IPv4Address) -> tuple[float, bool, int]:
            since, heartbeat = self._since[ip]
            return since, claims[ip].heartbeat != heartbeat, int(ip)

        active: dict[str, IPv4Address] = {}
        for ip, row in claims.items():
            best = active.get(row.site)
            if best is None or rank(ip) > rank(best):
                active[row.site] = ip
        ordered = sorted(claims, key=lambda ip: (active[claims[ip].site] != ip, int(ip)))
        return {
            ip: ProxyRole(claims[ip].site, active[claims[ip].site] == ip, 0)
            for ip in ordered
            if claims[ip].site  # a proxy's row always names its site; a bad one is skipped
        }
