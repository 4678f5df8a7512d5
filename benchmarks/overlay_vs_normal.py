"""dove-ryu's pipeline against the same hypervisors with bridges in NORMAL mode.

    sudo .venv/bin/python -m benchmarks.overlay_vs_normal [--reps 5] [--seconds 5] [--json]

Each repetition builds two hypervisors with one VM each, first with dove-ryu
agents, then with ``actions=NORMAL`` bridges and a fixed VXLAN mesh (the order
alternates between repetitions so drift does not favour one side).  Measured:
the first ping between VMs that never talked (dove-ryu only: NORMAL floods),
steady-state RTT, iperf3 TCP throughput, and packet-ins during the transfer.
Reported as medians with min-max spread and dove/NORMAL ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from typing import Any

from mininet.log import setLogLevel

from mininet_topos.agents import admin, build_dove_net
from mininet_topos.dove_topo import build_net
from mininet_topos.traffic import iperf3, mbits

RTT = re.compile(r"time=([\d.]+) ms")


def _rtts(output: str) -> list[float]:
    return [float(x) for x in RTT.findall(output)]


def one_run(system: str, seconds: int, tunnel_type: str = "vxlan") -> dict[str, Any]:
    if system == "dove":
        dnet, _ = build_dove_net(
            hypervisors=2, tenants=1, vms_per_tenant=2, tunnel_type=tunnel_type
        )
    else:
        dnet = build_net(hypervisors=2, tenants=1, vms_per_tenant=2, mode="normal")
    try:
        a, b = dnet.vms[0], dnet.vms[1]
        assert a.hypervisor is not b.hypervisor
        first = _rtts(a.host.cmd(f"ping -c1 -W2 {b.ip}"))
        steady = _rtts(a.host.cmd(f"ping -c20 -i0.05 -W2 {b.ip}"))
        before = (
            [admin(hv)["counters"].get("packet_in", 0) for hv in dnet.hypervisors]
            if system == "dove"
            else []
        )
        throughput = mbits(iperf3(a, b, seconds))
        after = (
            [admin(hv)["counters"].get("packet_in", 0) for hv in dnet.hypervisors]
            if system == "dove"
            else []
        )
        return {
            "system": system,
            "first_rtt_ms": first[0] if first else None,
            "steady_rtt_ms": statistics.median(steady) if steady else None,
            "iperf_mbits": throughput,
            "packet_ins_during_iperf": sum(after) - sum(before) if system == "dove" else None,
        }
    finally:
        dnet.stop()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    setLogLevel("warning")
    samples: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = ("dove", "normal") if rep % 2 == 0 else ("normal", "dove")
        for system in order:
            sample = one_run(system, args.seconds)
            samples.append(sample)
            print(f"rep {rep + 1}/{args.reps} {system:6} {sample}", file=sys.stderr)
    result: dict[str, Any] = {"samples": samples, "summary": {}}
    for system in ("dove", "normal"):
        rows = [s for s in samples if s["system"] == system]
        result["summary"][system] = {
            key: summary([r[key] for r in rows if r[key] is not None])
            for key in ("first_rtt_ms", "steady_rtt_ms", "iperf_mbits")
            if any(r[key] is not None for r in rows)
        }
    dove, normal = result["summary"]["dove"], result["summary"]["normal"]
    result["ratios"] = {
        "throughput_dove_over_normal": dove["iperf_mbits"]["median"]
        / normal["iperf_mbits"]["median"],
        "steady_rtt_dove_over_normal": dove["steady_rtt_ms"]["median"]
        / normal["steady_rtt_ms"]["median"],
        "first_over_steady_rtt_dove": dove["first_rtt_ms"]["median"]
        / dove["steady_rtt_ms"]["median"],
    }
    result["first_pings_lost_dove"] = sum(
        1 for s in samples if s["system"] == "dove" and s["first_rtt_ms"] is None
    )
    result["packet_ins_during_iperf"] = [
        s["packet_ins_during_iperf"] for s in samples if s["system"] == "dove"
    ]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for system in ("dove", "normal"):
            for key, stats in result["summary"][system].items():
                print(
                    f"{system:6} {key:14} median {stats['median']:9.2f}  "
                    f"(min {stats['min']:.2f}, max {stats['max']:.2f})"
                )
        for key, value in result["ratios"].items():
            print(f"{key:32} {value:.3f}")
        print(f"first pings lost (dove): {result['first_pings_lost_dove']} of {args.reps}")
        print(f"packet-ins during iperf3 (dove): {result['packet_ins_during_iperf']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
