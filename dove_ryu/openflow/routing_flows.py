"""Flow builders of a host's distributed router (docs/routing.md, "The host").

Pure, as `dove_ryu.openflow.flows`: state in, flow-mods out, every flow through the
pipeline's declaration.  A subnet's router port lives in arp_nd (its gateway address
answered, IPv4 to its gateway MAC sent to l3_route); l3_route routes between the
router's subnets or to the active gateway; l3_neighbor turns a routed packet's
destination address into its MAC, and asks the agent when it does not know it.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from dove_ryu.model import Router, Subnet
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.flows import (
    PRIO_ARP_CHECKED,
    PRIO_EXACT,
    PRIO_GUARD,
    PRIO_INSTANCE_MISS,
    PRIO_TUNNEL_DEFAULT,
    TAG_ROUTE_MISS,
    _arp_request,
    _local_md,
    arp_responder,
    tunnel_actions,
)
from dove_ryu.openflow.ofmsg import OFPP_CONTROLLER, DecTtl, FlowMod, MatchValue, Output, SetField
from dove_ryu.openflow.packet import ETH_TYPE_ARP, ETH_TYPE_IPV4
from dove_ryu.openflow.pipeline import (
    ARP_ND,
    INSTANCE_MASK,
    L2_FORWARD,
    L3_NEIGHBOR,
    L3_ROUTE,
    PORT_SECURITY,
)
from dove_ryu.openflow.tunnels import FLAG_ROUTED, Tunnels

PRIO_SPOOF_GATEWAY = PRIO_ARP_CHECKED + 10  # above the port's own ARP checks


def _md(instance: int) -> tuple[int, int]:
    return (instance, INSTANCE_MASK)


def _network(subnet: Subnet) -> tuple[str, str]:
    return (str(subnet.network.network_address), str(subnet.network.netmask))


def router_port_flows(router: Router, subnet: Subnet) -> list[FlowMod]:
    """A subnet's router port, for the VMs of the subnet here: ARP for the gateway
    address answered with the gateway MAC; IPv4 sent to that MAC routed."""
    cookie = Cookie(Purpose.ROUTER_PORT, subnet.instance, router.router_id)
    ip = subnet.gateway.ip
    return [
        ARP_ND.flow(
            priority=PRIO_EXACT,
            match=_arp_request(subnet.instance, ip),
            cookie=cookie,
            actions=arp_responder(subnet.mac, ip),
        ),
        ARP_ND.flow(
            priority=PRIO_EXACT,
            match={
                "metadata": _local_md(subnet.instance),
                "eth_type": ETH_TYPE_IPV4,
                "eth_dst": subnet.mac,
            },
            cookie=cookie,
            goto=L3_ROUTE,
        ),
    ]


def route_flows(
    router: Router,
    source: Subnet,
    tunnel_ofport: Tunnels | int,
    active_gateway: IPv4Address | None,
) -> list[FlowMod]:
    """l3_route for packets from ``source`` (a subnet with VMs here): TTL expiring to
    the agent, each subnet of the router (its own too) routed into its instance, and
    the rest to the active gateway when the router has a way out."""
    md = _md(source.instance)
    ttl_cookie = Cookie(Purpose.ROUTE_TTL, source.instance, router.router_id)
    msgs = [
        L3_ROUTE.flow(
            priority=PRIO_GUARD,
            match={"metadata": md, "eth_type": ETH_TYPE_IPV4, "nw_ttl": ttl},
            cookie=ttl_cookie,
            actions=[Output(OFPP_CONTROLLER)],
        )
        for ttl in (0, 1)
    ]
    for dest in router.subnets:
        msgs.append(
            L3_ROUTE.flow(
                priority=PRIO_EXACT,
                match={"metadata": md, "eth_type": ETH_TYPE_IPV4, "ipv4_dst": _network(dest)},
                cookie=Cookie(Purpose.ROUTE, dest.instance, router.router_id),
                actions=[DecTtl(), SetField("eth_src", dest.mac)],
                write_metadata=_md(dest.instance),
                goto=L3_NEIGHBOR,
            )
        )
    if router.has_way_out and active_gateway is not None:
        msgs.append(
            L3_ROUTE.flow(
                priority=PRIO_TUNNEL_DEFAULT,
                match={"metadata": md, "eth_type": ETH_TYPE_IPV4},
                cookie=Cookie(Purpose.ROUTE_DEFAULT, source.instance, router.router_id),
                actions=tunnel_actions(tunnel_ofport, source.instance, active_gateway, FLAG_ROUTED),
            )
        )
    return msgs


def route_miss_flow(instance: int) -> FlowMod:
    """A routed packet into ``instance`` whose destination has no neighbor flow yet:
    to the agent, which resolves it and releases the packet."""
    return L3_NEIGHBOR.flow(
        priority=PRIO_INSTANCE_MISS,
        match={"metadata": _md(instance), "eth_type": ETH_TYPE_IPV4},
        cookie=Cookie(Purpose.INSTANCE, instance, TAG_ROUTE_MISS),
        actions=[Output(OFPP_CONTROLLER)],
    )


def _neighbor_match(instance: int, ip: IPv4Address) -> dict[str, MatchValue]:
    return {"metadata": _md(instance), "eth_type": ETH_TYPE_IPV4, "ipv4_dst": str(ip)}


def neighbor_flows(instance: int, mac: str, ips: Iterable[IPv4Address]) -> list[FlowMod]:
    """A routed packet for one of an endpoint's addresses gets its MAC, then l2_forward
    takes it where the endpoint is (a local port, or the tunnel to its host)."""
    cookie = Cookie(Purpose.NEIGHBOR, instance, cookies.mac_tag(mac))
    return [
        L3_NEIGHBOR.flow(
            priority=PRIO_EXACT,
            match=_neighbor_match(instance, ip),
            cookie=cookie,
            actions=[SetField("eth_dst", mac)],
            goto=L2_FORWARD,
        )
        for ip in ips
    ]


def delete_neighbor_flows(instance: int, ips: Iterable[IPv4Address]) -> list[FlowMod]:
    """Strictly by match: another endpoint may take the address next."""
    return [
        L3_NEIGHBOR.delete(match=_neighbor_match(instance, ip), priority=PRIO_EXACT) for ip in ips
    ]


def gateway_spoof_flows(subnet: Subnet, ofport: int) -> list[FlowMod]:
    """A VM of the subnet claiming its gateway address, in ARP or as an IPv4 source (an
    ICMP redirect "from the router"), is dropped (a port with addresses is held to them
    already; this covers a port without)."""
    cookie = Cookie(Purpose.DROP_SPOOF, subnet.instance, ofport)
    gateway = str(subnet.gateway.ip)
    return [
        PORT_SECURITY.flow(
            priority=PRIO_SPOOF_GATEWAY,
            match={"in_port": ofport, "eth_type": ETH_TYPE_ARP, "arp_spa": gateway},
            cookie=cookie,
        ),
        PORT_SECURITY.flow(
            priority=PRIO_SPOOF_GATEWAY,
            match={"in_port": ofport, "eth_type": ETH_TYPE_IPV4, "ipv4_src": gateway},
            cookie=cookie,
        ),
    ]
