"""Flows for external VTEPs (docs/interop.md section 2): state in, flow-mods out.

A VTEP that runs no agent is accepted, per instance it serves, by a classify flow
like a member host's whose learn action writes, for each source MAC behind it, an
l2_forward flow back to it (``VTEP_LEARNED``: idle timeout, bounded by learn's
``limit``).  Those flows sit above the instance's miss and below every endpoint flow
the agent installs (``PRIO_EXACT``), so a MAC a DOVE host owns always wins.  MACs
declared behind it are l2_forward flows (``VTEP_STATIC``) and ARP answers.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from dove_ryu.model import ExternalVtep, VtepMac
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.flows import PRIO_EXACT, PRIO_INSTANCE_MISS, arp_responder
from dove_ryu.openflow.ofmsg import Action, FlowMod, Learn, LearnSpec, MatchValue, Output, SetField
from dove_ryu.openflow.packet import ARP_REQUEST, ETH_TYPE_ARP
from dove_ryu.openflow.pipeline import (
    ARP_ND,
    CLASSIFY,
    EGRESS_CHECK,
    L2_FORWARD,
    METADATA_MASK,
    delete_by_cookie,
    metadata_for,
)
from dove_ryu.openflow.tunnels import Tunnels, as_tunnels

PRIO_VTEP_LEARNED = 50  # above the instance's miss, below every endpoint flow
PRIO_VTEP_STATIC = 60  # a declared MAC beats one learned behind a VTEP
assert PRIO_INSTANCE_MISS < PRIO_VTEP_LEARNED < PRIO_VTEP_STATIC < PRIO_EXACT


def vtep_tag(vtep: ExternalVtep) -> int:
    return int(vtep.address) & cookies.TAG_MASK


def vtep_port(tunnel: Tunnels | int, vtep: ExternalVtep) -> int:
    """The tunnel port ``vtep``'s traffic leaves and arrives on: the port of its
    encapsulation (the configuration makes sure this host takes it)."""
    tunnels = as_tunnels(tunnel)
    return tunnels.ports.get(vtep.encapsulation, tunnels.own_port)


def vtep_tunnel(tunnel: Tunnels | int, vtep: ExternalVtep, instance: int) -> tuple[Action, ...]:
    """How a packet of ``instance`` reaches ``vtep`` (flood buckets, declared MACs,
    unknown unicast): its encapsulation, without the DOVE option (it runs no agent);
    the flows its learn writes go back out the port it came in on."""
    return (
        SetField("tunnel_id", instance),
        SetField("tun_ipv4_dst", str(vtep.address)),
        Output(vtep_port(tunnel, vtep)),
    )


def _member_match(
    vtep: ExternalVtep, instance: int, tunnel_ofport: Tunnels | int
) -> dict[str, MatchValue]:
    port = vtep_port(tunnel_ofport, vtep)
    return {"in_port": port, "tunnel_id": instance, "tun_ipv4_src": str(vtep.address)}


def learned_cookie(vtep: ExternalVtep, instance: int) -> Cookie:
    return Cookie(Purpose.VTEP_LEARNED, instance, vtep_tag(vtep))


def delete_learned(instance: int, tag: int) -> FlowMod:
    """What the datapath learned behind the VTEP whose cookie tag is ``tag``."""
    return delete_by_cookie(Cookie(Purpose.VTEP_LEARNED, instance, tag), cookies.MASK_EXACT)


def learn_macs(vtep: ExternalVtep, instance: int, age: int, limit: int) -> Learn:
    """The learn action of the VTEP's member flow: (instance, the packet's source MAC)
    -> back into the tunnel it came from, to the VTEP, with the instance's VNI."""
    return Learn(
        table_id=L2_FORWARD.table_id,
        priority=PRIO_VTEP_LEARNED,
        cookie=learned_cookie(vtep, instance).value,
        matches=(
            # NOTE (python ovs 3.x flow parser): the whole metadata field, as a subfield
            # (OXM_OF_METADATA[0..25]) its learn decoder cannot read; no flow sets bits
            # above METADATA_MASK, so it matches the same packets.
            LearnSpec("metadata", value=metadata_for(instance)),
            LearnSpec("eth_dst", src="eth_src"),
        ),
        loads=(
            LearnSpec("tunnel_id", value=instance),
            LearnSpec("tun_ipv4_dst", src="tun_ipv4_src"),
        ),
        output_from="in_port",
        idle_timeout=age,
        limit=limit,
    )


