"""Flow builders of the gateway role (docs/routing.md, "The gateway role").  Pure, and
every flow goes through the declaration in `dove_ryu.openflow.pipeline`.

Out of the overlay::

    classify (tunnel, a member of a router instance) -> l3_route (TTL) -> snat
        (ct commit, zone = router id, nat src = floating IP or the router's address)
        -> ext_out (next hop's MAC) -> the external port

Into it::

    classify (external port) -> ext_in (ct, zone = router id, nat: dst = the floating
        IP's VM, or the reply's own un-NAT) -> ext_unnat (established, related, or to a
        floating IP: routed into its instance) -> l3_neighbor -> l2_forward -> the tunnel

The conntrack zone is the router id, so two tenants with the same inside addresses keep
their connections apart, and a reply finds only its own router's connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from dove_ryu.model import Endpoint, Router
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.flows import arp_responder, tunnel_actions
from dove_ryu.openflow.ofmsg import (
    CT_EST,
    CT_REL,
    CT_TRK,
    OFPP_CONTROLLER,
    Action,
    Ct,
    DecTtl,
    FlowMod,
    MatchValue,
    Nat,
    Output,
    PacketOut,
    SetField,
)
from dove_ryu.openflow.packet import ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, build_arp
from dove_ryu.openflow.pipeline import (
    BY_ID,
    CLASSIFY,
    EXT_IN,
    EXT_OUT,
    EXT_UNNAT,
    FROM_TUNNEL,
    INSTANCE_MASK,
    L2_FORWARD,
    L3_NEIGHBOR,
    L3_ROUTE,
    METADATA_MASK,
    SNAT,
    metadata_for,
)
from dove_ryu.openflow.tunnels import Tunnels, as_tunnels, ports_of

ETH_TYPE_IPV4 = 0x0800
BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"

# The l3_neighbor miss of a routed instance: to the agent, which resolves the address.
TAG_GATEWAY_NEIGHBOR_MISS = 5

PRIO_EXACT = 100
PRIO_FLOATING = 120  # a floating IP's VM before its router's source NAT
PRIO_SUBNET = 50
PRIO_TTL = 110
PRIO_ROUTE = 10
PRIO_DEFAULT = 0

# A routed packet's TTL goes down by one at the gateway, as at any router.
DEC_TTL: tuple[Action, ...] = (DecTtl(),)


@dataclass(frozen=True)
class ExternalSide:
    """The gateway's leg in the external network, as the switch and config give it."""

    ofport: int
    mac: str
    ip: IPv4Address
    network: IPv4Network


def _r(router: Router) -> int:
    return router.router_id


def _low24(ip: IPv4Address) -> int:
    return int(ip) & cookies.TAG_MASK


def _arp_for(ext: ExternalSide, ip: IPv4Address) -> dict[str, MatchValue]:
    return {"in_port": ext.ofport, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST,
            "arp_tpa": str(ip)}  # fmt: skip


# ------------------------------------------------------------------ fixed flows


def gateway_defaults(tunnel_ofport: Tunnels | int, ext: ExternalSide) -> list[FlowMod]:
    """What a gateway has whatever its routers: the misses (external ones counted as
    DROP_EXTERNAL), the external port into ext_in, its own address answered and the
    answers to its ARP requests to the agent."""
    own = Cookie(Purpose.EXTERNAL)
    dropped = Cookie(Purpose.DROP_EXTERNAL)
    return [
        CLASSIFY.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_UNCLASSIFIED)),
        *(
            CLASSIFY.flow(
                priority=PRIO_ROUTE, match={"in_port": port}, cookie=Cookie(Purpose.DROP_NONMEMBER)
            )
            for port in ports_of(tunnel_ofport)
        ),
        CLASSIFY.flow(priority=PRIO_EXACT, match={"in_port": ext.ofport}, cookie=own, goto=EXT_IN),
        EXT_IN.flow(priority=PRIO_DEFAULT, match={}, cookie=dropped),
        EXT_IN.flow(
            priority=PRIO_EXACT,
            match=_arp_for(ext, ext.ip),
            cookie=own,
            actions=arp_responder(ext.mac, ext.ip),
        ),
        EXT_IN.flow(
            priority=PRIO_EXACT,
            match={
                "in_port": ext.ofport,
                "eth_type": ETH_TYPE_ARP,
                "arp_op": ARP_REPLY,
                "arp_tpa": str(ext.ip),
            },  # fmt: skip
            cookie=own,
            actions=[Output(OFPP_CONTROLLER)],
        ),
        EXT_UNNAT.flow(priority=PRIO_DEFAULT, match={}, cookie=dropped),
        L3_ROUTE.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
        L3_NEIGHBOR.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
        SNAT.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.SNAT)),
        EXT_OUT.flow(
            priority=PRIO_DEFAULT, match={}, cookie=own, actions=[Output(OFPP_CONTROLLER)]
        ),
        L2_FORWARD.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
    ]


