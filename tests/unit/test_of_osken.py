"""The hand-packed packet-out is byte for byte what os-ken builds."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.adapters.of_osken import flow_mod_bytes, packet_out_bytes, to_osken
from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.flows import tunnel_actions
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    OFPP_TABLE,
    FlowMod,
    Group,
    GroupCommand,
    Move,
    OfMsg,
    Output,
    PacketOut,
)
from dove_ryu.openflow.pipeline import group_mod

pytestmark = pytest.mark.unit


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def osken_bytes(msg: OfMsg, xid: int) -> bytes:
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


REMOTE = Endpoint(5001, "02:00:00:00:02:01", (IPv4Address("10.0.0.2"), IPv4Address("10.0.0.9")),
                  IPv4Address("10.99.0.2"), 7)  # fmt: skip
LOCAL = VmPort("vm1", 3, 5001, "02:00:00:00:01:01", (IPv4Address("10.0.0.1"),))


def every_flow_mod() -> list[FlowMod]:
    """The flow mods of both roles: pipeline, instance, port, member, learned, proxied."""
    msgs: list[OfMsg] = [
        *flows.pipeline_defaults(9),
        *flows.proxy_defaults(9),
        *flows.delete_all_ours(),
        *flows.instance_flows(5001),
        *flows.delete_instance(5001),
        *flows.local_port_flows(LOCAL),
        *flows.delete_local_port(LOCAL),
        flows.member_flow(5001, IPv4Address("10.99.0.2"), 9),
        flows.delete_member_flow(5001, IPv4Address("10.99.0.2"), 9),
        *flows.learned_flows(REMOTE, 9, 300),
        *flows.delete_learned(REMOTE),
        *flows.delete_learned(REMOTE, keep_l2=True),
        *flows.proxy_instance_flows(5001, 1400),
        flows.proxied_flow(REMOTE, True, 300, 1400),
        flows.delete_proxied(REMOTE, False),
    ]
    return [m for m in msgs if isinstance(m, FlowMod)]


@pytest.mark.parametrize("msg", every_flow_mod(), ids=lambda m: f"table{m.table_id}")
def test_flow_mods_packed_here_are_what_osken_sends(msg: FlowMod) -> None:
    packed = flow_mod_bytes(msg, 41)
    assert packed is None or packed == osken_bytes(msg, 41)


def test_a_learned_endpoints_flows_are_packed_here() -> None:
    """The flows the first packet waits for never take os-ken's slow path."""
    for msg in [*flows.learned_flows(REMOTE, 9, 300), *flows.delete_learned(REMOTE)]:
        assert flow_mod_bytes(msg, 1) is not None


def test_flow_mods_with_what_is_not_packed_here_go_through_osken() -> None:
    grouped = FlowMod(table_id=1, priority=1, match={"in_port": 1}, cookie=0, actions=(Group(3),))
    assert flow_mod_bytes(grouped, 1) is None
    unknown_field = FlowMod(table_id=1, priority=1, match={"ip_proto": 6}, cookie=0)
    assert flow_mod_bytes(unknown_field, 1) is None


def test_add_or_modify_groups_carry_ovs_command_number() -> None:
    """OVS's add-or-modify (OFPGC11_ADD_OR_MOD, 0x8000) goes out as the group mod's
    command (os-ken has no name for it)."""
    sent = osken_bytes(group_mod(5001, GroupCommand.ADD_OR_MODIFY, [(Output(3),)]), 7)
    assert sent[1] == ofp.OFPT_GROUP_MOD
    command, kind, group_id = struct.unpack_from("!HBxI", sent, ofp.OFP_HEADER_SIZE)
    assert (command, kind, group_id) == (0x8000, ofp.OFPGT_ALL, 5001)