def vtep_member_flow(
    vtep: ExternalVtep,
    instance: int,
    tunnel_ofport: Tunnels | int,
    age: int,
    limit: int,
    lingering: bool = False,
) -> FlowMod:
    """Accept the VTEP's tunnelled packets of ``instance`` and learn the MACs behind it.
    ``lingering`` (no VM of the instance here any more): to egress_check, learning
    nothing, as for a member host (`dove_ryu.openflow.flows.member_flow`)."""
    return CLASSIFY.flow(
        priority=PRIO_EXACT,
        match=_member_match(vtep, instance, tunnel_ofport),
        cookie=Cookie(Purpose.MEMBER, instance, vtep_tag(vtep)),
        actions=() if lingering else (learn_macs(vtep, instance, age, limit),),
        write_metadata=(metadata_for(instance, from_tunnel=True), METADATA_MASK),
        goto=EGRESS_CHECK if lingering else L2_FORWARD,
    )


def _arp_request(instance: int, ip: IPv4Address) -> dict[str, MatchValue]:
    return {
        "metadata": (metadata_for(instance), METADATA_MASK),
        "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REQUEST,
        "arp_tpa": str(ip),
    }


def _static_match(mac: VtepMac) -> dict[str, MatchValue]:
    return {"metadata": (metadata_for(mac.instance), METADATA_MASK), "eth_dst": mac.mac}


def static_mac_flows(
    vtep: ExternalVtep, mac: VtepMac, tunnel_ofport: Tunnels | int
) -> list[FlowMod]:
    """A MAC declared behind the VTEP: forwarded to it, and ARP answered for its IPv4."""
    cookie = Cookie(Purpose.VTEP_STATIC, mac.instance, cookies.mac_tag(mac.mac))
    msgs = [
        L2_FORWARD.flow(
            priority=PRIO_VTEP_STATIC,
            match=_static_match(mac),
            cookie=cookie,
            actions=vtep_tunnel(tunnel_ofport, vtep, mac.instance),
        )
    ]
    if mac.ip is not None:
        msgs.append(
            ARP_ND.flow(
                priority=PRIO_EXACT,
                match=_arp_request(mac.instance, mac.ip),
                cookie=cookie,
                actions=arp_responder(mac.mac, mac.ip),
            )
        )
    return msgs


def vtep_flows(
    vtep: ExternalVtep, instance: int, tunnel_ofport: Tunnels | int, age: int, limit: int
) -> list[FlowMod]:
    """Everything the VTEP has in an instance this host serves."""
    return [
        vtep_member_flow(vtep, instance, tunnel_ofport, age, limit),
        *(f for m in vtep.macs_of(instance) for f in static_mac_flows(vtep, m, tunnel_ofport)),
    ]


def delete_vtep_flows(
    vtep: ExternalVtep, instance: int, tunnel_ofport: Tunnels | int
) -> list[FlowMod]:
    """The VTEP's flows in ``instance`` (it no longer serves it, or is no longer
    declared): its member flow, its static MACs and what the datapath learned from it."""
    msgs = [
        CLASSIFY.delete(match=_member_match(vtep, instance, tunnel_ofport), priority=PRIO_EXACT),
        delete_by_cookie(learned_cookie(vtep, instance), cookies.MASK_EXACT),
    ]
    for m in vtep.macs_of(instance):
        msgs.append(L2_FORWARD.delete(match=_static_match(m), priority=PRIO_VTEP_STATIC))
        if m.ip is not None:
            msgs.append(ARP_ND.delete(match=_arp_request(instance, m.ip), priority=PRIO_EXACT))
    return msgs


def delete_instance_vteps(instance: int) -> list[FlowMod]:
    """Every VTEP flow of an instance this host stopped serving (its member flows go
    with the instance's, `dove_ryu.openflow.flows.delete_instance`)."""
    return [
        delete_by_cookie(Cookie(p, instance), cookies.MASK_PURPOSE_INSTANCE)
        for p in (Purpose.VTEP_LEARNED, Purpose.VTEP_STATIC)
    ]
