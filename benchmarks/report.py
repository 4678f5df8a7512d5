"""The benchmark report: Markdown tables, PNG plots, with the targets stated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.stats import fmt, ratio

TARGETS = """\
Where we mean to stand (issue #3), shown honestly, met or not:
- controller cache-hit rate at least 5x the learning switch's, p99 latency under 2 ms;
- first-packet RTT within 3 ms, and never a lost first packet;
- throughput at least 95% of OVS NORMAL's on the same bridges, zero packet-ins in steady state;
- at scale, every endpoint reachable sooner than OVN brings it up, with fewer flows per host.
"""


def _pairs_section(pairs: dict[str, Any]) -> list[str]:
    summ = pairs["summary"]
    lines = [
        "## First packet and data plane",
        "",
        "Two hypervisors, one VM on each, a fresh build per repetition; median "
        "(min-max) over the repetitions.",
        "",
        "| system | first ping RTT ms | first pings lost | steady RTT ms | iperf3 Mbit/s "
        "| throughput / NORMAL | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    normal = summ.get("normal", {}).get("iperf_mbits", {})
    for system, s in summ.items():
        r = ratio(s["iperf_mbits"], normal) if normal else None
        lines.append(
            f"| {system} | {fmt(s['first_rtt_ms'])} | {s['first_lost']} of "
            f"{s['first_rtt_ms']['n'] + s['first_lost']} | {fmt(s['steady_rtt_ms'])} | "
            f"{fmt(s['iperf_mbits'], 0)} | {f'{r:.3f}' if r else 'n/a'} | {s['errors']} |"
        )
    if "dove" in summ:
        lines += [
            "",
            f"Packet-ins counted on all dove-ryu agents during each iperf3: "
            f"{summ['dove'].get('packet_ins_during_iperf')}",
        ]
    errors = [s for s in pairs["samples"] if "error" in s]
    if errors:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {e['system']} rep {e.get('rep')}: `{e['error'][:200]}`" for e in errors]
    return lines


def _controller_section(ctrl: dict[str, Any]) -> list[str]:
    lines = ["## Controller", ""]
    if "error" in ctrl:
        return lines + [f"The controller benchmark failed: `{ctrl['error'][:400]}`"]
    table = ctrl.get("table")
    if isinstance(table, list) and table:
        keys = list(table[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in table]
        for note in ctrl.get("notes", []):
            lines += ["", note]
        return lines
    return lines + ["```json", json.dumps(ctrl.get("summary", ctrl), indent=2)[:4000], "```"]


def _scale_section(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Scale",
        "",
        "All VM ports removed, then added back at once (one OVSDB transaction per "
        "hypervisor); time until a sample of cross-hypervisor pairs in every tenant "
        "answers a ping.",
        "",
        "| system | hypervisors | VMs | tenants | reachable after s | unreachable pairs "
        "| flows per host | agent RSS MB | LEARN messages per endpoint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scale:
        if "error" in s:
            lines.append(f"| {s['system']} | failed: `{s['error'][:150]}` |")
            continue
        rss = s.get("agent_rss_kb", {})
        rss_mb = f"{rss['median'] / 1024:.0f}" if rss.get("n") else "n/a"
        per = s.get("learn_messages_per_endpoint")
        reach = s.get("reachable_s")
        lines.append(
            f"| {s['system']} | {s['hypervisors']} | {s['vms']} | {s['tenants']} | "
            f"{f'{reach:.1f}' if reach is not None else 'not within timeout'} | "
            f"{s['unreachable_pairs']} of {s['pairs']} | {fmt(s['flows_per_host'], 0)} | "
            f"{rss_mb} | {f'{per:.2f}' if per is not None else 'n/a'} |"
        )
    return lines


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(matplotlib is not installed: no plots)"]
    made = []
    pairs = results.get("pairs")
    if pairs:
        for key, label, name in (
            ("iperf_mbits", "iperf3 TCP, Mbit/s", "throughput.png"),
            ("first_rtt_ms", "first ping RTT, ms", "first_packet.png"),
            ("steady_rtt_ms", "steady ping RTT, ms", "rtt.png"),
        ):
            systems = [
                s
                for s in pairs["summary"]
                if any(x.get(key) is not None for x in pairs["samples"] if x["system"] == s)
            ]
            if not systems:
                continue
            data = [
                [x[key] for x in pairs["samples"] if x["system"] == s and x.get(key) is not None]
                for s in systems
            ]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.boxplot(data, tick_labels=systems)
            ax.set_ylabel(label)
            ax.set_title(f"{label} ({results['reps']} repetitions)")
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            made.append(f"![{label}]({name})")
    return made


def write_report(results: dict[str, Any], out: Path) -> None:
    m = results["machine"]
    lines = [
        "# dove-ryu benchmark report",
        "",
        f"{m['date']}, {'quick' if results['quick'] else 'full'} run, "
        f"{results['reps']} repetitions per figure.",
        "",
        f"Machine: {m['cpus']} CPUs, kernel {m['kernel']}; {m['ovs']}; {m['ovn']}; "
        f"{m['iperf3']}; Python {m['python']}.",
        "",
        f"Datapath: {m['datapath']}. VM MTU: {m['vm_mtu']}. Offload: {m['offload']}.",
        "",
        TARGETS,
    ]
    if "controller" in results:
        lines += _controller_section(results["controller"]) + [""]
    if "pairs" in results:
        lines += _pairs_section(results["pairs"]) + [""]
    if "scale" in results:
        lines += _scale_section(results["scale"]) + [""]
    plots = _plots(results, out)
    if plots:
        lines += ["## Plots", "", *plots, ""]
    lines += ["All samples: `samples.json` beside this file."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
