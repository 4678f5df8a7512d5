"""The demo as an operator runs it (``scripts/demo.sh`` runs this module's command):
with ``--directory --push 1`` it builds the directory, puts tenant 1's instance in push
resolution, reaches every VM of each tenant and nothing across, tears down cleanly,
and reports the mode each instance used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_with_a_directory_reports_each_instances_resolution() -> None:
    argv = [sys.executable, "-m", "mininet_topos.demo", "--directory", "--push", "1", "--json"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    modes = {i: row["mode"] for i, row in report["resolution"].items()}
    assert modes == {"5001": "push", "5002": "learn"}
    assert report["leftovers"] == []
    assert all(p["ok"] for p in report["pings"])
