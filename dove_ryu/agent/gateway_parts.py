"""The parts only a gateway has (docs/routing.md, "The gateway role"): its routers and
their flows, its leg in the external network, and how it reaches an inside endpoint.

`GatewayRouters` owns the routers the marks declare and the flows each has on the
gateway (the ARP answers for their external addresses only while active);
`ExternalNet` the external port and the MACs of the next hop and of the neighbors on
the external subnet, resolved by ARP from the agent; `GatewayEndpointFlows` the flows
of a learned inside endpoint (its neighbor entries and its tunnel); `GatewayReport`
what the gateway shows of all that (its status and statistics).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.stats import InstanceCounts, StatsView
from dove_ryu.config import GatewayConfig
from dove_ryu.model import Endpoint, Router, router_mac
from dove_ryu.openflow import flows
from dove_ryu.openflow import gateway_flows as gw
from dove_ryu.openflow.gateway_flows import ExternalSide
from dove_ryu.openflow.ofmsg import CtFlushZone, OfMsg
from dove_ryu.openflow.packet import ARP_REPLY, ETH_TYPE_ARP, Frame

if TYPE_CHECKING:
    from dove_ryu.agent.parts import GatewayParts

ARP_RETRY = 1.0  # seconds before an unanswered ARP request is asked again
NEXT_HOP_REFRESH = 30.0  # seconds between ARP requests for a known next hop
MAX_EXTERNAL_NEIGHBORS = 4096  # MACs kept of hosts on the external subnet


class GatewayEndpointFlows:
    """A gateway reaches an inside endpoint by its address (l3_neighbor: IP -> MAC) and
    its MAC through the tunnel to its host (l2_forward), as a host does
    (`dove_ryu.agent.endpoints.EndpointFlows`)."""

    def __init__(self, link: SwitchLink, idle_timeout: int) -> None:
        self.link = link
        self.idle_timeout = idle_timeout

    def install(self, ep: Endpoint, idle_timeout: int | None = None) -> list[OfMsg]:
        neighbors = [gw.neighbor_flow(ep, ip) for ip in ep.ips]
        idle = self.idle_timeout if idle_timeout is None else idle_timeout
        return [flows.learned_l2_flow(ep, self.link.tunnel, idle), *neighbors]

    def remove(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        msgs: list[OfMsg] = [gw.delete_neighbor_flow(ep, ip) for ip in ep.ips]
        if not keep_l2:
            msgs += [m for m in flows.delete_learned(ep) if m.table_id != flows.ARP_ND.table_id]
        return msgs


class GatewayRouters:
    """The routers declared by the marks, and their flows on this gateway."""

    def __init__(self) -> None:
        self.routers: dict[int, Router] = {}

    def instances(self) -> set[int]:
        return {i for r in self.routers.values() for i in r.instances}

    def of_instance(self, instance: int) -> Router | None:
        return next((r for r in self.routers.values() if instance in r.instances), None)

    def external_addresses(self) -> list[IPv4Address]:
        return [ip for r in self.routers.values() for ip in gw.external_addresses(r)]

    def replace(
        self, routers: Iterable[Router], ext: ExternalSide | None, active: bool
    ) -> list[OfMsg]:
        """Take the whole set of routers; the flows of those that changed."""
        new = {r.router_id: r for r in routers if r.has_way_out}
        msgs: list[OfMsg] = []
        for rid, old in self.routers.items():
            if new.get(rid) != old and ext is not None:
                msgs += gw.delete_router(old, ext)
            if _lost_an_address(old, new.get(rid)):
                msgs.append(CtFlushZone(rid))
        for rid, router in new.items():
            if self.routers.get(rid) != router and ext is not None:
                msgs += self.flows_of(router, ext, active)
        self.routers = new
        return msgs

    @staticmethod
    def flows_of(router: Router, ext: ExternalSide, active: bool) -> list[OfMsg]:
        answers = gw.arp_answer_flows(router, ext) if active else []
        return [*gw.router_flows(router, ext), *answers]

    def resync(self, ext: ExternalSide, active: bool) -> list[OfMsg]:
        return [m for r in self.routers.values() for m in self.flows_of(r, ext, active)]

    def activity(self, ext: ExternalSide, active: bool) -> list[OfMsg]:
        """The ARP answers go in on becoming active (with gratuitous ARPs for every
        external address) and out on stepping down."""
        msgs: list[OfMsg] = []
        for router in self.routers.values():
            if active:
                msgs += gw.arp_answer_flows(router, ext)
                msgs += [gw.gratuitous_arp(ext, ip) for ip in gw.external_addresses(router)]
            else:
                msgs += gw.delete_arp_answers(router, ext)
        return msgs


def _lost_an_address(old: Router, new: Router | None) -> bool:
    """Whether a router gave up an external address (its SNAT address or a floating IP):
    the connections of its conntrack zone must go, or replies to that address, once it
    is another router's, would still be un-NATed into this router's instances."""
    if new is None:
        return True
    if old.snat is not None and old.snat != new.snat:
        return True
    return bool(set(old.floating_ips) - set(new.floating_ips))


class ExternalNet:
    """The external port and the MACs behind it: the next hop's (everything off the
    external subnet goes there) and on-link neighbors', learned from ARP replies to the
    gateway's own requests."""

    def __init__(self, settings: GatewayConfig) -> None:
        assert settings.external_ip is not None and settings.external_nexthop is not None
        self.ip = settings.external_ip
        self.network = IPv4Interface(f"{self.ip}/{settings.external_prefix}").network
        self.nexthop = settings.external_nexthop
        self.side: ExternalSide | None = None
        self.macs: dict[IPv4Address, str] = {}
        self.asked: dict[IPv4Address, float] = {}
        self.unsolicited = 0  # ARP replies not asked for (or a full table): ignored
        self.refreshed = float("-inf")  # when the known next hop was last asked again

    def port(self, ofport: int | None, mac: str | None) -> bool:
        """The external port as OVSDB shows it; True if that changed."""
        side = None
        if ofport is not None and mac is not None:
            side = ExternalSide(ofport, mac, self.ip, self.network)
        changed = side != self.side
        self.side = side
        return changed

    def flows(self) -> list[OfMsg]:
        """What leaves the external port, to MACs known so far (resync)."""
        side = self.side
        if side is None:
            return []
        msgs: list[OfMsg] = [gw.on_link_flow(side)]
        for ip, mac in self.macs.items():
            msgs.append(gw.next_hop_flow(side, mac, ip))
            if ip == self.nexthop:
                msgs.append(gw.next_hop_flow(side, mac))
        return msgs

    def adopt(self, found: dict[IPv4Address | None, str]) -> int:
        """The MACs a predecessor resolved, as its flows show them (None: the next
        hop's), where we know none: they are refreshed by ARP as any other."""
        adopted = 0
        for ip, mac in found.items():
            ip = self.nexthop if ip is None else ip
            if (
                ip in self.macs
                or ip not in self.network
                or len(self.macs) >= MAX_EXTERNAL_NEIGHBORS
            ):
                continue
            self.macs[ip] = mac
            adopted += 1
        return adopted

    def ask(self, now: float, ip: IPv4Address) -> list[OfMsg]:
        """An ARP request for ``ip`` (the next hop, or a neighbor on the subnet), unless
        one went out a moment ago."""
        side = self.side
        if side is None or self.asked.get(ip, -ARP_RETRY) > now - ARP_RETRY:
            return []
        self.asked[ip] = now
        return [gw.arp_request(side, ip)]

    def missed(self, now: float, dst: IPv4Address) -> list[OfMsg]:
        """A packet out had no MAC to go to: ask for its destination or the next hop."""
        return self.ask(now, dst if dst in self.network else self.nexthop)

    def answered(self, frame: Frame) -> list[OfMsg]:
        """An ARP reply to our address: the sender's MAC, if on our subnet and asked for.
        An unsolicited reply (or a request) changes nothing: anyone on the external
        segment could send one to take the next hop's place or fill the table."""
        arp, side = frame.arp, self.side
        if arp is None or side is None or frame.eth_type != ETH_TYPE_ARP:
            return []
        if arp.op != ARP_REPLY or arp.spa not in self.network or arp.spa not in self.asked:
            self.unsolicited += 1
            return []
        del self.asked[arp.spa]  # answered: the next reply must be asked for again
        if arp.spa == self.ip or self.macs.get(arp.spa) == arp.sha:
            return []
        if arp.spa not in self.macs and len(self.macs) >= MAX_EXTERNAL_NEIGHBORS:
            self.unsolicited += 1
            return []
        self.macs[arp.spa] = arp.sha
        msgs: list[OfMsg] = [gw.next_hop_flow(side, arp.sha, arp.spa)]
        if arp.spa == self.nexthop:
            msgs.append(gw.next_hop_flow(side, arp.sha))
        return msgs

    def tick(self, now: float) -> list[OfMsg]:
        """The next hop's MAC, asked for until known and refreshed now and then."""
        if self.nexthop not in self.macs:
            return self.ask(now, self.nexthop)
        if self.refreshed <= now - NEXT_HOP_REFRESH:
            self.refreshed = self.asked[self.nexthop] = now
            side = self.side
            return [gw.arp_request(side, self.nexthop)] if side is not None else []
        return []


