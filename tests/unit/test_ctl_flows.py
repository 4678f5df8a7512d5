"""dovectl flows and trace on canned OVS output (tests/unit/data/ctl_flows, captured from
the two-site emulation): dumps parsed by OVS's own parser, cookies tied back to the
agents' state, traces explained and followed from host to proxy to proxy to host."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.ctl import common as ctl_common
from dove_ryu.ctl import flows as ctl_flows
from dove_ryu.ctl import trace as ctl_trace
from dove_ryu.ctl.common import FlowsError, Node
from dove_ryu.ctl.flowdump import (
    DumpError,
    parse_flow,
    parse_flows,
    parse_groups,
    parse_ports,
    tunnel_ofport,
)
from dove_ryu.ctl.flowstate import AgentView, FlowFilter, origin_of
from dove_ryu.ctl.flowtrace import HopInput, Packet, explain, parse_trace
from dove_ryu.ctl.trace import Peer, Peers, build_request, trace_path
from dove_ryu.openflow.cookies import Cookie, Purpose

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "ctl_flows"
NODES = ("s1hv1", "s1hv2", "s1px1", "s2px1", "s2hv1", "s2hv2")
PING = "dl_src=02:00:00:00:01:01,dl_dst=02:00:00:00:02:01,icmp,nw_src=10.0.0.11,nw_dst=10.0.0.21"
FROM_VM = "in_port=t1s1vm1-p,dl_src=02:00:00:00:01:01"
ARP = "dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_spa=10.0.0.11,arp_sha=02:00:00:00:01:01"
# case -> (node, the flow traced)
TRACES = {
    "s1hv1-to-remote-site": ("s1hv1", f"in_port=t1s1vm1-p,{PING}"),
    "s1px1-to-wan": ("s1px1", f"in_port=vxlan0,tun_id=5001,tun_src=10.99.0.1,"
                              f"tun_dst=10.99.0.201,{PING}"),
    "s2px1-from-wan": ("s2px1", f"in_port=vxlan0,tun_id=5001,tun_src=172.31.0.11,"
                                f"tun_dst=172.31.0.21,{PING}"),
    "s2hv1-delivered": ("s2hv1", f"in_port=vxlan0,tun_id=5001,tun_src=10.99.0.201,"
                                 f"tun_dst=10.99.0.1,{PING}"),
    "s1hv1-arp-unknown": ("s1hv1", f"in_port=t1s1vm1-p,{ARP},arp_tpa=10.0.0.99"),
    "s1hv1-arp-answered": ("s1hv1", f"in_port=t1s1vm1-p,{ARP},arp_tpa=10.0.0.21"),
    "s1hv1-spoof": ("s1hv1", "in_port=t1s1vm1-p,dl_src=02:00:00:00:01:99,"
                             "dl_dst=02:00:00:00:02:01,icmp,nw_src=10.0.0.11,nw_dst=10.0.0.21"),
    "s1hv1-nonmember": ("s1hv1", "in_port=vxlan0,tun_id=5001,tun_src=10.99.0.250,"
                                 "tun_dst=10.99.0.1,dl_src=02:00:00:00:01:99,"
                                 "dl_dst=02:00:00:00:01:01"),
    "s1hv1-flood": ("s1hv1", f"in_port=t1s1vm1-p,{ARP},arp_tpa=10.0.0.11"),
    "s1hv1-not-here": ("s1hv1", "in_port=vxlan0,tun_id=5001,tun_src=10.99.0.2,tun_dst=10.99.0.1,"
                                "dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:01:77"),
    "s1hv1-l2-miss": ("s1hv1", f"{FROM_VM},dl_dst=02:00:00:00:01:77"),
    "s1hv1-unknown-port": ("s1hv1", "in_port=LOCAL,dl_src=02:00:00:00:01:01,"
                                    "dl_dst=02:00:00:00:01:77"),
    "s1hv1-local": ("s1hv1", f"{FROM_VM},dl_dst=02:00:00:00:01:01"),
}  # fmt: skip


def text(name: str) -> str:
    return (DATA / name).read_text()


def status(node: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(text(f"{node}-status.json"))
    return loaded


def view(node: str) -> AgentView:
    return AgentView.from_status(status(node))


def sock(node: str) -> str:
    return f"/run/dove/{node}/admin.sock"


def peer(node: str, address: str) -> str:
    return f"{address}={sock(node)}:/run/dove/{node}"


class Hosts:
    """The six captured hosts behind a fake ovs-ofctl, ovs-appctl and admin socket; each
    host's trace answer is the fixture named in ``traces``."""

    def __init__(self, traces: Mapping[str, str]) -> None:
        self.traces = traces
        self.traced: list[tuple[str, str]] = []

    @staticmethod
    def node(env: Mapping[str, str] | None) -> str:
        return "s1hv1" if env is None else Path(env["OVS_RUNDIR"]).name

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        node = self.node(env)
        if argv[0] == "ovs-ofctl":
            assert argv[1:3] == ["-O", "OpenFlow13"]
            kind = {"dump-flows": "flows", "dump-groups": "groups", "dump-ports-desc": "ports"}
            return text(f"{node}-{kind[argv[3]]}.txt")
        assert list(argv[:3]) == ["ovs-appctl", "ofproto/trace", "br-dove"]
        self.traced.append((node, argv[3]))
        return text(f"trace-{self.traces[node]}.txt")

    def ask(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        assert request == {"cmd": "status"}
        node = Path(path).parent.name
        if node not in NODES:
            raise OSError(f"no such socket {path}")
        return status(node)


# --------------------------------------------------------------------------- dumps


def test_every_captured_flow_and_group_parses_and_is_ours() -> None:
    for node in NODES:
        flows = parse_flows(text(f"{node}-flows.txt"))
        lines = [line for line in text(f"{node}-flows.txt").splitlines() if "actions=" in line]
        assert len(flows) == len(lines) > 0
        assert all(f.decoded is not None for f in flows), node
        assert tunnel_ofport(flows) == 1
        assert parse_ports(text(f"{node}-ports.txt"))[1] == "vxlan0"
        groups = parse_groups(text(f"{node}-groups.txt"))
        assert {g.instance for g in groups} == {5001, 5002}


def test_a_flow_line_keeps_its_counters_timeouts_and_names() -> None:
    flow = parse_flow(
        " cookie=0xd004001389000201, duration=4.467s, table=40, n_packets=2, n_bytes=196,"
        " idle_timeout=300, idle_age=3, send_flow_rem priority=100,metadata=0x1389/0x3ffffff,"
        "dl_dst=02:00:00:00:02:01 actions=set_field:0x1389->tun_id,"
        "set_field:10.99.0.201->tun_dst,output:1"
    )
    assert (flow.table_name, flow.priority, flow.n_packets, flow.idle_timeout) == (
        "l2_forward", 100, 2, 300
    )  # fmt: skip
    assert flow.flags == ("send_flow_rem",)
    assert flow.decoded == Cookie(Purpose.LEARNED, 5001, 0x000201)
    match, actions = flow.render({1: "vxlan0"})
    assert match == "priority=100,metadata=0x1389/0x3ffffff,dl_dst=02:00:00:00:02:01"
    assert actions.endswith("set_field:10.99.0.201->tun_dst,output:vxlan0")


def test_a_dump_with_table_names_is_refused_so_dumps_are_taken_without_names() -> None:
    """The NOTE in flowdump: ovs 4.0.0 reads ``table=`` and ``goto_table:`` as numbers.
    Should a later ``ovs`` parse names, this fails and the --no-names dumps can go."""
    with pytest.raises(DumpError, match="in_classify"):
        parse_flow(
            " cookie=0xd009000000000000, duration=5.1s, table=in_classify, n_packets=0,"
            " n_bytes=0, priority=10,in_port=vxlan0 actions=goto_table:l2_lookup"
        )


def test_cookies_decode_to_the_state_that_made_them() -> None:
    flows = parse_flows(text("s1hv1-flows.txt"))
    ports = parse_ports(text("s1hv1-ports.txt"))
    hv = view("s1hv1")

    def origin(purpose: Purpose, instance: int = 5001, agent: AgentView = hv) -> list[str]:
        return [
            origin_of(f.cookie, f.match, f.actions, agent, ports, f.table, f.priority).text()
            for f in flows
            if f.decoded and f.decoded.purpose is purpose and f.decoded.instance == instance
        ]

    learned = origin(Purpose.LEARNED)
    assert any("02:00:00:00:02:01 10.0.0.21 at 10.99.0.201 (seq " in o for o in learned)
    assert (
        "VM port t1s1vm1-p (ofport 2), 02:00:00:00:01:01 10.0.0.11" in origin(Purpose.LOCAL_PORT)[0]
    )
    members = origin(Purpose.MEMBER)
    assert any("member 10.99.0.2" in o for o in members)
    assert any("proxy of this site 10.99.0.201" in o for o in members)
    # Without the agent: what the flow itself says, ports by name, tags no further.
    blind = origin(Purpose.LEARNED, agent=AgentView())
    assert any(o.startswith("learned 5001: 02:00:00:00:02:01 at 10.99.0.201") for o in blind)
    assert all("seq" not in o for o in blind)
    assert any(o.endswith("[tag 0x000201]") for o in blind)
    assert "VM port t1s1vm1-p (ofport 2)" in origin(Purpose.LOCAL_PORT, agent=AgentView())[0]


def test_a_proxys_cookies_say_which_side_and_which_direction() -> None:
    snap = snapshot("s1px1")
    texts = [snap.origin(f).text(volatile=False) for f in snap.flows]
    assert "member 5001: accepts tunnels from remote proxy (site s2) 172.31.0.21" in texts
    assert "member 5001: accepts tunnels from site member 10.99.0.1" in texts
    assert "learned 5001: 02:00:00:00:02:01 10.0.0.21 behind remote proxy 172.31.0.21" in texts
    assert "learned 5001: 02:00:00:00:01:01 10.0.0.11 in the site at 10.99.0.1" in texts
    assert "instance 5001: broadcast from the site: to the remote proxies' group" in texts
    assert "instance 5001: broadcast from a remote proxy: to the site members' group" in texts


def snapshot(node: str) -> ctl_common.Snapshot:
    hosts = Hosts({})
    env = None if node == "s1hv1" else {"OVS_RUNDIR": f"/run/dove/{node}"}
    return ctl_common.snapshot(Node(sock(node), env=env), hosts.run, hosts.ask)


def test_filters_keep_one_instance_one_mac_one_ip_one_table() -> None:
    snap = snapshot("s1hv1")

    def kept(**kw: Any) -> list[dict[str, Any]]:
        report = ctl_flows.flows_report(snap, FlowFilter(**kw))
        return [f for i in report["instances"] for f in i["flows"]]

    only = kept(instance=5001)
    assert only and all(f["origin"]["instance"] == 5001 for f in only)
    report = ctl_flows.flows_report(snap, FlowFilter(instance=5001))
    assert [i["instance"] for i in report["instances"]] == [5001]
    assert [g["group_id"] for g in report["instances"][0]["groups"]] == [5001]
    by_mac = kept(mac="02:00:00:00:02:01")
    assert {f["origin"]["purpose"] for f in by_mac} == {"learned", "arp_learned"}
    by_ip = kept(ip="10.99.0.2", table=0)
    assert {f["origin"]["purpose"] for f in by_ip} == {"member"}
    assert len(by_ip) == 2  # one per instance
    assert all(f["table_name"] == "flood" for f in kept(table=50))


def test_flows_are_grouped_by_instance_with_the_pipeline_last() -> None:
    report = ctl_flows.flows_report(snapshot("s1hv1"), FlowFilter())
    assert [i["instance"] for i in report["instances"]] == [5001, 5002, None]
    assert report["total_flows"] == sum(len(i["flows"]) for i in report["instances"])
    pipeline = report["instances"][-1]["flows"]
    assert {f["origin"]["instance"] for f in pipeline} == {None}
    assert report["instances"][0]["members"] == ["10.99.0.2", "10.99.0.201"]


def test_the_reference_text_has_nothing_that_changes_between_runs() -> None:
    snap = snapshot("s1hv1")
    ref = ctl_flows.reference_text(snap, ["a header", ""])
    assert ref.startswith("# a header\n#\n")
    body = [line for line in ref.splitlines() if not line.startswith("#")]
    assert len(body) == len(snap.flows) + len(snap.groups)
    for word in ("duration=", "n_packets=", "n_bytes=", "idle_age=", "seq ", "ago"):
        assert word not in ref
    assert "in_port=t1s1vm1-p" in ref and "goto_table:port_security" in ref
    tables = [line.split("table=")[1].split()[0].rstrip(",") for line in body[: len(snap.flows)]]
    order = ["classify", "port_security", "arp_nd", "l2_forward", "flood", "egress_check"]
    assert tables == sorted(tables, key=order.index)
    assert ref == ctl_flows.reference_text(snapshot("s1hv1"), ["a header", ""])


# --------------------------------------------------------------------------- traces


def explained(case: str) -> Any:
    node, spec = TRACES[case]
    snap = snapshot(node)
    raw = parse_trace(text(f"trace-{case}.txt"))
    given = HopInput(snap.view, snap.ports, snap.tunnel, Packet.from_spec(spec, snap.ports), spec)
    return explain(raw, given)


def outcomes(case: str) -> list[tuple[str, str | None]]:
    return [(o.kind, o.port or o.next_hop) for o in explained(case).outcomes]


def test_a_trace_is_read_rule_by_rule_without_the_underlay_bridge() -> None:
    raw = parse_trace(text("trace-s1hv1-flood.txt"))
    assert [r.table for r in raw.rules] == [0, 10, 20, 40, 50]
    flood = raw.rules[-1]
    assert [a.bucket for a in flood.actions if a.op.key == "output"] == [0, 1, 2]
    assert "skipping output to input port" in flood.actions[1].notes[0]
    assert raw.datapath_actions.startswith("clone(tnl_push(")
    branch = parse_trace(text("trace-s1px1-to-wan.txt"))
    assert [(r.table, r.depth) for r in branch.rules] == [(0, 0), (40, 0), (45, 1), (45, 0)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("s1hv1-to-remote-site", [("tunnel", "10.99.0.201")]),
        ("s2px1-from-wan", [("tunnel", "10.99.0.1")]),
        ("s2hv1-delivered", [("delivered", "t1s2vm1-p")]),
        ("s1hv1-arp-answered", [("answered", "t1s1vm1-p")]),
        ("s1hv1-arp-unknown", [("agent", None)]),
        ("s1hv1-l2-miss", [("agent", None)]),
        ("s1hv1-not-here", [("agent", None)]),
        ("s1hv1-flood", [("tunnel", "10.99.0.2"), ("tunnel", "10.99.0.201")]),
        ("s1hv1-spoof", [("dropped", None)]),
        ("s1hv1-nonmember", [("dropped", None)]),
        ("s1hv1-unknown-port", [("dropped", None)]),
        ("s1hv1-local", [("dropped", None)]),
    ],
)
def test_each_trace_ends_where_the_datapath_sends_the_packet(
    case: str, expected: list[tuple[str, str | None]]
) -> None:
    assert outcomes(case) == expected


