"""Turn the core's neutral OpenFlow values into os-ken OpenFlow 1.3 messages.

With `dove_ryu.adapters.shell`, the only module that imports os-ken.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.openflow import ofmsg as of

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
}


def _action(action: of.Action) -> Any:
    if isinstance(action, of.Output):
        return parser.OFPActionOutput(action.port, action.max_len)
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
    raise TypeError(f"unknown action {action!r}")


NXAST_CHECK_PKT_LARGER = 49


def _check_pkt_larger(action: of.CheckLarger) -> Any:
    """os-ken 4.2 has no class for it; the body is packed as OVS defines it
    (nx_action_check_pkt_larger): pkt_len, result bit offset, the destination's
    NXM header, padded to 24 bytes in all."""
    if not action.register.startswith("reg"):
        raise ValueError(f"check_pkt_larger into {action.register}: only reg0-reg15")
    nxm_reg = (0x0001 << 16) | (int(action.register[3:]) << 9) | 4
    body = struct.pack("!HHI6x", action.length, action.bit, nxm_reg)
    return parser.NXActionUnknown(NXAST_CHECK_PKT_LARGER, body)


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
        match=parser.OFPMatch(**fm.match),
        instructions=instructions,
    )


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
    raise TypeError(f"unknown message {msg!r}")


def match_fields(match: Any) -> dict[str, Any]:
    """The fields of an os-ken OFPMatch as a plain dict."""
    return dict(match.items())


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
