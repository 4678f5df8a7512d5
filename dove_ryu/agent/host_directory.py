"""A host in directory mode (``discovery = directory``): what it registers, and what the
directory's rows change here: members (`dove_ryu.agent.directory.DirectoryMembers`:
the live rows, as the reapers mark them) and, for instances in ``push`` resolution,
endpoints installed before any packet (`dove_ryu.agent.directory.Published`).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from dove_ryu.agent.directory import ActiveProxies, DirectoryView, EndpointRow, HostRow
from dove_ryu.agent.host_members import HostMembers
from dove_ryu.model import ExternalVtep
from dove_ryu.openflow.ofmsg import CoreOutput, OfMsg

if TYPE_CHECKING:
    from dove_ryu.agent.parts import HostParts

NONE: frozenset[int] = frozenset()


class DirectorySync:
    def __init__(self, p: HostParts, members: HostMembers) -> None:
        self.p = p
        self.members = members
        self.proxies = ActiveProxies()  # the VAN proxies among the rows (directory mode)
        self.pushed_from: tuple[object, ...] = ()  # what `push` last worked from
        self.refused_vteps: set[tuple[str, frozenset[int]]] = set()  # said once each

    def served(self) -> frozenset[int]:
        """The instances this host serves, as it registers them in the directory."""
        return frozenset(self.p.instances.announced)

    def local_endpoints(self) -> list[EndpointRow]:
        """The VMs here, as this host publishes them in the directory."""
        return [
            EndpointRow(p.instance, p.mac, p.ips, self.p.name, self.p.ports.seq(p.instance, p.mac))
            for p in sorted(self.p.ports.all(), key=lambda p: (p.instance, p.mac))
        ]

    def rows(self, now: float, view: DirectoryView) -> CoreOutput:
        """What the directory shows of the hosts, endpoints and instances we serve."""
        assert self.p.directory is not None and self.p.published is not None
        self.p.directory.rows(now, view.hosts)
        self.p.published.update(view)
        out = self.judge(now)
        out.ofmsgs += self.push(now)
        return out

    def push(self, now: float) -> list[OfMsg]:
        """Install what the directory pushes for our ``push`` instances, and for those
        our routers route into (their endpoints get neighbor flows: the first routed
        packet finds its way), ahead of any packet; forget what it pushed before and
        no longer does."""
        assert self.p.directory is not None and self.p.published is not None
        alive = self.p.directory.alive(now)
        served = self.p.ports.instances | self.p.routers.instances()
        source = (self.p.published.generation, frozenset(alive), frozenset(served))
        if source == self.pushed_from:
            return []  # nothing it depends on changed (a heartbeat, say)
        self.pushed_from = source
        wanted = {
            key: ep
            for key, ep in self.p.published.pushed().items()
            if ep.host in alive and ep.instance in served
        }
        msgs: list[OfMsg] = []
        for (instance, mac), ep in sorted(wanted.items()):
            current = self.p.learned.get(instance, mac)
            if current is None or (current.endpoint != ep and current.endpoint.seq <= ep.seq):
                self.p.stats.count("endpoint_pushed")
                msgs += self.p.learned.remember(now, ep, ep.host)
        for key, ep in sorted(self.p.published.installed.items()):
            current = self.p.learned.get(*key)
            if key not in wanted and current is not None and current.endpoint == ep:
                msgs += self.p.learned.forget(*key)
        self.p.published.installed = wanted
        return msgs

    def unreachable(self, now: float) -> None:
        """The directory stopped answering: members stay as they are meanwhile."""
        if self.p.directory is not None and self.p.directory.reachable:
            self.p.stats.count("directory_lost")
            self.p.stats.log.warning(
                "%s: directory unreachable; members kept as they are", self.p.name
            )
            self.p.directory.unreachable(now)

    def judge(self, now: float) -> CoreOutput:
        """Members are the live hosts the directory shows, each serving what its row
        says; a host a reaper marked dead serves nothing any more."""
        assert self.p.directory is not None
        out = CoreOutput()
        rows = self.p.directory.alive_rows(now)
        # A switch a VTEP controller registered (role vtep) runs no agent: an external
        # VTEP (`dove_ryu.agent.vteps`), not a member we would send LEARNs to.
        vteps = {ip: row for ip, row in rows.items() if row.role == "vtep"}
        declared = [self._vtep(ip, r) for ip, r in sorted(vteps.items()) if r.instances]
        out.ofmsgs += self.p.vteps.declared("directory", [v for v in declared if v is not None])
        alive = self._serving(now, {ip: r for ip, r in rows.items() if ip not in vteps}, out)
        if self.p.published is not None:
            self.p.published.live(alive)
        gone = {h for i in self.p.members.instances() for h in self.p.members.hosts(i)}
        for host, instances in sorted(alive.items()):
            out.extend(self.members.changed(now, host, instances)[0])
        for host in sorted(gone - set(alive)):
            out.extend(self.members.changed(now, host, frozenset())[0])
        return out

    def _vtep(self, address: IPv4Address, row: HostRow) -> ExternalVtep | None:
        """A vtep row as an external VTEP, or None (counted, said once) when its
        instances are not ones a VTEP may serve (BFD's VNI, say)."""
        try:
            return ExternalVtep(row.name, address, row.instances)
        except ValueError as e:
            if (row.name, row.instances) not in self.refused_vteps:
                self.refused_vteps.add((row.name, row.instances))
                self.p.stats.count("vtep_row_refused")
                self.p.stats.log.warning("%s: directory vtep row refused: %s", self.p.name, e)
            return None

    def _serving(
        self, now: float, rows: dict[IPv4Address, HostRow], out: CoreOutput
    ) -> dict[IPv4Address, frozenset[int]]:
        """What each live host serves.  A VAN proxy's row counts while it is its site's
        active one (`ActiveProxies`); when another takes over, what was learned behind
        the old one moves to the new one at once, as in static mode."""
        roles = self.proxies.roles(now, rows)
        for host in [h for h in self.p.members.proxies if h not in roles]:
            self.p.members.forget_proxy(host)
        for host, role in roles.items():
            for old in self.p.members.proxy_heard(now, host, role):
                out.ofmsgs += self.p.failover(now, role.site, old, host, self.members.member_left)
        active = {ip for ip, role in roles.items() if role.active}
        return {
            ip: row.instances if row.role != "proxy" or ip in active else NONE
            for ip, row in rows.items()
        }

    def status(self, now: float) -> dict[str, object]:
        directory = self.p.directory
        if directory is None:
            return {}
        names = directory.names()
        return {
            "directory": {
                "reachable": directory.reachable,
                "alive": {str(h): names.get(h, "") for h in sorted(directory.alive(now))},
            }
        }
