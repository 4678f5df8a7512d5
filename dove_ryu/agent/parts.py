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
from dove_ryu.agent.election import Election
from dove_ryu.agent.endpoints import EndpointFlows, LearnedEndpoints
from dove_ryu.agent.fragments import Fragmenter, Reassembly
from dove_ryu.agent.instances import HostInstances
from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.agent.mobility import Mobility
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.agent.resolver import Resolver
from dove_ryu.agent.sides import ProxyFlows, ProxyInstances, Sides
from dove_ryu.agent.stats import Stats
from dove_ryu.agent.tunnel import TunnelFlows
from dove_ryu.config import DoveConfig
from dove_ryu.openflow.ofmsg import OfMsg


@dataclass
class Common:
    cfg: DoveConfig
    stats: Stats  # counters, drops, learn latency
    link: SwitchLink  # the bridge: connected or not
    channel: ControlChannel  # authenticated messages to and from other agents
    members: Membership  # which hosts serve which instance; the proxies heard
    resolver: Resolver  # LEARNs in flight, retries, bounds
    learned: LearnedEndpoints  # remote endpoints and the flows that reach them

    @property
    def me(self) -> IPv4Address:
        return self.cfg.underlay_ip

    @property
    def name(self) -> str:
        return self.cfg.name

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


@dataclass
class ProxyParts(Common):
    sides: Sides  # the site leg and the inter-site leg
    instances: ProxyInstances  # per instance: groups by direction, members by leg
    election: Election  # active or standby among the site's proxies
    fragmenter: Fragmenter  # frames too big for the WAN, cut into DOVE fragments
    reassembly: Reassembly  # and put back together


def _common(
    cfg: DoveConfig,
    log: logging.Logger,
    legs: tuple[IPv4Address, ...],
    make_flows: Callable[[SwitchLink], EndpointFlows],
    local: LocalPorts | None = None,
    leg_for: Callable[[IPv4Address], IPv4Address] | None = None,
) -> Common:
    stats = Stats(cfg.name, log)
    link = SwitchLink()
    resolver = Resolver(
        stats,
        timeout=cfg.learn_timeout,
        retries=cfg.learn_retries,
        max_pending_per_instance=cfg.max_pending_per_instance,
        rate_per_instance=cfg.learn_rate_per_instance,
    )
    learned = LearnedEndpoints(
        stats, link, make_flows(link), cfg.max_learned_per_instance, local=local
    )
    return Common(
        cfg=cfg,
        stats=stats,
        link=link,
        channel=ControlChannel(cfg.auth_key, legs, stats, leg_for=leg_for),
        members=Membership(cfg.announce_interval),
        resolver=resolver,
        learned=learned,
    )


def _fields(common: Common) -> dict[str, object]:
    return {name: getattr(common, name) for name in Common.__dataclass_fields__}


def host_parts(cfg: DoveConfig, log: logging.Logger) -> HostParts:
    ports = LocalPorts()

    def tunnel_flows(link: SwitchLink) -> TunnelFlows:
        return TunnelFlows(link, cfg.learn_idle_timeout)

    common = _common(cfg, log, (cfg.underlay_ip,), tunnel_flows, local=ports)
    flows = common.learned.flows
    assert isinstance(flows, TunnelFlows)
    return HostParts(
        **_fields(common),  # type: ignore[arg-type]
        ports=ports,
        instances=HostInstances(ports, common.members, common.link, cfg.departure_memory),
        mobility=Mobility(ttl=cfg.departure_memory),
        tunnel_flows=flows,
    )


def proxy_parts(cfg: DoveConfig, log: logging.Logger, now: float) -> ProxyParts:
    if cfg.role != "proxy" or cfg.wan_ip is None:
        raise ValueError("a proxy needs role = proxy and a wan_ip")
    sides = Sides(cfg.underlay_ip, cfg.wan_ip, frozenset(cfg.wan_peers))

    def proxy_flows(link: SwitchLink) -> ProxyFlows:
        return ProxyFlows(sides, cfg.learn_idle_timeout, cfg.wan_mtu)

    common = _common(cfg, log, (cfg.underlay_ip, cfg.wan_ip), proxy_flows, leg_for=sides.leg)
    return ProxyParts(
        **_fields(common),  # type: ignore[arg-type]
        sides=sides,
        instances=ProxyInstances(sides, common.members, common.link, cfg.wan_mtu),
        election=Election(
            cfg.name, cfg.underlay_ip, cfg.proxy_priority, cfg.proxy_hello_interval, now
        ),  # fmt: skip
        fragmenter=Fragmenter(cfg.wan_mtu),
        reassembly=Reassembly(),
    )
