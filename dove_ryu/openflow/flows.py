"""Flow builders: state in, flow-mods out.  Pure; every flow, delete and group
goes through the declaration in `dove_ryu.openflow.pipeline`, which refuses what
the pipeline does not allow."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.dhcp_flows import delete_dhcp_request_flows, dhcp_request_flows
from dove_ryu.openflow.nd_flows import (
    TAG_ND_MISS,
    delete_learned_nd,
    learned_nd_flows,
    local_nd_flows,
    nd_defaults,
    nd_miss_flow,
    port_security6,
)
from dove_ryu.openflow.ofmsg import (
    OFPG_ALL,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    Action,
    CheckLarger,
    FlowMod,
    Group,
    GroupCommand,
    GroupMod,
    MatchValue,
    Move,
    Output,
    SetField,
)
from dove_ryu.openflow.packet import ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4
from dove_ryu.openflow.pipeline import (
    ARP_ND,
    CLASSIFY,
    EGRESS_CHECK,
    FLOOD,
    FROM_TUNNEL,
    FROM_WAN,
    INSTANCE_MASK,
    L2_FORWARD,
    L3_NEIGHBOR,
    L3_ROUTE,
    METADATA_MASK,
    OVERSIZE_REGISTER,
    PORT_SECURITY,
    WAN_EGRESS,
    delete_by_cookie,
    group_mod,
    metadata_for,
)
from dove_ryu.openflow.tunnels import FLAG_RELAYED, Tunnels, as_tunnels, ports_of

MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
IPPROTO_UDP = 17
DHCP_CLIENT_PORT, DHCP_SERVER_PORT = 68, 67

# Tags of the per-instance flows that punt to the agent.
TAG_ARP_MISS = 1
TAG_L2_MISS = 2
TAG_FLOOD = 3
TAG_ROUTE_MISS = 4  # l3_neighbor: a routed packet's destination unknown (routing_flows)
_INSTANCE_TAGS = (TAG_ARP_MISS, TAG_L2_MISS, TAG_FLOOD, TAG_ND_MISS)

# Priorities, highest first within a table.
PRIO_EXACT = 100
PRIO_GUARD = 110
PRIO_ARP_CHECKED = 120
PRIO_MULTICAST = 90
PRIO_INSTANCE_MISS = 10
PRIO_TUNNEL_DEFAULT = 20
PRIO_DEFAULT = 0


def _instance_md(instance: int) -> tuple[int, int]:
    return (instance, INSTANCE_MASK)


def _local_md(instance: int) -> tuple[int, int]:
    """Packets of the instance that came from a local VM (not from the overlay)."""
    return (metadata_for(instance), METADATA_MASK)


def _both_roles_defaults(tunnel: Tunnels | int) -> list[FlowMod]:
    """Default drops and the broadcast jump, on hosts and proxies alike.  A tunnel
    packet no member flow takes (a non-member, or a DOVE peer's Geneve packet without
    our option version) is dropped as from a non-member."""
    return [
        CLASSIFY.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_UNCLASSIFIED)),
        *(
            CLASSIFY.flow(
                priority=PRIO_INSTANCE_MISS,
                match={"in_port": port},
                cookie=Cookie(Purpose.DROP_NONMEMBER),
            )
            for port in ports_of(tunnel)
        ),
        L2_FORWARD.flow(
            priority=PRIO_MULTICAST,
            match={"eth_dst": MULTICAST},
            cookie=Cookie(Purpose.PIPELINE),
            goto=FLOOD,
        ),
        L2_FORWARD.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
        FLOOD.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
    ]


def pipeline_defaults(tunnel_ofport: Tunnels | int) -> list[FlowMod]:
    """Flows that exist whatever the state: default drops and fixed jumps."""
    base = Cookie(Purpose.PIPELINE)
    return [
        *_both_roles_defaults(tunnel_ofport),
        PORT_SECURITY.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_SPOOF)),
        ARP_ND.flow(priority=PRIO_DEFAULT, match={}, cookie=base, goto=L2_FORWARD),
        # Routed packets that match no route, or whose destination is not resolved yet
        # in an instance that does not ask the agent (docs/routing.md).
        L3_ROUTE.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
        L3_NEIGHBOR.flow(priority=PRIO_DEFAULT, match={}, cookie=Cookie(Purpose.DROP_MISS)),
        L2_FORWARD.flow(
            priority=PRIO_TUNNEL_DEFAULT,
            match={"metadata": (FROM_TUNNEL, FROM_TUNNEL)},
            cookie=base,
            goto=EGRESS_CHECK,
        ),
        # Traffic still arriving for a VM that left: the agent tells the sender to
        # un-learn it and forwards the packet to the VM's new host when it knows it.
        EGRESS_CHECK.flow(
            priority=PRIO_DEFAULT,
            match={},
            cookie=Cookie(Purpose.EGRESS_MISS),
            actions=[Output(OFPP_CONTROLLER)],
        ),
        *nd_defaults(),
    ]


def delete_all_ours() -> list[FlowMod | GroupMod]:
    """Remove every flow we own (by cookie) and every group: the start of a resync."""
    return [
        delete_by_cookie(None, cookies.MASK_OURS),
        # NOTE: OFPG_ALL, not OFPG_ANY: OVS 3.1 takes OFPG_ANY as one (absent) group,
        # and a restarted agent's group adds then failed with GROUP_EXISTS.
        group_mod(OFPG_ALL, GroupCommand.DELETE),
    ]


def arp_responder(mac: str, ip: IPv4Address) -> tuple[Action, ...]:
    """Turn an ARP request for ``ip`` into the reply from ``mac``, back out the port."""
    return (
        Move("eth_src", "eth_dst", 48),
        SetField("eth_src", mac),
        SetField("arp_op", ARP_REPLY),
        Move("arp_sha", "arp_tha", 48),
        Move("arp_spa", "arp_tpa", 32),
        SetField("arp_sha", mac),
        SetField("arp_spa", str(ip)),
        Output(OFPP_IN_PORT),
    )


def _arp_request(instance: int, ip: IPv4Address) -> dict[str, MatchValue]:
    return {
        "metadata": _local_md(instance),
        "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REQUEST,
        "arp_tpa": str(ip),
    }


def local_port_flows(port: VmPort) -> list[FlowMod]:
    """Classify, port security, delivery and ARP answers for a VM port."""
    port_cookie = Cookie(Purpose.LOCAL_PORT, port.instance, port.ofport)
    flows = [
        CLASSIFY.flow(
            priority=PRIO_EXACT,
            match={"in_port": port.ofport},
            cookie=port_cookie,
            write_metadata=(metadata_for(port.instance), METADATA_MASK),
            goto=PORT_SECURITY,
        ),
        # ARP must carry the VM's own MAC (and IP, when known) as sender.
        PORT_SECURITY.flow(
            priority=PRIO_GUARD,
            match={"in_port": port.ofport, "eth_type": ETH_TYPE_ARP},
            cookie=Cookie(Purpose.DROP_SPOOF, port.instance, port.ofport),
        ),
    ]
    arp_ok: dict[str, MatchValue] = {
        "in_port": port.ofport,
        "eth_src": port.mac,
        "eth_type": ETH_TYPE_ARP,
        "arp_sha": port.mac,
    }
    # 0.0.0.0 is the sender of a duplicate-address probe (RFC 5227).
    senders = [*port.ips, IPv4Address(0)] if port.addressed else []
    for arp_match in [{**arp_ok, "arp_spa": str(ip)} for ip in senders] or [arp_ok]:
        flows.append(
            PORT_SECURITY.flow(
                priority=PRIO_ARP_CHECKED, match=arp_match, cookie=port_cookie, goto=ARP_ND
            )
        )
    flows += _ipv4_source_flows(port, port_cookie)
    flows += port_security6(port)
    flows.append(
        PORT_SECURITY.flow(
            priority=PRIO_EXACT,
            match={"in_port": port.ofport, "eth_src": port.mac},
            cookie=port_cookie,
            goto=ARP_ND,
        )
    )
    flows.append(
        L2_FORWARD.flow(
            priority=PRIO_EXACT,
            match={"metadata": _instance_md(port.instance), "eth_dst": port.mac},
            cookie=Cookie(Purpose.LOCAL_ENDPOINT, port.instance, port.ofport),
            actions=[Output(port.ofport)],
        )
    )
    arp_cookie = Cookie(Purpose.ARP_LOCAL, port.instance, port.ofport)
    for ip in port.ips:
        flows.append(
            ARP_ND.flow(
                priority=PRIO_EXACT,
                match=_arp_request(port.instance, ip),
                cookie=arp_cookie,
                actions=arp_responder(port.mac, ip),
            )
        )
        # A VM asking for its own address (gratuitous ARP, duplicate address
        # detection) is flooded, not answered: an answer would look like a clash.
        flows.append(
            ARP_ND.flow(
                priority=PRIO_GUARD,
                match={**_arp_request(port.instance, ip), "in_port": port.ofport},
                cookie=arp_cookie,
                goto=L2_FORWARD,
            )
        )
    return flows + local_nd_flows(port) + dhcp_request_flows(port)


def _ipv4_source_flows(port: VmPort, port_cookie: Cookie) -> list[FlowMod]:
    """A port with addresses sends IPv4 only from them (none: an IPv6-only port), and
    DHCP from 0.0.0.0."""
    if not port.addressed:
        return []
    ip_ok: dict[str, MatchValue] = {
        "in_port": port.ofport,
        "eth_src": port.mac,
        "eth_type": ETH_TYPE_IPV4,
    }
    dhcp: dict[str, MatchValue] = {
        **ip_ok,
        "ipv4_src": "0.0.0.0",
        "ip_proto": IPPROTO_UDP,
        "udp_src": DHCP_CLIENT_PORT,
        "udp_dst": DHCP_SERVER_PORT,
    }
    matches = [{**ip_ok, "ipv4_src": str(ip)} for ip in port.ips] + [dhcp]
    return [
        PORT_SECURITY.flow(
            priority=PRIO_GUARD,
            match={"in_port": port.ofport, "eth_type": ETH_TYPE_IPV4},
            cookie=Cookie(Purpose.DROP_SPOOF, port.instance, port.ofport),
        ),
        *(
            PORT_SECURITY.flow(priority=PRIO_ARP_CHECKED, match=m, cookie=port_cookie, goto=ARP_ND)
            for m in matches
        ),
    ]


def delete_local_port(port: VmPort) -> list[FlowMod]:
    """Delete every flow made for a VM port, by its exact cookies."""
    purposes = (Purpose.LOCAL_PORT, Purpose.LOCAL_ENDPOINT, Purpose.ARP_LOCAL, Purpose.DROP_SPOOF)
    return [
        delete_by_cookie(Cookie(p, port.instance, port.ofport), cookies.MASK_EXACT)
        for p in purposes
    ] + delete_dhcp_request_flows(port)


def instance_flows(instance: int, split_horizon: bool = False) -> list[FlowMod]:
    """Per-instance misses (to the agent) and flooding through the instance group.
    ``split_horizon`` (more than one tunnel port): what came from a tunnel floods only
    to the local ports (`local_flood_group`)."""
    cookie_arp = Cookie(Purpose.INSTANCE, instance, TAG_ARP_MISS)
    cookie_l2 = Cookie(Purpose.INSTANCE, instance, TAG_L2_MISS)
    local: list[FlowMod] = []
    if split_horizon:
        local.append(
            FLOOD.flow(
                priority=PRIO_GUARD,
                match={"metadata": (metadata_for(instance, from_tunnel=True), METADATA_MASK)},
                cookie=Cookie(Purpose.INSTANCE, instance, TAG_FLOOD),
                actions=[Group(instance | LOCAL_GROUP_BIT)],
            )
        )
    return [
        *local,
        ARP_ND.flow(
            priority=PRIO_INSTANCE_MISS,
            match={
                "metadata": _local_md(instance),
                "eth_type": ETH_TYPE_ARP,
                "arp_op": ARP_REQUEST,
            },
            cookie=cookie_arp,
            actions=[Output(OFPP_CONTROLLER)],
        ),
        L2_FORWARD.flow(
            priority=PRIO_INSTANCE_MISS,
            match={"metadata": _local_md(instance)},
            cookie=cookie_l2,
            actions=[Output(OFPP_CONTROLLER)],
        ),
        FLOOD.flow(
            priority=PRIO_EXACT,
            match={"metadata": _instance_md(instance)},
            cookie=Cookie(Purpose.INSTANCE, instance, TAG_FLOOD),
            actions=[Group(instance)],
        ),
        nd_miss_flow(instance),
    ]


def delete_instance(instance: int) -> list[FlowMod | GroupMod]:
    """The flows of an instance that has no VM here any more.  Its per-instance flows go
    by exact cookie: a routed instance's route miss (TAG_ROUTE_MISS) stays while the
    router has other subnets here."""
    return (
        [
            delete_by_cookie(Cookie(Purpose.INSTANCE, instance, tag), cookies.MASK_EXACT)
            for tag in _INSTANCE_TAGS
        ]
        + [
            delete_by_cookie(Cookie(p, instance), cookies.MASK_PURPOSE_INSTANCE)
            for p in (Purpose.MEMBER, Purpose.LEARNED, Purpose.ARP_LEARNED)
        ]
        + [group_mod(instance, GroupCommand.DELETE)]
    )


def tunnel_actions(
    tunnel: Tunnels | int, instance: int, host: IPv4Address, flags: int = 0
) -> tuple[Action, ...]:
    """Into ``instance``'s VNI towards ``host``, by the encapsulation it takes
    (`dove_ryu.openflow.tunnels`); ``flags``: the DOVE option's, on Geneve."""
    return as_tunnels(tunnel).actions(instance, host, flags)


