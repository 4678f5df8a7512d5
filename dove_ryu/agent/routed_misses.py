"""What a host's routers send to the agent (docs/routing.md, "The host").

- A routed packet whose destination has no neighbor flow yet (l3_neighbor's
  per-instance miss): `HostMisses` resolves the address in the destination instance
  as it resolves an ARP miss, naming the VM that sent it in its own instance (the
  answering host gleans it there, so the reply needs no LEARN of its own; `HostCore`
  ``_glean``); this file checks the miss and, once the answer comes,
  delivers the held packet itself (it was routed already: its source MAC is a gateway
  MAC, so it cannot go through the pipeline again from the VM's port).
- A packet whose TTL would expire: dropped, counted, and answered with ICMP time
  exceeded from the subnet's gateway address.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from dove_ryu.agent.parts import HostParts
from dove_ryu.agent.resolver import Held
from dove_ryu.model import ROUTER_MAC_PREFIX, Endpoint, VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    Action,
    OfMsg,
    Output,
    PacketIn,
    PacketOut,
    SetField,
)
from dove_ryu.openflow.packet import ipv4_dst, mac_bytes, mac_str, time_exceeded
from dove_ryu.openflow.tunnels import FLAG_ROUTED
from dove_ryu.protocol.messages import Requester

_ROUTER_MAC = mac_bytes(ROUTER_MAC_PREFIX + ":00:00:00")[:3]


class RoutedMisses:
    def __init__(self, p: HostParts) -> None:
        self.p = p

    def _router_vm(self, instance: int, in_port: int) -> VmPort | None:
        """The VM here at ``in_port``, if it is on the router of ``instance``."""
        router = self.p.routers.router_of(instance)
        if router is None:
            return None
        ports = (port for i in router.instances for port in self.p.ports.of_instance(i))
        return next((port for port in ports if port.ofport == in_port), None)

    def miss_target(
        self, now: float, instance: int, in_port: int, data: bytes
    ) -> tuple[IPv4Address, Requester] | None:
        """The address a routed miss into ``instance`` asks for, and who asks (the VM
        that sent it, in its own instance: the answering host gleans it there), or
        None (dropped)."""
        source = self._router_vm(instance, in_port)
        if source is None:
            self.p.stats.drop("packet_in_foreign", now, f"routed miss from in_port {in_port}")
            return None
        target = ipv4_dst(data)
        if target is None:
            self.p.stats.drop("packet_in_malformed", now, "routed miss is not IPv4")
            return None
        if self.p.routers.is_gateway_address(instance, target):
            self.p.stats.drop("route_to_gateway", now, f"instance {instance} {target}")
            return None
        seq = self.p.ports.seq(source.instance, source.mac)
        return target, Requester(source.mac, source.ips, seq, source.instance)

    def release(self, held: list[Held], ep: Endpoint) -> tuple[list[OfMsg], list[Held]]:
        """The held packets that were routed already, sent straight to ``ep`` (its MAC
        set, out its port or into the tunnel to its host); and the others."""
        routed = [h for h in held if h[1][6:9] == _ROUTER_MAC]
        if not routed:
            return [], held
        rest = [h for h in held if h[1][6:9] != _ROUTER_MAC]
        if not self.p.link.connected:
            return [], rest
        local = self.p.ports.get(ep.instance, ep.mac)
        actions: tuple[Action, ...] = (SetField("eth_dst", ep.mac),)
        if local is not None:
            actions += (Output(local.ofport),)
        else:
            actions += flows.tunnel_actions(self.p.link.tunnel, ep.instance, ep.host, FLAG_ROUTED)
        self.p.stats.count("packets_released", len(routed))
        msgs: list[OfMsg] = [
            PacketOut(OFPP_CONTROLLER, data, actions, after_flows=False) for _, data in routed
        ]
        return msgs, rest

    def ttl_expired(self, now: float, instance: int, punted: PacketIn) -> list[OfMsg]:
        """A packet to route whose TTL would reach zero: dropped, counted, answered."""
        self.p.stats.count("ttl_expired")
        router = self.p.routers.router_of(instance)
        subnet = router.subnet_of(instance) if router else None
        if subnet is None or not self.p.link.connected:
            return []
        src = mac_str(punted.data[6:12]) if len(punted.data) >= 12 else ""
        port = self.p.ports.get(instance, src)
        if port is None or port.ofport != punted.in_port:
            return []
        if not self.p.stats.log_limit.allow(f"time exceeded {instance} {src}", now):
            return []
        answer = time_exceeded(punted.data, subnet.mac, subnet.gateway.ip)
        if answer is None:
            return []
        return [PacketOut(OFPP_CONTROLLER, answer, (Output(port.ofport),), after_flows=False)]
