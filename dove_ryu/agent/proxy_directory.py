"""A VAN proxy in directory mode (``discovery = directory``): its row, and its site's
hosts taken from the directory.

Each site has its own directory cluster (sites have no route between them: the WAN
carries only proxy-to-proxy traffic), so a proxy monitors every Host row of its
directory.  The rows of hosts (role ``host``) are its site-side members while they say alive
(the reapers judge the heartbeats; `dove_ryu.agent.directory.DirectoryMembers`, the
hosts' rule);
the rows of its site's other proxies name the partners it sends hellos to, so neither
a hypervisor nor a proxy of the site needs to be listed in ``peers``.  The other sites'
proxies stay static (``wan_peers``) and keep announcing to each other.

The proxy's own row (written by `dove_ryu.adapters.directory`) has role ``proxy``, its
site, its site-leg address, a heartbeat in its Host_Liveness row; while it is its
site's active proxy it lists the instances it stands for in the site (those the other
sites serve) and a claim above its site's other proxies' (`proxy_claim`), so the
site's hosts take it as a member of each, as they take a proxy's announcement in static
mode; the standby's row lists none, so hosts send nothing to it.  On failover the two
rows change and the hosts move what they had learned behind the old proxy to the new
one (`dove_ryu.agent.directory.ActiveProxies`).
"""

from __future__ import annotations

import math
from ipaddress import IPv4Address

from dove_ryu.agent.directory import DirectoryMembers, DirectoryView, EndpointRow
from dove_ryu.agent.parts import ProxyParts
from dove_ryu.agent.proxy_relay import ProxyRelay
from dove_ryu.openflow.ofmsg import CoreOutput

NONE: frozenset[int] = frozenset()


class ProxyDirectory:
    def __init__(self, p: ProxyParts, relay: ProxyRelay, directory: DirectoryMembers) -> None:
        self.p = p
        self.relay = relay
        self.directory = directory
        self.partners: frozenset[IPv4Address] = frozenset()  # the site's other proxies' rows

    def served(self, active: bool) -> frozenset[int]:
        """What the proxy's row lists: the instances other sites serve, while active."""
        return frozenset(self.p.instances.served(True)) if active else NONE

    def local_endpoints(self) -> list[EndpointRow]:
        """A proxy has no VMs: it publishes no Endpoint row."""
        return []

    def rows(self, now: float, view: DirectoryView) -> CoreOutput:
        """The Host rows of the site: its hosts become members, its proxies partners.

        A row naming another site is not ours (a directory shared by several sites is
        not supported, but must not mix them); hosts' rows name none.  A switch a VTEP
        controller registered (role vtep) runs no agent: a proxy does not relay for it
        (docs/interop.md section 2: a VTEP reaches the hosts of its own site)."""
        site, me = self.p.cfg.proxy.site, self.p.me
        ours = [r for r in view.hosts if r.site in ("", site) and r.role != "vtep"]
        self.directory.rows(now, [r for r in ours if r.role != "proxy"])
        self.partners = frozenset(
            r.underlay_ip for r in ours if r.role == "proxy" and r.underlay_ip != me
        )
        return self.judge(now)

    def judge(self, now: float) -> CoreOutput:
        """The site's members are the live hosts the directory shows, each serving what
        its row says; one a reaper marked dead serves nothing any more."""
        alive = self.directory.alive(now)
        members = self.p.members
        site = {h for i in members.instances() for h in members.hosts(i) if not self.p.sides.wan(h)}
        out = CoreOutput()
        for host, instances in sorted(alive.items()):
            out.extend(self.relay.serves(now, host, instances, math.inf)[0])
        for host in sorted(site - set(alive)):
            out.extend(self.relay.serves(now, host, NONE)[0])
        return out

    def unreachable(self, now: float) -> None:
        """The directory stopped answering: members stay as they are meanwhile."""
        if self.directory.reachable:
            self.p.stats.count("directory_lost")
            self.p.stats.log.warning(
                "%s: directory unreachable; members kept as they are", self.p.name
            )
            self.directory.unreachable(now)

    def status(self, now: float) -> dict[str, object]:
        names = self.directory.names()
        return {
            "directory": {
                "reachable": self.directory.reachable,
                "alive": {str(h): names.get(h, "") for h in sorted(self.directory.alive(now))},
                "partners": sorted(str(h) for h in self.partners),
            }
        }