def test_drops_and_punts_say_why() -> None:
    def why(case: str) -> str:
        return explained(case).outcomes[0].reason

    assert "t1s1vm1-p may send only from 02:00:00:00:01:01" in why("s1hv1-spoof")
    assert "dl_src=02:00:00:00:01:99" in why("s1hv1-spoof")
    assert "10.99.0.250 is not a member" in why("s1hv1-nonmember")
    assert "members: 10.99.0.2, 10.99.0.201" in why("s1hv1-nonmember")
    assert "neither a VM port nor the tunnel" in why("s1hv1-unknown-port")
    assert "port it came in on" in why("s1hv1-local")
    assert "LEARN by IP" in why("s1hv1-arp-unknown")
    assert "to un-learn it" in why("s1hv1-not-here")
    assert "10.0.0.21 is at 02:00:00:00:02:01 (learned, at 10.99.0.201)" in why(
        "s1hv1-arp-answered"
    )


def test_each_step_names_its_table_and_the_state_behind_its_cookie() -> None:
    hop = explained("s1hv1-to-remote-site")
    assert [s.table_name for s in hop.steps] == [
        "classify",
        "port_security",
        "arp_nd",
        "l2_forward",
    ]
    learned = hop.steps[-1]
    assert learned.origin is not None and learned.origin.purpose == "learned"
    assert learned.origin.host == "10.99.0.201" and learned.origin.mac == "02:00:00:00:02:01"
    assert "seq 1796" in learned.says and "learned" in learned.says
    assert learned.actions.endswith("output:vxlan0")
    assert hop.outcomes[0].tun_src == "10.99.0.1" and hop.outcomes[0].vni == 5001


