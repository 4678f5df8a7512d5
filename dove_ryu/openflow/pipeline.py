"""The OpenFlow pipeline of a DOVE switch, declared once.

Each `Table` below says what its flows may do: which roles have it, what they
match, which fields, metadata bits and registers they set, where they send a
packet, which tables they jump to, what the table does on a miss, and which
cookie purposes its flows carry.  Every flow and every delete is built through
a table (or `delete_by_cookie`, every group through `group_mod`), which refuses
anything the declaration does not allow.  The agent tells OVS these names, so
``ovs-ofctl dump-flows --names`` and ``ofproto/trace`` show them.

Packet path::

    classify -> port_security -> arp_nd -> l2_forward -> flood
        |  (from the tunnel)           |      |  |
        +------------------------------|------+  +-> egress_check
                                       +-> nd_reply   (a Neighbor Advertisement, out)

A subnet of a tenant router (docs/routing.md) adds a detour for IPv4 sent to its
gateway MAC, routed on the sending VM's host::

    arp_nd -> l3_route -> l3_neighbor -> l2_forward    (into the destination instance)
                 +-> the tunnel, to the active gateway (off the router's subnets)

A gateway (role = gateway) has no VM ports: the tunnel brings it what hosts send off
their routers' subnets, its external port what comes from outside::

    classify -> l3_route -> snat -> ext_out                       (out, source NAT)
        +-----> ext_in -> ext_unnat -> l3_neighbor -> l2_forward  (in, un-NAT)

Metadata carries the instance (bits 0-23) and whether the packet came from
the overlay (bit 24), so later tables never look at ports to know either.

A VAN proxy (role = proxy) uses the same tables without VM ports: classify
marks what came from another site's proxy (bit 25, FROM_WAN); l2_forward sends
it on to the site host, or sends site traffic to the remote proxy through
wan_egress, which hands frames too big for the inter-site path to the agent::

    classify -> l2_forward -> flood
                    +-> wan_egress
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    Action,
    CheckLarger,
    Ct,
    FlowCommand,
    FlowMod,
    Group,
    GroupCommand,
    GroupMod,
    Learn,
    Match,
    Move,
    Output,
    SetField,
)

INSTANCE_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 24
FROM_WAN = 1 << 25  # proxy only: came from another site's proxy
METADATA_MASK = INSTANCE_MASK | FROM_TUNNEL | FROM_WAN
OVERSIZE_REGISTER = "reg0"  # wan_egress: bit 0 set when the frame is too big

HOST = "host"
PROXY = "proxy"
GATEWAY = "gateway"
ROLES = (HOST, PROXY, GATEWAY)
ALL_TABLES = 0xFF  # OFPTT_ALL: a delete by cookie looks in every table
_OFPP_MAX = 0xFFFFFF00  # ports above it are reserved (OpenFlow 1.3)
_REGISTER = re.compile(r"reg\d+")


def metadata_for(instance: int, from_tunnel: bool = False, from_wan: bool = False) -> int:
    return instance | (FROM_TUNNEL if from_tunnel else 0) | (FROM_WAN if from_wan else 0)


class Out(Enum):
    """Where a flow's actions send a packet."""

    PORT = "a local port"
    TUNNEL = "the tunnel"  # tunnel_id and tun_ipv4_dst set, then out (any port)
    IN_PORT = "in_port"  # back where it came from
    GROUP = "a group"
    CONTROLLER = "the agent"


def outputs_of(actions: Iterable[Action]) -> list[Out]:
    """Where ``actions`` send a packet, in order."""
    tunnelled = False
    kinds: list[Out] = []
    for action in actions:
        if isinstance(action, SetField) and action.field == "tun_ipv4_dst":
            tunnelled = True
        elif isinstance(action, Group):
            kinds.append(Out.GROUP)
        elif isinstance(action, Output):
            if action.port == OFPP_CONTROLLER:
                kinds.append(Out.CONTROLLER)
            elif tunnelled:
                kinds.append(Out.TUNNEL)
            elif action.port == OFPP_IN_PORT:
                kinds.append(Out.IN_PORT)
            elif action.port < _OFPP_MAX:
                kinds.append(Out.PORT)
            else:
                raise ValueError(f"output to reserved port {action.port:#x}")
    return kinds


def _written(action: Action) -> str | None:
    """The field or register an action writes."""
    if isinstance(action, SetField):
        return action.field
    if isinstance(action, Move):
        return action.dst
    if isinstance(action, CheckLarger):
        return action.register
    return None


