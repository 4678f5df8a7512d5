"""The agent restart section's pure parts: TCP stalls from iperf3's intervals, the summary
per system and way with its ratios, and the report section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.agent_restart_bench import summarize, tcp_stalls
from benchmarks.report import write_report

pytestmark = pytest.mark.unit


def stream(system: str, way: str, gap: float, back: float, lost: int = 0, **kw: Any) -> dict:
    return {
        "system": system,
        "kind": "stream",
        "way": way,
        "gap_ms": gap,
        "lost": lost,
        "connected_ms": back / 2,
        "in_control_ms": back,
        "first_ms": 1.5,
        "first_lost": False,
        **kw,
    }


SAMPLES = [
    stream("dove", "sigterm", 10.0, 600.0),
    stream("dove", "sigterm", 12.0, 800.0),
    stream("dove", "sigkill", 11.0, 500.0, first_ms=None, first_lost=True),
    {"system": "dove", "kind": "stream", "way": "sigkill", "error": "TimeoutError: x"},
    {"system": "dove", "kind": "first", "way": None, "first_ms": 3.0, "first_lost": False},
    {
        "system": "dove",
        "kind": "tcp",
        "way": "sigterm",
        "mbits": 99.0,
        "stall_ms": 0.0,
        "retransmits": 7,
    },
    stream("ovn", "sigterm", 22.0, 1400.0, lost=2),
    stream("ovn", "sigkill", 44.0, 1000.0, lost=4),
    {"system": "ovn", "kind": "first", "way": None, "first_ms": 2.0, "first_lost": False},
]


def test_a_stall_is_the_longest_run_of_intervals_far_below_the_median() -> None:
    full = 1_000_000
    intervals = [(0.1, full)] * 5 + [(0.1, 0), (0.1, 50_000), (0.1, full), (0.1, 0)]
    got = tcp_stalls(intervals)
    assert got["stall_ms"] == pytest.approx(200.0)
    assert got["bytes"] == 6 * full + 50_000
    assert tcp_stalls([(0.1, full)] * 3)["stall_ms"] == 0.0
    assert tcp_stalls([]) == {"bytes": 0, "stall_ms": None}


def test_summary_per_system_and_way_with_ratios() -> None:
    summ = summarize(SAMPLES)
    assert summ["dove/sigterm"]["gap_ms"]["median"] == pytest.approx(11.0)
    assert summ["dove/sigterm"]["in_control_ms"]["median"] == pytest.approx(700.0)
    assert summ["dove/sigkill"]["runs"] == 2 and summ["dove/sigkill"]["failed"] == 1
    assert summ["dove/sigkill"]["first_lost"] == 1
    assert summ["dove/sigterm"]["tcp"]["mbits"]["median"] == pytest.approx(99.0)
    assert summ["ovn/sigterm"]["tcp"]["runs"] == 0
    assert summ["dove/first_before"]["first_ms"]["median"] == pytest.approx(3.0)
    r = summ["ratios"]
    assert r["dove_over_ovn/sigterm/gap_ms"] == pytest.approx(0.5)
    assert r["dove_over_ovn/sigkill/in_control_ms"] == pytest.approx(0.5)


def test_a_build_that_failed_is_counted_not_summarised() -> None:
    summ = summarize([{"system": "ovn", "error": "build: RuntimeError"}, *SAMPLES[:3]])
    assert summ["ovn/sigterm"]["runs"] == 0
    assert summ["ratios"]["dove_over_ovn/sigterm/gap_ms"] is None


def test_report_has_the_section(tmp_path: Path) -> None:
    keys = ("date", "cpus", "kernel", "ovs", "ovn", "iperf3", "python", "datapath", "vm_mtu")
    results = {
        "machine": {**{k: "x" for k in keys}, "offload": "o"},
        "quick": True,
        "reps": 2,
        "agentrestart": {"samples": SAMPLES, "summary": summarize(SAMPLES)},
    }
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Agent restart" in text
    assert (
        "| dove | sigkill | 0 (0-0) | 11 (11-11) | 250 (250-250) | 500 (500-500) | 2, 1 failed |"
        in text
    )
    assert (
        "gap 0.50x (sigterm), 0.25x (sigkill); in control 0.50x (sigterm), 0.50x (sigkill)." in text
    )
    assert "| dove | 3.0 (3.0-3.0) | 1.5 (1.5-1.5) | n/a | 1 |" in text
    assert "| dove | sigterm | 99.0 (99.0-99.0) | 0 (0-0) | 7 (7-7) | 1 |" in text
