"""A host's side of its tenant routers (docs/routing.md): the router marks taking effect,
and which gateway default-routed traffic goes to.

`HostCore` hands it the bridge's router marks and the gateways' announcements; it keeps
the routing flows and the classify acceptance of the routers' members in step."""

from __future__ import annotations

from ipaddress import IPv4Address

from dove_ryu.agent.parts import HostParts
from dove_ryu.model import Router
from dove_ryu.openflow.ofmsg import OfMsg
from dove_ryu.protocol.messages import GatewayRole


class HostRouting:
    def __init__(self, p: HostParts) -> None:
        self.p = p
        self.gateways_heard: set[IPv4Address] = set()  # gateways that announced themselves

    def routers_changed(
        self, routers: list[Router], gateways: list[IPv4Address], rejected: list[tuple[str, str]]
    ) -> list[OfMsg]:
        """The bridge's router marks now: route between the subnets of the routers this
        host serves, accept their members' tunnels."""
        for mark, why in rejected:
            self.p.stats.log.warning("%s: router mark %s rejected: %s", self.p.name, mark, why)
        self.p.stats.counters["router_rejected"] = len(rejected)
        active = self.p.routers.active_gateway
        self.p.routers.set_routers(routers, gateways, rejected)
        if active is None or active not in self.p.routers.gateways:
            # Only until a gateway says it is active: a change of the marks must not
            # send traffic back to a gateway the election left (it may be dead).
            active = self._first_known_gateway()
        self.p.routers.set_active_gateway(active)
        self.p.stats.count("routers_changed")
        self.p.stats.log.info(
            "%s: routers %s, gateways %s",
            self.p.name,
            ",".join(str(r.router_id) for r in routers) or "none",
            ",".join(map(str, gateways)) or "none",
        )
        return self._refresh()

    def gateway_heard(
        self, now: float, sender: IPv4Address, role: GatewayRole
    ) -> tuple[list[OfMsg], bool]:
        """An external gateway's announcement: the one that says it is active gets the
        default-routed traffic (no preemption: the latest to claim it is the one).
        Returns the flow changes, and whether the gateway is heard for the first time
        (it is then told at once which instances we serve)."""
        if sender not in self.p.routers.gateways:
            self.p.stats.drop("gateway_not_declared", now, f"from {sender}")
            return [], False
        msgs: list[OfMsg] = []
        if role.active:
            msgs = self._set_active(sender)
        elif sender == self.p.routers.active_gateway:
            # The one we send to stepped down: the other declared gateway took over (or
            # will say so; until then nothing goes to one that no longer answers ARP).
            others = [g for g in self.p.routers.gateways if g != sender]
            msgs = self._set_active(others[0] if others else None)
        new = sender not in self.gateways_heard
        self.gateways_heard.add(sender)
        return msgs, new

    def _set_active(self, gateway: IPv4Address | None) -> list[OfMsg]:
        return self._refresh() if self.p.routers.set_active_gateway(gateway) else []

    def _first_known_gateway(self) -> IPv4Address | None:
        """Until the gateways announce who is active: the first of dove-gateways that
        is one of our peers."""
        peers = set(self.p.cfg.host.peers)
        return next((g for g in self.p.routers.gateways if g in peers), None)

    def _refresh(self) -> list[OfMsg]:
        msgs = self.p.routers.refresh(self.p.learned.of_instance)
        return msgs + self.p.instances.refresh_accepted(sorted(self.p.ports.instances))
