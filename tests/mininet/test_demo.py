"""The demo as an operator runs it (``scripts/demo.sh`` runs this module's command):
with ``--directory --push 1 --lookup 2`` it builds the directory, puts tenant 1's
instance in push resolution and tenant 2's in lookup, reaches every VM of each tenant and
nothing across, tears down cleanly, and reports the mode each instance used; with
``--sites 2 --directory`` the same across sites, through proxies that find their site's
hosts in the directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_with_a_directory_reports_each_instances_resolution() -> None:
    report = demo("--directory", "--tenants", "3", "--push", "1", "--lookup", "2")
    modes = {i: row["mode"] for i, row in report["resolution"].items()}
    assert modes == {"5001": "push", "5002": "lookup", "5003": "learn"}
    assert report["leftovers"] == []
    assert all(p["ok"] for p in report["pings"])


def test_the_demo_across_two_sites_with_their_directories() -> None:
    report = demo("--sites", "2", "--directory")
    assert report["leftovers"] == []
    assert report["pings"] and all(p["ok"] for p in report["pings"])
    assert {row["mode"] for row in report["resolution"].values()} == {"learn"}


def demo(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "mininet_topos.demo", *args, "--json"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report
