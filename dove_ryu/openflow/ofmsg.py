"""OpenFlow messages as plain values, independent of any controller framework.

The core builds these; `dove_ryu.adapters.of_osken` turns them into os-ken messages and
`tests/fakeswitch.py` applies them to a table simulator.  Match fields and
set-field names are the OXM names os-ken and OVS use (``eth_dst``,
``tun_ipv4_dst``, ...); a masked field is a ``(value, mask)`` tuple.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from ipaddress import IPv4Address

MatchValue = int | str | tuple[int, int] | tuple[str, str]
Match = Mapping[str, MatchValue]

# Reserved port numbers (OpenFlow 1.3).
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF  # any group: a wildcard of stats requests only
OFPG_ALL = 0xFFFFFFFC  # every group, for a group delete
OFPCML_NO_BUFFER = 0xFFFF


@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True)
class SetField:
    field: str
    value: int | str


@dataclass(frozen=True)
class Move:
    """Copy ``n_bits`` from one field to another (Nicira reg_move)."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class Group:
    group_id: int


@dataclass(frozen=True)
class CheckLarger:
    """Set bit ``bit`` of ``register`` if the packet is longer than ``length`` bytes
    (Open vSwitch's check_pkt_larger; the frame is measured with its Ethernet header)."""

    length: int
    register: str = "reg0"
    bit: int = 0


@dataclass(frozen=True)
class DecTtl:
    """Decrement the IPv4 TTL (OpenFlow's dec_nw_ttl); a packet whose TTL would reach
    zero is dropped by the switch (routing sends TTL 0 and 1 to the agent first)."""


# --- conntrack (the gateway's NAT, docs/routing.md) ---------------------------------------


@dataclass(frozen=True)
class Nat:
    """The NAT of a ct action: ``kind`` "src" or "dst" rewrites to ``address`` (a new
    connection); no kind re-applies the NAT its connection already has (a reply)."""

    kind: str = ""
    address: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("", "src", "dst"):
            raise ValueError(f"nat kind {self.kind!r} is not src or dst")
        if bool(self.kind) != bool(self.address):
            raise ValueError("nat(src|dst) needs an address, plain nat none")
        if self.address:
            IPv4Address(self.address)


@dataclass(frozen=True)
class Ct:
    """Send the packet through conntrack (Open vSwitch's ct action) in ``zone``: commit
    the connection, apply ``nat``, and with ``table`` continue in that table with its
    ct_state known (recirculation)."""

    zone: int
    commit: bool = False
    table: int | None = None
    nat: Nat | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.zone <= 0xFFFF:
            raise ValueError(f"conntrack zone {self.zone} is not 16 bits")


# ct_state bits, as OVS matches them (ct_state=+trk+est is (TRK|EST, TRK|EST)).
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20

# --- learn (external VTEPs, docs/interop.md section 2) ---------------------------------


@dataclass(frozen=True)
class LearnSpec:
    """One field of the flow a `Learn` writes: the learned flow matches (or, in its
    actions, loads) bits 0..``n_bits``-1 of ``field`` (0: the whole field), from
    ``value`` (immediate) or from the learning packet's ``src`` field."""

    field: str
    value: int | str | None = None
    src: str | None = None
    n_bits: int = 0

    def __post_init__(self) -> None:
        if (self.value is None) == (self.src is None):
            raise ValueError(f"learn {self.field}: a value or a source field, one of them")


@dataclass(frozen=True)
class Learn:
    """Open vSwitch's learn action (NXAST_LEARN2, OVS >= 2.12): each packet writes (or
    refreshes) a flow in ``table_id`` matching ``matches``, whose actions load ``loads``
    and output to the port held in ``output_from`` of the learning packet.  At most
    ``limit`` flows (0: no bound) share this action's ``cookie``, table and priority."""

    table_id: int
    priority: int
    cookie: int
    matches: tuple[LearnSpec, ...]
    loads: tuple[LearnSpec, ...] = ()
    output_from: str | None = None
    idle_timeout: int = 0
    limit: int = 0


Action = Output | SetField | Move | Group | CheckLarger | DecTtl | Ct | Learn


class FlowCommand(Enum):
    ADD = "add"
    MODIFY_STRICT = "modify_strict"
    DELETE = "delete"
    DELETE_STRICT = "delete_strict"


@dataclass(frozen=True)
class FlowMod:
    table_id: int
    priority: int
    match: Match
    cookie: int
    actions: tuple[Action, ...] = ()
    goto_table: int | None = None
    write_metadata: tuple[int, int] | None = None
    command: FlowCommand = FlowCommand.ADD
    cookie_mask: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    send_flow_removed: bool = False

    @property
    def is_delete(self) -> bool:
        return self.command in (FlowCommand.DELETE, FlowCommand.DELETE_STRICT)