LOCAL_GROUP_BIT = 1 << 25  # a host's local-only flood group (split horizon)


def flood_group(
    instance: int,
    local_ofports: Iterable[int],
    members: Iterable[IPv4Address],
    tunnel_ofport: Tunnels | int,
    command: GroupCommand,
    vteps: Iterable[tuple[Action, ...]] = (),
) -> GroupMod:
    """One ALL group per instance: each local port, then head-end replication
    to each member host and external VTEP (``vteps``: their buckets).  A packet from
    the tunnel is not sent back into it: OpenFlow never outputs to the in_port (with two
    tunnel ports, `instance_flows` sends tunnel packets to `local_flood_group` instead)."""
    buckets: list[tuple[Action, ...]] = [(Output(p),) for p in sorted(local_ofports)]
    buckets += [tunnel_actions(tunnel_ofport, instance, h) for h in sorted(members)]
    buckets += vteps
    return group_mod(instance, command, buckets)


def local_flood_group(
    instance: int, local_ofports: Iterable[int], command: GroupCommand
) -> GroupMod:
    """The instance's local ports only: what a host with two tunnel ports floods for a
    packet from the tunnel.  NOTE (OpenFlow): a group bucket skips only the packet's own
    in_port, so the flood group would send a VXLAN arrival out of the Geneve port (and
    back), duplicating it to every member: split horizon by a second group."""
    buckets = [(Output(p),) for p in sorted(local_ofports)]
    return group_mod(instance | LOCAL_GROUP_BIT, command, buckets)


