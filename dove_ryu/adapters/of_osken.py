"""Turn the core's neutral OpenFlow values into os-ken OpenFlow 1.3 messages.

With `dove_ryu.adapters.shell`, the only module that imports os-ken.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.agent.takeover import FoundFlow, FoundGroup
from dove_ryu.openflow import ofmsg as of
from dove_ryu.openflow.tunnels import OPTION_CLASS, OPTION_LEN, OPTION_TYPE

_FLOW_COMMANDS = {
    of.FlowCommand.ADD: ofp.OFPFC_ADD,
    of.FlowCommand.MODIFY_STRICT: ofp.OFPFC_MODIFY_STRICT,
    of.FlowCommand.DELETE: ofp.OFPFC_DELETE,
    of.FlowCommand.DELETE_STRICT: ofp.OFPFC_DELETE_STRICT,
}
_GROUP_COMMANDS = {
    of.GroupCommand.ADD: ofp.OFPGC_ADD,
    of.GroupCommand.MODIFY: ofp.OFPGC_MODIFY,
    of.GroupCommand.DELETE: ofp.OFPGC_DELETE,
    # NOTE: OVS's OFPGC11_ADD_OR_MOD (0x8000, OVS >= 2.6, seen on 3.1): os-ken has no
    # name for it, and its OFPGroupMod packs the command as a plain 16-bit field.
    of.GroupCommand.ADD_OR_MODIFY: 0x8000,
}


def _action(action: of.Action) -> Any:
    if isinstance(action, of.Output):
        return parser.OFPActionOutput(action.port, action.max_len)
    if isinstance(action, of.SetField) and action.field in _ERICSSON_FIELDS:
        return _set_ericsson(action)
    if isinstance(action, of.SetField) and action.field == "tun_metadata0":
        return _set_tun_metadata0(action)
    if isinstance(action, of.SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, of.Move):
        return parser.NXActionRegMove(
            src_field=action.src, dst_field=action.dst, n_bits=action.n_bits
        )
    if isinstance(action, of.Group):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, of.CheckLarger):
        return _check_pkt_larger(action)
    if isinstance(action, of.DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, of.Ct):
        return _ct(action)
    if isinstance(action, of.Learn):
        return parser.NXActionUnknown(NXAST_LEARN2, learn_body(action))
    raise TypeError(f"unknown action {action!r}")


NXAST_CHECK_PKT_LARGER = 49
NX_VENDOR_ID = 0x00002320
NXT_CT_FLUSH_ZONE = 29


def _check_pkt_larger(action: of.CheckLarger) -> Any:
    """os-ken 4.2 has no class for it; the body is packed as OVS defines it
    (nx_action_check_pkt_larger): pkt_len, result bit offset, the destination's
    NXM header, padded to 24 bytes in all."""
    if not action.register.startswith("reg"):
        raise ValueError(f"check_pkt_larger into {action.register}: only reg0-reg15")
    nxm_reg = (0x0001 << 16) | (int(action.register[3:]) << 9) | 4
    body = struct.pack("!HHI6x", action.length, action.bit, nxm_reg)
    return parser.NXActionUnknown(NXAST_CHECK_PKT_LARGER, body)


# NOTE (os-ken 4.2): it knows neither nd_reserved nor nd_options_type, the fields OVS
# (2.11+) reads in OXM class 0x1000 (ERICOXM, fields 1 and 2; lib/meta-flow.h) and that an
# NA built in the datapath needs.  They are written with a Nicira reg_load2 (NXAST 33),
# whose body is the OXM itself, as ovs-ofctl's "set_field:...->nd_reserved" is read back.
_ERICOXM_CLASS = 0x1000
_ERICSSON_FIELDS = {"nd_reserved": (1, 4), "nd_options_type": (2, 1)}
NXAST_REG_LOAD2 = 33


def _set_ericsson(action: of.SetField) -> Any:
    field, size = _ERICSSON_FIELDS[action.field]
    assert isinstance(action.value, int)
    oxm = struct.pack("!HBB", _ERICOXM_CLASS, field << 1, size) + action.value.to_bytes(size, "big")
    pad = -(10 + len(oxm)) % 8  # the action (10-byte NX header + OXM) fills 8-byte units
    return parser.NXActionUnknown(NXAST_REG_LOAD2, oxm + bytes(pad))


# NOTE (os-ken 4.2): it has no tun_metadata fields (NXM1 class 0x0001, fields 40-103,
# OVS's lib/meta-flow.h) and no NXT_TLV_TABLE_MOD.  tun_metadata0 carries the DOVE
# Geneve option (docs/interop.md): set with a reg_load2 whose body is the OXM (as
# above), matched through the hand-packed flow mods below (`_OXM_FIELDS`).
_TUN_METADATA0 = (0x0001 << 16) | (40 << 9) | 4
NXT_TLV_TABLE_MOD = 24
_NXTTMC_ADD = 0


def _set_tun_metadata0(action: of.SetField) -> Any:
    assert isinstance(action.value, int)
    oxm = struct.pack("!II", _TUN_METADATA0, action.value)
    pad = -(10 + len(oxm)) % 8
    return parser.NXActionUnknown(NXAST_REG_LOAD2, oxm + bytes(pad))


def tlv_map_body() -> bytes:
    """struct nx_tlv_table_mod (command ADD, 6 pad bytes) with one nx_tlv_map: the DOVE
    option (class, type, length) at tun_metadata index 0 (include/openflow/nicira-ext.h)."""
    return struct.pack("!H6xHBBH2x", _NXTTMC_ADD, OPTION_CLASS, OPTION_TYPE, OPTION_LEN, 0)


def tlv_map_add(dp: Any) -> Any:
    """Map the DOVE option to tun_metadata0.  NOTE (OVS 3.1): adding a mapping that
    already exists (a reconnect, a restarted agent) is answered with an error,
    NXTTMFC_ALREADY_MAPPED; the mapping stands and nothing else depends on the answer
    (an OpenFlow error is at most logged and counted, never fatal)."""
    return parser.OFPExperimenter(dp, NX_VENDOR_ID, NXT_TLV_TABLE_MOD, tlv_map_body())


# NOTE (os-ken 4.2): nicira_ext names the NAT range flags but not the NAT kind; these
# are OVS's NX_NAT_F_SRC and NX_NAT_F_DST (include/openvswitch/ofp-actions.h).
_NX_NAT_F_SRC = 1 << 0
_NX_NAT_F_DST = 1 << 1
_NX_CT_F_COMMIT = 1 << 0
_NX_CT_RECIRC_NONE = 0xFF  # ct without table=: no recirculation


def _ct(action: of.Ct) -> Any:
    """ct(commit, zone=N, table=T, nat(...)): the zone is an immediate 16-bit value."""
    nat_actions = []
    if action.nat is not None:
        nat = action.nat
        if nat.kind:
            flags = _NX_NAT_F_SRC if nat.kind == "src" else _NX_NAT_F_DST
            nat_actions.append(
                parser.NXActionNAT(flags, range_ipv4_min=nat.address, range_ipv4_max=nat.address)
            )
        else:
            nat_actions.append(parser.NXActionNAT(0))
    return parser.NXActionCT(
        flags=_NX_CT_F_COMMIT if action.commit else 0,
        zone_src="",
        zone_ofs_nbits=action.zone,
        recirc_table=_NX_CT_RECIRC_NONE if action.table is None else action.table,
        alg=0,
        actions=nat_actions,
    )


# NOTE (os-ken 4.2): its NXActionLearn is NXAST_LEARN, without learn2's limit (OVS
# >= 2.12).  The body is packed as OVS lays out nx_action_learn2 (ofp-actions.c): the
# learn fields (timeouts, priority, cookie, flags, table, fin timeouts), then limit,
# result_dst_ofs and padding, then the flow_mod_spec elements: a 16-bit header
# (source kind << 13 | destination kind << 11 | n_bits), the source (a field's NXM/OXM
# header and bit offset, or the immediate value in 16-bit units), the destination
# (header and offset; nothing for an output), zero-padded to 8 bytes.
NXAST_LEARN2 = 45
_LEARN_SRC_IMMEDIATE = 1 << 13
_LEARN_DST_MATCH, _LEARN_DST_LOAD, _LEARN_DST_OUTPUT = 0, 1 << 11, 2 << 11
# in_port as NXM_OF_IN_PORT (16 bits), the form learn's output reads a port from.
_LEARN_IN_PORT = (0x0000 << 16) | (0 << 9) | 2


def _learn_field(name: str) -> tuple[int, int, str]:
    """(NXM/OXM header, width in bits, kind) of a field a learn names."""
    if name == "in_port":
        return _LEARN_IN_PORT, 16, "int"
    head = _oxm_header(name)
    if head is None:
        raise ValueError(f"learn: no NXM header known for {name}")
    header, length, kind = head
    return header, length * 8, kind


def _learn_spec(spec: of.LearnSpec, dst_kind: int) -> bytes:
    header, width, kind = _learn_field(spec.field)
    n_bits = spec.n_bits or width
    if spec.src is not None:
        src_header, src_width, _ = _learn_field(spec.src)
        n_bits = spec.n_bits or min(width, src_width)
        out = struct.pack("!HIH", dst_kind | n_bits, src_header, 0)
    else:
        raw = int.from_bytes(_oxm_value(kind, width // 8, spec.value), "big")
        units = (n_bits + 15) // 16
        out = struct.pack("!H", _LEARN_SRC_IMMEDIATE | dst_kind | n_bits)
        out += (raw & ((1 << n_bits) - 1)).to_bytes(units * 2, "big")
    if dst_kind != _LEARN_DST_OUTPUT:
        out += struct.pack("!IH", header, 0)
    return out


def learn_body(action: of.Learn) -> bytes:
    """The nx_action_learn2 after its subtype, padded so the action fills 8-byte units."""
    body = struct.pack(
        "!HHHQHBxHHIH2x",
        action.idle_timeout,
        0,  # hard_timeout
        action.priority,
        action.cookie,
        0,  # flags
        action.table_id,
        0,  # fin_idle_timeout
        0,  # fin_hard_timeout
        action.limit,
        0,  # result_dst_ofs
    )
    body += b"".join(_learn_spec(m, _LEARN_DST_MATCH) for m in action.matches)
    body += b"".join(_learn_spec(m, _LEARN_DST_LOAD) for m in action.loads)
    if action.output_from is not None:
        body += _learn_spec(of.LearnSpec("in_port", src=action.output_from), _LEARN_DST_OUTPUT)
    return body + bytes(-(10 + len(body)) % 8)


def _flow_mod(dp: Any, fm: of.FlowMod) -> Any:
    instructions = []
    if fm.actions:
        instructions.append(
            parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [_action(a) for a in fm.actions])
        )
    if fm.write_metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*fm.write_metadata))
    if fm.goto_table is not None:
        instructions.append(parser.OFPInstructionGotoTable(fm.goto_table))
    flags = ofp.OFPFF_SEND_FLOW_REM if fm.send_flow_removed else 0
    return parser.OFPFlowMod(
        dp,
        cookie=fm.cookie,
        cookie_mask=fm.cookie_mask,
        table_id=fm.table_id,
        command=_FLOW_COMMANDS[fm.command],
        idle_timeout=fm.idle_timeout,
        hard_timeout=fm.hard_timeout,
        priority=fm.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=flags,
        match=_match(fm.match),
        instructions=instructions,
    )


# Nicira fields with a prerequisite, which must follow the prerequisite on the wire.
_AFTER_PREREQS = frozenset({"nw_ttl"})


def _match(match: of.Match) -> Any:
    """An OFPMatch.  NOTE: os-ken (4.x) orders fields by number, which puts Nicira
    extensions (class 0x0001) before eth_type, and OVS (3.1) checks each field's
    prerequisites as it reads them: ``nw_ttl`` first fails with OFPBMC_BAD_PREREQ."""
    osken = parser.OFPMatch(**match)
    if not _AFTER_PREREQS & set(match):
        return osken
    fields = sorted(osken._fields2, key=lambda kv: kv[0] in _AFTER_PREREQS)
    return parser.OFPMatch(_ordered_fields=fields)


def to_osken(dp: Any, msg: of.OfMsg) -> Any:
    """One os-ken message for one neutral message."""
    if isinstance(msg, of.FlowMod):
        return _flow_mod(dp, msg)
    if isinstance(msg, of.GroupMod):
        buckets = [parser.OFPBucket(actions=[_action(a) for a in b]) for b in msg.buckets]
        return parser.OFPGroupMod(
            dp, _GROUP_COMMANDS[msg.command], ofp.OFPGT_ALL, msg.group_id, buckets
        )
    if isinstance(msg, of.PacketOut):
        return parser.OFPPacketOut(
            dp,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=msg.in_port,
            actions=[_action(a) for a in msg.actions],
            data=msg.data,
        )
    if isinstance(msg, of.Barrier):
        return parser.OFPBarrierRequest(dp)
    if isinstance(msg, of.CtFlushZone):
        # NOTE: os-ken 4.2 has no class for it: a Nicira experimenter message whose body
        # is 6 bytes of zeros and the zone (16 bits), as OVS defines nx_zone_id.
        body = struct.pack("!6xH", msg.zone)
        return parser.OFPExperimenter(dp, NX_VENDOR_ID, NXT_CT_FLUSH_ZONE, body)
    raise TypeError(f"unknown message {msg!r}")


def match_fields(match: Any) -> dict[str, Any]:
    """The fields of an os-ken OFPMatch as a plain dict."""
    return dict(match.items())


def _read_actions(actions: Any) -> tuple[of.Action, ...]:
    """The actions a take-over reads (`dove_ryu.agent.takeover`): set-fields, outputs
    and groups; the others are left out (nothing is adopted from them)."""
    read: list[of.Action] = []
    for action in actions:
        if isinstance(action, parser.OFPActionSetField):
            read.append(of.SetField(action.key, action.value))
        elif isinstance(action, parser.OFPActionOutput):
            read.append(of.Output(action.port, action.max_len))
        elif isinstance(action, parser.OFPActionGroup):
            read.append(of.Group(action.group_id))
    return tuple(read)


def found_flow(stats: Any) -> FoundFlow:
    """One entry of a flow stats reply, as the take-over reads it."""
    actions: list[of.Action] = []
    for inst in stats.instructions:
        if isinstance(inst, parser.OFPInstructionActions):
            actions += _read_actions(inst.actions)
    return FoundFlow(
        stats.table_id, stats.priority, stats.cookie, match_fields(stats.match), tuple(actions)
    )


def found_group(desc: Any) -> FoundGroup:
    """One entry of a group description reply, as the take-over reads it."""
    return FoundGroup(desc.group_id, tuple(_read_actions(b.actions) for b in desc.buckets))


# --- the hot path, by hand --------------------------------------------------------------
# Packet-outs answer packet-ins one for one; os-ken spends ~100 us building each.  The
# shapes the core sends (output, and set-field of the tunnel key and destination) are
# packed here directly; anything else goes through os-ken.  A unit test checks that both
# give the same bytes.

_OFP_HEADER = struct.Struct("!BBHI")
_PACKET_OUT = struct.Struct("!IIH6x")
_OUTPUT = struct.Struct("!HHIH6x")
_OXM_TUNNEL_ID = (0x8000 << 16) | (38 << 9) | 8  # OXM_OF_TUNNEL_ID
_OXM_TUN_IPV4_DST = (0x0001 << 16) | (32 << 9) | 4  # NXM_NX_TUN_IPV4_DST


def _fast_action(action: of.Action) -> bytes | None:
    if isinstance(action, of.Output):
        return _OUTPUT.pack(ofp.OFPAT_OUTPUT, _OUTPUT.size, action.port, action.max_len)
    if isinstance(action, of.SetField) and action.field == "tunnel_id":
        assert isinstance(action.value, int)
        return struct.pack("!HHIQ", ofp.OFPAT_SET_FIELD, 16, _OXM_TUNNEL_ID, action.value)
    if isinstance(action, of.SetField) and action.field == "tun_ipv4_dst":
        addr = socket.inet_aton(str(action.value))
        return struct.pack("!HHI4s4x", ofp.OFPAT_SET_FIELD, 16, _OXM_TUN_IPV4_DST, addr)
    if isinstance(action, of.SetField) and action.field == "tun_metadata0":
        assert isinstance(action.value, int)
        return struct.pack("!HHII4x", ofp.OFPAT_SET_FIELD, 16, _TUN_METADATA0, action.value)
    return None


def next_xid(dp: Any) -> int:
    """The datapath's next transaction id, as os-ken's own set_xid counts them."""
    dp.xid = (dp.xid + 1) & ofp.MAX_XID
    return int(dp.xid)


def packet_out_bytes(msg: of.PacketOut, xid: int) -> bytes | None:
    """The wire form of a packet-out, or None when it has an action not packed here."""
    actions = [_fast_action(a) for a in msg.actions]
    if any(a is None for a in actions):
        return None
    body = b"".join(a for a in actions if a is not None)
    length = _OFP_HEADER.size + _PACKET_OUT.size + len(body) + len(msg.data)
    return (
        _OFP_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_PACKET_OUT, length, xid)
        + _PACKET_OUT.pack(ofp.OFP_NO_BUFFER, msg.in_port, len(body))
        + body
        + msg.data
    )


# Flow mods answer LEARNs: a learned endpoint's forwarding flow and its ARP responder
# go in before the held packets are released, and os-ken takes ~100 us to build each.
# Matches, set-fields and register moves on the fields below, output actions and the
# apply-actions, write-metadata and goto-table instructions are packed here; a flow
# with anything else (a group, check_pkt_larger, another field) goes through os-ken.

_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_OXM_BASIC, _OXM_NXM1 = 0x8000, 0x0001
# name: (class, field, length in bytes, how the value is packed)
_OXM_FIELDS: dict[str, tuple[int, int, int, str]] = {
    "in_port": (_OXM_BASIC, 0, 4, "int"),
    "metadata": (_OXM_BASIC, 2, 8, "int"),
    "eth_dst": (_OXM_BASIC, 3, 6, "mac"),
    "eth_src": (_OXM_BASIC, 4, 6, "mac"),
    "eth_type": (_OXM_BASIC, 5, 2, "int"),
    "arp_op": (_OXM_BASIC, 21, 2, "int"),
    "arp_spa": (_OXM_BASIC, 22, 4, "ipv4"),
    "arp_tpa": (_OXM_BASIC, 23, 4, "ipv4"),
    "arp_sha": (_OXM_BASIC, 24, 6, "mac"),
    "arp_tha": (_OXM_BASIC, 25, 6, "mac"),
    "tunnel_id": (_OXM_BASIC, 38, 8, "int"),
    "tun_ipv4_src": (_OXM_NXM1, 31, 4, "ipv4"),
    "tun_ipv4_dst": (_OXM_NXM1, 32, 4, "ipv4"),
    "tun_metadata0": (_OXM_NXM1, 40, 4, "int"),  # the DOVE Geneve option
}
_NXAST_REG_MOVE = 6
_NX_VENDOR = 0x00002320


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _oxm_value(kind: str, length: int, value: object) -> bytes:
    if kind == "int":
        assert isinstance(value, int)
        return value.to_bytes(length, "big")
    if kind == "mac":
        return bytes.fromhex(str(value).replace(":", ""))
    return socket.inet_aton(str(value))


def _oxm_header(name: str, masked: bool = False) -> tuple[int, int, str] | None:
    """(header, value length, kind) of a field we pack, else None."""
    known = _OXM_FIELDS.get(name)
    if known is None:
        return None
    cls, fld, length, kind = known
    size = length * 2 if masked else length
    return (cls << 16) | (fld << 9) | (int(masked) << 8) | size, length, kind


def _oxm(name: str, value: object) -> bytes | None:
    masked = isinstance(value, tuple)
    head = _oxm_header(name, masked)
    if head is None:
        return None
    header, length, kind = head
    if isinstance(value, tuple):
        body = _oxm_value(kind, length, value[0]) + _oxm_value(kind, length, value[1])
    else:
        body = _oxm_value(kind, length, value)
    return struct.pack("!I", header) + body


def _match_bytes(match: of.Match) -> bytes | None:
    """An OXM match, fields in os-ken's order (by class, then field number)."""
    fields = []
    for name, value in match.items():
        packed = _oxm(name, value)
        if packed is None:
            return None
        fields.append(packed)
    fields.sort(key=lambda f: (int.from_bytes(f[:2], "big"), f[2] >> 1))
    body = b"".join(fields)
    length = 4 + len(body)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + body + bytes(_pad8(length) - length)