def _member_match(instance: int, host: IPv4Address, tunnel: Tunnels | int) -> dict[str, MatchValue]:
    """A gateway has one tunnel port (config: it accepts its tunnel_type only)."""
    way = as_tunnels(tunnel).receive_matches(host)[0]
    return {**way, "tunnel_id": instance, "tun_ipv4_src": str(host)}


def member_flow(instance: int, host: IPv4Address, tunnel_ofport: Tunnels | int) -> FlowMod:
    """Accept what a member host of a router instance tunnels here: off its router's
    subnets, to be routed out."""
    return CLASSIFY.flow(
        priority=PRIO_EXACT,
        match=_member_match(instance, host, tunnel_ofport),
        cookie=Cookie(Purpose.MEMBER, instance, int(host) & cookies.TAG_MASK),
        write_metadata=(metadata_for(instance, from_tunnel=True), METADATA_MASK),
        goto=L3_ROUTE,
    )


def delete_member_flow(instance: int, host: IPv4Address, tunnel_ofport: Tunnels | int) -> FlowMod:
    return CLASSIFY.delete(match=_member_match(instance, host, tunnel_ofport), priority=PRIO_EXACT)


# ------------------------------------------------------------------- a router


def router_flows(router: Router, ext: ExternalSide) -> list[FlowMod]:
    """Everything of one router except its ARP answers (which only the active gateway
    gives): the default route and source NAT out, the un-NAT in, the neighbor misses."""
    r = _r(router)
    msgs: list[FlowMod] = []
    for subnet in router.subnets:
        instance = subnet.instance
        md = (instance, INSTANCE_MASK)
        # NOTE (OVS 3.1): nw_ttl takes no mask (a masked match is refused, BAD_PREREQ):
        # TTL 0 and 1, one flow each, dropped and counted by their cookie.
        msgs += [
            L3_ROUTE.flow(
                priority=PRIO_TTL,
                match={"metadata": md, "eth_type": ETH_TYPE_IPV4, "nw_ttl": ttl},
                cookie=Cookie(Purpose.ROUTE_TTL, instance, r),
            )
            for ttl in (0, 1)
        ]
        msgs += [
            L3_ROUTE.flow(
                priority=PRIO_ROUTE,
                match={"metadata": md, "eth_type": ETH_TYPE_IPV4, "eth_dst": subnet.mac},
                cookie=Cookie(Purpose.ROUTE_DEFAULT, instance, r),
                actions=DEC_TTL,
                goto=SNAT,
            ),
            L3_NEIGHBOR.flow(
                priority=PRIO_ROUTE,
                match={"metadata": md},
                cookie=Cookie(Purpose.INSTANCE, instance, TAG_GATEWAY_NEIGHBOR_MISS),
                actions=[Output(OFPP_CONTROLLER)],
            ),
        ]
        if router.snat is not None:
            msgs.append(
                SNAT.flow(
                    priority=PRIO_ROUTE,
                    match={"metadata": md, "eth_type": ETH_TYPE_IPV4},
                    cookie=Cookie(Purpose.SNAT, 0, r),
                    actions=[Ct(r, commit=True, nat=Nat("src", str(router.snat)))],
                    goto=EXT_OUT,
                )
            )
        for state in (CT_TRK | CT_EST, CT_TRK | CT_REL):
            # A reply (un-NATed by ext_in's ct) to an inside address of the subnet.
            msgs.append(
                EXT_UNNAT.flow(
                    priority=PRIO_ROUTE,
                    match={
                        "ct_state": (state, state),
                        "ct_zone": r,
                        "eth_type": ETH_TYPE_IPV4,
                        "ipv4_dst": (
                            str(subnet.network.network_address),
                            str(subnet.network.netmask),
                        ),
                    },  # fmt: skip
                    cookie=Cookie(Purpose.ROUTE, instance, r),
                    actions=[SetField("eth_src", subnet.mac), *DEC_TTL],
                    write_metadata=md,
                    goto=L3_NEIGHBOR,
                )
            )
    if router.snat is not None:
        msgs.append(
            EXT_IN.flow(
                priority=PRIO_EXACT,
                match={
                    "in_port": ext.ofport,
                    "eth_type": ETH_TYPE_IPV4,
                    "ipv4_dst": str(router.snat),
                },  # fmt: skip
                cookie=Cookie(Purpose.SNAT, 0, r),
                actions=[Ct(r, table=EXT_UNNAT.table_id, nat=Nat())],
            )
        )
    for fip in router.floating_ips:
        home = router.subnet_for(fip.inside)
        if home is None:
            continue  # the router's parser refuses it; never routed
        instance, md = home.instance, (home.instance, INSTANCE_MASK)
        cookie = Cookie(Purpose.FLOATING_IP, instance, _low24(fip.external))
        msgs += [
            SNAT.flow(
                priority=PRIO_FLOATING,
                match={"metadata": md, "eth_type": ETH_TYPE_IPV4, "ipv4_src": str(fip.inside)},
                cookie=cookie,
                actions=[Ct(r, commit=True, nat=Nat("src", str(fip.external)))],
                goto=EXT_OUT,
            ),
            EXT_IN.flow(
                priority=PRIO_EXACT,
                match={
                    "in_port": ext.ofport,
                    "eth_type": ETH_TYPE_IPV4,
                    "ipv4_dst": str(fip.external),
                },  # fmt: skip
                cookie=cookie,
                actions=[
                    Ct(r, commit=True, table=EXT_UNNAT.table_id, nat=Nat("dst", str(fip.inside)))
                ],
            ),
            EXT_UNNAT.flow(
                priority=PRIO_FLOATING,
                match={
                    "ct_state": (CT_TRK, CT_TRK),
                    "ct_zone": r,
                    "eth_type": ETH_TYPE_IPV4,
                    "ipv4_dst": str(fip.inside),
                },  # fmt: skip
                cookie=cookie,
                actions=[SetField("eth_src", home.mac), *DEC_TTL],
                write_metadata=md,
                goto=L3_NEIGHBOR,
            ),
        ]
    return msgs


