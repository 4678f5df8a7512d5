"""What each role is made of: the parts, each owning one kind of state.

Every role has `Common`'s parts; a host adds its VM ports, per-instance datapath
and mobility, a VAN proxy its two sides, the election between a site's proxies
and DOVE-layer fragmentation.  The roles' event handling lives in `host.py` and
`proxy.py`; the parts never read each other's private fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.agent.channel import ControlChannel
from dove_ryu.agent.dhcp import DhcpServer
from dove_ryu.agent.directory import DirectoryMembers, Published
from dove_ryu.agent.election import Election
from dove_ryu.agent.endpoints import EndpointFlows, LearnedEndpoints
from dove_ryu.agent.fragments import Fragmenter, Reassembly
from dove_ryu.agent.gateway_parts import ExternalNet, GatewayEndpointFlows, GatewayRouters
from dove_ryu.agent.instances import HostInstances
from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.agent.mobility import Mobility
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.agent.resolver import Pending, Resolver
from dove_ryu.agent.routers import Routers
from dove_ryu.agent.sides import ProxyFlows, ProxyInstances, Sides
from dove_ryu.agent.stats import Stats
from dove_ryu.agent.takeover import Adopted, Takeover
from dove_ryu.agent.tunnel import TunnelFlows
from dove_ryu.agent.vteps import ExternalVteps
from dove_ryu.config import DoveConfig, ProxyConfig
from dove_ryu.openflow.ofmsg import Datagram, OfMsg
from dove_ryu.openflow.tunnels import Tunnels, beyond_vxlan

# After a take-over, stale flows and groups go once every adopted member announced
# again, or after this many announce intervals.
TAKEOVER_GRACE_INTERVALS = 2


@dataclass
class Common:
    cfg: DoveConfig
    stats: Stats  # counters, drops, learn latency
    link: SwitchLink  # the bridge: connected or not
    channel: ControlChannel  # authenticated messages to and from other agents
    members: Membership  # which hosts serve which instance; the proxies heard
    resolver: Resolver  # LEARNs in flight, retries, bounds
    learned: LearnedEndpoints  # remote endpoints and the flows that reach them
    takeover: Takeover  # the cookie generation; what a predecessor left, until swept
    incarnation: int  # when this process started (wall clock, us): INCARNATION

    @property
    def me(self) -> IPv4Address:
        return self.cfg.host.underlay_ip

    @property
    def name(self) -> str:
        return self.cfg.name

    def adopt(self, now: float, adopted: Adopted, instances: set[int] | None = None) -> None:
        """Take what a predecessor knew from the switch (`dove_ryu.agent.takeover`):
        its members and learned endpoints (of ``instances`` only, when given), where
        we know nothing newer."""
        for instance, hosts in sorted(adopted.members.items()):
            if instances is None or instance in instances:
                for host in sorted(hosts):
                    if not self.members.serves(instance, host):
                        self.members.join(now, instance, host)
                        self.stats.count("takeover_members_adopted")
        for ep in adopted.endpoints:
            if (instances is None or ep.instance in instances) and self.learned.adopt(now, ep):
                self.stats.count("takeover_endpoints_adopted")

    def ask(self, pending: Pending, hosts: list[IPv4Address]) -> list[Datagram]:
        """A LEARN request for ``pending`` to each of ``hosts``."""
        self.stats.count("learn_requests_sent", len(hosts))
        return self.channel.to_each(hosts, pending.request())

    def failover(
        self,
        now: float,
        site: str,
        old: IPv4Address,
        new: IPv4Address,
        member_left: Callable[[int, IPv4Address], list[OfMsg]],
    ) -> list[OfMsg]:
        """A site's standby proxy took over from ``old``: what was learned behind the
        old one is behind ``new`` at once (which resolves what it does not know yet on
        the first packet), and the old one serves nothing any more."""
        self.stats.count("proxy_failover")
        self.stats.log.warning(
            "%s: site %s now through proxy %s (was %s)", self.name, site, new, old
        )
        msgs = self.learned.move_host(now, old, new)
        for instance in self.members.instances():
            if self.members.leave(instance, old):
                msgs += member_left(instance, old)
        return msgs


@dataclass
class HostParts(Common):
    ports: LocalPorts  # the VM ports on the bridge
    instances: HostInstances  # per instance: flood group, accepted members, lingering
    mobility: Mobility  # VMs that left: who learned them, where they went
    tunnel_flows: TunnelFlows  # how a learned endpoint is reached: its host's tunnel
    directory: DirectoryMembers | None  # the hosts the directory shows (discovery = directory)
    published: Published | None  # the endpoints it pushes (instances in push mode)
    dhcp: DhcpServer  # answers the DHCP requests of VM ports with an address
    routers: Routers  # the tenant routers declared here, and the flows that route
    vteps: ExternalVteps  # VTEPs that run no agent, in the instances served here

    def adopt(self, now: float, adopted: Adopted, instances: set[int] | None = None) -> None:
        """`Common.adopt`, but an external VTEP in a flood group's buckets is no member
        host: adopted as one, it would expire (it never announces) and its leaving
        would delete its classify flow."""
        for hosts in adopted.members.values():
            hosts -= {h for h in hosts if self.vteps.is_vtep(h)}
        self.vteps.found_learned = set(adopted.vtep_learned)
        super().adopt(now, adopted, instances)


@dataclass
class ProxyParts(Common):
    sides: Sides  # the site leg and the inter-site leg
    instances: ProxyInstances  # per instance: groups by direction, members by leg
    election: Election  # active or standby among the site's proxies
    directory: DirectoryMembers | None  # the site's hosts the directory shows (directory mode)
    fragmenter: Fragmenter  # frames too big for the WAN, cut into DOVE fragments
    reassembly: Reassembly  # and put back together


def _common(
    cfg: DoveConfig,
    log: logging.Logger,
    link: SwitchLink,
    legs: tuple[IPv4Address, ...],
    flows: EndpointFlows,
    local: LocalPorts | None = None,
    leg_for: Callable[[IPv4Address], IPv4Address] | None = None,
) -> dict[str, object]:
    """The parts every role has, as keyword arguments for its bundle."""
    stats = Stats(cfg.name, log)
    link.tunnels.count = stats.count
    # A proxy's members from the other sites come from announcements in either mode.
    by_directory = cfg.host.discovery == "directory" and cfg.role == "host"
    learning = cfg.learning
    channel = ControlChannel(cfg.host.keyring, legs, stats, leg_for=leg_for)
    return {
        "cfg": cfg,
        "stats": stats,
        "link": link,
        "channel": channel,
        "members": Membership(learning.announce_interval, by_directory, cfg.proxy.ha_agent_grace),
        "resolver": Resolver(stats, learning),
        "learned": LearnedEndpoints(
            stats, link, flows, learning.max_learned_per_instance, local=local
        ),
        "takeover": Takeover(grace=TAKEOVER_GRACE_INTERVALS * learning.announce_interval),
        "incarnation": int(channel.wall_clock() * 1_000_000),
    }


def _link(cfg: DoveConfig) -> SwitchLink:
    return SwitchLink(Tunnels(cfg.host.tunnel_type, cfg.host.accept_tunnel_types))


def host_parts(cfg: DoveConfig, log: logging.Logger) -> HostParts:
    link, ports = _link(cfg), LocalPorts()
    by_directory = cfg.host.discovery == "directory"
    tunnel_flows = TunnelFlows(link, cfg.learning.learn_idle_timeout)
    common = _common(cfg, log, link, (cfg.host.underlay_ip,), tunnel_flows, local=ports)
    members, stats = common["members"], common["stats"]
    assert isinstance(members, Membership) and isinstance(stats, Stats)
    routers = Routers(ports, members, link)
    tunnel_flows.neighbors = routers
    resolver = common["resolver"]
    assert isinstance(resolver, Resolver)
    resolver.keep_given_up = True  # drained by the host's tick: to its external VTEPs
    vteps = ExternalVteps(ports, link, stats, cfg.vteps)
    instances = HostInstances(
        ports, members, link, cfg.learning.departure_memory, acceptance=routers, vteps=vteps
    )
    vteps.regroup = instances.ports_changed
    vteps.declared("config", cfg.vteps.declared)  # directory mode adds its own source
    return HostParts(
        **common,  # type: ignore[arg-type]
        ports=ports,
        instances=instances,
        mobility=Mobility(ttl=cfg.learning.departure_memory),
        tunnel_flows=tunnel_flows,
        directory=DirectoryMembers(cfg.host.underlay_ip) if by_directory else None,
        published=Published(cfg.name) if by_directory else None,
        dhcp=DhcpServer(stats, cfg.dhcp, routers.subnet_of, encapsulations=link.tunnels.accepted),
        routers=routers,
        vteps=vteps,
    )


def proxy_parts(cfg: DoveConfig, log: logging.Logger, now: float) -> ProxyParts:
    wan_ip = cfg.proxy.wan_ip
    if cfg.role != "proxy" or wan_ip is None:
        raise ValueError("a proxy needs role = proxy and a wan_ip")
    link = _link(cfg)
    sides = Sides(cfg.host.underlay_ip, wan_ip, frozenset(cfg.proxy.wan_peers))
    # The size check towards the WAN counts VXLAN's header: Geneve's option costs 8 more.
    wan_mtu = cfg.proxy.wan_mtu - beyond_vxlan(link.tunnels.own)
    flows = ProxyFlows(sides, cfg.learning.learn_idle_timeout, wan_mtu, link.tunnels)
    legs = (cfg.host.underlay_ip, wan_ip)
    common = _common(cfg, log, link, legs, flows, leg_for=sides.leg)
    members, stats = common["members"], common["stats"]
    assert isinstance(members, Membership) and isinstance(stats, Stats)
    return ProxyParts(
        **common,  # type: ignore[arg-type]
        sides=sides,
        instances=ProxyInstances(sides, members, link, wan_mtu),
        election=Election(cfg.name, cfg.host.underlay_ip, cfg.proxy, now, stats.count),
        directory=(
            DirectoryMembers(cfg.host.underlay_ip) if cfg.host.discovery == "directory" else None
        ),
        fragmenter=Fragmenter(cfg.proxy.wan_mtu),
        reassembly=Reassembly(),
    )


# --- the external gateway (docs/routing.md) -------------------------------------------


@dataclass
class GatewayParts(Common):
    election: Election  # active or standby between the two gateways
    routers: GatewayRouters  # the routers the marks declare, and their flows here
    external: ExternalNet  # the external port, the next hop's and neighbors' MACs


def gateway_parts(cfg: DoveConfig, log: logging.Logger, now: float) -> GatewayParts:
    if cfg.role != "gateway":
        raise ValueError("a gateway needs role = gateway")
    link = _link(cfg)
    flows = GatewayEndpointFlows(link, cfg.learning.learn_idle_timeout)
    common = _common(cfg, log, link, (cfg.host.underlay_ip,), flows)
    stats = common["stats"]
    assert isinstance(stats, Stats)
    g = cfg.gateway
    # The proxies' election, between the gateways: the same hellos and rules.
    election_settings = ProxyConfig(
        proxy_priority=g.gateway_priority,
        proxy_hello_interval=g.gateway_hello_interval,
        ha_agent_grace=cfg.proxy.ha_agent_grace,
    )
    return GatewayParts(
        **common,  # type: ignore[arg-type]
        election=Election(cfg.name, cfg.host.underlay_ip, election_settings, now, stats.count),
        routers=GatewayRouters(),
        external=ExternalNet(g),
    )
