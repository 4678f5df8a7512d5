"""The routing section's pure parts: which VMs it measures, the failover gap, the
per-build ratios and the report with its verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import write_report
from benchmarks.routing_bench import (
    came_back,
    gap_ms,
    parse_stream,
    pick_triple,
    summarize_gateway,
    summarize_paths,
)
from mininet_topos.emulation import VmRecord

pytestmark = pytest.mark.unit


class FakeHv:
    def __init__(self, name: str) -> None:
        self.name = name


def vm(name: str, hv: FakeHv, ip_cidr: str) -> VmRecord:
    ip = ip_cidr.split("/")[0]
    return VmRecord(name, None, hv, 1, 5001, "02:00:00:00:00:01", ip, ip_cidr, f"{name}-p")  # type: ignore[arg-type]


def test_triple_crosses_the_same_two_hosts() -> None:
    hv1, hv2, hv3 = FakeHv("hv1"), FakeHv("hv2"), FakeHv("hv3")
    # The routing helper's layout on three hypervisors: VM i in subnet (i-1) % 2.
    vms = [
        vm("vm1", hv1, "10.0.0.1/24"),
        vm("vm2", hv2, "10.0.1.2/24"),
        vm("vm3", hv3, "10.0.0.3/24"),
        vm("vm4", hv1, "10.0.1.4/24"),
        vm("vm5", hv2, "10.0.0.5/24"),
        vm("vm6", hv3, "10.0.1.6/24"),
    ]
    a, b, c = pick_triple(vms)
    assert a.ip.startswith("10.0.0.") and b.ip.startswith("10.0.0.")
    assert c.ip.startswith("10.0.1.")
    assert b.hypervisor is c.hypervisor and a.hypervisor is not b.hypervisor


def test_no_triple_when_each_subnet_sits_on_one_host() -> None:
    hv1, hv2 = FakeHv("hv1"), FakeHv("hv2")
    vms = [vm("vm1", hv1, "10.0.0.1/24"), vm("vm2", hv2, "10.0.1.2/24")]
    with pytest.raises(ValueError):
        pick_triple(vms)


def test_gap_is_the_longest_silence_from_the_last_reply_before_the_stop() -> None:
    replies = [10.000, 10.005, 10.010, 10.300, 10.305]
    assert gap_ms(replies, 10.012) == pytest.approx(290.0)
    assert gap_ms(replies[:3], 10.012) is None  # never came back


def test_the_stream_comes_back_after_a_silence_past_the_stop() -> None:
    assert not came_back([1.000, 1.005, 1.010], 1.008)
    assert not came_back([1.000, 1.200, 1.205], 1.300)  # the silence was before the stop
    assert came_back([1.000, 1.005, 1.500], 1.003)


def test_parse_stream() -> None:
    out = (
        "PING 203.0.113.254 (203.0.113.254) 56(84) bytes of data.\n"
        "[1700000000.100000] 64 bytes from 203.0.113.254: icmp_seq=1 ttl=62 time=0.5 ms\n"
        "[1700000000.105000] 64 bytes from 203.0.113.254: icmp_seq=2 ttl=62 time=0.5 ms\n"
        "--- 203.0.113.254 ping statistics ---\n"
        "40 packets transmitted, 2 received, 95% packet loss, time 200ms\n"
    )
    replies, sent, received = parse_stream(out)
    assert replies == [1700000000.1, 1700000000.105]
    assert (sent, received) == (40, 2)


def path(system: str, same: float, routed: float, first: float | None) -> dict[str, Any]:
    return {
        "system": system,
        "first_routed_ms": first,
        "first_routed_lost": first is None,
        "first_same_ms": 1.0,
        "same_rtt_ms": 0.5,
        "routed_rtt_ms": 0.55,
        "same_mbits": same,
        "routed_mbits": routed,
        "build_s": 10.0,
        "packet_ins_during_routed_iperf": 0,
    }


# Recorded shapes of a quick run (numbers made up around the measured order of magnitude).
SAMPLES = [
    path("dove", 1000.0, 950.0, 3.0),
    path("ovn", 900.0, 880.0, 1.5),
    path("dove", 1100.0, 1000.0, None),
    path("ovn", 950.0, 900.0, 1.6),
    {"system": "dove", "error": "TimeoutError: agents"},
]


def test_ratios_are_per_build_then_summarised() -> None:
    summ = summarize_paths(SAMPLES, ("dove", "ovn"))
    dove = summ["dove"]
    assert dove["routed_over_same_mbits"]["n"] == 2
    assert dove["routed_over_same_mbits"]["min"] == pytest.approx(1000 / 1100)
    assert dove["routed_over_same_mbits"]["max"] == pytest.approx(0.95)
    assert dove["first_routed_lost"] == 1 and dove["errors"] == 1
    assert dove["packet_ins_during_routed_iperf"] == [0, 0]
    assert summ["dove_over_ovn"]["routed_mbits"] == pytest.approx(975 / 890)


def machine() -> dict[str, Any]:
    keys = ("date", "cpus", "kernel", "ovs", "ovn", "iperf3", "python", "datapath", "vm_mtu")
    return {**{k: "x" for k in keys}, "offload": "o"}


def test_report_has_the_section_and_the_verdict(tmp_path: Path) -> None:
    gateway = [
        {"system": "dove", "mbits": 700.0, "gap_ms": 850.0},
        {"system": "dove", "mbits": 720.0, "gap_ms": None},
        {"system": "dove", "error": "RuntimeError: no gateway"},
        {"system": "ovn", "mbits": 500.0, "gap_ms": 2666.0},
        {"system": "ovn", "error": "not built"},
    ]
    results = {
        "machine": machine(),
        "quick": True,
        "reps": 2,
        "routing": {
            "paths": SAMPLES,
            "summary": summarize_paths(SAMPLES, ("dove", "ovn")),
            "gateway_samples": gateway,
            "gateway": summarize_gateway(gateway),
        },
    }
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Routing and the gateway" in text
    assert "**met**: routed throughput / same-subnet: 0.93" in text
    assert "| failover gap ms | dove | 850 (850-850) | 1 recovered of 3, 1 failed |" in text
    assert "| failover gap ms | ovn | 2666 (2666-2666) | 1 recovered of 2, 1 failed |" in text
    assert "dove-ryu's failover gap / OVN's: 0.32x." in text
    assert "| SNAT Mbit/s | dove | 710 (700-720) | 2 |" in text
    assert "- gateway ovn: `not built`" in text
    assert "- paths dove: `TimeoutError: agents`" in text
    assert "first routed ping 1.94x" in text


def test_report_says_not_met_below_the_target(tmp_path: Path) -> None:
    samples = [path("dove", 1000.0, 800.0, 3.0)]
    results = {
        "machine": machine(),
        "quick": True,
        "reps": 1,
        "routing": {"paths": samples, "summary": summarize_paths(samples, ("dove",))},
    }
    write_report(results, tmp_path)
    assert (
        "**NOT met**: routed throughput / same-subnet: 0.800"
        in (tmp_path / "report.md").read_text()
    )
