"""The hand-packed packet-out is byte for byte what os-ken builds."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.adapters.of_osken import packet_out_bytes, to_osken
from dove_ryu.openflow.flows import tunnel_actions
from dove_ryu.openflow.ofmsg import OFPP_CONTROLLER, OFPP_TABLE, Move, Output, PacketOut

pytestmark = pytest.mark.unit


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def osken_bytes(msg: PacketOut, xid: int) -> bytes:
    built: Any = to_osken(FakeDatapath(), msg)
    built.set_xid(xid)
    built.serialize()
    return bytes(built.buf)


@pytest.mark.parametrize(
    "msg",
    [
        PacketOut(3, b"\x02" * 60),
        PacketOut(OFPP_CONTROLLER, b"\x01" * 42, (Output(7),), after_flows=False),
        PacketOut(
            2,
            b"\xaa" * 98,
            tunnel_actions(1, 5001, IPv4Address("10.99.0.2")),
        ),
        PacketOut(2, b"", (Output(OFPP_TABLE),)),
    ],
)
def test_same_bytes_as_osken(msg: PacketOut) -> None:
    assert packet_out_bytes(msg, 77) == osken_bytes(msg, 77)


def test_actions_it_does_not_pack_go_through_osken() -> None:
    assert packet_out_bytes(PacketOut(1, b"x", (Move("eth_src", "eth_dst", 48),)), 1) is None
