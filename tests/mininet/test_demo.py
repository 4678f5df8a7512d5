"""The demo as an operator runs it (``scripts/demo.sh`` runs this module's command):
with ``--directory --push 1 --lookup 2`` it builds the directory, puts tenant 1's
instance in push resolution and tenant 2's in lookup, reaches every VM of each tenant and
nothing across, tears down cleanly, and reports the mode each instance used; with
``--sites 2 --directory`` the same across sites, through proxies that find their site's
hosts in the directory; with ``--routing``, VMs take their addresses by DHCP, reach the
other subnet of their tenant's router, fetch a page from the internet host through the
gateway (seen as the tenant's own external address), and the internet host reaches each
tenant by its floating IP."""

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


def test_the_demo_with_routing_dhcp_a_gateway_and_the_internet() -> None:
    report = demo("--routing")
    routing = report["routing"]
    assert report["leftovers"] == []
    subnets = {v["ip"].rsplit(".", 1)[0] for v in report["layout"]}
    assert subnets == {"10.0.0", "10.0.1"}  # two subnets, reached from each other
    assert report["pings"] and all(p["ok"] for p in report["pings"])
    assert all(p["received_by"] == [p["dst"]] for p in report["pings"])
    assert all(r["ok"] for r in routing["dhcp"]) and len(routing["dhcp"]) == len(report["layout"])
    assert all(r["ok"] and r["seen_as"] == r["expected"] for r in routing["internet"])
    seen = {r["seen_as"] for r in routing["internet"]}
    assert {"203.0.113.11", "203.0.113.12", "203.0.113.101", "203.0.113.102"} == seen
    assert [(r["vm"], r["received_by"]) for r in routing["floating_ips"]] == [
        ("t1vm1", ["t1vm1"]),
        ("t2vm1", ["t2vm1"]),
    ]


def demo(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "mininet_topos.demo", *args, "--json"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report