def test_a_proxy_trace_shows_the_wan_size_check_as_a_branch() -> None:
    hop = explained("s1px1-to-wan")
    assert "from site member 10.99.0.1" in hop.steps[0].says
    assert "through wan_egress (size checked)" in hop.steps[1].says
    oversize, onward = hop.outcomes
    assert (oversize.kind, oversize.branch) == ("agent", "if the frame is longer than 1464 bytes")
    assert "DOVE-layer fragments" in oversize.reason
    assert (onward.kind, onward.next_hop, onward.tun_src) == (
        "tunnel",
        "172.31.0.21",
        "172.31.0.11",
    )
    far = explained("s2px1-from-wan")
    assert "from another site" in far.steps[0].says  # metadata bit 25


# --------------------------------------------------------------------------- follow

PEERS = Peers(
    tuple(
        Peer.parse(p)
        for p in (
            peer("s1hv1", "s1/10.99.0.1"),
            peer("s1hv2", "s1/10.99.0.2"),
            peer("s1px1", "s1/10.99.0.201"),
            peer("s1px1", "172.31.0.11"),
            peer("s2hv1", "s2/10.99.0.1"),
            peer("s2hv2", "s2/10.99.0.2"),
            peer("s2px1", "s2/10.99.0.201"),
            peer("s2px1", "172.31.0.21"),
        )
    )
)


