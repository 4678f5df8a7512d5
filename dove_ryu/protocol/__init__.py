"""DOVE control-plane wire protocol: header framing, control messages, authentication."""

from dove_ryu.protocol.auth import AuthError, CounterSource, ReplayGuard, load_key
from dove_ryu.protocol.header import DoveHeader, MalformedMessage, Tlv, pack_frame, unpack_frame
from dove_ryu.protocol.messages import (
    Announce,
    Envelope,
    LearnReply,
    LearnRequest,
    Message,
    MsgType,
    TlvType,
    Unlearn,
    decode,
    encode,
    normalize_mac,
)

__all__ = [
    "Announce",
    "AuthError",
    "CounterSource",
    "DoveHeader",
    "Envelope",
    "LearnReply",
    "LearnRequest",
    "MalformedMessage",
    "Message",
    "MsgType",
    "ReplayGuard",
    "Tlv",
    "TlvType",
    "Unlearn",
    "decode",
    "encode",
    "load_key",
    "normalize_mac",
    "pack_frame",
    "unpack_frame",
]