def external_addresses(router: Router) -> list[IPv4Address]:
    """The addresses the active gateway answers ARP for on the router's behalf."""
    ips = [router.snat] if router.snat is not None else []
    return ips + [f.external for f in router.floating_ips]


def arp_answer_flows(router: Router, ext: ExternalSide) -> list[FlowMod]:
    """The active gateway's ARP answers for a router's external addresses."""
    return [
        EXT_IN.flow(
            priority=PRIO_EXACT,
            match=_arp_for(ext, ip),
            cookie=Cookie(Purpose.EXTERNAL, 0, _r(router)),
            actions=arp_responder(ext.mac, ip),
        )
        for ip in external_addresses(router)
    ]


def delete_arp_answers(router: Router, ext: ExternalSide) -> list[FlowMod]:
    return [
        EXT_IN.delete(match=_arp_for(ext, ip), priority=PRIO_EXACT)
        for ip in external_addresses(router)
    ]


def delete_router(router: Router, ext: ExternalSide) -> list[FlowMod]:
    """Every flow of the router (by its flows' exact matches)."""
    return [_delete_like(fm) for fm in [*router_flows(router, ext), *arp_answer_flows(router, ext)]]


def _delete_like(fm: FlowMod) -> FlowMod:
    return BY_ID[fm.table_id].delete(match=fm.match, priority=fm.priority)


