"""The VTEP controller's core and settings (docs/interop.md section 3), with plain data:
a directory view and the switch's hardware_vtep rows in, the rows to write out."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow
from dove_ryu.agent.vtep_controller import (
    UNKNOWN_DST,
    RemoteMac,
    SwitchState,
    VtepController,
    changes,
    missing_ports,
    switch_instance,
    wanted,
)
from dove_ryu.config import UNSET_IP, ConfigError, VtepBinding, from_mapping

pytestmark = pytest.mark.unit

KEY = "ab" * 16
HV1, HV2, TOR = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2"), IPv4Address("10.99.0.60")
A, B = 5001, 5002
BIND = (VtepBinding("tor-eth1", 0, A),)


def settings(**more: str) -> dict[str, str]:
    return {
        "role": "vtep-controller",
        "auth_key": KEY,
        "discovery": "directory",
        "directory": "tcp:10.99.0.241:6641",
        "vtep_ovsdb": "tcp:127.0.0.1:6640",
        "vtep_switch": "tor1",
        "vtep_bindings": "tor-eth1:0=5001, tor-eth2:100=5002",
        **more,
    }


def view(*endpoints: EndpointRow, hv2_alive: bool = True) -> DirectoryView:
    hosts = [
        HostRow("hv1", HV1, frozenset({A, B})),
        HostRow("hv2", HV2, frozenset({A}), alive=hv2_alive),
        HostRow("tor1", TOR, frozenset({A}), role="vtep"),
    ]
    return DirectoryView(hosts, list(endpoints))


def ep(instance: int, mac: str, host: str, seq: int = 1, ip: str = "") -> EndpointRow:
    return EndpointRow(instance, mac, (IPv4Address(ip),) if ip else (), host, seq)


def bound_state(**more: object) -> SwitchState:
    args: dict[str, object] = {
        "tunnel_ips": (TOR,),
        "ports": frozenset({"tor-eth1"}),
        "switches": {"dove-5001": 5001},
        "bindings": {"tor-eth1": {0: "dove-5001"}},
        "present": True,
    }
    args.update(more)
    return SwitchState(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ settings


def test_settings_of_a_vtep_controller() -> None:
    cfg = from_mapping(settings())
    assert cfg.role == "vtep-controller"
    assert cfg.vtep.vtep_bindings == (
        VtepBinding("tor-eth1", 0, 5001),
        VtepBinding("tor-eth2", 100, 5002),
    )
    assert cfg.name == "tor1"  # its directory row is named after the switch
    assert cfg.host.underlay_ip == UNSET_IP  # the switch's tunnel IP, read from it


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"discovery": "static"}, "discovery: a VTEP controller needs discovery = directory"),
        ({"vtep_bindings": "p1=5001"}, "is not PORT:VLAN=INSTANCE"),
        ({"vtep_bindings": "p1:4096=5001"}, "VLAN must be 0-4095"),
        ({"vtep_bindings": "p1:0=0"}, "not in 1.."),
        ({"vtep_bindings": "p1:0=16777215"}, "not in 1.."),
        ({"tunnel_type": "geneve"}, "a hardware_vtep switch speaks VXLAN only"),
        ({"vtep_bindings": "p1:0=5001, p1:0=5002"}, "p1:0 is bound twice"),
        ({"vtep_switch": ""}, "vtep_switch: missing"),
        ({"peers": "10.99.0.1"}, "peers: not a VTEP controller's setting"),
    ],
)
def test_bad_settings_are_refused_with_one_line(change: dict[str, str], message: str) -> None:
    values = settings(**change)
    if values["discovery"] == "static":
        del values["directory"]
    with pytest.raises(ConfigError, match=message):
        from_mapping({k: v for k, v in values.items() if v != "" or k != "vtep_switch"})


def test_only_a_vtep_controller_has_vtep_settings() -> None:
    with pytest.raises(ConfigError, match="vtep_switch: only a VTEP controller"):
        from_mapping({"underlay_ip": "10.99.0.1", "auth_key": KEY, "vtep_switch": "tor1"})


# ------------------------------------------------------------------ the switch's rows


def test_an_empty_switch_gets_its_logical_switch_binding_macs_and_flood_set() -> None:
    state = SwitchState(tunnel_ips=(TOR,), ports=frozenset({"tor-eth1"}), present=True)
    v = view(
        ep(A, "02:00:00:00:00:01", "hv1", ip="10.0.0.1"),
        ep(A, "02:00:00:00:00:02", "hv2"),
        ep(B, "02:00:00:00:00:01", "hv1", ip="10.0.0.1"),  # tenant B: same MAC, not bound
        ep(A, "02:00:00:00:05:01", "tor1"),  # the switch's own: never a remote MAC
    )
    c = changes(wanted(v, "tor1", BIND), state)
    assert c.switches == {"dove-5001": 5001}
    assert c.bindings == {"tor-eth1": {0: "dove-5001"}}
    assert c.ucast_set == {
        ("dove-5001", "02:00:00:00:00:01"): RemoteMac("10.0.0.1", HV1),
        ("dove-5001", "02:00:00:00:00:02"): RemoteMac("", HV2),
    }
    assert c.mcast_set == {"dove-5001": frozenset({HV1, HV2})}  # not the switch itself
    assert c.locators() == {HV1, HV2}


def test_a_switch_that_holds_what_is_wanted_gets_nothing() -> None:
    v = view(ep(A, "02:00:00:00:00:01", "hv1"))
    state = bound_state(
        ucast_remote={("dove-5001", "02:00:00:00:00:01"): RemoteMac("", HV1)},
        mcast_remote={("dove-5001", UNKNOWN_DST): frozenset({HV1, HV2})},
    )
    assert changes(wanted(v, "tor1", BIND), state).empty()
    # A logical switch replicating at a service node is set to replicate itself.
    serviced = bound_state(replication={"dove-5001": "service_node"})
    assert changes(wanted(view(), "tor1", BIND), serviced).switches == {"dove-5001": 5001}


def test_a_migration_moves_the_locator_to_the_newest_location() -> None:
    state = bound_state(
        ucast_remote={("dove-5001", "02:00:00:00:00:01"): RemoteMac("", HV1)},
        mcast_remote={("dove-5001", UNKNOWN_DST): frozenset({HV1, HV2})},
    )
    # While both rows exist (the old host has not removed its row yet), the newer wins.
    v = view(ep(A, "02:00:00:00:00:01", "hv1", seq=5), ep(A, "02:00:00:00:00:01", "hv2", seq=9))
    c = changes(wanted(v, "tor1", BIND), state)
    assert c.ucast_set == {("dove-5001", "02:00:00:00:00:01"): RemoteMac("", HV2)}
    assert not c.ucast_delete and not c.mcast_set


def test_a_dead_host_leaves_the_flood_set_and_its_macs_are_removed() -> None:
    state = bound_state(
        ucast_remote={("dove-5001", "02:00:00:00:00:02"): RemoteMac("", HV2)},
        mcast_remote={("dove-5001", UNKNOWN_DST): frozenset({HV1, HV2})},
    )
    v = view(ep(A, "02:00:00:00:00:02", "hv2"), hv2_alive=False)
    c = changes(wanted(v, "tor1", BIND), state)
    assert c.ucast_delete == [("dove-5001", "02:00:00:00:00:02")]
    assert c.mcast_set == {"dove-5001": frozenset({HV1})}


def test_other_logical_switches_and_bindings_are_left_alone() -> None:
    state = bound_state(
        ports=frozenset({"tor-eth1", "tor-eth9"}),
        switches={"dove-5001": 5001, "dove-7": 7, "ops": 42},
        bindings={"tor-eth1": {0: "dove-5001", 200: "ops"}, "tor-eth9": {5: "dove-7"}},
        ucast_remote={
            ("ops", "02:00:00:00:99:99"): RemoteMac("", HV1),
            ("dove-7", "02:00:00:00:00:07"): RemoteMac("", HV1),  # no longer bound: ours
        },
        mcast_remote={("dove-7", UNKNOWN_DST): frozenset({HV1})},
    )
    c = changes(wanted(view(), "tor1", BIND), state)
    assert c.bindings == {"tor-eth9": {}}  # dove-7 unbound; the operator's VLAN 200 stays
    assert c.ucast_delete == [("dove-7", "02:00:00:00:00:07")]
    assert c.mcast_delete == ["dove-7"]
    assert c.mcast_set == {"dove-5001": frozenset({HV1, HV2})}


def test_a_bound_port_the_switch_lacks_is_reported_not_written() -> None:
    state = bound_state(ports=frozenset(), bindings={})
    c = changes(wanted(view(), "tor1", BIND), state)
    assert not c.bindings
    assert missing_ports(state, BIND) == ["tor-eth1"]


def test_names_of_our_logical_switches() -> None:
    assert switch_instance("dove-5001") == 5001
    assert switch_instance("dove-") is None
    assert switch_instance("dove-0") is None
    assert switch_instance("ops") is None


# ------------------------------------------------------------------ local MACs


def test_local_macs_become_endpoint_rows_with_a_seq_kept_while_they_stay() -> None:
    core = VtepController("tor1", BIND)
    core.directory_view(view(ep(A, "02:00:00:00:05:01", "hv1", seq=10**18)))  # was on hv1
    core.switch_state(
        bound_state(
            ucast_local={
                ("dove-5001", "02:00:00:00:05:01"): "10.0.0.51",
                ("dove-5001", "02:00:00:00:05:02"): "",
                ("ops", "02:00:00:00:05:03"): "",  # not an instance of ours
            }
        )
    )
    first = core.local_endpoints(wall_clock=1000.0)
    assert [(e.instance, e.mac, e.ips, e.host) for e in first] == [
        (A, "02:00:00:00:05:01", (IPv4Address("10.0.0.51"),), "tor1"),
        (A, "02:00:00:00:05:02", (), "tor1"),
    ]
    assert first[0].seq > 10**18  # above the old location's
    assert core.local_endpoints(wall_clock=2000.0) == first  # unchanged while it stays
    core.switch_state(bound_state(ucast_local={}))
    assert core.local_endpoints(wall_clock=3000.0) == []  # removed MACs are removed


def test_no_changes_before_the_switch_is_seen() -> None:
    core = VtepController("tor1", BIND)
    core.directory_view(view(ep(A, "02:00:00:00:00:01", "hv1")))
    assert core.changes().empty()
    core.switch_state(SwitchState(tunnel_ips=(TOR,), ports=frozenset({"tor-eth1"}), present=True))
    assert not core.changes().empty()
    status = core.status()
    assert status["bindings"] == ["tor-eth1:0=5001"] and status["tunnel_ip"] == str(TOR)


# ------------------------------------------------------------------ the agent's gate


class FakeDirectory:
    """What VtepAgent asks of its directory client."""

    def __init__(self) -> None:
        self.connected = True
        self.settled = False
        self.watching: tuple[frozenset[int], ...] = (frozenset(),)
        self.counts: dict[str, int] = {}

    def poke(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_the_agent_writes_nothing_before_a_view_covers_its_instances(tmp_path: Path) -> None:
    from dove_ryu.adapters.vtep_agent import VtepAgent

    cfg = from_mapping(settings(admin_socket=str(tmp_path / "admin.sock")))
    agent = VtepAgent(cfg)
    try:
        directory = FakeDirectory()
        agent.directory = directory  # type: ignore[assignment]
        agent._on_state(bound_state(ports=frozenset({"tor-eth1", "tor-eth2"})))
        full = view(ep(A, "02:00:00:00:00:01", "hv1"))
        agent._on_view(DirectoryView([]))  # connected, but the conditions not acked yet
        assert agent._changes().empty()
        directory.watching, directory.settled = (frozenset({A, B}),), True
        agent._on_view(full)
        assert ("dove-5001", "02:00:00:00:00:01") in agent._changes().ucast_set
        agent._on_lost()  # the directory went away: the switch keeps what it has
        assert agent._changes().empty()
        assert agent._admin({"cmd": "vtep"})["directory_complete"] is False
    finally:
        agent.close()
