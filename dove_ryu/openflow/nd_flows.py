"""IPv6 at layer 2: port security for IPv6 sources and Neighbor Discovery, and Neighbor
Solicitations answered on the host as ARP requests are.  Pure flow builders, like
`dove_ryu.openflow.flows`, through the pipeline's declaration.

A Neighbor Advertisement is built in the datapath: arp_nd turns a solicitation for a
known address into the advertisement (addresses swapped, type 136, flags Solicited and
Override, the SLL option's type made TLL) and nd_reply writes the answering MAC into
that option, then sends it back out the port.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv6Address

from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    Action,
    FlowMod,
    MatchValue,
    Move,
    Output,
    SetField,
)
from dove_ryu.openflow.packet import (
    ETH_TYPE_IPV6,
    IPPROTO_ICMPV6,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_REDIRECT,
    ND_ROUTER_ADVERT,
)
from dove_ryu.openflow.pipeline import (
    ARP_ND,
    L2_FORWARD,
    METADATA_MASK,
    ND_REPLY,
    PORT_SECURITY,
    metadata_for,
)

TAG_ND_MISS = 5  # arp_nd: a Neighbor Solicitation for an unknown target -> agent

NA_SOLICITED_OVERRIDE = 0x60000000  # the S and O flags of an NA's reserved word
NO_LLADDR = "00:00:00:00:00:00"  # how OVS reads an absent link-layer address option
UNSPECIFIED = "::"

# Priorities (port_security), above the IPv4/ARP ones of flows.py (100-120).
PRIO_SOURCE = 120  # an allowed IPv6 source
PRIO_ND_GUARD = 130  # any NS/NA from the port: dropped unless checked below
PRIO_ND_CHECKED = 140
PRIO_RA_GUARD = 150  # Router Advertisements and Redirects from a VM not marked a router
# arp_nd
PRIO_EXACT = 100
PRIO_GUARD = 110
PRIO_DAD = 120
PRIO_INSTANCE_MISS = 10

_ICMP6: dict[str, MatchValue] = {"eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6}
_NS: dict[str, MatchValue] = {**_ICMP6, "icmpv6_type": ND_NEIGHBOR_SOLICIT}
_NA: dict[str, MatchValue] = {**_ICMP6, "icmpv6_type": ND_NEIGHBOR_ADVERT}


def _local_md(instance: int) -> tuple[int, int]:
    return (metadata_for(instance), METADATA_MASK)


def nd_defaults() -> list[FlowMod]:
    """Fixed flows: a duplicate address probe (from ::) is never answered by the host
    (an answer would say the address is taken) but flooded in its instance; nd_reply
    finishes every advertisement arp_nd made."""
    return [
        ARP_ND.flow(
            priority=PRIO_DAD,
            match={**_NS, "ipv6_src": UNSPECIFIED},
            cookie=Cookie(Purpose.PIPELINE),
            goto=L2_FORWARD,
        ),
        ND_REPLY.flow(
            priority=PRIO_EXACT,
            match=_NA,
            cookie=Cookie(Purpose.PIPELINE),
            actions=[Move("eth_src", "ipv6_nd_tll", 48), Output(OFPP_IN_PORT)],
        ),
        ND_REPLY.flow(priority=0, match={}, cookie=Cookie(Purpose.DROP_MISS)),
    ]


def nd_responder(mac: str, ip: IPv6Address) -> tuple[Action, ...]:
    """Turn a Neighbor Solicitation for ``ip`` into the Advertisement from ``mac``; nd_reply
    writes the target link-layer option and sends it back out the port.

    NOTE (OVS 3.1): the option's type is changed in place (1, source, to 2, target), so a
    solicitation without the option (a unicast reachability probe) gets an answer without
    it, which RFC 4861 allows; the ICMPv6 checksum is fixed by OVS."""
    return (
        Move("eth_src", "eth_dst", 48),
        SetField("eth_src", mac),
        Move("ipv6_src", "ipv6_dst", 128),
        SetField("ipv6_src", str(ip)),
        SetField("icmpv6_type", ND_NEIGHBOR_ADVERT),
        SetField("nd_reserved", NA_SOLICITED_OVERRIDE),
        SetField("nd_options_type", 2),
    )


def _solicit(instance: int, ip: IPv6Address) -> dict[str, MatchValue]:
    return {"metadata": _local_md(instance), **_NS, "ipv6_nd_target": str(ip)}


def _answer(instance: int, mac: str, ip: IPv6Address, cookie: Cookie) -> FlowMod:
    return ARP_ND.flow(
        priority=PRIO_EXACT,
        match=_solicit(instance, ip),
        cookie=cookie,
        actions=nd_responder(mac, ip),
        goto=ND_REPLY,
    )


def local_nd_flows(port: VmPort) -> list[FlowMod]:
    """Answer solicitations for a local VM's IPv6 addresses and its MAC's link-local
    address (every VM's, marked or not); its own (it checking its address) are flooded,
    as its ARP ones are."""
    cookie = Cookie(Purpose.ARP_LOCAL, port.instance, port.ofport)
    found: list[FlowMod] = []
    for ip in port.sources6:
        found.append(_answer(port.instance, port.mac, ip, cookie))
        found.append(
            ARP_ND.flow(
                priority=PRIO_GUARD,
                match={**_solicit(port.instance, ip), "in_port": port.ofport},
                cookie=cookie,
                goto=L2_FORWARD,
            )
        )
    return found


def learned_nd_flows(ep: Endpoint, ips: Iterable[IPv6Address] | None = None) -> list[FlowMod]:
    """Answer solicitations on the host for a remote endpoint's IPv6 addresses."""
    cookie = Cookie(Purpose.ARP_LEARNED, ep.instance, cookies.mac_tag(ep.mac))
    return [_answer(ep.instance, ep.mac, ip, cookie) for ip in (ep.ips6 if ips is None else ips)]


def delete_learned_nd(ep: Endpoint) -> list[FlowMod]:
    return [ARP_ND.delete(match=_solicit(ep.instance, ip), priority=PRIO_EXACT) for ip in ep.ips6]


def nd_miss_flow(instance: int) -> FlowMod:
    """A solicitation for an address nobody here answers goes to the agent (a LEARN),
    whatever its destination: the solicited-node group or the target's own address."""
    return ARP_ND.flow(
        priority=PRIO_INSTANCE_MISS,
        match={"metadata": _local_md(instance), **_NS},
        cookie=Cookie(Purpose.INSTANCE, instance, TAG_ND_MISS),
        actions=[Output(OFPP_CONTROLLER)],
    )


# --------------------------------------------------------------------- port security


def port_security6(port: VmPort) -> list[FlowMod]:
    """IPv6 port security of a VM port.

    Every port: no Router Advertisement or Redirect unless marked ``dove-ipv6-router``.
    A port with addresses (of either family) also sends IPv6 only from its IPv6
    addresses and its MAC's link-local address, or from :: (duplicate address
    detection, MLD reports before an address is up); its solicitations carry its own
    MAC (or none), a probe from :: asks for one of its addresses, and its
    advertisements are for one of its addresses with its own MAC (or none)."""
    ok = Cookie(Purpose.LOCAL_PORT, port.instance, port.ofport)
    drop = Cookie(Purpose.DROP_SPOOF, port.instance, port.ofport)
    own: dict[str, MatchValue] = {"in_port": port.ofport, "eth_src": port.mac, **_ICMP6}
    found: list[FlowMod] = []
    if not port.ipv6_router:
        found += [
            PORT_SECURITY.flow(
                priority=PRIO_RA_GUARD,
                match={"in_port": port.ofport, **_ICMP6, "icmpv6_type": kind},
                cookie=drop,
            )
            for kind in (ND_ROUTER_ADVERT, ND_REDIRECT)
        ]
    if not port.addressed:
        return found
    sources = [str(ip) for ip in port.sources6]
    lladdrs = (port.mac, NO_LLADDR)
    checked: list[dict[str, MatchValue]] = [
        {"in_port": port.ofport, "eth_src": port.mac, "eth_type": ETH_TYPE_IPV6, "ipv6_src": ip}
        for ip in sources
    ]
    checked.append({**own, "ipv6_src": UNSPECIFIED})
    nd: list[dict[str, MatchValue]] = [
        {**own, "icmpv6_type": ND_NEIGHBOR_SOLICIT, "ipv6_src": ip, "ipv6_nd_sll": ll}
        for ip in sources
        for ll in lladdrs
    ]
    nd += [
        {
            **own,
            "icmpv6_type": ND_NEIGHBOR_SOLICIT,
            "ipv6_src": UNSPECIFIED,
            "ipv6_nd_sll": NO_LLADDR,
            "ipv6_nd_target": target,
        }
        for target in sources
    ]
    nd += [
        {
            **own,
            "icmpv6_type": ND_NEIGHBOR_ADVERT,
            "ipv6_src": ip,
            "ipv6_nd_target": target,
            "ipv6_nd_tll": ll,
        }
        for ip in sources
        for target in sources
        for ll in lladdrs
    ]
    found.append(
        PORT_SECURITY.flow(
            priority=PRIO_GUARD,
            match={"in_port": port.ofport, "eth_type": ETH_TYPE_IPV6},
            cookie=drop,
        )
    )
    found += [
        PORT_SECURITY.flow(
            priority=PRIO_ND_GUARD,
            match={"in_port": port.ofport, **_ICMP6, "icmpv6_type": kind},
            cookie=drop,
        )
        for kind in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT)
    ]
    found += [
        PORT_SECURITY.flow(priority=PRIO_SOURCE, match=m, cookie=ok, goto=ARP_ND) for m in checked
    ]
    found += [
        PORT_SECURITY.flow(priority=PRIO_ND_CHECKED, match=m, cookie=ok, goto=ARP_ND) for m in nd
    ]
    return found