def _member_match(instance: int, host: IPv4Address, tunnel_ofport: int) -> dict[str, MatchValue]:
    return {"in_port": tunnel_ofport, "tunnel_id": instance, "tun_ipv4_src": str(host)}


def _member_matches(
    instance: int, host: IPv4Address, tunnel: Tunnels | int
) -> list[dict[str, MatchValue]]:
    """One per port the host may use (a DOVE peer's Geneve: with our option version)."""
    key: dict[str, MatchValue] = {"tunnel_id": instance, "tun_ipv4_src": str(host)}
    return [{**m, **key} for m in as_tunnels(tunnel).receive_matches(host)]


def member_flows(
    instance: int, host: IPv4Address, tunnel: Tunnels | int, lingering: bool = False
) -> list[FlowMod]:
    """Accept tunnelled packets of the instance from a member host.

    ``lingering``: this host no longer serves the instance but a VM of it left
    recently; what members still send goes straight to egress_check, so the agent can
    forward it to the VM's new host and tell the sender to un-learn."""
    return [
        CLASSIFY.flow(
            priority=PRIO_EXACT,
            match=match,
            cookie=Cookie(Purpose.MEMBER, instance, int(host) & cookies.TAG_MASK),
            write_metadata=(metadata_for(instance, from_tunnel=True), METADATA_MASK),
            goto=EGRESS_CHECK if lingering else L2_FORWARD,
        )
        for match in _member_matches(instance, host, tunnel)
    ]


