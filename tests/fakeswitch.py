"""A small OpenFlow 1.3 table simulator for unit tests (after Faucet's ``fakeoftable``).

It applies the neutral messages of `dove_ryu.openflow.ofmsg` and answers behaviour questions:
"where does this packet go?".  A packet is a dict of header fields (``eth_src``,
``eth_dst``, ``eth_type``, ``arp_*``; MACs lowercase, IPv4 addresses as strings).
While it walks the tables it also carries ``in_port``, ``metadata`` and the tunnel
fields (``tunnel_id``, ``tun_ipv4_src``, ``tun_ipv4_dst``) and the registers
(``reg0``.. ``reg15``, zero on entry as in OVS).

`dump_flows` and `dump_groups` print the tables as ``ovs-ofctl -O OpenFlow13 dump-flows
--no-names`` and ``dump-groups`` do, so the text that describes a live bridge (the
reference tables in ``flows/``) can be made from the simulator too.

What an OpenFlow switch would answer with an error message is recorded in
``errors`` (the switch carries on, as OVS does); tests assert it stays empty.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from dove_ryu.agent.takeover import FoundFlow, FoundGroup, SwitchState
from dove_ryu.openflow import cookies
from dove_ryu.openflow import ofmsg as of
from dove_ryu.openflow.packet import ETH_TYPE_ARP, ETH_TYPE_IPV4, build_arp, mac_bytes, parse

OFPTT_ALL = 0xFF
ZERO_MAC = "00:00:00:00:00:00"
Packet = dict[str, Any]
_IP_VIEW = "_ip_view"  # the IPv4 fields shown to the flows are a view of the payload
# Pipeline fields that are not packet headers.
REGISTERS = tuple(f"reg{i}" for i in range(16))
_PIPELINE_FIELDS = (
    "in_port",
    "metadata",
    "tunnel_id",
    "tun_ipv4_src",
    "tun_ipv4_dst",
    *REGISTERS,
    "ct_state",
    "ct_zone",
    "_nat_out",
)


def _entry(pkt: Mapping[str, Any], in_port: int) -> Packet:
    """A packet as it enters the pipeline: metadata and registers zero; an IPv4 packet
    given as an opaque payload shows its header fields to the flows (`_ip_view`)."""
    state = {**pkt, **dict.fromkeys(REGISTERS, 0), "in_port": in_port, "metadata": 0}
    payload = pkt.get("payload", b"")
    if pkt.get("eth_type") == ETH_TYPE_IPV4 and "ipv4_dst" not in pkt and len(payload) >= 20:
        if payload[0] >> 4 == 4:
            ihl = (payload[0] & 0x0F) * 4
            state.update(
                nw_ttl=payload[8],
                ip_proto=payload[9],
                ipv4_src=str(IPv4Address(payload[12:16])),
                ipv4_dst=str(IPv4Address(payload[16:20])),
            )
            if payload[9] in (6, 17) and len(payload) >= ihl + 4:
                src, dst = struct.unpack_from("!HH", payload, ihl)
                kind = "udp" if payload[9] == 17 else "tcp"
                state.update({f"{kind}_src": src, f"{kind}_dst": dst})
            state[_IP_VIEW] = True
    return state


_IP_VIEW_FIELDS = (
    "nw_ttl",
    "ip_proto",
    "ipv4_src",
    "ipv4_dst",
    "udp_src",
    "udp_dst",
    "tcp_src",
    "tcp_dst",
)


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _headers_out(state: Mapping[str, Any]) -> Packet:
    """The packet a port or the agent gets: pipeline fields gone, and the IPv4 header
    of a payload-form packet written back (TTL, addresses) with its checksum."""
    headers = {k: v for k, v in state.items() if k not in _PIPELINE_FIELDS}
    if not headers.pop(_IP_VIEW, False):
        return headers
    payload = bytearray(headers["payload"])
    ihl = (payload[0] & 0x0F) * 4
    payload[8] = headers["nw_ttl"]
    payload[12:16] = IPv4Address(headers["ipv4_src"]).packed
    payload[16:20] = IPv4Address(headers["ipv4_dst"]).packed
    if payload != headers["payload"]:
        payload[10:12] = b"\0\0"
        payload[10:12] = struct.pack("!H", _ip_checksum(bytes(payload[:ihl])))
        headers["payload"] = bytes(payload)
    for name in _IP_VIEW_FIELDS:
        headers.pop(name, None)
    return headers


# ----------------------------------------------------------------- packets <-> bytes


def pkt_to_bytes(pkt: Mapping[str, Any]) -> bytes:
    """The Ethernet frame for a packet dict (ARP, or any type with an opaque payload)."""
    if pkt.get("eth_type") == ETH_TYPE_ARP:
        return build_arp(
            pkt["arp_op"],
            pkt["eth_src"],
            pkt["eth_dst"],
            pkt["arp_sha"],
            IPv4Address(pkt["arp_spa"]),
            pkt.get("arp_tha", ZERO_MAC),
            IPv4Address(pkt["arp_tpa"]),
        )
    head = mac_bytes(pkt["eth_dst"]) + mac_bytes(pkt["eth_src"])
    if pkt.get("eth_type") == ETH_TYPE_IPV4 and "ipv4_dst" in pkt and not pkt.get(_IP_VIEW):
        payload = pkt.get("payload", b"")
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            pkt.get("nw_ttl", 64),
            pkt.get("ip_proto", 0),
            0,
            IPv4Address(pkt.get("ipv4_src", "0.0.0.0")).packed,
            IPv4Address(pkt["ipv4_dst"]).packed,
        )
        return head + struct.pack("!H", ETH_TYPE_IPV4) + ip + payload
    return head + struct.pack("!H", pkt["eth_type"]) + pkt.get("payload", b"")


def pkt_from_bytes(data: bytes) -> Packet:
    frame = parse(data)
    pkt: Packet = {"eth_dst": frame.dst, "eth_src": frame.src, "eth_type": frame.eth_type}
    if frame.arp is not None:
        pkt.update(
            arp_op=frame.arp.op,
            arp_sha=frame.arp.sha,
            arp_spa=str(frame.arp.spa),
            arp_tha=frame.arp.tha,
            arp_tpa=str(frame.arp.tpa),
        )
    elif len(data) > 14:
        pkt["payload"] = data[14:]
    return pkt


# --- conntrack (the gateway's NAT) -----------------------------------------------------

Tuple5 = tuple[str, str, int, int, int]


def _tuple(pkt: Mapping[str, Any]) -> Tuple5:
    kind = "udp" if pkt.get("ip_proto") == 17 else "tcp"
    return (
        pkt["ipv4_src"],
        pkt["ipv4_dst"],
        pkt.get("ip_proto", 0),
        pkt.get(f"{kind}_src", 0),
        pkt.get(f"{kind}_dst", 0),
    )


def _reverse(t: Tuple5) -> Tuple5:
    return (t[1], t[0], t[2], t[4], t[3])


@dataclass
class Connection:
    """A committed connection: as first seen (``orig``) and as translated by its NAT."""

    zone: int
    orig: Tuple5
    translated: Tuple5
    replied: bool = False


class Conntrack:
    """The datapath's connection tracker, enough to follow a NATed packet: a connection
    is found by either direction's 5-tuple in its zone; NAT rewrites addresses only."""

    def __init__(self) -> None:
        self.by_tuple: dict[tuple[int, Tuple5], tuple[Connection, bool]] = {}

    def __len__(self) -> int:
        return len({id(c) for c, _ in self.by_tuple.values()})

    def zones(self) -> set[int]:
        return {zone for zone, _ in self.by_tuple}

    def flush(self, zone: int) -> None:
        self.by_tuple = {k: v for k, v in self.by_tuple.items() if k[0] != zone}

    def run(self, ct: of.Ct, pkt: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """The packet through ct: its ct_state and the header rewrites its NAT makes."""
        t = _tuple(pkt)
        found = self.by_tuple.get((ct.zone, t))
        if found is None:
            if not ct.commit:
                return of.CT_TRK | of.CT_NEW, {}
            src, dst = t[0], t[1]
            if ct.nat is not None and ct.nat.kind == "src":
                src = ct.nat.address
            elif ct.nat is not None and ct.nat.kind == "dst":
                dst = ct.nat.address
            translated = (src, dst, t[2], t[3], t[4])
            conn = Connection(ct.zone, t, translated)
            self.by_tuple[(ct.zone, t)] = (conn, False)
            self.by_tuple[(ct.zone, _reverse(translated))] = (conn, True)
            return of.CT_TRK | of.CT_NEW, self._rewrite(ct, t, translated)
        conn, reply = found
        if reply:
            conn.replied = True
            state = of.CT_TRK | of.CT_EST | of.CT_RPL
            return state, self._rewrite(ct, t, _reverse(conn.orig))
        state = of.CT_TRK | (of.CT_EST if conn.replied else of.CT_NEW)
        return state, self._rewrite(ct, t, conn.translated)

    @staticmethod
    def _rewrite(ct: of.Ct, have: Tuple5, want: Tuple5) -> dict[str, Any]:
        if ct.nat is None or have == want:
            return {}
        return {"ipv4_src": want[0], "ipv4_dst": want[1]}


# --------------------------------------------------------------------------- state


@dataclass
class Flow:
    table_id: int
    priority: int
    match: dict[str, Any]
    cookie: int
    actions: tuple[of.Action, ...]
    goto_table: int | None
    write_metadata: tuple[int, int] | None
    idle_timeout: int
    send_flow_removed: bool
    packets: int = 0


@dataclass(frozen=True)
class Delivery:
    """A packet the switch emitted: on ``port``, or to the controller."""

    pkt: Packet
    in_port: int
    port: int | None = None
    tunnel_id: int | None = None
    tun_dst: str | None = None
    controller: bool = False
    cookie: int | None = None
    metadata: int | None = None  # pipeline state sent with a packet-in
    tun_src: str | None = None
    tun_metadata0: int | None = None  # the DOVE Geneve option (docs/interop.md)

    @property
    def data(self) -> bytes:
        return pkt_to_bytes(self.pkt)


_MAC_TEXT = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _num(value: int | str) -> int:
    """Match values as integers: MACs and IPv4 strings included."""
    if isinstance(value, int):
        return value
    if _MAC_TEXT.match(value):
        return int(value.replace(":", ""), 16)
    if ":" in value:
        return int(IPv6Address(value))
    return int(IPv4Address(value))


def _field_matches(want: Any, have: Any) -> bool:
    if have is None:
        return False  # prerequisite missing: the field is absent from this packet
    if isinstance(want, tuple):
        value, mask = _num(want[0]), _num(want[1])
        return _num(have) & mask == value & mask
    return _num(have) == _num(want)


def _covers(wanted: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """Non-strict delete: the flow's match is at least as specific as ``wanted``."""
    for name, want in wanted.items():
        if name not in match:
            return False
        have = match[name]
        if isinstance(want, tuple):
            value, mask = _num(want[0]), _num(want[1])
            have_value, have_mask = (
                (_num(have[0]), _num(have[1])) if isinstance(have, tuple) else (_num(have), -1)
            )
            if have_mask & mask != mask or have_value & mask != value & mask:
                return False
        elif isinstance(have, tuple) or _num(have) != _num(want):
            return False
    return True


class FakeSwitch:
    def __init__(self, tunnel_port: int | None = None) -> None:
        self.tunnel_port = tunnel_port
        self.tables: dict[int, list[Flow]] = {}
        self.groups: dict[int, tuple[tuple[of.Action, ...], ...]] = {}
        self.errors: list[str] = []
        self.in_port_drops = 0
        self.conntrack = Conntrack()
        self.ttl_drops = 0  # packets whose TTL a DecTtl would have taken to zero
        self.deleted: list[Flow] = []  # flows a delete removed (not those an add replaced)
        self.learn_refused = 0  # flows a learn action did not add: its limit was reached

    # ----------------------------------------------------------------- messages

    def apply(self, msgs: Iterable[of.OfMsg]) -> list[Delivery]:
        """Apply messages in order; returns what the packet-outs among them emitted."""
        out: list[Delivery] = []
        for msg in msgs:
            if isinstance(msg, of.FlowMod):
                self._flow_mod(msg)
            elif isinstance(msg, of.GroupMod):
                self._group_mod(msg)
            elif isinstance(msg, of.PacketOut):
                state = _entry(pkt_from_bytes(msg.data), msg.in_port)
                self._actions(msg.actions, state, out, cookie=None, packet_out=True)
            elif isinstance(msg, of.CtFlushZone):
                self.conntrack.flush(msg.zone)
            elif not isinstance(msg, of.Barrier):
                raise TypeError(f"fake switch cannot apply {msg!r}")
        return out

    def _flow_mod(self, fm: of.FlowMod) -> None:
        if fm.command is of.FlowCommand.ADD:
            self._add(fm)
        elif fm.command is of.FlowCommand.MODIFY_STRICT:
            for flow in self.tables.get(fm.table_id, []):
                if flow.priority == fm.priority and flow.match == dict(fm.match):
                    flow.actions, flow.goto_table = fm.actions, fm.goto_table
                    flow.write_metadata = fm.write_metadata
        elif fm.is_delete:
            strict = fm.command is of.FlowCommand.DELETE_STRICT
            ids = list(self.tables) if fm.table_id == OFPTT_ALL else [fm.table_id]
            for table_id in ids:
                table = self.tables.get(table_id, [])
                self.deleted += [f for f in table if self._doomed(f, fm, strict)]
                self.tables[table_id] = [f for f in table if not self._doomed(f, fm, strict)]
        else:
            raise TypeError(f"unknown flow command {fm.command!r}")

    @staticmethod
    def _doomed(flow: Flow, fm: of.FlowMod, strict: bool) -> bool:
        if flow.cookie & fm.cookie_mask != fm.cookie & fm.cookie_mask:
            return False
        if strict:
            return flow.priority == fm.priority and flow.match == dict(fm.match)
        return _covers(fm.match, flow.match)

    def _add(self, fm: of.FlowMod) -> None:
        if fm.table_id == OFPTT_ALL:
            self.errors.append(f"add to table 0xff: {fm}")
            return
        if fm.goto_table is not None and fm.goto_table <= fm.table_id:
            self.errors.append(f"goto_table must go forward: {fm}")
            return
        missing = [a.group_id for a in fm.actions if isinstance(a, of.Group)]
        missing = [g for g in missing if g not in self.groups]
        if missing:
            self.errors.append(f"OFPBAC_BAD_OUT_GROUP {missing}: {fm}")
            return
        table = self.tables.setdefault(fm.table_id, [])
        match = dict(fm.match)
        # An identical (priority, match) replaces the old flow, counters reset.
        table[:] = [f for f in table if not (f.priority == fm.priority and f.match == match)]
        flow = Flow(
            fm.table_id,
            fm.priority,
            match,
            fm.cookie,
            fm.actions,
            fm.goto_table,
            fm.write_metadata,
            fm.idle_timeout,
            fm.send_flow_removed,
        )
        # Highest priority first; among equals the older flow matches first.
        at = next((i for i, f in enumerate(table) if f.priority < fm.priority), len(table))
        table.insert(at, flow)

    def _group_mod(self, gm: of.GroupMod) -> None:
        if gm.command is of.GroupCommand.ADD:
            if gm.group_id == of.OFPG_ALL or gm.group_id in self.groups:
                self.errors.append(f"OFPGMFC_GROUP_EXISTS {gm.group_id:#x}")
                return
            self.groups[gm.group_id] = gm.buckets
        elif gm.command is of.GroupCommand.MODIFY:
            if gm.group_id not in self.groups:
                self.errors.append(f"OFPGMFC_UNKNOWN_GROUP {gm.group_id:#x}")
                return
            self.groups[gm.group_id] = gm.buckets
        elif gm.command is of.GroupCommand.ADD_OR_MODIFY:  # OVS's extension
            if gm.group_id == of.OFPG_ALL:
                self.errors.append(f"OFPGMFC_INVALID_GROUP {gm.group_id:#x}")
                return
            self.groups[gm.group_id] = gm.buckets
        elif gm.command is of.GroupCommand.DELETE:
            doomed = set(self.groups) if gm.group_id == of.OFPG_ALL else {gm.group_id}
            for group_id in doomed:
                self.groups.pop(group_id, None)
            # OpenFlow 1.3 (and OVS): deleting a group deletes the flows that use it.
            for table_id, table in self.tables.items():
                self.tables[table_id] = [
                    f
                    for f in table
                    if not any(isinstance(a, of.Group) and a.group_id in doomed for a in f.actions)
                ]
        else:
            raise TypeError(f"unknown group command {gm.command!r}")

    def found(self) -> SwitchState:
        """What the shell reads from a switch when the agent connects: our flows (by
        the cookie marker) and the groups (`dove_ryu.agent.takeover`)."""
        ours = cookies.MARKER << cookies.MARKER_SHIFT
        return SwitchState(
            flows=tuple(
                FoundFlow(f.table_id, f.priority, f.cookie, dict(f.match), f.actions)
                for table in self.tables.values()
                for f in table
                if f.cookie & cookies.MASK_OURS == ours
            ),
            groups=tuple(FoundGroup(g, buckets) for g, buckets in sorted(self.groups.items())),
        )

    # ------------------------------------------------------------------ packets

    def process(
        self, in_port: int, pkt: Mapping[str, Any], tun: Mapping[str, Any] | None = None
    ) -> list[Delivery]:
        """Send a packet into the pipeline at table 0; returns everything it caused."""
        state = _entry({**pkt, **(tun or {})}, in_port)
        out: list[Delivery] = []
        self._run(0, state, out)
        return out

    def _lookup(self, table_id: int, state: Packet) -> Flow | None:
        for flow in self.tables.get(table_id, []):
            if all(_field_matches(w, state.get(k)) for k, w in flow.match.items()):
                return flow
        return None  # table miss: dropped (OpenFlow 1.3 default)

    def _run(self, table_id: int | None, state: Packet, out: list[Delivery]) -> None:
        while table_id is not None:
            flow = self._lookup(table_id, state)
            if flow is None:
                return
            flow.packets += 1
            if not self._actions(flow.actions, state, out, cookie=flow.cookie):
                return
            if flow.write_metadata is not None:
                value, mask = flow.write_metadata
                state["metadata"] = (state["metadata"] & ~mask) | (value & mask)
            table_id = flow.goto_table

    def _actions(
        self,
        actions: Iterable[of.Action],
        state: Packet,
        out: list[Delivery],
        cookie: int | None,
        packet_out: bool = False,
    ) -> bool:
        """Apply ``actions``; False when they dropped the packet (a TTL ran out)."""
        for action in actions:
            if isinstance(action, of.Output):
                self._output(action.port, state, out, cookie, packet_out)
            elif isinstance(action, of.SetField):
                state[action.field] = action.value
            elif isinstance(action, of.Move):
                if state.get(action.src) is None:
                    self.errors.append(f"move from absent field {action.src}")
                    return True
                state[action.dst] = state[action.src]
            elif isinstance(action, of.CheckLarger):
                # NOTE (OVS 3.1, xlate_check_pkt_larger): the bit is written either way,
                # 1 if the frame (Ethernet header included) is longer than the limit.
                bit = 1 << action.bit
                larger = len(pkt_to_bytes(state)) > action.length
                reg = state.get(action.register, 0) & ~bit
                state[action.register] = reg | (bit if larger else 0)
            elif isinstance(action, of.Group):
                buckets = self.groups.get(action.group_id)
                if buckets is None:
                    self.errors.append(f"output to missing group {action.group_id}")
                    return True
                for bucket in buckets:
                    self._actions(bucket, dict(state), out, cookie)
            elif isinstance(action, of.Ct):
                self._ct(action, state, out)
            elif isinstance(action, of.Learn):
                self._learn(action, state)
            elif isinstance(action, of.DecTtl):
                ttl = state.get("nw_ttl")
                if ttl is None:
                    continue  # not IPv4: OVS does nothing either
                if ttl <= 1:
                    # NOTE: OVS (3.1) drops it, or sends it to a controller that asked
                    # for invalid-TTL packet-ins (the agent does not).
                    self.ttl_drops += 1
                    return False
                state["nw_ttl"] = ttl - 1
            else:
                raise TypeError(f"fake switch cannot execute {action!r}")
        return True

    def _learn(self, action: of.Learn, state: Packet) -> None:
        """NOTE (OVS's learn, limit): an existing flow of the same match and priority is
        refreshed; a new one is not added once the table holds ``limit`` flows with
        the action's cookie."""

        def value(spec: of.LearnSpec) -> Any:
            return spec.value if spec.src is None else state.get(spec.src)

        match: dict[str, Any] = {}
        for spec in action.matches:
            v = value(spec)
            match[spec.field] = (v, (1 << spec.n_bits) - 1) if spec.n_bits else v
        actions: list[of.Action] = [of.SetField(s.field, value(s)) for s in action.loads]
        if action.output_from is not None:
            actions.append(of.Output(state[action.output_from]))
        table = self.tables.get(action.table_id, [])
        known = any(f.priority == action.priority and f.match == match for f in table)
        learned = sum(1 for f in table if f.cookie == action.cookie)
        if not known and action.limit and learned >= action.limit:
            self.learn_refused += 1
            return
        self._add(
            of.FlowMod(
                action.table_id,
                action.priority,
                match,
                action.cookie,
                tuple(actions),
                idle_timeout=action.idle_timeout,
            )
        )

    def _ct(self, action: of.Ct, state: Packet, out: list[Delivery]) -> None:
        """NOTE (OVS's ct): with a table the packet is recirculated there, NATed and with
        its ct_state and ct_zone; without one its NAT changes only what leaves the switch
        (later flows still match the headers as they were)."""
        if "ipv4_dst" not in state:
            self.errors.append("ct on a packet that is not IPv4")
            return
        ct_state, rewrite = self.conntrack.run(action, state)
        if action.table is None:
            state["_nat_out"] = {**state.get("_nat_out", {}), **rewrite}
            return
        again = {**state, **rewrite, "ct_state": ct_state, "ct_zone": action.zone}
        again.pop("_nat_out", None)
        self._run(action.table, again, out)

    def _output(
        self, port: int, state: Packet, out: list[Delivery], cookie: int | None, packet_out: bool
    ) -> None:
        headers = _headers_out({**state, **state.get("_nat_out", {})})
        in_port = state["in_port"]
        if port == of.OFPP_CONTROLLER:
            out.append(
                Delivery(
                    headers,
                    in_port,
                    controller=True,
                    cookie=cookie,
                    metadata=state.get("metadata"),
                    tun_src=state.get("tun_ipv4_src"),
                )
            )
        elif port == of.OFPP_TABLE:
            if not packet_out:
                self.errors.append("output to of.OFPP_TABLE outside a packet-out")
                return
            self._run(0, _entry(headers, in_port), out)
        elif port == in_port:
            self.in_port_drops += 1  # OpenFlow never sends a packet back out its in_port
        else:
            port = in_port if port == of.OFPP_IN_PORT else port
            if port == self.tunnel_port:
                out.append(
                    Delivery(
                        headers,
                        in_port,
                        port,
                        tunnel_id=state.get("tunnel_id"),
                        tun_dst=state.get("tun_ipv4_dst"),
                        tun_metadata0=state.get("tun_metadata0"),
                    )
                )
            else:
                out.append(Delivery(headers, in_port, port))

    # ---------------------------------------------------------------- questions

    def flows(self, table: int | None = None) -> list[Flow]:
        ids = sorted(self.tables) if table is None else [table]
        return [f for t in ids for f in self.tables.get(t, [])]

    def flow_count(self) -> int:
        return len(self.flows())

    def hits(self, where: Callable[[Flow], bool]) -> int:
        """Packets counted by the flows chosen by ``where``."""
        return sum(f.packets for f in self.flows() if where(f))

    def expire(self, where: Callable[[Flow], bool]) -> list[Flow]:
        """Remove the chosen flows as an idle timeout would; returns those that asked
        for a flow-removed message."""
        removed = [f for f in self.flows() if where(f)]
        for flow in removed:
            self.tables[flow.table_id].remove(flow)
        return [f for f in removed if f.send_flow_removed]


# ------------------------------------------------- the tables as ovs-ofctl prints them

# Match fields in the order OVS's match_format prints them (lib/match.c), with the
# names it prints; the protocol shorthand (``arp``) comes first.
_MATCH_ORDER = (
    *((r, r) for r in REGISTERS),
    ("tunnel_id", "tun_id"),
    ("tun_ipv4_src", "tun_src"),
    ("tun_ipv4_dst", "tun_dst"),
    ("metadata", "metadata"),
    ("in_port", "in_port"),
    ("eth_src", "dl_src"),
    ("eth_dst", "dl_dst"),
    ("arp_spa", "arp_spa"),
    ("arp_tpa", "arp_tpa"),
    ("arp_op", "arp_op"),
    ("arp_sha", "arp_sha"),
    ("arp_tha", "arp_tha"),
    ("ipv4_src", "nw_src"),
    ("ipv4_dst", "nw_dst"),
    ("ipv6_src", "ipv6_src"),
    ("ipv6_dst", "ipv6_dst"),
    ("ip_proto", "nw_proto"),
    ("nw_ttl", "nw_ttl"),
    ("udp_src", "tp_src"),
    ("udp_dst", "tp_dst"),
    ("icmpv6_type", "icmp_type"),
    ("ipv6_nd_target", "nd_target"),
    ("ipv6_nd_sll", "nd_sll"),
    ("ipv6_nd_tll", "nd_tll"),
)
_SHORTHAND = {ETH_TYPE_ARP: "arp", 0x0800: "ip", 0x86DD: "ipv6"}
_IP_SHORTHAND = {1: "icmp", 6: "tcp", 17: "udp"}
_IP6_SHORTHAND = {58: "icmp6", 6: "tcp6", 17: "udp6"}
# Field names in set_field and move, as OVS prints them.
_SET_NAMES = {"tunnel_id": "tun_id", "tun_ipv4_dst": "tun_dst", "tun_ipv4_src": "tun_src"}
_NXM_NAMES = {
    "eth_src": "NXM_OF_ETH_SRC",
    "eth_dst": "NXM_OF_ETH_DST",
    "arp_sha": "NXM_NX_ARP_SHA",
    "arp_tha": "NXM_NX_ARP_THA",
    "arp_spa": "NXM_OF_ARP_SPA",
    "arp_tpa": "NXM_OF_ARP_TPA",
    "ipv6_src": "NXM_NX_IPV6_SRC",
    "ipv6_dst": "NXM_NX_IPV6_DST",
    "ipv6_nd_tll": "NXM_NX_ND_TLL",
    "tunnel_id": "NXM_NX_TUN_ID",
    "tun_ipv4_src": "NXM_NX_TUN_IPV4_SRC",
    "tun_ipv4_dst": "NXM_NX_TUN_IPV4_DST",
    "in_port": "NXM_OF_IN_PORT",
}
_HEX_FIELDS = {"tunnel_id", "metadata", *REGISTERS}
_RESERVED_PORTS = {of.OFPP_IN_PORT: "IN_PORT", of.OFPP_TABLE: "TABLE"}


def _hex(value: int) -> str:
    """C's %#x: 0 has no prefix."""
    return f"{value:#x}" if value else "0"


def _value(name: str, value: int | str) -> str:
    if name in _HEX_FIELDS and isinstance(value, int):
        return _hex(value)
    return str(value)


def _match_text(match: Mapping[str, Any]) -> list[str]:
    parts = []
    eth_type = match.get("eth_type")
    shorthand = {0x0800: _IP_SHORTHAND, 0x86DD: _IP6_SHORTHAND}.get(eth_type, {})
    proto = shorthand.get(match.get("ip_proto", -1))
    if proto is not None:
        parts.append(proto)
    elif eth_type is not None:
        parts.append(_SHORTHAND.get(eth_type, f"dl_type={eth_type:#06x}"))
    unknown = set(match) - {name for name, _ in _MATCH_ORDER} - {"eth_type"}
    if unknown:
        raise ValueError(f"no ovs-ofctl spelling for match fields {sorted(unknown)}")
    for name, printed in _MATCH_ORDER:
        if name == "ip_proto" and proto is not None:
            continue
        if name not in match:
            continue
        want = match[name]
        if isinstance(want, tuple):
            parts.append(f"{printed}={_value(name, want[0])}/{_value(name, want[1])}")
        else:
            parts.append(f"{printed}={_value(name, want)}")
    return parts


def _action_text(action: of.Action) -> str:
    if isinstance(action, of.Output):
        if action.port == of.OFPP_CONTROLLER:
            return f"CONTROLLER:{action.max_len}"
        return _RESERVED_PORTS.get(action.port, f"output:{action.port}")
    if isinstance(action, of.SetField):
        name = _SET_NAMES.get(action.field, action.field)
        return f"set_field:{_value(action.field, action.value)}->{name}"
    if isinstance(action, of.Move):
        return f"move:{_NXM_NAMES[action.src]}[]->{_NXM_NAMES[action.dst]}[]"
    if isinstance(action, of.Group):
        return f"group:{action.group_id}"
    if isinstance(action, of.DecTtl):
        return "dec_ttl"
    if isinstance(action, of.CheckLarger):
        return f"check_pkt_larger({action.length})->NXM_NX_{action.register.upper()}[{action.bit}]"
    if isinstance(action, of.Learn):
        return _learn_text(action)
    raise TypeError(f"no ovs-ofctl spelling for {action!r}")


def _learn_text(learn: of.Learn) -> str:
    """As OVS 3.1 prints it (tests/unit/test_vteps.py has a dump of the real one)."""

    def value(spec: of.LearnSpec) -> str:
        raw = spec.value
        return _hex(int(IPv4Address(raw))) if isinstance(raw, str) else _hex(int(raw or 0))

    parts = [
        f"table={learn.table_id}",
        f"idle_timeout={learn.idle_timeout}",
        f"priority={learn.priority}",
        f"cookie={_hex(learn.cookie)}",
        f"limit={learn.limit}",
    ]
    for m in learn.matches:
        dst = f"{_NXM_NAMES[m.field]}[]" if m.src else m.field
        parts.append(f"{dst}={_NXM_NAMES[m.src]}[]" if m.src else f"{dst}={value(m)}")
    for m in learn.loads:
        src = f"{_NXM_NAMES[m.src]}[]" if m.src else value(m)
        parts.append(f"load:{src}->{_NXM_NAMES[m.field]}[]")
    if learn.output_from:
        parts.append(f"output:{_NXM_NAMES[learn.output_from]}[]")
    return f"learn({','.join(parts)})"


def flow_text(flow: Flow) -> tuple[str, str]:
    """A flow's match (priority first) and actions as ovs-ofctl prints them."""
    match = ",".join([f"priority={flow.priority}", *_match_text(flow.match)])
    actions = [_action_text(a) for a in flow.actions]
    if flow.write_metadata is not None:
        value, mask = flow.write_metadata
        actions.append(f"write_metadata:{_hex(value)}/{_hex(mask)}")
    if flow.goto_table is not None:
        actions.append(f"goto_table:{flow.goto_table}")
    return match, ",".join(actions) or "drop"


def dump_flows(switch: FakeSwitch) -> str:
    """``ovs-ofctl -O OpenFlow13 dump-flows --no-names``: the switch's flows, with their
    packet counts (the simulator counts no bytes and no time)."""
    lines = []
    for flow in switch.flows():
        info = [f"cookie={flow.cookie:#x}", f"table={flow.table_id}"]
        info.append(f"n_packets={flow.packets}")
        if flow.idle_timeout:
            info.append(f"idle_timeout={flow.idle_timeout}")
        flags = "send_flow_rem " if flow.send_flow_removed else ""
        match, actions = flow_text(flow)
        lines.append(f" {', '.join(info)}, {flags}{match} actions={actions}")
    return "\n".join(lines) + "\n"


def dump_groups(switch: FakeSwitch) -> str:
    """``ovs-ofctl -O OpenFlow13 dump-groups --no-names``: every group is of type all."""
    lines = []
    for group_id, buckets in sorted(switch.groups.items()):
        text = "".join(f",bucket=actions={','.join(_action_text(a) for a in b)}" for b in buckets)
        lines.append(f" group_id={group_id},type=all{text}")
    return "\n".join(lines) + "\n"
