"""Membership and endpoints from the directory (``discovery = directory``, paper IV-B).

Every agent keeps its own row in the directory's Host table (its address, what it
serves, whether it is alive) and raises a heartbeat counter in its Host_Liveness row
every ``directory_heartbeat_interval``.  Agents do not monitor Host_Liveness, so no
agent hears another's heartbeat (as OVN moved ``nb_cfg`` from Chassis to
Chassis_Private): a reaper beside the cluster (`Liveness`, run by ``dovectl directory
reap``) watches the heartbeats and marks a host's row dead (``alive = false``) when
its heartbeat stood still for 3.5 of its intervals, judged on the reaper's clock.  An
agent sees the rows of the hosts that serve an instance it serves (conditional
monitoring, `dove_ryu.adapters.directory`) and takes as members those whose rows say
alive (`DirectoryMembers`); a host that comes back marks its row alive again.

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
from ipaddress import IPv4Address, IPv6Address

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
    alive: bool = True  # false once a reaper judged its heartbeat stopped
    role: str = "host"  # or "proxy": a VAN proxy's row (site leg, what it stands for)
    site: str = ""  # a proxy's site; hosts have none (one directory per site)
    claim: int = 0  # a proxy's: above its site's other proxies' when it became active


@dataclass(frozen=True)
class LivenessRow:
    """A Host_Liveness row: a host's heartbeat, which only the reapers monitor."""

    name: str
    heartbeat: int
    heartbeat_interval: float  # seconds between the host's heartbeats


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

    def find(self, instance: int, target: str | IPv4Address | IPv6Address) -> Endpoint | None:
        """The directory's endpoint for a MAC or an address (its rows carry no IPv6
        addresses: an IPv6 target is resolved by LEARN)."""
        if isinstance(target, str):
            return self._by_mac.get((instance, target))
        if isinstance(target, IPv6Address):
            return None
        return self._by_ip.get((instance, target))


class DirectoryMembers:
    """The hosts the directory shows, and which of them are alive: those whose rows
    say so (the reapers judge the heartbeats, `Liveness`; no agent sees them).

    While the directory cannot be reached the members stay as they were (established
    traffic keeps flowing); when it answers again, its rows say who is alive."""

    def __init__(self, me: IPv4Address) -> None:
        self.me = me
        self._rows: dict[IPv4Address, HostRow] = {}
        self.reachable = False  # whether the directory answers (the rows are current)

    def rows(self, now: float, rows: list[HostRow]) -> None:
        """The Host rows the directory shows now (all of those we monitor)."""
        self.reachable = True
        self._rows = {r.underlay_ip: r for r in rows if r.underlay_ip != self.me}

    def unreachable(self, now: float) -> None:
        """The directory stopped answering: keep what we know as it is."""
        self.reachable = False

    def alive(self, now: float) -> dict[IPv4Address, frozenset[int]]:
        """What each live host serves."""
        return {ip: row.instances for ip, row in self.alive_rows(now).items()}

    def alive_rows(self, now: float) -> dict[IPv4Address, HostRow]:
        """The rows of the live hosts (as last seen, while the directory is away)."""
        return {ip: row for ip, row in self._rows.items() if row.alive}

    def names(self) -> dict[IPv4Address, str]:
        return {ip: row.name for ip, row in self._rows.items()}


@dataclass
class _Beat:
    heartbeat: int
    interval: float
    moved_at: float  # on the reaper's clock: when its heartbeat last changed (or first seen)


class Liveness:
    """A reaper's judgement: whose heartbeat stood still for 3.5 of its intervals.

    Pure: the reaper (``dovectl directory reap``, `dove_ryu.adapters.directory.Reaper`)
    hands it the Host_Liveness rows with the time, and marks dead the rows `dead` names.
    Judged on the reaper's clock only, so hosts' clocks need not agree.  A reaper that
    just started, or whose directory was away, gives every host a fresh lifetime, so
    several reapers (one beside each member) and restarted ones agree without talking:
    none marks dead a host whose heartbeat it has not watched stand still."""

    def __init__(self) -> None:
        self._beats: dict[str, _Beat] = {}
        self.reachable = False

    def rows(self, now: float, rows: list[LivenessRow]) -> None:
        """The Host_Liveness rows the directory shows now."""
        back = not self.reachable
        self.reachable = True
        current = {r.name: r for r in rows}
        for name in [n for n in self._beats if n not in current]:
            del self._beats[name]
        if back:
            self._beats.clear()
        for row in current.values():
            self.beat(now, row)

    def beat(self, now: float, row: LivenessRow) -> None:
        """One row, new or changed (the reaper hands over only those, once connected)."""
        beat = self._beats.get(row.name)
        if beat is None or beat.heartbeat != row.heartbeat:
            self._beats[row.name] = _Beat(row.heartbeat, row.heartbeat_interval, now)
        else:
            beat.interval = row.heartbeat_interval

    def forget(self, name: str) -> None:
        """A row that went."""
        self._beats.pop(name, None)

    def unreachable(self) -> None:
        """The directory stopped answering: nobody is judged until it is back."""
        self.reachable = False

    def dead(self, now: float) -> set[str]:
        """The hosts whose heartbeat stood still past its lifetime."""
        if not self.reachable:
            return set()
        return {name for name, b in self._beats.items() if now > self._end(b)}

    def next_expiry(self, now: float) -> float:
        """When the first of the hosts still alive here expires if its heartbeat stays."""
        if not self.reachable:
            return math.inf
        ends = [self._end(b) for b in self._beats.values()]
        return min((e for e in ends if e >= now), default=math.inf)

    @staticmethod
    def _end(beat: _Beat) -> float:
        return beat.moved_at + beat.interval * LIFETIME_INTERVALS


def proxy_claim(me: str, site: str, served: frozenset[int], rows: Collection[HostRow]) -> int:
    """A proxy's claim, for its row: unchanged while its row lists what it serves now,
    and as it becomes its site's active one above every proxy's of the site (its own
    too), so every host tells the newest active proxy without a clock."""
    ours = next((r for r in rows if r.name == me), None)
    if ours is not None and (ours.instances or not served):
        return ours.claim
    if not served:
        return 0
    claims = [r.claim for r in rows if r.role == "proxy" and r.site == site]
    return max(claims, default=0) + 1


class ActiveProxies:
    """Which VAN proxy stands for the other sites, as a host judges from the live rows
    it sees (directory mode).

    A proxy's row lists the instances it stands for while it is its site's active
    proxy; a standby's lists none (so a host, monitoring the rows that serve its
    instances, sees only active ones).  Of two rows of one site that say so (the old
    proxy dead and not yet judged so by the reapers, or two proxies that have not
    settled their election yet), the newer claim is taken, as in static mode an
    announcement saying "active" displaces the proxy before it: a proxy becoming
    active writes a claim above its site's other proxies' (`next_claim`), so even a
    host that just started and sees both rows at once tells them apart.  Of equal
    claims, the one that said so last here, then the higher address."""

    def __init__(self) -> None:
        # When each row began to list instances, as this host saw it.
        self._since: dict[IPv4Address, float] = {}

    def roles(self, now: float, rows: dict[IPv4Address, HostRow]) -> dict[IPv4Address, ProxyRole]:
        """The live proxies' roles, the active one of each site first."""
        claims = {ip: r for ip, r in rows.items() if r.role == "proxy" and r.instances}
        self._since = {ip: self._since.get(ip, now) for ip in claims}

        def rank(ip: IPv4Address) -> tuple[int, float, int]:
            return claims[ip].claim, self._since[ip], int(ip)

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
