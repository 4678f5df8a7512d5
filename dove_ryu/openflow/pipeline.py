"""The OpenFlow pipeline of a DOVE switch, declared once.

Every flow is built through a `Table` below, which refuses a match field or a
jump the declaration does not allow.  The agent tells OVS these names, so
``ovs-ofctl dump-flows --names`` and ``ofproto/trace`` show them.

Packet path::

    classify -> port_security -> arp_nd -> l2_forward -> flood
        |  (from the tunnel)                  |  |
        +-------------------------------------+  +-> egress_check

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

from collections.abc import Iterable
from dataclasses import dataclass

from dove_ryu.openflow.cookies import Cookie
from dove_ryu.openflow.ofmsg import Action, FlowCommand, FlowMod, Match

INSTANCE_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 24
FROM_WAN = 1 << 25  # proxy only: came from another site's proxy
METADATA_MASK = INSTANCE_MASK | FROM_TUNNEL | FROM_WAN
OVERSIZE_REGISTER = "reg0"  # wan_egress: bit 0 set when the frame is too big


def metadata_for(instance: int, from_tunnel: bool = False, from_wan: bool = False) -> int:
    return instance | (FROM_TUNNEL if from_tunnel else 0) | (FROM_WAN if from_wan else 0)


@dataclass(frozen=True)
class Table:
    table_id: int
    name: str
    purpose: str
    matches: frozenset[str]
    next_tables: tuple[str, ...] = ()
    may_output: bool = True

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
        unknown = set(match) - self.matches
        if unknown:
            raise ValueError(f"table {self.name} may not match on {sorted(unknown)}")
        if goto is not None and goto.name not in self.next_tables:
            raise ValueError(f"table {self.name} may not jump to {goto.name}")
        actions = tuple(actions)
        if actions and not self.may_output:
            raise ValueError(f"table {self.name} may not have actions")
        return FlowMod(
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

    def delete(self, *, match: Match, priority: int | None = None) -> FlowMod:
        """Delete flows of this table by match (strict when a priority is given)."""
        return FlowMod(
            table_id=self.table_id,
            priority=priority or 0,
            match=dict(match),
            cookie=0,
            command=FlowCommand.DELETE_STRICT if priority is not None else FlowCommand.DELETE,
        )


_ETH = frozenset({"eth_src", "eth_dst", "eth_type"})
_ARP = frozenset({"arp_op", "arp_spa", "arp_tpa", "arp_sha"})

CLASSIFY = Table(
    0,
    "classify",
    "VM port -> instance; tunnel -> instance, only from member hosts; else drop",
    frozenset({"in_port", "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst"}),
    ("port_security", "l2_forward", "egress_check"),
)
PORT_SECURITY = Table(
    10,
    "port_security",
    "a VM sends only from its own MAC (and its own IPs in ARP)",
    frozenset({"in_port"}) | _ETH | _ARP,
    ("arp_nd",),
)
ARP_ND = Table(
    20,
    "arp_nd",
    "ARP requests answered on the host; unknown targets resolved by the agent",
    frozenset({"metadata", "in_port"}) | _ETH | _ARP,
    ("l2_forward",),
)
L2_FORWARD = Table(
    40,
    "l2_forward",
    "(instance, dst MAC) -> local port or tunnel; miss -> agent",
    frozenset({"metadata", "eth_dst"}),
    ("wan_egress", "flood", "egress_check"),
)
WAN_EGRESS = Table(
    45,
    "wan_egress",
    "proxy: to another site's proxy (or, broadcast, to each); too big for the inter-site "
    "path -> agent",
    frozenset({OVERSIZE_REGISTER, "metadata", "eth_dst"}),
)
FLOOD = Table(
    50,
    "flood",
    "broadcast/multicast -> the instance's group (local ports + member hosts)",
    frozenset({"metadata"}),
)
EGRESS_CHECK = Table(
    60,
    "egress_check",
    "overlay packet for no local endpoint of its instance: punted, the sender un-learns",
    frozenset({"metadata"}),
)

TABLES: tuple[Table, ...] = (
    CLASSIFY,
    PORT_SECURITY,
    ARP_ND,
    L2_FORWARD,
    WAN_EGRESS,
    FLOOD,
    EGRESS_CHECK,
)
BY_NAME = {t.name: t for t in TABLES}
BY_ID = {t.table_id: t for t in TABLES}


def _check_declaration() -> None:
    for table in TABLES:
        for name in table.next_tables:
            target = BY_NAME[name]
            # OpenFlow only jumps forward.
            assert target.table_id > table.table_id, (table.name, name)


_check_declaration()