# ------------------------------------------------------- the inside's endpoints


def neighbor_flow(ep: Endpoint, ip: IPv4Address) -> FlowMod:
    """A routed packet to ``ip`` in the endpoint's instance goes to its MAC."""
    return L3_NEIGHBOR.flow(
        priority=PRIO_EXACT,
        match={
            "metadata": (ep.instance, INSTANCE_MASK),
            "eth_type": ETH_TYPE_IPV4,
            "ipv4_dst": str(ip),
        },  # fmt: skip
        cookie=Cookie(Purpose.NEIGHBOR, ep.instance, cookies.mac_tag(ep.mac)),
        actions=[SetField("eth_dst", ep.mac)],
        goto=L2_FORWARD,
    )


def delete_neighbor_flow(ep: Endpoint, ip: IPv4Address) -> FlowMod:
    return L3_NEIGHBOR.delete(
        match={
            "metadata": (ep.instance, INSTANCE_MASK),
            "eth_type": ETH_TYPE_IPV4,
            "ipv4_dst": str(ip),
        },  # fmt: skip
        priority=PRIO_EXACT,
    )


def release(ep: Endpoint, data: bytes, tunnel_ofport: Tunnels | int) -> PacketOut:
    """A held routed packet (already un-NATed, its source MAC the gateway's), sent to
    the endpoint it waited for: it cannot go through the tables again (ct would see
    it twice), so it goes straight into the tunnel."""
    return PacketOut(
        OFPP_CONTROLLER,
        data,
        (SetField("eth_dst", ep.mac), *tunnel_actions(tunnel_ofport, ep.instance, ep.host)),
    )


# --------------------------------------------------------- the external network


def next_hop_flow(ext: ExternalSide, mac: str, ip: IPv4Address | None = None) -> FlowMod:
    """Out of the external port to ``mac``: for ``ip`` (a neighbor on the external
    subnet), or for everything else (``ip`` None: the next hop)."""
    if ip is None:
        match: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IPV4}
        priority = PRIO_ROUTE
    else:
        match = {"eth_type": ETH_TYPE_IPV4, "ipv4_dst": str(ip)}
        priority = PRIO_EXACT
    return EXT_OUT.flow(
        priority=priority,
        match=match,
        cookie=Cookie(Purpose.EXTERNAL),
        actions=[SetField("eth_src", ext.mac), SetField("eth_dst", mac), Output(ext.ofport)],
    )


def on_link_flow(ext: ExternalSide) -> FlowMod:
    """A destination on the external subnet whose MAC is not known yet: to the agent."""
    net = ext.network
    return EXT_OUT.flow(
        priority=PRIO_SUBNET,
        match={
            "eth_type": ETH_TYPE_IPV4,
            "ipv4_dst": (str(net.network_address), str(net.netmask)),
        },  # fmt: skip
        cookie=Cookie(Purpose.EXTERNAL),
        actions=[Output(OFPP_CONTROLLER)],
    )


def arp_request(ext: ExternalSide, ip: IPv4Address) -> PacketOut:
    """Who has ``ip``? asked out of the external port from the gateway's own address."""
    data = build_arp(ARP_REQUEST, ext.mac, BROADCAST, ext.mac, ext.ip, ZERO_MAC, ip)
    return PacketOut(OFPP_CONTROLLER, data, (Output(ext.ofport),), after_flows=False)


def gratuitous_arp(ext: ExternalSide, ip: IPv4Address) -> PacketOut:
    """``ip`` is at the gateway's MAC: said to the external network on becoming active."""
    data = build_arp(ARP_REQUEST, ext.mac, BROADCAST, ext.mac, ip, ZERO_MAC, ip)
    return PacketOut(OFPP_CONTROLLER, data, (Output(ext.ofport),))


def is_from_tunnel(metadata: int | None) -> bool:
    return bool(metadata is not None and metadata & FROM_TUNNEL)