def test_follow_goes_host_proxy_proxy_host_with_the_tunnel_metadata() -> None:
    hosts = Hosts(
        {
            "s1hv1": "s1hv1-to-remote-site",
            "s1px1": "s1px1-to-wan",
            "s2px1": "s2px1-from-wan",
            "s2hv1": "s2hv1-delivered",
        }
    )
    spec = TRACES["s1hv1-to-remote-site"][1]
    records = trace_path(Node(sock("s1hv1")), spec, PEERS, hosts.run, hosts.ask, follow=True)
    assert [r.hop.node for r in records] == ["s1hv1", "s1px1", "s2px1", "s2hv1"]
    # Each hop is traced with exactly the flow its tunnel port receives.
    assert hosts.traced == [(node, TRACES[case][1]) for node, case in hosts.traces.items()]
    assert [r.via for r in records] == [None, "10.99.0.201", "172.31.0.21", "10.99.0.1"]
    report = ctl_trace.trace_report(ctl_trace.TraceRequest(spec, "a ping", 5001), records)
    main = [v for v in report["verdict"] if not v.get("branch")]
    assert main == [
        {
            "node": "s2hv1",
            "kind": "delivered",
            "port": "t1s2vm1-p",
            "reason": main[0]["reason"],
        }
    ]


def test_without_follow_or_a_peer_the_next_hop_is_the_end() -> None:
    hosts = Hosts({"s1hv1": "s1hv1-to-remote-site"})
    spec = TRACES["s1hv1-to-remote-site"][1]
    for follow, peers in ((False, PEERS), (True, Peers())):
        records = trace_path(Node(sock("s1hv1")), spec, peers, hosts.run, hosts.ask, follow)
        report = ctl_trace.trace_report(ctl_trace.TraceRequest(spec, "x"), records)
        assert [(v["kind"], v["next_hop"], v["not_followed"]) for v in report["verdict"]] == [
            ("tunnel", "10.99.0.201", True)
        ]


