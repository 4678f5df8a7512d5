"""A kernel VTEP next to DOVE VMs (issue 14, point 5): throughput and RTT, same run.

One build: two hypervisors, one tenant, t1vm1 on hv1 and t1vm2 on hv2, and a kernel
VXLAN VTEP on the underlay declared as an external VTEP (`mininet_topos.kernel_vtep`).
Per repetition, alternating: iperf3 (TCP) and a 20-echo ping from the kernel VTEP to
t1vm2 (through hv2's datapath-learned flows), and from t1vm1 to t1vm2 (DOVE to DOVE,
through both hypervisors' OVS).  Reported: median and spread of each, and the ratios.

    sudo .venv/bin/python -m benchmarks.kernel_vtep_bench [--reps N] [--seconds S]
    (or: benchmarks/run.py --sections kernelvtep)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from benchmarks.stats import fmt, ratio, summary
from mininet_topos.kernel_vtep import KernelVtep
from mininet_topos.traffic import iperf3, mbits

RTT = re.compile(r"time=([\d.]+) ms")
VTEP = KernelVtep(instance=5001)


def _rtt_ms(node: Any, ip: str) -> float | None:
    found = [float(x) for x in RTT.findall(node.cmd(f"ping -c20 -i0.05 -W2 {ip}"))]
    return statistics.median(found) if found else None


def run_kernel_vtep(reps: int, seconds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from mininet_topos.agents import build_dove_net

    dnet, _ = build_dove_net(hypervisors=2, tenants=1, vms_per_tenant=2, kernel_vteps=[VTEP])
    samples: dict[str, dict[str, list[float | None]]] = {
        "kernel_vtep": {"mbits": [], "rtt_ms": []},
        "dove": {"mbits": [], "rtt_ms": []},
    }
    try:
        a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")
        host = dnet.net.get(VTEP.name)
        vtep = SimpleNamespace(host=host, ip=VTEP.ip, name=VTEP.name)
        for node, ip in ((host, b.ip), (a.host, b.ip)):  # learned before measuring
            node.cmd(f"ping -c2 -W2 {ip}")
        for rep in range(reps):
            for name, client in (("kernel_vtep", vtep), ("dove", a)):
                samples[name]["mbits"].append(mbits(iperf3(client, b, seconds)))
                samples[name]["rtt_ms"].append(_rtt_ms(client.host, b.ip))
            progress(f"kernelvtep rep {rep + 1}/{reps}: {json.dumps(samples)[:300]}")
    finally:
        dnet.stop()
    summaries = {
        name: {metric: summary(values) for metric, values in s.items()}
        for name, s in samples.items()
    }
    return {
        "samples": samples,
        "summary": summaries,
        "ratios": {
            "mbits_kernel_vtep_over_dove": ratio(
                summaries["kernel_vtep"]["mbits"], summaries["dove"]["mbits"]
            ),
            "rtt_kernel_vtep_over_dove": ratio(
                summaries["kernel_vtep"]["rtt_ms"], summaries["dove"]["rtt_ms"]
            ),
        },
        "reps": reps,
        "seconds": seconds,
    }


def report_section(results: dict[str, Any]) -> list[str]:
    s, r = results["summary"], results["ratios"]

    def ratio_text(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "n/a"

    return [
        "## A kernel VTEP next to DOVE VMs",
        "",
        f"{results['reps']} repetitions, iperf3 {results['seconds']} s, 20 echoes each; "
        "median (min-max). The receiver is a DOVE VM on hv2 in both rows.",
        "",
        "| from | TCP Mbit/s | RTT ms |",
        "|---|---|---|",
        f"| kernel VTEP (no agent) | {fmt(s['kernel_vtep']['mbits'], 0)} "
        f"| {fmt(s['kernel_vtep']['rtt_ms'], 3)} |",
        f"| DOVE VM on hv1 | {fmt(s['dove']['mbits'], 0)} | {fmt(s['dove']['rtt_ms'], 3)} |",
        "",
        f"Kernel VTEP / DOVE: throughput {ratio_text(r['mbits_kernel_vtep_over_dove'])}, "
        f"RTT {ratio_text(r['rtt_kernel_vtep_over_dove'])}.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    from mininet.log import setLogLevel

    setLogLevel("error")
    results = run_kernel_vtep(args.reps, args.seconds, lambda t: print(t, file=sys.stderr))
    print(json.dumps(results, indent=2))
    print("\n".join(report_section(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
