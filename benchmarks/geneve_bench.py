"""Geneve beside VXLAN (issue 14): the same two-hypervisor dove-ryu emulation, its
agents with ``tunnel_type = vxlan`` and then ``geneve`` (the DOVE option on every
packet, VMs at MTU 1442 against 1450), in alternating order between repetitions.
Measured as `benchmarks.overlay_vs_normal` measures dove-ryu: the first ping between
VMs that never talked, the steady RTT, iperf3 TCP throughput, packet-ins during it.

    sudo .venv/bin/python -m benchmarks.geneve_bench [--reps 5] [--seconds 5] [--json]
    (or: scripts/bench.sh --sections geneve)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.overlay_vs_normal import one_run
from benchmarks.stats import fmt, ratio, summary

TYPES = ("vxlan", "geneve")
KEYS = ("first_rtt_ms", "steady_rtt_ms", "iperf_mbits")


def run_geneve(reps: int, seconds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    for rep in range(reps):
        for tunnel_type in TYPES if rep % 2 == 0 else TYPES[::-1]:
            try:
                sample = {**one_run("dove", seconds, tunnel_type), "tunnel_type": tunnel_type}
            except Exception as e:  # noqa: BLE001 - one failed build is a missing sample
                sample = {"tunnel_type": tunnel_type, "error": f"{type(e).__name__}: {e}"}
            samples.append(sample)
            progress(f"geneve rep {rep + 1}/{reps} {tunnel_type}: {json.dumps(sample)[:200]}")
    ok = [s for s in samples if "error" not in s]
    summ = {
        t: {k: summary([s[k] for s in ok if s["tunnel_type"] == t]) for k in KEYS} for t in TYPES
    }
    ratios = {f"{k}_geneve_over_vxlan": ratio(summ["geneve"][k], summ["vxlan"][k]) for k in KEYS}
    lost = {
        t: sum(1 for s in ok if s["tunnel_type"] == t and s["first_rtt_ms"] is None) for t in TYPES
    }
    return {"samples": samples, "summary": summ, "ratios": ratios, "first_pings_lost": lost}


def report_section(result: dict[str, Any]) -> list[str]:
    summ, ratios = result["summary"], result["ratios"]
    lines = [
        "## Geneve beside VXLAN",
        "",
        "Two hypervisors, dove-ryu agents with `tunnel_type = vxlan` then `geneve` (the "
        "DOVE option on every packet; VM MTU 1450 and 1442). Median (min-max).",
        "",
        "| | VXLAN | Geneve | Geneve / VXLAN |",
        "|---|---|---|---|",
    ]
    names = {
        "first_rtt_ms": "first ping, ms",
        "steady_rtt_ms": "steady RTT, ms",
        "iperf_mbits": "TCP, Mbit/s",
    }
    for key, name in names.items():
        r = ratios.get(f"{key}_geneve_over_vxlan")
        shown = f"{r:.3f}" if r is not None else "n/a"
        lines.append(
            f"| {name} | {fmt(summ['vxlan'][key])} | {fmt(summ['geneve'][key])} | {shown} |"
        )
    lost = result["first_pings_lost"]
    lines += ["", f"First pings lost: VXLAN {lost['vxlan']}, Geneve {lost['geneve']}."]
    errors = [s for s in result["samples"] if "error" in s]
    if errors:
        lines.append(f"Failed builds: {len(errors)} ({errors[0]['error'][:120]}).")
    return lines


def main(argv: list[str] | None = None) -> int:
    from mininet.log import setLogLevel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    setLogLevel("warning")
    result = run_geneve(args.reps, args.seconds, lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2) if args.json else "\n".join(report_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