def test_peers_are_told_apart_by_site() -> None:
    assert PEERS.find("10.99.0.1", "s2") == Peer(
        "10.99.0.1", sock("s2hv1"), "/run/dove/s2hv1", "s2"
    )
    assert PEERS.find("172.31.0.21", "s2") is not None  # the WAN address has no site
    assert PEERS.find("10.99.0.1", "") is None  # ambiguous without a site
    assert PEERS.find("10.99.0.9", "s1") is None
    with pytest.raises(FlowsError):
        Peer.parse("10.99.0.1=/only/a/socket")
    with pytest.raises(FlowsError):
        Peer.parse("not-an-ip=/a.sock:/run")


def test_a_miss_nobody_in_the_instance_can_answer_is_a_drop() -> None:
    hosts = Hosts({"s1hv1": "s1hv1-l2-miss"})
    spec = TRACES["s1hv1-l2-miss"][1]
    [record] = trace_path(Node(sock("s1hv1")), spec, PEERS, hosts.run, hosts.ask, False)
    [outcome] = record.hop.outcomes
    assert outcome.kind == "dropped"
    assert "no member of instance 5001 (10.99.0.2, 10.99.0.201) has 02:00:00:00:01:77" in (
        outcome.reason
    )


def test_a_miss_says_who_will_answer_and_where_else_the_target_is() -> None:
    # The l2-miss trace with another destination: one that s2hv2 has, in both instances.
    hosts = Hosts({"s1hv1": "s1hv1-l2-miss"})
    spec = f"{FROM_VM},dl_dst=02:00:00:00:02:02"
    [record] = trace_path(Node(sock("s1hv1")), spec, PEERS, hosts.run, hosts.ask, False)
    assert [o.kind for o in record.hop.outcomes] == ["agent"]
    notes = " | ".join(record.hop.notes)
    assert "the LEARN will be answered: s2hv2 (10.99.0.2) has it on port t1s2vm2-p" in notes
    assert "instance 5002's, on s2hv1 port t2s2vm2-p" in notes
    assert "answered by s2hv2" in record.hop.outcomes[0].reason


def test_without_peers_a_miss_stays_with_the_agent() -> None:
    hosts = Hosts({"s1hv1": "s1hv1-arp-unknown"})
    spec = TRACES["s1hv1-arp-unknown"][1]
    [record] = trace_path(Node(sock("s1hv1")), spec, Peers(), hosts.run, hosts.ask, False)
    assert [o.kind for o in record.hop.outcomes] == ["agent"]
    assert "no --peer" in " ".join(record.hop.notes)


# --------------------------------------------------------------------------- requests


def test_a_request_is_built_from_the_agents_state() -> None:
    hv = view("s1hv1")
    by_port = build_request(hv, "t1s1vm1-p", "10.0.0.21", None)
    assert by_port.spec == f"in_port=t1s1vm1-p,{PING}"
    assert by_port.instance == 5001
    assert build_request(hv, "02:00:00:00:01:01", "10.0.0.21", 5001).spec == by_port.spec
    assert build_request(hv, "10.0.0.11", "02:00:00:00:02:01", None).spec == by_port.spec
    arp = build_request(hv, "t1s1vm1-p", "10.0.0.99", None)
    assert arp.spec == (
        "in_port=t1s1vm1-p,dl_src=02:00:00:00:01:01,dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
        "arp_spa=10.0.0.11,arp_tpa=10.0.0.99,arp_sha=02:00:00:00:01:01"
    )
    assert "its MAC is not known here" in arp.summary
    bcast = build_request(hv, "t1s1vm1-p", "ff:ff:ff:ff:ff:ff", None)
    assert "broadcast" in bcast.summary


@pytest.mark.parametrize(
    ("source", "target", "instance", "error"),
    [
        ("t9-p", "10.0.0.21", None, "no local VM"),
        ("t1s1vm1-p", "10.0.0.21", 5002, "it is in instance 5001"),
        ("t1s1vm1-p", "10.0.0.300", None, "not a MAC address"),
        ("t1s1vm1-p", "zz:00:00:00:00:01", None, "not a MAC address"),
    ],
)
def test_a_bad_request_says_what_is_wrong(
    source: str, target: str, instance: int | None, error: str
) -> None:
    with pytest.raises(FlowsError, match=error):
        build_request(view("s1hv1"), source, target, instance)


