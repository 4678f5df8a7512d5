"""The gateway's conntrack actions on the wire: what os-ken packs is what OVS reads."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.adapters.of_osken import flow_mod_bytes, to_osken
from dove_ryu.model import FloatingIp, Router, Subnet
from dove_ryu.openflow import gateway_flows as gw
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.ofmsg import Ct, FlowMod, GroupCommand, Nat
from dove_ryu.openflow.pipeline import EXT_IN, L3_ROUTE, SNAT, group_mod

pytestmark = pytest.mark.unit

EXT = gw.ExternalSide(7, "02:ee:00:00:00:01", IPv4Address("203.0.113.2"),
                      IPv4Network("203.0.113.0/24"))  # fmt: skip
ROUTER = Router(
    1,
    (Subnet(5001, IPv4Interface("10.0.0.254/24")), Subnet(5002, IPv4Interface("10.0.1.254/24"))),
    snat=IPv4Address("203.0.113.11"),
    floating_ips=(FloatingIp(IPv4Address("203.0.113.101"), IPv4Address("10.0.0.1")),),
)


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def wire(msg: FlowMod) -> bytes:
    built: Any = to_osken(FakeDatapath(), msg)
    built.set_xid(1)
    built.serialize()
    return bytes(built.buf)


def ovs_reads(tmp_path: Path, msg: FlowMod) -> str:
    """``ovs-ofctl ofp-parse``: the flow mod as OVS decodes its bytes."""
    if shutil.which("ovs-ofctl") is None:
        pytest.skip("ovs-ofctl is not installed")
    path = tmp_path / "flow_mod.bin"
    path.write_bytes(wire(msg))
    return subprocess.run(
        ["ovs-ofctl", "ofp-parse", str(path)], check=True, capture_output=True, text=True
    ).stdout


def test_nat_needs_an_address_for_a_kind_and_none_without() -> None:
    with pytest.raises(ValueError):
        Nat("src")
    with pytest.raises(ValueError):
        Nat("", "1.2.3.4")
    with pytest.raises(ValueError):
        Nat("both", "1.2.3.4")
    with pytest.raises(ValueError):
        Ct(1 << 16)


def test_source_nat_is_a_committed_ct_in_the_routers_zone(tmp_path: Path) -> None:
    snat = next(f for f in gw.router_flows(ROUTER, EXT) if f.table_id == SNAT.table_id)
    text = ovs_reads(tmp_path, snat)
    assert "actions=ct(commit,zone=1,nat(src=203.0.113.11)),goto_table:36" in text


def test_inbound_to_a_floating_ip_is_committed_with_its_destination_nat(tmp_path: Path) -> None:
    fip = next(
        f
        for f in gw.router_flows(ROUTER, EXT)
        if f.table_id == EXT_IN.table_id and f.match.get("ipv4_dst") == "203.0.113.101"
    )
    text = ovs_reads(tmp_path, fip)
    assert "ct(commit,table=26,zone=1,nat(dst=10.0.0.1))" in text


def test_replies_to_the_snat_address_are_un_natted_and_recirculated(tmp_path: Path) -> None:
    unnat = next(
        f
        for f in gw.router_flows(ROUTER, EXT)
        if f.table_id == EXT_IN.table_id and f.match.get("ipv4_dst") == "203.0.113.11"
    )
    assert "actions=ct(table=26,zone=1,nat)" in ovs_reads(tmp_path, unnat)


def test_ct_state_and_zone_matches_reach_ovs(tmp_path: Path) -> None:
    est = next(f for f in gw.router_flows(ROUTER, EXT) if "ct_state" in f.match)
    text = ovs_reads(tmp_path, est)
    assert "ct_state=+est+trk,ct_zone=1" in text


def test_flows_with_conntrack_are_left_to_osken() -> None:
    for fm in gw.router_flows(ROUTER, EXT):
        if any(isinstance(a, Ct) for a in fm.actions) or "ct_state" in fm.match:
            assert flow_mod_bytes(fm, 1) is None


def test_the_declaration_refuses_conntrack_where_it_does_not_belong() -> None:
    with pytest.raises(ValueError, match="may not use conntrack"):
        L3_ROUTE.flow(priority=1, match={}, cookie=Cookie(Purpose.ROUTE), actions=[Ct(1)])
    with pytest.raises(ValueError, match="may not recirculate"):
        SNAT.flow(priority=1, match={}, cookie=Cookie(Purpose.SNAT), actions=[Ct(1, table=40)])
    with pytest.raises(ValueError, match="no conntrack in a group"):
        group_mod(9, GroupCommand.ADD, [(Ct(1),)])


def test_ovs_reads_every_gateway_flow_without_complaint(tmp_path: Path) -> None:
    flows = [
        *gw.gateway_defaults(1, EXT),
        *gw.router_flows(ROUTER, EXT),
        *gw.arp_answer_flows(ROUTER, EXT),
        gw.next_hop_flow(EXT, "02:ee:00:00:00:fe"),
        gw.on_link_flow(EXT),
    ]
    for fm in flows:
        text = ovs_reads(tmp_path, fm)
        assert "OFPT_FLOW_MOD" in text and "error" not in text.lower(), text
        for name, value in fm.match.items():
            assert not (name == "nw_ttl" and isinstance(value, tuple)), "nw_ttl takes no mask"


def test_a_conntrack_zone_flush_is_the_message_ovs_reads_as_ct_flush_zone(tmp_path: Path) -> None:
    from dove_ryu.openflow.ofmsg import CtFlushZone

    text = ovs_reads(tmp_path, CtFlushZone(7))  # type: ignore[arg-type]
    assert "NXT_CT_FLUSH_ZONE" in text and "zone_id=7" in text, text