@dataclass(frozen=True)
class Miss:
    """What a table does with a packet no other flow takes: its priority-0,
    match-all flow either drops, outputs (and nothing else) or jumps."""

    output: Out | None = None
    goto: str | None = None

    def __str__(self) -> str:
        if self.goto:
            return f"goto {self.goto}"
        return f"output to {self.output.value}" if self.output else "drop"


DROP = Miss()
TO_AGENT = Miss(output=Out.CONTROLLER)
BACK_OUT = Miss(output=Out.IN_PORT)


def goto(table: str) -> Miss:
    return Miss(goto=table)


def miss_of(fm: FlowMod) -> Miss | None:
    """The miss behaviour a flow has, or None when a miss cannot be like it."""
    name = BY_ID[fm.goto_table].name if fm.goto_table is not None else None
    if fm.write_metadata is not None:
        return None
    if not fm.actions:
        return Miss(goto=name)
    if len(fm.actions) == 1 and isinstance(fm.actions[0], Output) and name is None:
        return Miss(output=outputs_of(fm.actions)[0])
    return None


def _check_actions(
    owner: str,
    actions: tuple[Action, ...],
    sets: tuple[str, ...],
    registers: tuple[str, ...],
    outputs: tuple[Out, ...],
) -> None:
    for action in actions:
        written = _written(action)
        if written is None:
            continue
        if _REGISTER.fullmatch(written):
            if written not in registers:
                raise ValueError(f"{owner} may not set register {written}")
        elif written not in sets:
            raise ValueError(f"{owner} may not set {written}")
    for kind in outputs_of(actions):
        if kind not in outputs:
            raise ValueError(f"{owner} may not output to {kind.value}")