class GroupCommand(Enum):
    ADD = "add"
    MODIFY = "modify"
    DELETE = "delete"
    # Add, or modify the group if it exists (an Open vSwitch extension, OVS >= 2.6): for
    # a switch whose groups could not be read, where ADD may fail and MODIFY may too.
    ADD_OR_MODIFY = "add_or_modify"


@dataclass(frozen=True)
class GroupMod:
    """An ALL group: every bucket gets a copy of the packet."""

    group_id: int
    command: GroupCommand
    buckets: tuple[tuple[Action, ...], ...] = ()


@dataclass(frozen=True)
class PacketOut:
    """Inject ``data`` as if it arrived on ``in_port`` (actions usually Output(OFPP_TABLE))."""

    in_port: int
    data: bytes
    actions: tuple[Action, ...] = (Output(OFPP_TABLE),)
    # False for a packet that is complete in itself (an ARP answer made by the agent):
    # it needs no barrier.  It still follows the flow changes of its batch, which OVS
    # applies in order: the VM's next packet must find its forwarding flow.
    after_flows: bool = True


@dataclass(slots=True)
class PacketIn:
    """A packet the pipeline sent to the agent, with what the switch said of it.

    Not frozen: made once per packet-in on the agent's busiest path, and a frozen
    dataclass's constructor costs several times a plain one's."""

    cookie: int  # of the flow that sent it: why it came (`dove_ryu.openflow.cookies`)
    in_port: int
    data: bytes
    metadata: int | None = None
    tunnel_src: IPv4Address | None = None  # for a packet that came through the tunnel


@dataclass(frozen=True)
class Barrier:
    pass


@dataclass(frozen=True)
class CtFlushZone:
    """Forget every connection of conntrack zone ``zone`` (Open vSwitch's
    NXT_CT_FLUSH_ZONE).  A gateway sends it when a router loses an external address: its
    connections must not carry on under an address that may now be another tenant's."""

    zone: int


OfMsg = FlowMod | GroupMod | PacketOut | Barrier | CtFlushZone


@dataclass
class Datagram:
    """A control-protocol message to send over the underlay."""

    dst: str
    payload: bytes
    src: str = ""  # the local address to send from (a proxy has two legs); "" = default


@dataclass
class CoreOutput:
    """What a core handler asks the shell to do: switch messages and datagrams."""

    ofmsgs: list[OfMsg] = field(default_factory=list)
    datagrams: list[Datagram] = field(default_factory=list)

    def extend(self, other: CoreOutput) -> CoreOutput:
        self.ofmsgs.extend(other.ofmsgs)
        self.datagrams.extend(other.datagrams)
        return self


def _rank(msg: OfMsg) -> float:
    if isinstance(msg, FlowMod):
        return 0 if msg.is_delete else 3
    if isinstance(msg, GroupMod):
        # Groups must exist before flows that use them.  Deletes go before adds: a
        # resync deletes every group (OFPG_ALL) and re-adds them in one batch, and
        # a delete after the adds would take the new groups and, in OVS, the flows
        # that point at them.  Deleting a group before the flows that use it is
        # harmless: OVS deletes those flows with it.
        return 1 if msg.command is GroupCommand.DELETE else 2
    if isinstance(msg, PacketOut):
        return 5 if msg.after_flows else 3.5
    if isinstance(msg, CtFlushZone):
        return 0.5  # after the old flows are gone, before the new ones commit anything
    return 4


_MARKER = 0xD  # our cookies' top nibble (`dove_ryu.openflow.cookies`, not imported here)
_GENERATION_SHIFT = 56


def _stamped(msg: OfMsg, generation: int) -> OfMsg:
    """A flow add of ours, its cookie carrying ``generation`` (deletes go by masks
    that leave the generation out, and reach every generation)."""
    if (
        isinstance(msg, FlowMod)
        and not msg.is_delete
        and msg.cookie >> (_GENERATION_SHIFT + 4) == _MARKER
    ):
        cookie = (msg.cookie & ~(0xF << _GENERATION_SHIFT)) | (generation << _GENERATION_SHIFT)
        return replace(msg, cookie=cookie)
    return msg


def order_messages(msgs: Iterable[OfMsg], generation: int = 0) -> list[OfMsg]:
    """The one send order: flow deletes, group deletes, group adds, flow adds,
    then a barrier before any packet-out so re-injected packets see the new flows.
    Our flows are stamped with the agent's cookie ``generation`` (a restarted agent
    takes a new one: `dove_ryu.agent.takeover`)."""
    if generation:
        msgs = [_stamped(m, generation) for m in msgs]
    ranked: list[OfMsg] = sorted((m for m in msgs if not isinstance(m, Barrier)), key=_rank)
    waiting = [i for i, m in enumerate(ranked) if isinstance(m, PacketOut) and m.after_flows]
    if waiting and any(not isinstance(m, PacketOut) for m in ranked[: waiting[0]]):
        ranked.insert(waiting[0], Barrier())
    return ranked
