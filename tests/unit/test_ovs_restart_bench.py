"""The ovs-vswitchd restart section's pure parts: the summary per system and variant,
its ratios, and the report section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.ovs_restart_bench import steps_ms, summarize
from benchmarks.report import write_report
from mininet_topos.ovs_restart import Restart

pytestmark = pytest.mark.unit


def sample(system: str, variant: str, gap: float | None, lost: int = 10) -> dict[str, Any]:
    return {"system": system, "variant": variant, "side": "sender", "gap_ms": gap, "lost": lost}


SAMPLES = [
    sample("dove", "restore", 300.0),
    sample("dove", "restore", 320.0),
    sample("dove", "plain", 200.0),
    sample("dove", "plain", None),  # never came back
    {"system": "dove", "variant": "plain", "side": "receiver", "error": "RuntimeError: x"},
    sample("ovn", "restore", 600.0),
    sample("ovn", "plain", 1000.0),
]


def test_summary_per_system_and_variant_with_ratios() -> None:
    summ = summarize(SAMPLES)
    assert summ["dove/restore"]["gap_ms"]["median"] == pytest.approx(310.0)
    assert summ["dove/plain"]["recovered"] == 1
    assert summ["dove/plain"]["runs"] == 3
    assert summ["dove/plain"]["failed"] == 1
    assert summ["ratios"]["dove_over_ovn/restore"] == pytest.approx(310.0 / 600.0)
    assert summ["ratios"]["dove_over_ovn/plain"] == pytest.approx(0.2)
    assert summ["ratios"]["ovn/restore_over_plain"] == pytest.approx(0.6)


def test_a_build_that_failed_is_counted_not_summarised() -> None:
    summ = summarize([{"system": "ovn", "error": "build: RuntimeError"}, *SAMPLES[:2]])
    assert summ["ovn/restore"]["runs"] == 0
    assert summ["ratios"]["dove_over_ovn/restore"] is None


def test_steps_are_counted_from_the_stop() -> None:
    done = Restart("hv1", True, stopped=10.0, gone=10.05, started=10.2, released=10.3)
    assert steps_ms(done) == {"gone": 50.0, "started": 200.0, "released": 300.0}


def test_report_has_the_section(tmp_path: Path) -> None:
    keys = ("date", "cpus", "kernel", "ovs", "ovn", "iperf3", "python", "datapath", "vm_mtu")
    results = {
        "machine": {**{k: "x" for k in keys}, "offload": "o"},
        "quick": True,
        "reps": 2,
        "ovsrestart": {"samples": SAMPLES, "summary": summarize(SAMPLES)},
    }
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## ovs-vswitchd restart" in text
    assert "| dove | plain | 200 (200-200) | 10 | 1 recovered of 3, 1 failed |" in text
    assert "dove-ryu's gap / OVN's: 0.52x with flow-restore-wait, 0.20x without." in text
