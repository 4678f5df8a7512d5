"""The soak's pure parts: the fault schedule from a seed, the verdicts (stale state,
streams, pings, RSS, foreign frames) and the report."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from benchmarks.soak_check import (
    NodeFact,
    Stream,
    VmFact,
    foreign_frames,
    link_local,
    marker,
    pcap_frames,
    ping_outcome,
    rss_leak,
    stale_state,
    stream_problems,
)
from benchmarks.soak_plan import Inventory, Kind, counts, final_placement, plan
from benchmarks.soak_report import table, verdict

pytestmark = pytest.mark.unit

INV = Inventory(
    hypervisors={"s1hv1": 1, "s1hv2": 1, "s2hv1": 2, "s2hv2": 2},
    vms={"a": "s1hv1", "b": "s1hv2", "c": "s2hv1"},
    spares=("x1", "x2"),
    links=("s1hv1:s1hv1-eth0", "s2hv1:s2hv1-eth0"),
    proxy_sites=(1, 2),
)


# ----------------------------------------------------------------------- schedule


def test_same_seed_same_faults_and_another_seed_others() -> None:
    first, again = plan(INV, 7, 600), plan(INV, 7, 600)
    assert first == again
    assert plan(INV, 8, 600) != first
    assert {f.kind for f in first} == set(Kind)  # ten minutes hit every kind


def test_faults_are_undone_in_time_and_never_overlap_on_a_target() -> None:
    faults = plan(INV, 3, 300, mean_gap=4)
    assert all(0 < f.at and f.ends < 300 for f in faults)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    busy: dict[str, float] = {}
    for f in faults:
        assert busy.get(f.target, 0.0) <= f.at, f.describe()
        busy[f.target] = f.ends


def test_migrations_follow_the_vm_and_spares_alternate() -> None:
    faults = plan(INV, 11, 900, mean_gap=3)
    where = dict(INV.vms)
    for f in faults:
        if f.kind is Kind.MIGRATE:
            assert f.to != where[f.target] and f.to in INV.hypervisors
            where[f.target] = f.to
    assert where == final_placement(INV, faults)
    for spare in INV.spares:
        kinds = [f.kind for f in faults if f.target == spare]
        assert kinds[::2] == [Kind.VM_START] * len(kinds[::2])
        assert kinds[1::2] == [Kind.VM_STOP] * len(kinds[1::2])
    assert sum(counts(faults).values()) == len(faults)


def test_netem_faults_name_a_link_and_their_parameters() -> None:
    for f in plan(INV, 5, 900, mean_gap=3):
        if f.kind in (Kind.NETEM_LOSS, Kind.NETEM_DELAY, Kind.NETEM_REORDER):
            assert f.target in INV.links and f.netem and f.hold >= 5 or f.ends >= 899


# -------------------------------------------------------------------- stale state

NODES = [
    NodeFact("s1hv1", 1, "host", "10.99.0.1"),
    NodeFact("s1hv2", 1, "host", "10.99.0.2"),
    NodeFact("s2hv1", 2, "host", "10.99.0.1"),
    NodeFact("s1px1", 1, "proxy", "10.99.0.201", "172.31.0.11"),
    NodeFact("s1px2", 1, "proxy", "10.99.0.202", "172.31.0.12"),
    NodeFact("s2px1", 2, "proxy", "10.99.0.201", "172.31.0.21"),
]
A = VmFact("t1s1vm1", 5001, "02:00:00:00:01:01", "10.0.0.11", "s1hv1")
B = VmFact("t1s1vm2", 5001, "02:00:00:00:01:02", "10.0.0.12", "s1hv2")
C = VmFact("t1s2vm1", 5001, "02:00:00:00:02:01", "10.0.0.21", "s2hv1")


def _ep(vm: VmFact, host: str) -> dict[str, Any]:
    return {"mac": vm.mac, "ips": [vm.ip], "host": host}


def _consistent() -> dict[str, Any]:
    """What the agents say when all is well: A on s1hv1, B on s1hv2, C on s2hv1."""

    def host(local: VmFact, members: list[str], learned: list[dict[str, Any]]) -> Any:
        return {"instances": {"5001": {"local": [{"mac": local.mac}], "members": members,
                                       "learned": learned}}}  # fmt: skip

    def proxy(active: bool, members: list[str], remote: list[str], learned: list[Any]) -> Any:
        info = {"local": [], "members": members, "remote_proxies": remote, "learned": learned}
        return {"active": active, "instances": {"5001": info}}

    return {
        "s1hv1": host(
            A, ["10.99.0.2", "10.99.0.201"], [_ep(B, "10.99.0.2"), _ep(C, "10.99.0.201")]
        ),
        "s1hv2": host(B, ["10.99.0.1", "10.99.0.201"], [_ep(A, "10.99.0.1")]),
        "s2hv1": host(C, ["10.99.0.201"], [_ep(A, "10.99.0.201")]),
        "s1px1": proxy(
            True,
            ["10.99.0.1", "10.99.0.2"],
            ["172.31.0.21"],
            [_ep(A, "10.99.0.1"), _ep(C, "172.31.0.21")],
        ),  # fmt: skip
        "s1px2": proxy(False, ["10.99.0.1", "10.99.0.2"], ["172.31.0.21"], []),
        "s2px1": proxy(True, ["10.99.0.1"], ["172.31.0.11"], [_ep(B, "172.31.0.11")]),
    }


def test_state_that_matches_the_placement_is_clean() -> None:
    assert stale_state(NODES, [A, B, C], _consistent()) == []


def test_a_vms_link_local_ipv6_address_is_one_of_its_own() -> None:
    assert link_local("02:00:00:00:01:02") == "fe80::ff:fe00:102"
    state = _consistent()
    for row in state["s1hv1"]["instances"]["5001"]["learned"]:
        row["ips"].append(link_local(row["mac"]))
    assert stale_state(NODES, [A, B, C], state) == []
    state["s1hv1"]["instances"]["5001"]["learned"][0]["ips"].append("fe80::1")
    assert len(stale_state(NODES, [A, B, C], state)) == 1


def test_a_learned_endpoint_left_at_the_old_host_is_stale() -> None:
    moved = VmFact(B.name, B.instance, B.mac, B.ip, "s1hv1")  # B migrated to s1hv1
    problems = stale_state(NODES, [A, moved, C], _consistent())
    assert any(p.startswith("s1hv1: instance 5001: learned 02:00:00:00:01:02 at 10.99.0.2")
               for p in problems)  # fmt: skip
    assert any("s1hv2: instance 5001: local 02:00:00:00:01:02 not here" in p for p in problems)
    assert "s1hv1: instance 5001: 02:00:00:00:01:02 plugged here, not local" in problems


def test_endpoints_and_members_of_a_stopped_vm_are_stale() -> None:
    problems = stale_state(NODES, [A, B], _consistent())  # C stopped: site 2 serves nothing
    assert (
        "s1hv1: instance 5001: learned 02:00:00:00:02:01 at 10.99.0.201, but no such VM runs"
        in problems
    )
    assert "s1hv1: instance 5001: member 10.99.0.201 listed, serves nothing" in problems
    assert "s1px1: instance 5001: remote proxy 172.31.0.21 listed, serves nothing" in problems


def test_a_remote_endpoint_must_follow_the_failover_and_a_missing_member_is_reported() -> None:
    state = _consistent()
    state["s1px1"]["active"], state["s1px2"]["active"] = False, True
    problems = stale_state(NODES, [A, B, C], state)
    assert any(p.startswith("s1hv1: instance 5001: learned 02:00:00:00:02:01 at 10.99.0.201, but")
               for p in problems)  # fmt: skip
    assert "s1hv1: instance 5001: member 10.99.0.202 missing" in problems
    state["s1px2"]["active"] = False
    assert "site 1: 0 active proxies (none)" in stale_state(NODES, [A, B, C], state)
    del state["s2hv1"]
    assert "s2hv1: no status (agent not answering)" in stale_state(NODES, [A, B, C], state)


# --------------------------------------------------------- streams, pings, RSS, frames


def test_a_stream_is_broken_by_an_error_a_stall_or_missing_bytes() -> None:
    good = Stream("s", sent=300, received=300, finished=True,
                  progress=[(100.0 + t, 10 * t) for t in range(1, 31)])  # fmt: skip
    assert stream_problems(good, 100.0, 131.0) == []
    stalled = Stream("s", 300, 300, [(101.0, 10), (130.0, 300)], finished=True)
    assert stream_problems(stalled, 100.0, 131.0) == ["s: stalled 29.0s"]
    reset = Stream("s", 0, 10, [(101.0, 10)], ["sender error ConnectionResetError"])
    assert stream_problems(reset, 100.0, 102.0)[0] == "s: sender error ConnectionResetError"
    short = Stream("s", 300, 200, [(101.0, 200)], finished=True)
    assert stream_problems(short, 100.0, 102.0) == ["s: sent 300 bytes, received 200"]


def test_ping_outcome_counts_and_finds_the_longest_silence() -> None:
    log = "\n".join(
        f"[{t:.6f}] 64 bytes from 10.0.0.12: icmp_seq={n} ttl=64 time=0.5 ms"
        for n, t in enumerate([10.5, 11.0, 11.5, 15.0, 15.5], start=1)
    )
    log += "\n--- stats ---\n12 packets transmitted, 5 received, 58% packet loss\n"
    out = ping_outcome(log, 10.0, 16.0)
    assert (out.sent, out.received, out.lost, out.longest_gap_s) == (12, 5, 7, 3.5)


def test_rss_leak_judges_growth_after_the_warm_up_only() -> None:
    flat = [(t, 60.0 + (40.0 if t < 30 else 0.01 * t)) for t in range(0, 300, 5)]
    assert rss_leak(flat, 0.0) is None
    growing = [(float(t), 60.0 + 0.2 * t) for t in range(0, 300, 5)]
    assert "after warm-up" in str(rss_leak(growing, 0.0))
    assert rss_leak(growing[:6], 0.0) is None  # died young: nothing to judge


def _pcap(frames: list[bytes]) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 200, 1)
    return head + b"".join(struct.pack("<IIII", 1, 0, len(f), len(f)) + f for f in frames)


def test_a_frame_with_another_tenants_marker_is_foreign() -> None:
    own = b"\x00" * 42 + marker(1, "ping") * 3
    other = b"\x00" * 42 + marker(2, "s7100")[5:] + marker(2, "s7100") * 2  # cut mid-marker
    plain = b"\x00" * 60
    frames = pcap_frames(_pcap([own, other, plain]))
    assert frames == [own, other, plain]
    assert foreign_frames(frames, 1) == [other]
    assert foreign_frames(frames, 2) == [own]
    assert len(marker(3, "a-very-long-label")) == 16


# ---------------------------------------------------------------------------- report


def _summary(**lost: int) -> dict[str, Any]:
    zero = dict.fromkeys(
        ("pings_lost", "ping_pairs_broken", "spare_pings_lost", "streams_broken",
         "cross_tenant_frames", "agents_crashed", "agents_leaking", "stale_entries"), 0
    )  # fmt: skip
    return {
        "duration_s": 300.0, "settle_s": 30.0, "seed": 7, "date": "2025-01-01",
        "commit": "abc1234", "topology": "2 sites",
        "faults": counts(plan(INV, 7, 300)),
        "load": {"streams": 6, "stream_bytes": 1234567, "ping_pairs": 12, "pings_sent": 7200,
                 "spare_pings_sent": 100},
        "lost": {**zero, "longest_ping_gap_s": 1.5, "longest_stall_s": 2.0, **lost},
        "rss": {"s1hv1": {"processes": 3, "start_mib": 61.25, "end_mib": 63.5},
                "s1px2": {"processes": 1, "start_mib": None, "end_mib": 60.0}},
    }  # fmt: skip


def test_the_report_lists_faults_load_losses_and_rss() -> None:
    summary = _summary(pings_lost=36)
    text = table(summary)
    assert f"| **total** | **{sum(summary['faults'].values())}** |" in text
    assert "| bytes carried by the streams | 1,234,567 |" in text
    assert "| pings lost (of the pairs) | 36 (0.50%) |" in text
    assert "| s1hv1 | 3 | 61.2 | 63.5 |" in text and "| s1px2 | 1 | - | 60.0 |" in text
    assert "Link faults: " in text  # no relay counts: how the links were impaired
    summary["relays"] = {
        "netem_reorder": {
            "faults": 2, "offered": 900, "forwarded": 900, "dropped": 0, "delayed": 900,
            "reordered": 120,
        }
    }  # fmt: skip
    assert "| netem_reorder | 2 | 900 | 0 | 900 | 120 |" in table(summary)
    assert verdict(summary) == []  # lost pings are reported, not a failure


def test_the_verdict_names_every_failure() -> None:
    failed = verdict(_summary(streams_broken=2, stale_entries=5, cross_tenant_frames=1))
    assert failed == [
        "1 frames delivered across tenants",
        "2 TCP streams broken (reset, stalled, corrupted or short)",
        "5 stale or missing state after the settle time",
    ]
