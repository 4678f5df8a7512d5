"""dovectl's pure parts: the deployment picture from canned agent status, input
checks, and that every read command takes --json."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.ctl import dovectl
from dove_ryu.ctl import graph as ctl_graph
from dove_ryu.ctl.ports import marks

pytestmark = pytest.mark.unit


def _host(name: str, ip: str, members: list[str], proxies: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": name,
        "role": "host",
        "underlay_ip": ip,
        "connected": True,
        "proxies": proxies,
        "instances": {
            "5001": {
                "local": [{"port": "p1", "mac": "02:00:00:00:01:01", "ips": [], "seq": 1}],
                "members": members,
                "learned": [],
            }
        },
    }


def _proxy(name: str, ip: str, wan: str, site: str, active: bool, remote: list[str]) -> dict:
    return {
        "host": name,
        "role": "proxy",
        "site": site,
        "active": active,
        "underlay_ip": ip,
        "wan_ip": wan,
        "connected": True,
        "partners": {},
        "remote_proxies": {},
        "instances": {
            "5001": {"local": [], "members": ["10.99.0.1"], "remote_proxies": remote, "learned": []}
        },
    }


SITE = {"10.99.0.201": {"site": "s1", "active": True}}
STATUSES = [
    _host("s1hv1", "10.99.0.1", ["10.99.0.2", "10.99.0.201"], SITE),
    _host("s1hv2", "10.99.0.2", ["10.99.0.1"], SITE),
    _proxy("s1px1", "10.99.0.201", "172.31.0.11", "s1", True, ["172.31.0.21"]),
    # Site 2 reuses the same underlay range: its host must not be joined to site 1's.
    _host("s2hv1", "10.99.0.1", ["10.99.0.201"], {"10.99.0.201": {"site": "s2", "active": True}}),
    _proxy("s2px1", "10.99.0.201", "172.31.0.21", "s2", True, ["172.31.0.11"]),
]


def test_the_deployment_keeps_sites_apart_even_with_the_same_addresses() -> None:
    view = ctl_graph.deployment(STATUSES)
    sites = {n["name"]: n["site"] for n in view["nodes"]}
    assert sites == {"s1hv1": "s1", "s1hv2": "s1", "s1px1": "s1", "s2hv1": "s2", "s2px1": "s2"}
    edges = {(e["a"], e["b"], e["kind"]) for e in view["edges"]}
    assert ("s1hv1", "s1hv2", "site") in edges and ("s1hv1", "s1px1", "site") in edges
    assert ("s2hv1", "s2px1", "site") in edges
    assert ("s1px1", "s2px1", "wan") in edges
    assert not any({e[0], e[1]} == {"s1hv1", "s2px1"} for e in edges)


def test_dot_has_a_cluster_per_site_and_counts_per_instance(tmp_path: Path) -> None:
    dot = ctl_graph.to_dot(STATUSES)
    assert dot.count("subgraph cluster_") == 2
    assert 'label="site s1"' in dot and "(proxy, active)" in dot
    assert "instance 5001: 1 local, 0 learned" in dot
    if shutil.which("dot"):
        out = tmp_path / "d.svg"
        ctl_graph.render(dot, str(out))
        assert out.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ctl_graph.GraphError, match="image format"):
        ctl_graph.render(dot, str(tmp_path / "d.gif"))


def test_port_marks_and_mac_checks() -> None:
    assert marks(5001, "02-00-00-00-00-0A", []) == [
        'external_ids:dove-instance="5001"',
        'external_ids:attached-mac="02:00:00:00:00:0a"',
    ]
    for bad in ("01:00:5e:00:00:01", "zz", "02:00:00:00:00"):
        with pytest.raises(ValueError):
            marks(5001, bad, [])
    with pytest.raises(ValueError):
        marks(0, "02:00:00:00:00:01", [])


def test_every_read_command_takes_json() -> None:
    parser = dovectl.build_parser()
    for cmd in ("status", "instances", "endpoints", "members", "proxies", "counters", "graph"):
        assert parser.parse_args([cmd, "--json"]).json is True
        assert parser.parse_args(["--json", cmd]).json is True


def test_an_unreachable_agent_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert dovectl.main(["--admin-socket", "/nonexistent/admin.sock", "instances"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dovectl instances: cannot reach the agent at /nonexistent/admin.sock")