def member_flow(
    instance: int, host: IPv4Address, tunnel_ofport: Tunnels | int, lingering: bool = False
) -> FlowMod:
    """The member flow of a bridge with one tunnel port (`member_flows`)."""
    return member_flows(instance, host, tunnel_ofport, lingering)[0]


def delete_member_flows(instance: int, host: IPv4Address, tunnel: Tunnels | int) -> list[FlowMod]:
    return [
        CLASSIFY.delete(match=m, priority=PRIO_EXACT)
        for m in _member_matches(instance, host, tunnel)
    ]


def delete_member_flow(instance: int, host: IPv4Address, tunnel_ofport: Tunnels | int) -> FlowMod:
    return delete_member_flows(instance, host, tunnel_ofport)[0]


def learned_l2_flow(ep: Endpoint, tunnel_ofport: Tunnels | int, idle_timeout: int) -> FlowMod:
    """Forward to a remote endpoint's host (ages out when idle; tells the agent)."""
    return L2_FORWARD.flow(
        priority=PRIO_EXACT,
        match={"metadata": _local_md(ep.instance), "eth_dst": ep.mac},
        cookie=Cookie(Purpose.LEARNED, ep.instance, cookies.mac_tag(ep.mac)),
        actions=tunnel_actions(tunnel_ofport, ep.instance, ep.host),
        idle_timeout=idle_timeout,
        send_flow_removed=True,
    )