class GatewayReport:
    """What a gateway shows (``dovectl status``, the metrics): read only."""

    def __init__(self, p: GatewayParts) -> None:
        self.p = p

    def status(self, now: float) -> dict[str, object]:
        ext = self.p.external
        active = self.p.election.active
        state = "active" if active else "standby"
        if self.p.election.listening(now):
            state = "listening"  # just (re)started: says nothing until it has heard
        return {
            "host": self.p.name,
            "role": "gateway",
            "active": active,
            "state": state,
            "underlay_ip": str(self.p.me),
            "external_ip": str(ext.ip),
            "external_port": ext.side.ofport if ext.side else None,
            "external": {
                "port": self.p.cfg.gateway.external_port,
                "ofport": ext.side.ofport if ext.side else None,
                "mac": ext.side.mac if ext.side else None,
                "ip": str(ext.ip),
                "network": str(ext.network),
            },
            "next_hop": {"ip": str(ext.nexthop), "mac": ext.macs.get(ext.nexthop)},
            "connected": self.p.link.connected,
            "partners": self.p.election.partner_status(),
            "routers": {
                str(r.router_id): {
                    "snat": str(r.snat) if r.snat else None,
                    "floating_ips": {str(f.external): str(f.inside) for f in r.floating_ips},
                    "instances": list(r.instances),
                    "subnets": [
                        {
                            "instance": s.instance,
                            "gateway": str(s.gateway),
                            "mac": router_mac(s.instance),
                        }
                        for s in r.subnets
                    ],
                }
                for r in sorted(self.p.routers.routers.values(), key=lambda r: r.router_id)
            },
            "instances": {
                str(i): {
                    "members": sorted(str(h) for h in self.p.members.hosts(i)),
                    "learned": self.p.learned.rows(now, i),
                }
                for i in sorted(self.p.routers.instances())
            },
            "pending": len(self.p.resolver),
            "takeover": self.p.takeover.status(),
            "counters": dict(sorted(self.p.stats.counters.items())),
            "keys": self.p.channel.key_status(),
        }

    def stats_view(self) -> StatsView:
        return StatsView(
            host=self.p.name,
            role="gateway",
            site="",
            underlay_ip=str(self.p.me),
            wan_ip="",
            connected=self.p.link.connected,
            proxy_active=self.p.election.active,
            pending=len(self.p.resolver),
            counters=dict(self.p.stats.counters),
            packet_ins=dict(self.p.stats.packet_ins),
            instances={
                i: InstanceCounts(
                    local=0,
                    learned=len(self.p.learned.of_instance(i)),
                    members=self.p.members.count(i),
                )
                for i in sorted(self.p.routers.instances())
            },
            latency=self.p.stats.learn_latency.copy(),
        )
