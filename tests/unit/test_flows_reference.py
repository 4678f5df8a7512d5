"""The reference flow tables in flows/ are what the code makes today: the canonical
scenario run on fake switches (tests.fakesites), rendered as ovs-ofctl prints a bridge
and normalised by the same function as live dumps (mininet_topos.flows_reference),
compared exactly, failing with a unified diff. tests/mininet/test_flows_reference.py
checks the same files against live Open vSwitch."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

from dove_ryu.ctl.flowdump import parse_flows
from dove_ryu.openflow.ofmsg import FlowMod
from mininet_topos.flows_reference import DEFAULT_OUT, LIVE_ONLY
from tests.fakesites import reference_sites
from tests.fakeswitch import Flow, dump_flows, flow_text

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def sites():  # type: ignore[no-untyped-def]
    return reference_sites()


def test_the_reference_flow_tables_are_up_to_date(sites) -> None:  # type: ignore[no-untyped-def]
    from mininet_topos.flows_reference import NODES, reference_texts

    tables = reference_texts({name: sites.snapshot(name) for _, name in NODES})
    kept = sorted(p.name for p in DEFAULT_OUT.glob("*.txt") if p.name not in LIVE_ONLY)
    assert sorted(tables) == kept, "flows/ holds other tables than the scenario makes"
    diffs: list[str] = []
    for name, text in sorted(tables.items()):
        expected = (DEFAULT_OUT / name).read_text().splitlines(keepends=True)
        got = text.splitlines(keepends=True)
        diffs += difflib.unified_diff(expected, got, f"flows/{name}", f"now/{name}")
    if diffs:
        pytest.fail(
            "the flow tables changed; if that is intended, run `scripts/regen-flows.sh` and "
            "commit flows/ with the change:\n" + "".join(diffs),
            pytrace=False,
        )


def test_the_fake_switch_dump_parses_back_to_its_flows(sites) -> None:  # type: ignore[no-untyped-def]
    switch = sites.node("s1px1").switch
    parsed = parse_flows(dump_flows(switch))
    assert [(f.table, f.priority, f.cookie) for f in parsed] == [
        (f.table_id, f.priority, f.cookie) for f in switch.flows()
    ]


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="needs ovs-ofctl")
def test_the_fake_switch_prints_flows_as_open_vswitch_does(sites, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every flow of the scenario, encoded as os-ken would send it and printed by
    ovs-ofctl, reads exactly as the fake switch prints it: the reference text does not
    depend on which of the two made it."""
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from dove_ryu.adapters.of_osken import to_osken

    class Dp:
        ofproto, ofproto_parser, id = ofp, parser, 1

    flows: list[Flow] = [f for name in ("s1hv1", "s1px1") for f in sites.node(name).switch.flows()]
    wire = b""
    for flow in flows:
        fm = FlowMod(
            flow.table_id,
            flow.priority,
            flow.match,
            flow.cookie,
            flow.actions,
            flow.goto_table,
            flow.write_metadata,
        )
        msg = to_osken(Dp(), fm)
        msg.set_xid(1)
        msg.serialize()
        wire += bytes(msg.buf)
    path = tmp_path / "flows.of"
    path.write_bytes(wire)
    text = subprocess.run(
        ["ovs-ofctl", "ofp-parse", str(path)], capture_output=True, text=True, check=True
    ).stdout
    # "OFPT_FLOW_MOD (OF1.3) (xid=0x1): ADD table:40 priority=100,... cookie:0x.. actions=..."
    printed = [line.partition("): ")[2] for line in text.splitlines() if "FLOW_MOD" in line]
    ours = []
    for flow in flows:
        match, actions = flow_text(flow)
        ours.append((match, actions))
    theirs = []
    for line in printed:
        head, _, actions = line.partition(" actions=")
        fields = head.split(" ")
        match = next(f for f in fields if f.startswith("priority="))
        theirs.append((match, actions))
    assert theirs == ours