def learned_arp_flows(ep: Endpoint, ips: Iterable[IPv4Address] | None = None) -> list[FlowMod]:
    """Answer ARP on the host for a remote endpoint's addresses (all, or those given)."""
    return [
        ARP_ND.flow(
            priority=PRIO_EXACT,
            match=_arp_request(ep.instance, ip),
            cookie=Cookie(Purpose.ARP_LEARNED, ep.instance, cookies.mac_tag(ep.mac)),
            actions=arp_responder(ep.mac, ip),
        )
        for ip in (ep.ips if ips is None else ips)
    ]


def learned_flows(ep: Endpoint, tunnel_ofport: Tunnels | int, idle_timeout: int) -> list[FlowMod]:
    """Every flow of a learned endpoint."""
    return [
        learned_l2_flow(ep, tunnel_ofport, idle_timeout),
        *learned_arp_flows(ep),
        *learned_nd_flows(ep),
    ]


def delete_learned(ep: Endpoint, *, keep_l2: bool = False) -> list[FlowMod]:
    """Delete the flows of a learned endpoint, strictly by match (MAC tags may collide)."""
    deletes = [
        ARP_ND.delete(match=_arp_request(ep.instance, ip), priority=PRIO_EXACT) for ip in ep.ips
    ] + delete_learned_nd(ep)
    if not keep_l2:
        deletes.append(
            L2_FORWARD.delete(
                match={"metadata": _local_md(ep.instance), "eth_dst": ep.mac}, priority=PRIO_EXACT
            )
        )
    return deletes