# --------------------------------------------------------------------------- the commands


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-socket", default=sock("s1hv1"))
    parser.add_argument("--bridge", default="br-dove")
    parser.add_argument("--json", action="store_true")
    ctl_flows.add_commands(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(argv)


def test_flows_prints_instances_tables_counters_and_decoded_cookies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosts = Hosts({})
    assert ctl_flows.run(args("flows", "--instance", "5001"), hosts.run, hosts.ask) == 0
    out = capsys.readouterr().out
    assert out.startswith("s1hv1 (host 10.99.0.1), bridge br-dove:")
    assert "instance 5001  (members: 10.99.0.2, 10.99.0.201)" in out
    assert "instance 5002" not in out
    assert "  l2_forward (40)" in out and "n_packets=" in out
    assert "learned 5001: 02:00:00:00:02:01 10.0.0.21 at 10.99.0.201" in out
    assert ctl_flows.run(args("flows", "--json", "--table", "flood"), hosts.run, hosts.ask) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["filter"] == {"table": "flood"}


def test_a_json_given_before_the_command_is_kept() -> None:
    assert args("--json", "flows").json is True
    assert args("flows").json is False
    assert args("--bridge", "br-x", "trace", "--flow", "in_port=1").bridge == "br-x"


def test_trace_prints_every_hop_and_a_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = Hosts(
        {
            "s1hv1": "s1hv1-to-remote-site",
            "s1px1": "s1px1-to-wan",
            "s2px1": "s2px1-from-wan",
            "s2hv1": "s2hv1-delivered",
        }
    )
    peers = [a for p in PEERS.peers for a in ("--peer", f"{p.site + '/' if p.site else ''}"
             f"{p.address}={p.admin_socket}:{p.rundir}")]  # fmt: skip
    argv = ("trace", "--from", "t1s1vm1-p", "--to", "10.0.0.21", "--follow", *peers)
    assert ctl_flows.run(args(*argv), hosts.run, hosts.ask) == 0
    out = capsys.readouterr().out
    assert out.startswith("trace, instance 5001: t1s1vm1-p (02:00:00:00:01:01, 10.0.0.11) to")
    assert "=> next hop: 10.99.0.201 (VNI 5001, from 10.99.0.1)" in out
    assert "s1px1 (proxy 10.99.0.201, 172.31.0.11), tunnelled from s1hv1 to 10.99.0.201" in out
    assert "cookie 0xd004001389000201 = learned 5001, tag 0x201" in out
    assert out.rstrip().endswith("s2hv1: delivered to t1s2vm1-p")


def test_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = Hosts({})
    assert ctl_flows.run(args("flows", "--table", "nope"), hosts.run, hosts.ask) == 1
    assert "no table 'nope'" in capsys.readouterr().err
    assert ctl_flows.run(args("trace", "--from", "x"), hosts.run, hosts.ask) == 1
    assert "give --from and --to" in capsys.readouterr().err
    gone = args("--admin-socket", "/nowhere/admin.sock", "trace", "--from", "a", "--to", "b")
    assert ctl_flows.run(gone, hosts.run, hosts.ask) == 1
    assert "cannot reach the agent" in capsys.readouterr().err


def test_flows_without_the_agent_still_decode(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = Hosts({})
    argv = args("--admin-socket", "/nowhere/admin.sock", "flows", "--mac", "02:00:00:00:02:01")
    assert ctl_flows.run(argv, hosts.run, hosts.ask) == 0
    out = capsys.readouterr().out
    assert "this host (no agent)" in out and "tags not resolved" in out
    assert "learned 5001: 02:00:00:00:02:01 at 10.99.0.201" in out


def test_the_ovs_tools_get_the_environment_of_the_host_they_read() -> None:
    seen: list[Mapping[str, str] | None] = []

    def run(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        seen.append(env)
        return ""

    ctl_common.snapshot(Peer.parse(peer("s2hv1", "10.99.0.1")).node("br-dove"), run, Hosts({}).ask)
    assert seen and all(e is not None and e["OVS_RUNDIR"] == "/run/dove/s2hv1" for e in seen)
    assert all(e is not None and e.get("PATH") == os.environ.get("PATH") for e in seen)


def test_every_cookie_purpose_has_a_meaning() -> None:
    from dove_ryu.ctl.flowstate import PURPOSE_MEANING

    assert set(PURPOSE_MEANING) == set(Purpose)


# ------------------------------------------------- a NATed packet (tests/unit/data/gateway)

GW_DATA = Path(__file__).parent / "data" / "gateway"
GW_NODES = {"hv1": "10.99.0.1", "hv2": "10.99.0.2", "gw1": "10.99.0.201", "gw2": "10.99.0.202"}
GW_PEERS = Peers(
    tuple(Peer.parse(f"{ip}=/run/dove/{n}/admin.sock:/run/dove/{n}") for n, ip in GW_NODES.items())
)


class Gateways(Hosts):
    """The captured gateway emulation (hv1, hv2, gw1 active, gw2) behind the same fakes."""

    @staticmethod
    def node(env: Mapping[str, str] | None) -> str:
        return "hv2" if env is None else Path(env["OVS_RUNDIR"]).name

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        node = self.node(env)
        if argv[0] == "ovs-ofctl":
            kind = {"dump-flows": "flows", "dump-ports-desc": "ports"}[argv[3]]
            return (GW_DATA / f"{node}-{kind}.txt").read_text()
        assert list(argv[:3]) == ["ovs-appctl", "ofproto/trace", "br-dove"]
        self.traced.append((node, argv[3]))
        return (GW_DATA / f"trace-{self.traces[node]}.txt").read_text()

    def ask(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        node = Path(path).parent.name
        loaded: dict[str, Any] = json.loads((GW_DATA / f"{node}-status.json").read_text())
        return loaded


def gw_view(node: str) -> AgentView:
    return AgentView.from_status(json.loads((GW_DATA / f"{node}-status.json").read_text()))


def next_hop_mac() -> str:
    ext = gw_view("gw1").external
    assert ext is not None and ext.next_hop_mac is not None
    return ext.next_hop_mac


def gw_follow(start: str, source: str, target: str, traces: dict[str, str]) -> dict[str, Any]:
    hosts = Gateways(traces)
    request = build_request(gw_view(start), source, target, None)
    node = Node(sock(start), env={"OVS_RUNDIR": f"/run/dove/{start}"})
    records = trace_path(node, request.spec, GW_PEERS, hosts.run, hosts.ask, follow=True)
    return ctl_trace.trace_report(request, records)


def test_a_trace_is_read_through_the_pass_conntrack_recirculates() -> None:
    raw = parse_trace((GW_DATA / "trace-gw-floating-in.txt").read_text())
    assert [r.table for r in raw.rules] == [0, 24, 26, 32, 40]
    assert [r.resumed is not None for r in raw.rules] == [False, False, True, False, False]
    (resume,) = raw.resumes
    assert (resume.recirc_id, resume.ct_state) == ("0x2", "trk|new")
    assert resume.nat_changes() == [("nw_dst", "203.0.113.101", "10.0.0.1")]
    assert "nw_dst=10.0.0.1" in raw.leaving_flow and "nw_ttl=63" in raw.leaving_flow
    # The trace's echo of ct's nat() is not an action of its own.
    hop = explain(raw, HopInput(gw_view("gw1"), {1: "vxlan0", 2: "gw1-ext"}, 1, Packet({}), ""))
    assert hop.steps[1].actions == "ct(commit,table=26,zone=1,nat(dst=10.0.0.1))"


def test_a_vm_to_the_internet_is_followed_out_of_the_gateways_external_port() -> None:
    report = gw_follow(
        "hv2", "t1vm2-p", "203.0.113.254", {"hv2": "hv2-to-internet", "gw1": "gw-snat-out"}
    )
    assert [h["node"] for h in report["hops"]] == ["hv2", "gw1"]
    (verdict,) = report["verdict"]
    assert (verdict["node"], verdict["kind"], verdict["port"]) == ("gw1", "external", "gw1-ext")
    assert verdict["nat"] == "source NAT 10.0.1.2 -> 203.0.113.11 (conntrack zone 1)"
    assert verdict["next_hop"] == f"203.0.113.254 at {next_hop_mac()}"
    says = [s["says"] for s in report["hops"][1]["steps"]]
    assert says == [
        "tunnelled from member 10.99.0.2, VNI 5101: accepted as instance 5101, from the overlay",
        "203.0.113.254 is off router 1's subnets: the default route out (TTL 64 - 1), to snat",
        "from 10.0.1.2, out through router 1: conntrack zone 1 (router 1), source NATed to "
        "203.0.113.11, to ext_out",
        "out of gw1-ext into the external network, to the next hop 203.0.113.254 "
        f"({next_hop_mac()})",
    ]
    first_hop = report["hops"][0]["steps"][-1]["says"]
    assert first_hop == (
        "203.0.113.254 is off router 1's subnets: through the tunnel to the active gateway "
        "10.99.0.201, unchanged (the gateway routes it)"
    )


def test_a_vm_with_a_floating_ip_goes_out_from_it() -> None:
    raw = parse_trace((GW_DATA / "trace-gw-floating-out.txt").read_text())
    spec = "in_port=vxlan0,tun_id=5001,tun_src=10.99.0.1,icmp,nw_src=10.0.0.1,nw_ttl=64"
    hop = explain(
        raw,
        HopInput(
            gw_view("gw1"),
            {1: "vxlan0", 2: "gw1-ext"},
            1,
            Packet.from_spec(spec, {1: "vxlan0"}),
            spec,
        ),
    )
    assert hop.steps[2].says == (
        "from 10.0.0.1, which has router 1's floating IP: conntrack zone 1 (router 1), source "
        "NATed to 203.0.113.101, to ext_out"
    )
    assert [(o.kind, o.port, o.nat) for o in hop.outcomes] == [
        ("external", "gw1-ext", "source NAT 10.0.0.1 -> 203.0.113.101 (conntrack zone 1)")
    ]


def test_from_the_external_port_to_a_floating_ip_is_followed_to_the_vm() -> None:
    report = gw_follow(
        "gw1", "gw1-ext", "203.0.113.101", {"gw1": "gw-floating-in", "hv1": "hv1-from-gateway"}
    )
    assert report["request"]["summary"] == (
        "from the external network (203.0.113.254) into gw1-ext to 203.0.113.101 (router 1's "
        "floating IP for 10.0.0.1)"
    )
    assert [(v["node"], v["kind"], v.get("port")) for v in report["verdict"]] == [
        ("hv1", "delivered", "t1vm1-p")
    ]
    steps = report["hops"][0]["steps"]
    assert [s["table_name"] for s in steps] == [
        "classify", "ext_in", "ext_unnat", "l3_neighbor", "l2_forward"
    ]  # fmt: skip
    assert [s["says"] for s in steps[:4]] == [
        "from the external network, on gw1-ext: to ext_in",
        "to router 1's floating IP 203.0.113.101: conntrack zone 1 (router 1), destination NATed "
        "to 10.0.0.1, then on to ext_unnat once conntrack has it",
        "from outside, a floating IP's packet for 10.0.0.1 (after NAT): routed into router 1's "
        "instance 5001 (TTL - 1, from 0a:d0:00:00:13:89), to l3_neighbor",
        "10.0.0.1 in instance 5001 is at 02:00:00:00:00:01",
    ]
    assert steps[2]["resumed"] == (
        "conntrack in zone 1 hands the packet back (recirculation 0x2) as ct_state=trk|new, "
        "NAT applied: nw_dst 203.0.113.101 -> 10.0.0.1"
    )
    # The VM's host gets the packet as the gateway left it: un-NATed, routed, TTL 63.
    hv1 = report["hops"][1]
    assert hv1["flow"].startswith(
        "in_port=vxlan0,tun_id=5001,tun_src=10.99.0.201,tun_dst=10.99.0.1,"
    )
    assert "dl_src=0a:d0:00:00:13:89,dl_dst=02:00:00:00:00:01" in hv1["flow"]
    assert "nw_dst=10.0.0.1,nw_ttl=63" in hv1["flow"]
    assert hv1["steps"][0]["says"].startswith("tunnelled from gateway 10.99.0.201, VNI 5001")


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("gw-snat-address-in", "from outside to 203.0.113.11: a new connection to a source-NAT "
                               "address, or a packet of no connection: dropped (counted)"),
        ("gw-no-floating-in", "from outside to 203.0.113.77: not a router's external address nor "
                              "a floating IP here: dropped (counted)"),
    ],
)  # fmt: skip
def test_from_outside_what_belongs_to_no_floating_ip_or_connection_is_dropped(
    case: str, why: str
) -> None:
    raw = parse_trace((GW_DATA / f"trace-{case}.txt").read_text())
    dst = "203.0.113.11" if "snat" in case else "203.0.113.77"
    spec = f"in_port=gw1-ext,icmp,nw_src=203.0.113.254,nw_dst={dst}"
    ports = {1: "vxlan0", 2: "gw1-ext"}
    hop = explain(raw, HopInput(gw_view("gw1"), ports, 1, Packet.from_spec(spec, ports), spec))
    assert [(o.kind, o.reason) for o in hop.outcomes] == [("dropped", why)]


def test_on_a_gateway_a_trace_starts_only_from_its_external_port() -> None:
    with pytest.raises(FlowsError, match="give its external port \\(gw1-ext\\)"):
        build_request(gw_view("gw1"), "t1vm1-p", "203.0.113.101", None)
    with pytest.raises(FlowsError, match="an external IPv4 address"):
        build_request(gw_view("gw1"), "gw1-ext", "02:00:00:00:00:01", None)


def test_dovectl_shows_a_gateways_state_external_leg_and_routers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dove_ryu.ctl import dovectl

    def query(path: str, request: dict[str, Any]) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((GW_DATA / "gw1-status.json").read_text())
        return loaded

    monkeypatch.setattr(dovectl, "query", query)
    assert dovectl.main(["--admin-socket", "x", "status"]) == 0
    text = capsys.readouterr().out
    mac = next_hop_mac()
    assert text.splitlines()[0] == "gateway gw1 underlay 10.99.0.201 (active), switch connected"
    assert "external port: gw1-ext (ofport 2, MAC " in text
    assert f"next hop: 203.0.113.254 at {mac}" in text
    assert "1       5001,5101  203.0.113.11  203.0.113.101->10.0.0.1" in text
    assert dovectl.main(["--admin-socket", "x", "routers", "--json"]) == 0
    routers = json.loads(capsys.readouterr().out)
    assert routers["state"] == "active" and routers["external"]["port"] == "gw1-ext"
    assert routers["routers"]["2"]["snat"] == "203.0.113.12"
