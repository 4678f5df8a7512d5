"""The benchmark's statistics and report: medians, spreads, ratios and verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.report import write_report
from benchmarks.stats import ratio, summary

pytestmark = pytest.mark.unit


def test_summary_and_ratio() -> None:
    s = summary([3.0, 1.0, None, 2.0, 10.0])
    assert (s["n"], s["median"], s["min"], s["max"]) == (4, 2.5, 1.0, 10.0)
    assert summary([])["median"] is None
    assert ratio(summary([2.0]), summary([4.0])) == 0.5
    assert ratio(summary([]), summary([4.0])) is None


def test_report_states_each_target_met_or_not(tmp_path: Path) -> None:
    pair = {"first_rtt_ms": 4.0, "first_lost": False, "steady_rtt_ms": 0.5, "iperf_mbits": 990.0}
    results = {
        "machine": {
            "date": "today",
            "cpus": 2,
            "kernel": "k",
            "ovs": "ovs",
            "ovn": "ovn",
            "iperf3": "i",
            "python": "3.11",
            "datapath": "d",
            "vm_mtu": "m",
            "offload": "o",
        },
        "quick": True,
        "reps": 1,
        "pairs": {
            "samples": [
                {"system": "dove", **pair, "packet_ins_during_iperf": 0, "rep": 0},
                {"system": "normal", **pair, "iperf_mbits": 1000.0, "rep": 0},
            ],
            "summary": {
                "dove": {
                    "first_rtt_ms": summary([4.0]),
                    "steady_rtt_ms": summary([0.5]),
                    "iperf_mbits": summary([990.0]),
                    "build_s": summary([]),
                    "first_lost": 0,
                    "errors": 0,
                    "packet_ins_during_iperf": [0],
                },
                "normal": {
                    "first_rtt_ms": summary([0.9]),
                    "steady_rtt_ms": summary([0.5]),
                    "iperf_mbits": summary([1000.0]),
                    "build_s": summary([]),
                    "first_lost": 0,
                    "errors": 0,
                },
            },
        },
    }
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "**met**: throughput 0.990 of NORMAL's" in text
    assert "**NOT met**: first-packet RTT 4.00" in text
    assert (tmp_path / "throughput.png").exists()