# --------------------------------------------------------------------- VAN proxy
# A proxy has no VM ports.  Everything arrives through the tunnel port and leaves
# through it again (``OFPP_IN_PORT``: OpenFlow never outputs to the in_port
# otherwise), decapsulated and re-encapsulated in the datapath.  Direction is
# metadata bit FROM_WAN: a frame from the site goes only to a remote proxy, one
# from a remote proxy only to a site host, so no frame can loop between sites.

# Group ids: the site-bound group of an instance is the instance, the WAN-bound one
# has bit 24 set.
WAN_GROUP_BIT = 1 << 24
_DIRECTION = INSTANCE_MASK | FROM_WAN


def _proxy_md(instance: int, from_wan: bool) -> tuple[int, int]:
    return (instance | (FROM_WAN if from_wan else 0), _DIRECTION)


def proxy_defaults(tunnel_ofport: Tunnels | int) -> list[FlowMod]:
    """A proxy's fixed flows: drops, flooding, and the size check towards the WAN."""
    base = Cookie(Purpose.PIPELINE)
    return [
        *_both_roles_defaults(tunnel_ofport),
        WAN_EGRESS.flow(
            priority=PRIO_EXACT,
            match={OVERSIZE_REGISTER: (1, 1)},
            cookie=Cookie(Purpose.WAN_OVERSIZE),
            actions=[Output(OFPP_CONTROLLER)],
        ),
        WAN_EGRESS.flow(
            priority=PRIO_DEFAULT, match={}, cookie=base, actions=[Output(OFPP_IN_PORT)]
        ),
    ]


def wan_frame_limit(wan_mtu: int) -> int:
    """The largest overlay frame (with its Ethernet header) whose VXLAN packet fits
    an IP MTU of ``wan_mtu``: outer IPv4 20 + UDP 8 + VXLAN 8 bytes."""
    return wan_mtu - 36


def _proxy_member_match(
    instance: int, host: IPv4Address, local: IPv4Address, tunnel: Tunnels | int
) -> dict[str, MatchValue]:
    """A proxy has one tunnel port (config: it accepts its tunnel_type only)."""
    return {**_member_matches(instance, host, tunnel)[0], "tun_ipv4_dst": str(local)}


def proxy_member_flow(
    instance: int,
    host: IPv4Address,
    local: IPv4Address,
    from_wan: bool,
    tunnel_ofport: Tunnels | int,
) -> FlowMod:
    """Accept the instance from a site member (to ``local``, the site leg) or from a
    remote proxy (to the WAN leg): the leg it arrives on must match where it is from."""
    return CLASSIFY.flow(
        priority=PRIO_EXACT,
        match=_proxy_member_match(instance, host, local, tunnel_ofport),
        cookie=Cookie(Purpose.MEMBER, instance, int(host) & cookies.TAG_MASK),
        write_metadata=(metadata_for(instance, True, from_wan), METADATA_MASK),
        goto=L2_FORWARD,
    )


def delete_proxy_member_flow(
    instance: int, host: IPv4Address, local: IPv4Address, tunnel_ofport: Tunnels | int
) -> FlowMod:
    match = _proxy_member_match(instance, host, local, tunnel_ofport)
    return CLASSIFY.delete(match=match, priority=PRIO_EXACT)


