"""Flow cookies that decode to the state that made the flow.

Layout (64 bits)::

    63   60 59   56 55     48 47                  24 23                 0
    +------+-------+---------+----------------------+-------------------+
    | 0xD  |  gen  | purpose |     instance id      |   endpoint tag    |
    +------+-------+---------+----------------------+-------------------+

The top nibble marks a flow as ours, so nothing else's flows are ever touched.  The
next one is the generation of the agent process that installed it: a restarted agent
installs its whole state under a new generation and then deletes only the flows of the
others (docs/control-plane.md, section 1).  `decode` ignores the generation, and the
masks of targeted deletes leave it out, so they reach a flow whatever generation
installed it.  A fresh start takes generation 0.  The endpoint tag is the OpenFlow port for local
ports, the low 24 bits of the MAC for learned endpoints, or the low 24 bits
(last three octets) of a member host's underlay address.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

OURS = 0xD0  # the top byte of generation 0's cookies
OURS_SHIFT = 56
MARKER = 0xD
MARKER_SHIFT = 60
OURS_MASK = 0xF << MARKER_SHIFT  # the marker nibble only: every generation
GENERATION_SHIFT = 56
GENERATIONS = 16
GENERATION_MASK = 0xF << GENERATION_SHIFT
PURPOSE_SHIFT = 48
INSTANCE_SHIFT = 24
TAG_MASK = 0xFFFFFF


class Purpose(IntEnum):
    PIPELINE = 1  # table defaults and fixed flows
    LOCAL_PORT = 2  # classify + port security for a VM port
    LOCAL_ENDPOINT = 3  # l2 delivery to a local VM
    LEARNED = 4  # l2 forwarding to a remote endpoint (learned)
    ARP_LOCAL = 5  # ARP answered for a local VM's address
    ARP_LEARNED = 6  # ARP answered for a learned remote address
    MEMBER = 7  # tunnel classify: accept a member host of an instance
    INSTANCE = 8  # per-instance misses (punt to controller) and flooding
    DROP_NONMEMBER = 9  # tunnelled packet from a host that is not a member
    DROP_SPOOF = 10  # VM sent from an address that is not its own
    DROP_UNCLASSIFIED = 11  # packet from an unknown port
    EGRESS_MISS = 12  # overlay packet for no local endpoint: punted, the sender un-learns
    DROP_MISS = 13  # default drops
    WAN_OVERSIZE = 14  # proxy: frame too big for the inter-site path, to the agent
    # Routing, the gateway and DHCP (issue 12, docs/routing.md): the tag is the router id
    # unless said otherwise.
    ROUTER_PORT = 15  # a subnet's router port: ARP for its gateway answered, IPv4 to it routed
    ROUTE = 16  # routed into another subnet (instance: the destination's)
    ROUTE_DEFAULT = 17  # off the router's subnets: to the active gateway (instance: source)
    ROUTE_TTL = 18  # TTL would reach zero: to the agent, dropped and counted
    NEIGHBOR = 19  # a routed packet's destination IP -> its MAC (tag: low 24 bits of the MAC)
    DHCP = 20  # a VM's DHCP request, answered by the agent (tag: the OpenFlow port)
    SNAT = 21  # gateway: source NAT to the router's external address
    FLOATING_IP = 22  # gateway: a floating IP, both ways (tag: its low 24 bits)
    EXTERNAL = 23  # gateway: the external network's side (ARP, un-NAT, next hop)
    DROP_EXTERNAL = 24  # gateway: external traffic for no floating IP or connection
    # External VTEPs (issue 14, docs/interop.md).
    VTEP_LEARNED = 25  # a MAC behind an external VTEP, learned in the datapath (tag: VTEP)
    VTEP_STATIC = 26  # a declared MAC behind an external VTEP (tag: low 24 bits of the MAC)


@dataclass(frozen=True)
class Cookie:
    purpose: Purpose
    instance: int = 0
    tag: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.instance < 1 << 24:
            raise ValueError(f"instance {self.instance} out of range")
        if not 0 <= self.tag <= TAG_MASK:
            raise ValueError(f"cookie tag {self.tag} out of range")

    @property
    def value(self) -> int:
        return (
            (OURS << OURS_SHIFT)
            | (int(self.purpose) << PURPOSE_SHIFT)
            | (self.instance << INSTANCE_SHIFT)
            | self.tag
        )

    def __str__(self) -> str:
        text = self.purpose.name.lower()
        if self.instance:
            text += f" instance={self.instance}"
        if self.tag:
            text += f" tag={self.tag:#x}"
        return text


def decode(value: int) -> Cookie | None:
    """The cookie behind a flow, or None when the flow is not ours."""
    if value >> MARKER_SHIFT != MARKER:
        return None
    try:
        purpose = Purpose((value >> PURPOSE_SHIFT) & 0xFF)
    except ValueError:
        return None
    return Cookie(purpose, (value >> INSTANCE_SHIFT) & 0xFFFFFF, value & TAG_MASK)


def generation(value: int) -> int | None:
    """The generation of one of our cookies, or None when the flow is not ours."""
    if value >> MARKER_SHIFT != MARKER:
        return None
    return (value & GENERATION_MASK) >> GENERATION_SHIFT


def with_generation(value: int, gen: int) -> int:
    """``value`` (one of our cookies, any generation) as generation ``gen`` made it."""
    if not 0 <= gen < GENERATIONS:
        raise ValueError(f"cookie generation {gen} out of range")
    return (value & ~GENERATION_MASK) | (gen << GENERATION_SHIFT)


def mac_tag(mac: str) -> int:
    """The low 24 bits of a MAC, as an endpoint tag."""
    return int(mac.replace(":", "")[-6:], 16)


# Masks to select flows by cookie in a delete or a stats request.  None has the
# generation's bits but MASK_GENERATION: a targeted delete reaches every generation.
MASK_OURS = OURS_MASK
MASK_PURPOSE = 0xFF << PURPOSE_SHIFT  # with MASK_OURS: every flow of one purpose
MASK_PURPOSE_INSTANCE = OURS_MASK | (0xFF << PURPOSE_SHIFT) | (0xFFFFFF << INSTANCE_SHIFT)
MASK_EXACT = 0xFFFFFFFFFFFFFFFF & ~GENERATION_MASK
MASK_GENERATION = OURS_MASK | GENERATION_MASK  # every flow of one generation