@dataclass(frozen=True)
class Table:
    """One table: what its flows may match, set, output to and jump to, what they
    are for (cookie purposes) and its miss.  Flows and deletes are built here."""

    table_id: int
    name: str
    purpose: str
    roles: tuple[str, ...]  # which agents have the table (HOST, PROXY, GATEWAY)
    miss: Miss  # its priority-0 match-all flow, in every role that has it
    cookies: tuple[Purpose, ...]  # what its flows are for
    matches: tuple[str, ...]
    next_tables: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()  # header fields (set_field, move)
    metadata: int = 0  # the metadata bits it may write
    registers: tuple[str, ...] = ()  # registers (check_pkt_larger, set_field, move)
    outputs: tuple[Out, ...] = ()
    # May send packets through conntrack (ct); a ct's table is one of next_tables.
    conntrack: bool = False
    # The tables its flows' learn actions write flows into (external VTEPs); each
    # written flow is checked against its table's declaration.
    learns: tuple[str, ...] = ()

    def flow(
        self,
        *,
        priority: int,
        match: Match,
        cookie: Cookie,
        actions: Iterable[Action] = (),
        goto: Table | None = None,
        write_metadata: tuple[int, int] | None = None,
        idle_timeout: int = 0,
        send_flow_removed: bool = False,
    ) -> FlowMod:
        """An ADD flow-mod in this table, checked against the declaration."""
        actions = tuple(actions)
        self._check_match(match)
        if cookie.purpose not in self.cookies:
            raise ValueError(f"table {self.name} holds no {cookie.purpose.name.lower()} flows")
        if goto is not None and goto.name not in self.next_tables:
            raise ValueError(f"table {self.name} may not jump to {goto.name}")
        if write_metadata is not None:
            value, mask = write_metadata
            if mask & ~self.metadata or value & ~mask:
                raise ValueError(
                    f"table {self.name} may not write metadata {value:#x}/{mask:#x} "
                    f"(only bits {self.metadata:#x})"
                )
        _check_actions(f"table {self.name}", actions, self.sets, self.registers, self.outputs)
        self._check_conntrack(actions)
        self._check_learns(actions)
        fm = FlowMod(
            table_id=self.table_id,
            priority=priority,
            match=dict(match),
            cookie=cookie.value,
            actions=actions,
            goto_table=goto.table_id if goto else None,
            write_metadata=write_metadata,
            idle_timeout=idle_timeout,
            send_flow_removed=send_flow_removed,
        )
        if priority == 0 and not match and miss_of(fm) != self.miss:
            raise ValueError(
                f"table {self.name} misses with {self.miss}, not {miss_of(fm) or 'this flow'}"
            )
        return fm

    def delete(self, *, match: Match, priority: int) -> FlowMod:
        """Delete the one flow of this table with this match and priority (a wider
        delete by match would take other states' flows: delete by cookie instead)."""
        self._check_match(match)
        if priority == 0 and not match:
            raise ValueError(f"table {self.name}: its miss flow ({self.miss}) is never deleted")
        return FlowMod(
            table_id=self.table_id,
            priority=priority,
            match=dict(match),
            cookie=0,
            command=FlowCommand.DELETE_STRICT,
        )

    def _check_conntrack(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if not isinstance(action, Ct):
                continue
            if not self.conntrack:
                raise ValueError(f"table {self.name} may not use conntrack")
            if action.table is not None:
                target = BY_ID.get(action.table)
                if target is None or target.name not in self.next_tables:
                    raise ValueError(f"table {self.name} may not recirculate to {action.table}")

    def _check_learns(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if not isinstance(action, Learn):
                continue
            target = BY_ID.get(action.table_id)
            if target is None or target.name not in self.learns:
                raise ValueError(f"table {self.name} may not learn into table {action.table_id}")
            target.check_learned(action)

    def check_learned(self, learn: Learn) -> None:
        """The flow ``learn`` writes into this table does only what it may."""
        self._check_match({spec.field: 0 for spec in learn.matches})
        decoded = cookies.decode(learn.cookie)
        if decoded is None or decoded.purpose not in self.cookies:
            raise ValueError(f"table {self.name}: a learned flow's cookie is none of its purposes")
        owner = f"table {self.name} (learned)"
        written = tuple(SetField(spec.field, 0) for spec in learn.loads)
        out = (Output(0),) if learn.output_from is not None else ()
        _check_actions(owner, written + out, self.sets, self.registers, self.outputs)

    def _check_match(self, match: Match) -> None:
        unknown = set(match) - set(self.matches)
        if unknown:
            raise ValueError(f"table {self.name} may not match on {sorted(unknown)}")


# What sending into the overlay sets (tun_metadata0: the DOVE Geneve option, on Geneve).
_TUNNEL_KEY = ("tunnel_id", "tun_ipv4_dst", "tun_metadata0")

# ------------------------------------------------------------------ the tables

CLASSIFY = Table(
    0,
    "classify",
    "VM port -> instance; tunnel -> instance, only from member hosts; else drop",
    roles=(HOST, PROXY, GATEWAY),
    miss=DROP,
    cookies=(
        Purpose.LOCAL_PORT,
        Purpose.MEMBER,
        Purpose.DROP_NONMEMBER,
        Purpose.DROP_UNCLASSIFIED,
        Purpose.EXTERNAL,
    ),
    matches=("in_port", "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_metadata0"),
    # A gateway: the tunnel to l3_route, its external port to ext_in.
    next_tables=("port_security", "ext_in", "l3_route", "l2_forward", "egress_check"),
    metadata=INSTANCE_MASK | FROM_TUNNEL | FROM_WAN,
    # An external VTEP's member flow learns the MACs behind it (docs/interop.md).
    learns=("l2_forward",),
)
PORT_SECURITY = Table(
    10,
    "port_security",
    "a VM sends only from its own MAC (and its own IPv4/IPv6 addresses, ND about itself "
    "only, no Router Advertisement unless marked a router); its DHCP requests -> agent",
    roles=(HOST,),
    miss=DROP,
    cookies=(Purpose.LOCAL_PORT, Purpose.DROP_SPOOF, Purpose.DHCP),
    matches=(
        "in_port",
        "eth_src",
        "eth_type",
        "arp_sha",
        "arp_spa",
        "ipv4_src",
        "ip_proto",
        "udp_src",
        "udp_dst",
        "ipv6_src",
        "icmpv6_type",
        "ipv6_nd_target",
        "ipv6_nd_sll",
        "ipv6_nd_tll",
    ),
    next_tables=("arp_nd",),
    outputs=(Out.CONTROLLER,),
)
ARP_ND = Table(
    20,
    "arp_nd",
    "ARP requests and Neighbor Solicitations answered on the host; unknown targets "
    "resolved by the agent; IPv4 to a subnet's gateway MAC -> l3_route",
    roles=(HOST,),
    miss=goto("l2_forward"),
    cookies=(
        Purpose.PIPELINE,
        Purpose.ARP_LOCAL,
        Purpose.ARP_LEARNED,
        Purpose.INSTANCE,
        Purpose.ROUTER_PORT,
        Purpose.VTEP_STATIC,  # ARP answered for a MAC declared behind an external VTEP
    ),
    matches=(
        "metadata",
        "in_port",
        "eth_type",
        "eth_dst",
        "arp_op",
        "arp_tpa",
        "ipv6_src",
        "ip_proto",
        "icmpv6_type",
        "ipv6_nd_target",
    ),
    next_tables=("nd_reply", "l3_route", "l2_forward"),
    # The request turned into its reply (an NA is finished in nd_reply).
    sets=(
        "eth_src",
        "eth_dst",
        "arp_op",
        "arp_sha",
        "arp_spa",
        "arp_tha",
        "arp_tpa",
        "ipv6_src",
        "ipv6_dst",
        "icmpv6_type",
        "nd_options_type",
        "nd_reserved",
    ),
    outputs=(Out.IN_PORT, Out.CONTROLLER),
)
ND_REPLY = Table(
    22,
    "nd_reply",
    "a Neighbor Solicitation arp_nd turned into an Advertisement: its target link-layer "
    "option gets the answering MAC, back out the port",
    roles=(HOST,),
    miss=DROP,
    cookies=(Purpose.PIPELINE, Purpose.DROP_MISS),
    matches=("eth_type", "ip_proto", "icmpv6_type"),
    # NOTE (OVS 3.1): nd_tll may be written only by a flow whose match says the packet
    # is an NA, so arp_nd cannot finish the reply itself.
    sets=("ipv6_nd_tll",),
    outputs=(Out.IN_PORT,),
)
EXT_IN = Table(
    24,
    "ext_in",
    "gateway: from the external network: ARP for external addresses answered; to a "
    "floating IP or a router's external address -> conntrack NAT; else drop",
    roles=(GATEWAY,),
    miss=DROP,
    cookies=(Purpose.EXTERNAL, Purpose.FLOATING_IP, Purpose.SNAT, Purpose.DROP_EXTERNAL),
    matches=("in_port", "eth_type", "arp_op", "arp_tpa", "ipv4_dst"),
    next_tables=("ext_unnat",),  # through conntrack (ct's table)
    sets=("eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa"),
    outputs=(Out.IN_PORT, Out.CONTROLLER),
    conntrack=True,
)
EXT_UNNAT = Table(
    26,
    "ext_unnat",
    "gateway: un-NATed (a reply, or to a floating IP) -> routed into its instance; "
    "a new connection to a router's external address -> drop",
    roles=(GATEWAY,),
    miss=DROP,
    cookies=(Purpose.FLOATING_IP, Purpose.ROUTE, Purpose.DROP_EXTERNAL),
    matches=("ct_state", "ct_zone", "eth_type", "ipv4_dst"),
    next_tables=("l3_neighbor",),
    sets=("eth_src",),
    metadata=INSTANCE_MASK,
)
L3_ROUTE = Table(
    30,
    "l3_route",
    "IPv4 to a gateway MAC: routed into another subnet of the router (TTL, MAC), or to "
    "the active gateway; TTL expiring -> agent; no route -> drop",
    roles=(HOST, GATEWAY),
    miss=DROP,
    cookies=(Purpose.ROUTE, Purpose.ROUTE_DEFAULT, Purpose.ROUTE_TTL, Purpose.DROP_MISS),
    matches=("metadata", "eth_type", "eth_dst", "ipv4_dst", "nw_ttl"),
    next_tables=("l3_neighbor", "snat"),
    sets=("eth_src", *_TUNNEL_KEY),
    metadata=INSTANCE_MASK,
    outputs=(Out.TUNNEL, Out.CONTROLLER),
)
L3_NEIGHBOR = Table(
    32,
    "l3_neighbor",
    "a routed packet's destination IP -> its MAC; unknown -> agent (resolved, then released)",
    roles=(HOST, GATEWAY),
    miss=DROP,
    cookies=(Purpose.NEIGHBOR, Purpose.INSTANCE, Purpose.DROP_MISS),
    matches=("metadata", "eth_type", "ipv4_dst"),
    next_tables=("l2_forward",),
    sets=("eth_dst",),
    outputs=(Out.CONTROLLER,),
)
SNAT = Table(
    34,
    "snat",
    "gateway: out of the overlay: a floating IP's VM -> its floating IP, else the "
    "router's external address (conntrack NAT, committed)",
    roles=(GATEWAY,),
    miss=DROP,
    cookies=(Purpose.SNAT, Purpose.FLOATING_IP),
    matches=("metadata", "eth_type", "ipv4_src"),
    next_tables=("ext_out",),
    conntrack=True,
)
EXT_OUT = Table(
    36,
    "ext_out",
    "gateway: into the external network, to the next hop's MAC (unknown -> agent)",
    roles=(GATEWAY,),
    miss=TO_AGENT,
    cookies=(Purpose.EXTERNAL,),
    matches=("eth_type", "ipv4_dst"),
    sets=("eth_src", "eth_dst"),
    outputs=(Out.PORT, Out.CONTROLLER),
)
L2_FORWARD = Table(
    40,
    "l2_forward",
    "(instance, dst MAC) -> local port or tunnel; unknown MAC -> agent",
    roles=(HOST, PROXY, GATEWAY),
    miss=DROP,
    cookies=(
        Purpose.PIPELINE,
        Purpose.LOCAL_ENDPOINT,
        Purpose.LEARNED,
        Purpose.INSTANCE,
        Purpose.DROP_MISS,
        Purpose.VTEP_LEARNED,  # written by the learn action of an external VTEP's member flow
        Purpose.VTEP_STATIC,
    ),
    matches=("metadata", "eth_dst"),
    next_tables=("wan_egress", "flood", "egress_check"),
    sets=_TUNNEL_KEY,
    registers=(OVERSIZE_REGISTER,),  # proxy: the size check before wan_egress
    outputs=(Out.PORT, Out.TUNNEL, Out.CONTROLLER),
)
WAN_EGRESS = Table(
    45,
    "wan_egress",
    "proxy: to another site's proxy (or, broadcast, to each); too big for the inter-site "
    "path -> agent",
    roles=(PROXY,),
    miss=BACK_OUT,  # into the tunnel l2_forward addressed it to
    cookies=(Purpose.PIPELINE, Purpose.WAN_OVERSIZE, Purpose.INSTANCE),
    matches=(OVERSIZE_REGISTER, "metadata", "eth_dst"),
    outputs=(Out.IN_PORT, Out.GROUP, Out.CONTROLLER),
)
FLOOD = Table(
    50,
    "flood",
    "broadcast/multicast -> the instance's group (local ports + member hosts)",
    roles=(HOST, PROXY),
    miss=DROP,
    cookies=(Purpose.INSTANCE, Purpose.DROP_MISS),
    matches=("metadata",),
    outputs=(Out.GROUP,),
)
EGRESS_CHECK = Table(
    60,
    "egress_check",
    "overlay packet for no local endpoint of its instance: punted, the sender un-learns",
    roles=(HOST,),
    miss=TO_AGENT,
    cookies=(Purpose.EGRESS_MISS,),
    matches=(),  # its miss is its only flow
    outputs=(Out.CONTROLLER,),
)

# The buckets of the ALL groups flood and wan_egress send to: local ports and
# member hosts (or, on a proxy, back out the tunnel to each member or remote proxy).
GROUP_SETS = _TUNNEL_KEY
GROUP_OUTPUTS = (Out.PORT, Out.TUNNEL)

TABLES: tuple[Table, ...] = (
    CLASSIFY,
    PORT_SECURITY,
    ARP_ND,
    ND_REPLY,
    EXT_IN,
    EXT_UNNAT,
    L3_ROUTE,
    L3_NEIGHBOR,
    SNAT,
    EXT_OUT,
    L2_FORWARD,
    WAN_EGRESS,
    FLOOD,
    EGRESS_CHECK,
)
BY_NAME = {t.name: t for t in TABLES}
BY_ID = {t.table_id: t for t in TABLES}

# Deletes by cookie select all our flows, or one purpose of one instance, or one
# state's flows exactly; the mask always keeps the "ours" nibble and never the
# generation's (a targeted delete reaches whatever generation installed the flow).
COOKIE_MASKS = (cookies.MASK_OURS, cookies.MASK_PURPOSE_INSTANCE, cookies.MASK_EXACT)


def tables_of(role: str) -> tuple[Table, ...]:
    return tuple(t for t in TABLES if role in t.roles)


def delete_by_cookie(cookie: Cookie | None, mask: int) -> FlowMod:
    """Delete our flows in every table: all of them (``cookie`` None, MASK_OURS), or
    those of one purpose and instance, or one state's, by a mask of COOKIE_MASKS."""
    if mask not in COOKIE_MASKS:
        raise ValueError(f"cookie mask {mask:#x} is not one of {[hex(m) for m in COOKIE_MASKS]}")
    if cookie is None:
        if mask != cookies.MASK_OURS:
            raise ValueError("a delete of more than all our flows needs a cookie")
        value = cookies.OURS << cookies.OURS_SHIFT
    else:
        value = cookie.value
    return FlowMod(
        table_id=ALL_TABLES,
        priority=0,
        match={},
        cookie=value,
        cookie_mask=mask,
        command=FlowCommand.DELETE,
    )


def delete_generation(gen: int) -> FlowMod:
    """Delete, in every table, the flows one generation of the agent installed (a
    predecessor's, once its successor's state is settled: docs/control-plane.md)."""
    return FlowMod(
        table_id=ALL_TABLES,
        priority=0,
        match={},
        cookie=cookies.with_generation(cookies.MARKER << cookies.MARKER_SHIFT, gen),
        cookie_mask=cookies.MASK_GENERATION,
        command=FlowCommand.DELETE,
    )


# Flows the datapath writes itself (an external VTEP's learn action): a take-over's
# sweep leaves them to age out (docs/interop.md section 2).
DATAPATH_LEARNED = Purpose.VTEP_LEARNED
_PURPOSE_BITS = 8


def delete_generation_but_learned(gen: int) -> list[FlowMod]:
    """`delete_generation`, except the flows the datapath learned (DATAPATH_LEARNED).

    A cookie mask cannot say "not this purpose", so the other purposes are covered by
    one delete per bit of the purpose field: the purposes that agree with the kept one
    on the bits above that bit and differ on it (eight deletes, every other purpose
    exactly once)."""
    whole = delete_generation(gen)
    kept = int(DATAPATH_LEARNED)
    msgs = []
    for bit in reversed(range(_PURPOSE_BITS)):
        prefix = ((kept >> bit) ^ 1) << bit  # the kept purpose's upper bits, this bit flipped
        mask = ((1 << _PURPOSE_BITS) - 1) & ~((1 << bit) - 1)
        msgs.append(
            replace(
                whole,
                cookie=whole.cookie | (prefix << cookies.PURPOSE_SHIFT),
                cookie_mask=whole.cookie_mask | (mask << cookies.PURPOSE_SHIFT),
            )
        )
    return msgs


def group_mod(
    group_id: int, command: GroupCommand, buckets: Iterable[tuple[Action, ...]] = ()
) -> GroupMod:
    """A group-mod whose buckets do only what the declaration lets a group do."""
    buckets = tuple(buckets)
    if command is GroupCommand.DELETE and buckets:
        raise ValueError(f"group {group_id}: a delete has no buckets")
    for bucket in buckets:
        _check_actions(f"group {group_id}", bucket, GROUP_SETS, (), GROUP_OUTPUTS)
        if any(isinstance(a, Ct) for a in bucket):
            raise ValueError(f"group {group_id}: no conntrack in a group")
    return GroupMod(group_id=group_id, command=command, buckets=buckets)


def _check_declaration() -> None:
    for table in TABLES:
        assert table.roles and set(table.roles) <= set(ROLES), table.name
        jumps = [*table.next_tables, *([table.miss.goto] if table.miss.goto else [])]
        for name in jumps:
            target = BY_NAME[name]
            # OpenFlow only jumps forward, and to a table the same agents have.
            assert target.table_id > table.table_id, (table.name, name)
            assert set(target.roles) & set(table.roles), (table.name, name)
        assert table.miss.goto is None or table.miss.goto in table.next_tables, table.name
        for name in table.learns:
            assert set(BY_NAME[name].roles) & set(table.roles), (table.name, name)
        assert table.miss.output is None or table.miss.output in table.outputs, table.name
        # A register is matched only where a table that sets it jumps.
        for reg in filter(_REGISTER.fullmatch, table.matches):
            assert any(reg in t.registers and table.name in t.next_tables for t in TABLES), (
                table.name,
                reg,
            )
        # ct_state and ct_zone are known only after a ct action's recirculation.
        if {"ct_state", "ct_zone"} & set(table.matches):
            assert any(t.conntrack and table.name in t.next_tables for t in TABLES), table.name
    # Every kind of flow lives somewhere, so a delete by any cookie can find it.
    assert {p for t in TABLES for p in t.cookies} == set(Purpose)


_check_declaration()