def proxy_instance_flows(instance: int, wan_mtu: int) -> list[FlowMod]:
    """Misses of the instance (either direction) to the agent; flooding by direction.

    Broadcast from the site goes through the same size check as unicast towards the
    remote proxies: a frame too big for the inter-site path goes to the agent, which
    carries it to each remote proxy in DOVE-layer fragments."""
    flood = Cookie(Purpose.INSTANCE, instance, TAG_FLOOD)
    from_site_bcast: dict[str, MatchValue] = {
        "metadata": _proxy_md(instance, False),
        "eth_dst": MULTICAST,
    }
    return [
        L2_FORWARD.flow(
            priority=PRIO_INSTANCE_MISS,
            match={"metadata": _instance_md(instance)},
            cookie=Cookie(Purpose.INSTANCE, instance, TAG_L2_MISS),
            actions=[Output(OFPP_CONTROLLER)],
        ),
        L2_FORWARD.flow(
            priority=PRIO_GUARD,
            match=from_site_bcast,
            cookie=flood,
            actions=[CheckLarger(wan_frame_limit(wan_mtu), OVERSIZE_REGISTER, 0)],
            goto=WAN_EGRESS,
        ),
        WAN_EGRESS.flow(
            priority=PRIO_EXACT,
            match={**from_site_bcast, OVERSIZE_REGISTER: (0, 1)},
            cookie=flood,
            actions=[Group(instance | WAN_GROUP_BIT)],
        ),
        FLOOD.flow(
            priority=PRIO_EXACT,
            match={"metadata": _proxy_md(instance, True)},
            cookie=flood,
            actions=[Group(instance)],
        ),
    ]


def proxy_groups(
    instance: int,
    site_members: Iterable[IPv4Address],
    remote_proxies: Iterable[IPv4Address],
    command: GroupCommand,
    tunnels: Tunnels | None = None,
) -> list[GroupMod]:
    """Broadcast from a remote proxy to each site member; from the site, once to each
    remote site's proxy."""
    return [
        group_mod(group_id, command, (_relay(tunnels, instance, h) for h in sorted(hosts)))
        for group_id, hosts in (
            (instance, site_members),
            (instance | WAN_GROUP_BIT, remote_proxies),
        )
    ]


def delete_proxy_groups(instance: int) -> list[GroupMod]:
    return [group_mod(g, GroupCommand.DELETE) for g in (instance, instance | WAN_GROUP_BIT)]


def _relay(tunnels: Tunnels | None, instance: int, host: IPv4Address) -> tuple[Action, ...]:
    """Back out of the tunnel port (a proxy's one), marked relayed on Geneve."""
    if tunnels is None:
        return tunnel_actions(OFPP_IN_PORT, instance, host)
    return tunnels.actions(instance, host, FLAG_RELAYED, in_port=True)


def proxied_flow(
    ep: Endpoint,
    behind_wan: bool,
    idle_timeout: int,
    wan_mtu: int,
    tunnels: Tunnels | None = None,
) -> FlowMod:
    """Forward to where ``ep`` is: a site endpoint takes frames from remote proxies,
    a remote one (``behind_wan``, ep.host is its site's proxy) frames from the site,
    through the size check."""
    match: dict[str, MatchValue] = {
        "metadata": _proxy_md(ep.instance, not behind_wan),
        "eth_dst": ep.mac,
    }
    cookie = Cookie(Purpose.LEARNED, ep.instance, cookies.mac_tag(ep.mac))
    if not behind_wan:
        return L2_FORWARD.flow(
            priority=PRIO_EXACT,
            match=match,
            cookie=cookie,
            actions=_relay(tunnels, ep.instance, ep.host),
            idle_timeout=idle_timeout,
            send_flow_removed=True,
        )
    return L2_FORWARD.flow(
        priority=PRIO_EXACT,
        match=match,
        cookie=cookie,
        actions=[
            SetField("tunnel_id", ep.instance),
            SetField("tun_ipv4_dst", str(ep.host)),
            *(tunnels.option(ep.host, FLAG_RELAYED) if tunnels else ()),
            CheckLarger(wan_frame_limit(wan_mtu), OVERSIZE_REGISTER, 0),
        ],
        goto=WAN_EGRESS,
        idle_timeout=idle_timeout,
        send_flow_removed=True,
    )


def delete_proxied(ep: Endpoint, behind_wan: bool) -> FlowMod:
    match: dict[str, MatchValue] = {
        "metadata": _proxy_md(ep.instance, not behind_wan),
        "eth_dst": ep.mac,
    }
    return L2_FORWARD.delete(match=match, priority=PRIO_EXACT)