def _flow_action(action: of.Action) -> bytes | None:
    if isinstance(action, of.Output):
        return _OUTPUT.pack(ofp.OFPAT_OUTPUT, _OUTPUT.size, action.port, action.max_len)
    if isinstance(action, of.SetField):
        field = _oxm(action.field, action.value)
        if field is None:
            return None
        length = _pad8(4 + len(field))
        return (
            struct.pack("!HH", ofp.OFPAT_SET_FIELD, length) + field + bytes(length - 4 - len(field))
        )
    if isinstance(action, of.Move):
        src, dst = _oxm_header(action.src), _oxm_header(action.dst)
        if src is None or dst is None:
            return None
        return struct.pack(
            "!HHIHHHHII",
            ofp.OFPAT_EXPERIMENTER,
            24,
            _NX_VENDOR,
            _NXAST_REG_MOVE,
            action.n_bits,
            0,
            0,
            src[0],
            dst[0],
        )
    return None


def flow_mod_bytes(fm: of.FlowMod, xid: int) -> bytes | None:
    """The wire form of a flow mod, or None when it has something not packed here."""
    match = _match_bytes(fm.match)
    if match is None:
        return None
    instructions = b""
    if fm.actions:
        actions = [_flow_action(a) for a in fm.actions]
        if any(a is None for a in actions):
            return None
        body = b"".join(a for a in actions if a is not None)
        instructions += struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
    if fm.write_metadata is not None:
        instructions += struct.pack("!HH4xQQ", ofp.OFPIT_WRITE_METADATA, 24, *fm.write_metadata)
    if fm.goto_table is not None:
        instructions += struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, fm.goto_table)
    flags = ofp.OFPFF_SEND_FLOW_REM if fm.send_flow_removed else 0
    length = _OFP_HEADER.size + _FLOW_MOD.size + len(match) + len(instructions)
    return (
        _OFP_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, xid)
        + _FLOW_MOD.pack(
            fm.cookie,
            fm.cookie_mask,
            fm.table_id,
            _FLOW_COMMANDS[fm.command],
            fm.idle_timeout,
            fm.hard_timeout,
            fm.priority,
            ofp.OFP_NO_BUFFER,
            ofp.OFPP_ANY,
            ofp.OFPG_ANY,
            flags,
        )
        + match
        + instructions
    )
