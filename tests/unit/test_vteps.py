"""External VTEPs (docs/interop.md section 2): settings, flows, the host part."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu import config
from dove_ryu.config import ConfigError
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.pipeline import CLASSIFY, L2_FORWARD
from tests.fakeswitch import Flow
from tests.unit.test_core import TUN, Net, Seen, arp_request, eth, ip, vm

pytestmark = pytest.mark.unit

KEY = "00112233445566778899aabbccddeeff"
BASE = {"underlay_ip": "10.0.0.1", "auth_key": KEY}


def _cfg(**settings: str) -> config.DoveConfig:
    return config.from_mapping({**BASE, **settings})


def test_vteps_and_macs_parse() -> None:
    cfg = _cfg(
        external_vteps="bm1=10.0.1.50:5000+5001, tor1=10.0.1.60:5000:geneve",
        external_macs="5000/02:00:00:00:05:01@bm1=10.0.0.51, 5001/02-00-00-00-05-02@bm1",
        accept_tunnel_types="vxlan,geneve",
    )
    bm1, tor1 = cfg.vteps.declared
    assert (bm1.name, bm1.address, bm1.instances) == ("bm1", IPv4Address("10.0.1.50"), {5000, 5001})
    assert bm1.encapsulation == "vxlan" and tor1.encapsulation == "geneve"
    assert [(m.instance, m.mac, m.ip) for m in bm1.macs] == [
        (5000, "02:00:00:00:05:01", IPv4Address("10.0.0.51")),
        (5001, "02:00:00:00:05:02", None),
    ]
    assert tor1.macs == ()
    assert (cfg.vteps.external_mac_age, cfg.vteps.external_max_macs) == (300, 1024)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"external_macs": "5000/02:00:00:00:05:01@bm9"}, "no VTEP named bm9"),
        ({"external_macs": "5002/02:00:00:00:05:01@bm1"}, "does not serve instance 5002"),
        ({"external_macs": "5000/01:00:00:00:05:01@bm1"}, "not a unicast MAC"),
        ({"external_macs": "5000/02:00:00:00:05:01@bm1,5000/02:00:00:00:05:01@bm1"}, "twice"),
        ({"external_vteps": "bm1=10.0.0.1:5000"}, "this host's underlay_ip"),
        ({"external_vteps": "a=1.2.3.4:5000,a=1.2.3.5:5000"}, "declared twice"),
        ({"external_vteps": "a=1.2.3.4:5000,b=1.2.3.4:5001"}, "same address"),
        ({"external_vteps": "a=1.2.3.4:0"}, "not in 1.."),
        ({"external_vteps": "a=1.2.3.4:16777215"}, "not in 1.."),
        ({"external_vteps": "a=1.2.3.4:5000:gre"}, "'gre' is not one of vxlan, geneve"),
        ({"external_vteps": "a=1.2.3.999:5000"}, "not an IPv4 address"),
        ({"external_vteps": "a=1.2.3.4"}, "is not NAME=IP:INSTANCE"),
        ({"external_vteps": "a=10.0.0.2:5000", "peers": "10.0.0.2"}, "a peer's address"),
        ({"external_vteps": "a=1.2.3.4:5000:geneve"}, "speaks geneve, which this host does not"),
    ],
)
def test_bad_entries_are_named_alone(settings: dict[str, str], says: str) -> None:
    settings = {"external_vteps": "bm1=10.0.1.50:5000+5001", **settings}
    other = "x=10.9.9.9:7,y=10.9.9.8:8"
    with pytest.raises(ConfigError, match=says) as e:
        _cfg(**{k: (f"{v},{other}" if k == "external_vteps" else v) for k, v in settings.items()})
    assert other not in str(e.value)  # one entry quoted, never the whole line


# --------------------------------------------------------------- the host part

A, B = 5000, 5001
VTEP = "10.99.0.50"
BEHIND = "02:00:00:00:0e:01"  # a MAC behind the VTEP
STATIC = "02:00:00:00:05:01"
VM1 = vm("vm1", 5, A, "02:00:00:00:00:01", "10.0.0.1")
VM2 = vm("vm2", 6, A, "02:00:00:00:00:02", "10.0.0.2")
VMB = vm("vmb", 7, B, "02:00:00:00:00:0b", "10.0.0.1")
SETTINGS = {
    "external_vteps": f"bm1={VTEP}:{A}",
    "external_macs": f"{A}/{STATIC}@bm1=10.0.0.51",
    "external_max_macs": "8",
}


def _net(**settings: str) -> Net:
    return Net({1: [VM1, VMB], 2: [VM2]}, **{**SETTINGS, **settings})


def _from_vtep(net: Net, n: int, pkt: dict[str, object], instance: int = A) -> list[Seen]:
    """The VTEP sends ``pkt`` to host n through the tunnel, with VNI ``instance``."""
    host = net.hosts[n]
    start = len(net.seen)
    tun = {"tunnel_id": instance, "tun_ipv4_src": VTEP}
    net._handle(host, host.switch.process(TUN, pkt, tun))
    return net.seen[start:]


def _to_vtep(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if s.port == TUN and s.delivery.tun_dst == VTEP]


def _learned(net: Net, n: int) -> list[Flow]:
    def pick(f: Flow) -> bool:
        decoded = cookies.decode(f.cookie)
        return decoded is not None and decoded.purpose is Purpose.VTEP_LEARNED

    return [f for f in net.hosts[n].switch.flows(L2_FORWARD.table_id) if pick(f)]


def test_the_vtep_reaches_its_instance_and_the_macs_behind_it_are_learned() -> None:
    net = _net()
    seen = _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    assert [(s.host, s.port) for s in seen] == [(1, VM1.ofport)]
    [flow] = _learned(net, 1)
    assert flow.idle_timeout == 300 and flow.priority < 100
    assert cookies.decode(flow.cookie).tag == int(IPv4Address(VTEP)) & 0xFFFFFF  # type: ignore[union-attr]
    # The way back is in the datapath: no packet-in, no LEARN.
    before = len(net.packet_ins)
    [out] = net.send(1, VM1.ofport, eth(VM1.mac, BEHIND))
    assert (out.port, out.delivery.tun_dst, out.delivery.tunnel_id) == (TUN, VTEP, A)
    assert len(net.packet_ins) == before


def test_other_instances_from_the_vtep_are_dropped_as_from_a_non_member() -> None:
    net = _net()
    nonmember = net.hosts[1].switch.hits(
        lambda f: cookies.decode(f.cookie).purpose is Purpose.DROP_NONMEMBER
    )  # type: ignore[union-attr]
    assert _from_vtep(net, 1, eth(BEHIND, VMB.mac), instance=B) == []
    assert _from_vtep(net, 1, eth(BEHIND, "ff:ff:ff:ff:ff:ff"), instance=B) == []
    after = net.hosts[1].switch.hits(
        lambda f: cookies.decode(f.cookie).purpose is Purpose.DROP_NONMEMBER
    )  # type: ignore[union-attr]
    assert after == nonmember + 2
    assert _learned(net, 1) == []


def test_broadcast_reaches_the_vtep_once_and_b_never() -> None:
    net = _net()
    seen = net.send(1, VM1.ofport, eth(VM1.mac, "ff:ff:ff:ff:ff:ff"))
    assert len(_to_vtep(seen)) == 1
    assert _to_vtep(seen)[0].delivery.tunnel_id == A
    # The copy host 2 received from the tunnel is not sent on to the VTEP again.
    assert [s.host for s in seen if s.port == VM2.ofport] == [2]
    assert _to_vtep(net.send(1, VMB.ofport, eth(VMB.mac, "ff:ff:ff:ff:ff:ff"))) == []
    # The VTEP's broadcast is flooded to A's VMs only.
    seen = _from_vtep(net, 1, eth(BEHIND, "ff:ff:ff:ff:ff:ff"))
    assert [(s.host, s.port) for s in seen] == [(1, VM1.ofport)]


def test_learning_is_bounded_per_vtep_and_instance() -> None:
    net = _net()
    for n in range(20):
        _from_vtep(net, 1, eth(f"02:00:00:00:1e:{n:02x}", VM1.mac))
    assert len(_learned(net, 1)) == 8
    assert net.hosts[1].switch.learn_refused == 12


def test_a_mac_a_dove_host_owns_wins_over_one_learned_behind_the_vtep() -> None:
    net = _net()
    net.send(1, VM1.ofport, eth(VM1.mac, VM2.mac))  # learned from host 2
    net.deliver()
    _from_vtep(net, 1, eth(VM2.mac, VM1.mac))  # the VTEP sends as VM2
    _from_vtep(net, 1, eth(VM1.mac, VM1.mac))  # and as VM1, a VM of this host
    assert len(_learned(net, 1)) == 2
    assert [s.port for s in net.send(2, VM2.ofport, eth(VM2.mac, VM1.mac))] == [TUN, VM1.ofport]
    seen = net.send(1, VM1.ofport, eth(VM1.mac, VM2.mac))
    assert [(s.host, s.port) for s in seen if s.port != TUN] == [(2, VM2.ofport)]
    assert _to_vtep(seen) == []


def test_declared_macs_are_forwarded_and_answered() -> None:
    net = _net()
    [out] = net.send(1, VM1.ofport, eth(VM1.mac, STATIC))
    assert (out.delivery.tun_dst, out.delivery.tunnel_id) == (VTEP, A)
    [answer] = net.send(1, VM1.ofport, arp_request(VM1.mac, "10.0.0.1", "10.0.0.51"))
    assert answer.port == VM1.ofport and answer.delivery.pkt["arp_sha"] == STATIC


def test_everything_goes_with_the_instance_and_lingers_meanwhile() -> None:
    net = _net()
    _from_vtep(net, 2, eth(BEHIND, VM2.mac))
    assert _learned(net, 2)
    net.apply(net.hosts[2], net.hosts[2].core.ports_changed(net.now, []))
    sw = net.hosts[2].switch
    assert _learned(net, 2) == []
    assert not [f for f in sw.flows() if cookies.decode(f.cookie).purpose is Purpose.VTEP_STATIC]  # type: ignore[union-attr]
    members = [f for f in sw.flows(CLASSIFY.table_id) if f.match.get("tun_ipv4_src") == VTEP]
    assert [(f.actions, f.goto_table) for f in members] == [((), 60)]  # lingering: egress_check
    net.advance(61.0, step=1.0)
    assert not [f for f in sw.flows(CLASSIFY.table_id) if f.match.get("tun_ipv4_src") == VTEP]
    assert all(b[-1].port != TUN or b[1].value != VTEP for b in sw.groups.get(A, ()))  # type: ignore[union-attr]


def test_an_unresolved_destination_goes_to_the_vtep_and_its_answer_teaches() -> None:
    net = _net()
    seen = net.send(1, VM1.ofport, eth(VM1.mac, BEHIND))
    assert _to_vtep(seen) == []  # LEARN first
    net.deliver()
    start = len(net.seen)
    net.advance(5.0)
    [out] = _to_vtep(net.seen[start:])
    assert out.delivery.pkt["eth_dst"] == BEHIND and out.delivery.tunnel_id == A
    assert net.hosts[1].core.counters["vtep_unknown_sent"] == 1
    # Asked again at once (negatively cached): straight to the VTEP.
    assert len(_to_vtep(net.send(1, VM1.ofport, eth(VM1.mac, BEHIND)))) == 1
    _from_vtep(net, 1, eth(BEHIND, VM1.mac))  # the answer teaches the datapath
    [out] = net.send(1, VM1.ofport, eth(VM1.mac, BEHIND))
    assert out.delivery.tun_dst == VTEP


def test_an_arp_request_goes_to_the_vtep_at_once_and_once() -> None:
    """An address behind a VTEP is never answered by a LEARN: the request goes to the
    VTEPs as it is asked (the LEARN goes on, for a DOVE host's VM), not again later."""
    net = _net()
    seen = net.send(1, VM1.ofport, arp_request(VM1.mac, "10.0.0.1", "10.0.0.77"))
    [out] = _to_vtep(seen)
    assert out.delivery.pkt["arp_tpa"] == "10.0.0.77" and out.delivery.tunnel_id == A
    assert net.learn_requests(1)
    # The VM asks again while the LEARN is in flight: that one goes too.
    assert (
        len(_to_vtep(net.send(1, VM1.ofport, arp_request(VM1.mac, "10.0.0.1", "10.0.0.77")))) == 1
    )
    net.deliver()
    start = len(net.seen)
    net.advance(5.0)
    assert _to_vtep(net.seen[start:]) == []
    # B has no VTEP: its requests go nowhere but to the LEARN.
    assert _to_vtep(net.send(1, VMB.ofport, arp_request(VMB.mac, "10.0.0.1", "10.0.0.77"))) == []


def test_a_restart_keeps_what_the_datapath_learned() -> None:
    net = _net()
    _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    host = net.hosts[1]
    from dove_ryu.agent.host import HostCore

    host.core = HostCore(host.core.p.cfg, net.now)
    net.apply(host, host.core.ports_changed(net.now, [VM1, VMB]))
    net.apply(host, host.core.switch_connected(net.now, TUN, host.switch.found()))
    assert host.core.p.takeover.generation != 0
    net.advance(10.0, step=1.0)
    assert not host.core.p.takeover.settling
    assert _learned(net, 1), "the sweep deleted a datapath-learned flow"
    assert len(_to_vtep(net.send(1, VM1.ofport, eth(VM1.mac, "ff:ff:ff:ff:ff:ff")))) == 1


def test_a_source_declares_vteps_at_run_time() -> None:
    net = _net(external_vteps="", external_macs="")
    host = net.hosts[1]
    from dove_ryu.model import ExternalVtep

    vtep = ExternalVtep("tor1", ip(60), frozenset({A}))
    net.apply(host, CoreOutput_of(host.core.p.vteps.declared("directory", [vtep])))
    seen = net.send(1, VM1.ofport, eth(VM1.mac, "ff:ff:ff:ff:ff:ff"))
    assert [s.delivery.tun_dst for s in seen if s.port == TUN] == [str(ip(2)), str(ip(60))]
    net.apply(host, CoreOutput_of(host.core.p.vteps.declared("directory", [])))
    seen = net.send(1, VM1.ofport, eth(VM1.mac, "ff:ff:ff:ff:ff:ff"))
    assert [s.delivery.tun_dst for s in seen if s.port == TUN] == [str(ip(2))]


def CoreOutput_of(msgs: list[object]) -> object:  # noqa: N802
    from dove_ryu.openflow.ofmsg import CoreOutput

    return CoreOutput(ofmsgs=msgs)  # type: ignore[arg-type]


# OVS 3.1's dump of a VTEP's member flow and a flow its learn action wrote.
DUMP = """\
 cookie=0xd007001388000132, duration=3.2s, table=0, n_packets=5, n_bytes=490, priority=100,\
tun_id=0x1388,tun_src=10.0.1.50,in_port=1 actions=learn(table=40,idle_timeout=300,priority=50,\
cookie=0xd019001388000132,limit=1024,metadata=0x1388,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
load:0x1388->NXM_NX_TUN_ID[],load:NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[],\
output:NXM_OF_IN_PORT[]),write_metadata:0x1001388/0x3ffffff,goto_table:40
 cookie=0xd019001388000132, duration=2.1s, table=40, n_packets=3, n_bytes=294, \
idle_timeout=300, priority=50,metadata=0x1388,dl_dst=02:00:00:00:0e:01 \
actions=load:0x1388->NXM_NX_TUN_ID[],load:0xa000132->NXM_NX_TUN_IPV4_DST[],output:1
"""


def test_dovectl_reads_a_learn_and_what_it_learned() -> None:
    from dove_ryu.ctl import flowdump, flowstate

    member, learned = flowdump.parse_flows(DUMP)
    assert flowdump.render(member.actions, {1: "dove-vxlan"}).startswith("learn(table=40,")
    view = flowstate.AgentView()
    said = [
        flowstate.origin_of(f.cookie, f.match, f.actions, view, {}, f.table, f.priority).what
        for f in (member, learned)
    ]
    assert said[0].startswith("accepts tunnels from external VTEP 10.0.1.50, learns its MACs")
    assert said[1] == "02:00:00:00:0e:01 behind external VTEP 10.0.1.50, learned in the datapath"


def test_dovectl_vteps_lists_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dove_ryu.adapters.operations import Operations
    from dove_ryu.ctl import dovectl

    net = _net()
    ops = Operations.__new__(Operations)
    ops.core, ops.lock = net.hosts[2].core, __import__("threading").RLock()
    answer = ops.admin({"cmd": "vteps"})
    [row] = answer["vteps"]
    assert (row["name"], row["address"], row["served_here"]) == ("bm1", VTEP, [A])
    assert row["static_macs"] == [{"instance": A, "mac": STATIC, "ip": "10.0.0.51"}]
    monkeypatch.setattr(dovectl, "_ask", lambda args, cmd: answer)
    assert dovectl.main(["vteps"]) == 0
    out = capsys.readouterr().out
    assert "bm1" in out and f"{A}/{STATIC}=10.0.0.51" in out and "vxlan" in out


def test_a_restarted_agent_does_not_take_the_vtep_for_a_member() -> None:
    net = _net()
    host = net.hosts[1]
    from dove_ryu.agent.host import HostCore

    host.core = HostCore(host.core.p.cfg, net.now)
    net.apply(host, host.core.ports_changed(net.now, [VM1, VMB]))
    net.apply(host, host.core.switch_connected(net.now, TUN, host.switch.found()))
    assert not host.core.p.members.serves(A, IPv4Address(VTEP))
    net.advance(30.0, step=1.0)  # members that never announce would have expired
    _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    assert _learned(net, 1)


def test_the_fake_switch_spells_the_learn_as_ovs_does() -> None:
    from tests.fakeswitch import dump_flows

    net = _net()
    _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    text = dump_flows(net.hosts[1].switch)
    learn = next(line for line in text.splitlines() if "learn(" in line)
    want = (
        "learn(table=40,idle_timeout=300,priority=50,cookie=0xd019001388"
        f"{int(IPv4Address(VTEP)) & 0xFFFFFF:06x},limit=8,metadata=0x1388,"
        "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0x1388->NXM_NX_TUN_ID[],"
        "load:NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[],output:NXM_OF_IN_PORT[])"
    )
    assert want in learn, learn
    assert want.replace("limit=8", "limit=1024").replace("0x1388", "0x1388", 1) in DUMP.replace(
        "\n", ""
    ).replace("000132", f"{int(IPv4Address(VTEP)) & 0xFFFFFF:06x}")  # OVS's own spelling


def test_the_benchmark_report_reads_its_results() -> None:
    from benchmarks.kernel_vtep_bench import report_section
    from benchmarks.stats import summary

    s = {"mbits": summary([300.0, 340.0]), "rtt_ms": summary([0.25, 0.3])}
    d = {"mbits": summary([290.0, 300.0]), "rtt_ms": summary([0.5, 0.55])}
    text = "\n".join(
        report_section(
            {
                "summary": {"kernel_vtep": s, "dove": d},
                "ratios": {"mbits_kernel_vtep_over_dove": 1.1, "rtt_kernel_vtep_over_dove": 0.5},
                "reps": 2,
                "seconds": 3,
            }
        )
    )
    assert "| kernel VTEP (no agent) | 320 (300-340) |" in text and "throughput 1.10" in text


def test_a_geneve_vtep_is_reached_through_the_geneve_port_without_the_dove_option() -> None:
    """A VTEP declared ``:geneve`` runs no agent: its packets leave and arrive on the
    Geneve port, and carry no DOVE option (a kernel Geneve device knows none)."""
    from dove_ryu.model import ExternalVtep
    from dove_ryu.openflow import vtep_flows
    from dove_ryu.openflow.ofmsg import Output, SetField
    from dove_ryu.openflow.tunnels import OPTION_FIELD, Tunnels

    tunnels = Tunnels("vxlan", ("vxlan", "geneve"))
    tunnels.ports = {"vxlan": 1, "geneve": 2}
    tor = ExternalVtep("tor1", IPv4Address("10.0.1.60"), frozenset({5000}), "geneve")
    bm = ExternalVtep("bm1", IPv4Address("10.0.1.50"), frozenset({5000}))

    assert vtep_flows.vtep_tunnel(tunnels, tor, 5000) == (
        SetField("tunnel_id", 5000),
        SetField("tun_ipv4_dst", "10.0.1.60"),
        Output(2),
    )
    assert vtep_flows.vtep_tunnel(tunnels, bm, 5000)[-1] == Output(1)
    member = vtep_flows.vtep_member_flow(tor, 5000, tunnels, 300, 1024)
    assert member.match["in_port"] == 2 and OPTION_FIELD not in member.match


def test_a_vtep_declared_by_the_config_and_the_directory_is_one_vtep() -> None:
    """The configuration's bm1 and a VTEP controller's row for the same switch (another
    name, same address): broadcast reaches it once, and the row going keeps bm1."""
    from dove_ryu.model import ExternalVtep

    net = _net()
    host = net.hosts[1]
    row = ExternalVtep("tor1", IPv4Address(VTEP), frozenset({A}))
    net.apply(host, CoreOutput_of(host.core.p.vteps.declared("directory", [row])))
    assert len(_to_vtep(net.send(1, VM1.ofport, eth(VM1.mac, "ff:ff:ff:ff:ff:ff")))) == 1

    net.apply(host, CoreOutput_of(host.core.p.vteps.declared("directory", [])))
    seen = _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    assert [(s.host, s.port) for s in seen] == [(1, VM1.ofport)]
    assert not host.switch.errors


def test_a_vtep_row_in_an_encapsulation_the_host_does_not_take_is_refused_once() -> None:
    """A directory row is VXLAN; a Geneve-only host has no VXLAN port: the row is
    ignored and counted once (not at every directory update), never sent Geneve."""
    from dove_ryu.model import ExternalVtep

    net = _net(external_vteps="", external_macs="", tunnel_type="geneve", tunnel_port="dove-geneve")
    host = net.hosts[1]
    row = ExternalVtep("tor1", ip(60), frozenset({A}))
    for _ in range(3):
        assert host.core.p.vteps.declared("directory", [row]) == []
    assert host.core.p.vteps.all() == []
    assert host.core.counters["vtep_encapsulation_not_taken"] == 1


def test_endpoints_behind_a_vtep_are_reached_without_the_dove_option() -> None:
    """Endpoint rows at a VTEP's address (a VTEP controller writes them) go through the
    tunnels as the VTEP is declared: its encapsulation, no DOVE option."""
    from dove_ryu.model import ExternalVtep
    from dove_ryu.openflow.tunnels import OPTION_FIELD

    net = _net(
        external_vteps="",
        external_macs="",
        tunnel_type="geneve",
        tunnel_port="dove-geneve",
        accept_tunnel_types="vxlan,geneve",
    )
    host = net.hosts[1]
    tor = ExternalVtep("tor1", ip(60), frozenset({A}), "geneve")
    host.core.p.vteps.declared("directory", [tor])
    tunnels = host.core.p.link.tunnels
    actions = tunnels.actions(A, ip(60))
    assert tunnels.path(ip(60)).encapsulation == "geneve"
    assert not any(getattr(a, "field", None) == OPTION_FIELD for a in actions)
    host.core.p.vteps.declared("directory", [])
    assert tunnels.path_kind(ip(60)) == ("vxlan", True)  # a peer never heard: VXLAN


def test_a_restart_removes_what_was_learned_behind_a_vtep_no_longer_declared() -> None:
    """The VTEP was taken out of the configuration while its agent was away: what the
    datapath learned behind it goes at the take-over (traffic to it would keep it from
    ageing, a black hole that never misses to the agent)."""
    from dataclasses import replace

    from dove_ryu.agent.host import HostCore
    from dove_ryu.config import ExternalVtepsConfig

    net = _net()
    _from_vtep(net, 1, eth(BEHIND, VM1.mac))
    host = net.hosts[1]
    assert _learned(net, 1)
    cfg = replace(host.core.p.cfg, vteps=ExternalVtepsConfig())

    host.core = HostCore(cfg, net.now)
    net.apply(host, host.core.ports_changed(net.now, [VM1, VMB]))
    net.apply(host, host.core.switch_connected(net.now, TUN, host.switch.found()))

    assert not _learned(net, 1)
    assert not host.switch.errors


def test_dovectl_counts_what_the_datapath_learned_behind_each_vtep() -> None:
    """`dovectl vteps` reads the learned MACs from the bridge (the agent never sees
    them): the VTEP_LEARNED flows, by instance and the VTEP's cookie tag."""
    from dove_ryu.ctl.common import Node
    from dove_ryu.ctl.flows import learned_behind_vteps
    from dove_ryu.openflow.cookies import Cookie

    tag = int(IPv4Address(VTEP)) & cookies.TAG_MASK

    def line(purpose: Purpose, mac: str) -> str:
        cookie = Cookie(purpose, A, tag).value
        return (
            f" cookie={cookie:#x}, duration=1.0s, table=40, n_packets=1, n_bytes=98, "
            f"idle_timeout=300, priority=50,metadata={A:#x},dl_dst={mac} "
            f"actions=set_field:{A:#x}->tun_id,set_field:{VTEP}->tun_dst,output:1"
        )

    dump = "\n".join(
        [
            line(Purpose.VTEP_LEARNED, "02:00:00:00:0e:01"),
            line(Purpose.VTEP_LEARNED, "02:00:00:00:0e:02"),
            line(Purpose.LEARNED, "02:00:00:00:0e:03"),
        ]
    )
    asked: list[list[str]] = []

    def run(argv: object, env: object) -> str:
        asked.append(list(argv))  # type: ignore[call-overload]
        return dump

    counts = learned_behind_vteps(Node("/nowhere", "br-dove"), run)
    assert counts == {(A, tag): 2}
    assert asked == [["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove", "--no-names"]]
