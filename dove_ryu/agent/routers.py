"""A host's share of its tenants' routers (docs/routing.md, "The host").

The routers come from the bridge's marks; this part keeps them and the flows that
follow from them and from the VM ports here: a router port per subnet with VMs
here, the routes from those subnets, a neighbor flow per local address of a routed
instance, and the per-instance miss that asks the agent for an unknown destination.
Those flows are kept as a wanted set and changed by difference (`refresh`), so a
router, a port or the active gateway changing touches only what it changes.

It also says which tunnel sources classify accepts beyond an instance's members
(the members of the other instances of its router, and the gateways), and whether
learned endpoints of an instance get neighbor flows (`routed_here`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.model import Endpoint, LearnedEndpoint, Router, Subnet
from dove_ryu.openflow import routing_flows
from dove_ryu.openflow.ofmsg import FlowMod, OfMsg
from dove_ryu.openflow.pipeline import BY_ID
from dove_ryu.openflow.tunnels import Tunnels

FlowKey = tuple[int, int, tuple[tuple[str, object], ...]]
LearnedOf = Callable[[int], Mapping[str, LearnedEndpoint]]


def _key(fm: FlowMod) -> FlowKey:
    return (fm.table_id, fm.priority, tuple(sorted(fm.match.items())))


class Routers:
    def __init__(self, ports: LocalPorts, members: Membership, link: SwitchLink) -> None:
        self.ports = ports
        self.members = members
        self.link = link
        self.routers: dict[int, Router] = {}
        self.gateways: tuple[IPv4Address, ...] = ()
        self.rejected: tuple[tuple[str, str], ...] = ()
        self._by_instance: dict[int, Router] = {}
        self._active: IPv4Address | None = None
        self._installed: dict[FlowKey, FlowMod] = {}
        self._routed: set[int] = set()  # instances whose learned endpoints have neighbor flows

    # ------------------------------------------------------------- reading

    def router_of(self, instance: int) -> Router | None:
        return self._by_instance.get(instance)

    def subnet_of(self, instance: int) -> Subnet | None:
        """The router subnet ``instance`` is, if any (DHCP's prefix, router and server)."""
        router = self._by_instance.get(instance)
        return router.subnet_of(instance) if router else None

    def siblings(self, instance: int) -> tuple[int, ...]:
        """The other instances of ``instance``'s router."""
        router = self._by_instance.get(instance)
        return tuple(i for i in router.instances if i != instance) if router else ()

    def extra_members(self, instance: int) -> set[IPv4Address]:
        """Tunnel sources classify accepts for a routed instance beyond its members: a
        routed packet arrives in the destination's instance from the source's host."""
        if instance not in self._by_instance:
            return set()
        hosts = {h for i in self.siblings(instance) for h in self.members.hosts(i)}
        return hosts | set(self.gateways)

    def served(self) -> list[Router]:
        """The routers with a subnet that has VMs here: those this host routes for."""
        local = self.ports.instances
        return [r for _, r in sorted(self.routers.items()) if local & set(r.instances)]

    def instances(self) -> frozenset[int]:
        """Every instance of the routers this host routes for: those it serves and
        those it routes into (in directory mode it monitors their hosts and endpoints)."""
        return frozenset(i for r in self.served() for i in r.instances)

    def routed_here(self, instance: int) -> bool:
        """Whether routed packets may enter ``instance`` here (so its endpoints need
        neighbor flows)."""
        return instance in self._routed

    def is_gateway_address(self, instance: int, ip: IPv4Address) -> bool:
        router = self._by_instance.get(instance)
        subnet = router.subnet_of(instance) if router else None
        return subnet is not None and subnet.gateway.ip == ip

    @property
    def active_gateway(self) -> IPv4Address | None:
        return self._active

    # ------------------------------------------------------------- changes

    def set_routers(
        self,
        routers: Iterable[Router],
        gateways: Iterable[IPv4Address],
        rejected: Iterable[tuple[str, str]] = (),
    ) -> None:
        """The routers and gateways the bridge declares now (apply with `refresh`)."""
        self.routers = {r.router_id: r for r in routers}
        self._by_instance = {i: r for r in self.routers.values() for i in r.instances}
        self.gateways = tuple(gateways)
        self.rejected = tuple(rejected)

    def set_active_gateway(self, gateway: IPv4Address | None) -> bool:
        """Where default-routed traffic goes (the gateway election's result); True if
        it changed (apply with `refresh`)."""
        changed = gateway != self._active
        self._active = gateway
        return changed

    def resync(self) -> list[OfMsg]:
        """Everything again, for a switch whose flows were all deleted (the learned
        endpoints' neighbor flows come back with their other flows, after this)."""
        self._installed.clear()
        self._routed = {i for r in self.served() for i in r.instances}
        return self.refresh(lambda instance: {})

    def refresh(self, learned_of: LearnedOf, renew_ofports: Iterable[int] = ()) -> list[OfMsg]:
        """Bring the routing flows to what the routers, the ports and the active
        gateway want.  ``renew_ofports``: ports whose flows were just deleted by cookie
        (they went and came back), so theirs are sent again."""
        if not self.link.connected:
            return []
        renew = set(renew_ofports)
        if renew:
            for key in [k for k, fm in self._installed.items() if fm.match.get("in_port") in renew]:
                del self._installed[key]
        wanted = {_key(fm): fm for fm in self._wanted()}
        msgs: list[OfMsg] = []
        for key, fm in self._installed.items():
            if key not in wanted:
                msgs.append(BY_ID[fm.table_id].delete(match=fm.match, priority=fm.priority))
        for key, fm in wanted.items():
            if self._installed.get(key) != fm:
                msgs.append(fm)
        self._installed = wanted
        msgs += self._routed_changed(learned_of)
        return msgs

    def _routed_changed(self, learned_of: LearnedOf) -> list[OfMsg]:
        """Learned endpoints of instances that became (or stopped being) routed here."""
        routed = {i for r in self.served() for i in r.instances}
        msgs: list[OfMsg] = []
        for instance in sorted(routed - self._routed):
            for entry in learned_of(instance).values():
                msgs += self.endpoint_flows(entry.endpoint, routed={instance})
        for instance in sorted(self._routed - routed):
            for entry in learned_of(instance).values():
                msgs += routing_flows.delete_neighbor_flows(instance, entry.endpoint.ips)
        self._routed = routed
        return msgs

    def endpoint_flows(self, ep: Endpoint, routed: set[int] | None = None) -> list[OfMsg]:
        """The neighbor flows of a learned endpoint, if its instance is routed here."""
        if ep.instance not in (self._routed if routed is None else routed):
            return []
        return list(routing_flows.neighbor_flows(ep.instance, ep.mac, ep.ips))

    def endpoint_gone(self, ep: Endpoint) -> list[OfMsg]:
        if ep.instance not in self._routed:
            return []
        # An address a local port now has keeps the local port's neighbor flow (same
        # match): a remote endpoint that held it before must not take it away.
        deletes = routing_flows.delete_neighbor_flows(ep.instance, ep.ips)
        return [d for d in deletes if _key(d) not in self._installed]

    def _wanted(self) -> list[FlowMod]:
        tunnel = self.link.tunnel
        local = self.ports.instances
        flows: list[FlowMod] = []
        for router in self.served():
            for subnet in router.subnets:
                flows.append(routing_flows.route_miss_flow(subnet.instance))
                for port in self.ports.of_instance(subnet.instance):
                    flows += routing_flows.neighbor_flows(port.instance, port.mac, port.ips)
                if subnet.instance in local:
                    flows += self._source_flows(router, subnet, tunnel)
        return flows

    def _source_flows(self, router: Router, subnet: Subnet, tunnel: Tunnels) -> list[FlowMod]:
        flows = routing_flows.router_port_flows(router, subnet)
        flows += routing_flows.route_flows(router, subnet, tunnel, self._active)
        for port in self.ports.of_instance(subnet.instance):
            flows += routing_flows.gateway_spoof_flows(subnet, port.ofport)
        return flows

    # -------------------------------------------------------------- status

    def status(self) -> dict[str, object]:
        """The routers, for `dovectl routers`."""
        served = {r.router_id for r in self.served()}
        return {
            "routers": {
                str(r.router_id): {
                    "served": r.router_id in served,
                    "subnets": [
                        {
                            "instance": s.instance,
                            "gateway": str(s.gateway),
                            "mac": s.mac,
                            "local": s.instance in self.ports.instances,
                        }
                        for s in r.subnets
                    ],
                    "snat": str(r.snat) if r.snat else None,
                    "floating_ips": {str(f.external): str(f.inside) for f in r.floating_ips},
                }
                for _, r in sorted(self.routers.items())
            },
            "gateways": [str(g) for g in self.gateways],
            "active_gateway": str(self._active) if self._active else None,
            "rejected": [{"mark": m, "why": w} for m, w in self.rejected],
        }
