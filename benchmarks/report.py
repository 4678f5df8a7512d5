"""The benchmark report: Markdown tables, PNG plots, with the targets stated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks.stats import fmt, ratio

TARGETS = """\
Where we mean to stand (issue #3), shown honestly, met or not:
- controller cache-hit rate at least 5x the learning switch's, p99 latency under 2 ms;
- first-packet RTT within 3 ms, and never a lost first packet;
- throughput at least 95% of OVS NORMAL's on the same bridges, zero packet-ins in steady state;
- at scale, every endpoint reachable sooner than OVN brings it up, with fewer flows per host.

And for the directory (issue 11), at 1,000 VMs on 10 hypervisors and 2,000 on 20:
- in `push` mode, the first packet within 1.2x of OVN's, and every pair reachable after
  the mass re-plug no later than OVN's;
- in `learn` mode, the first packet within 2 ms;
- agent memory at most 1.5x ovn-controller's, in every mode.

And for routing (issue 12): routed throughput between two subnets of a tenant router at
least 0.9x the same-subnet throughput over the same two hypervisors.
"""


def _secs(sample: dict[str, Any]) -> str:
    value = sample.get("reachable_s")
    return f"{value:.2f} s" if value is not None else "not within the timeout"


def _verdicts(results: dict[str, Any]) -> list[str]:
    """Each target of issue #3, met or not, from this run's medians."""
    lines = ["## Targets, from this run", ""]

    def say(ok: bool | None, text: str) -> None:
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        lines.append(f"- **{mark}**: {text}")

    ctrl = results.get("controller", {})
    rows = ctrl.get("summary", []) if isinstance(ctrl, dict) else []
    if rows:
        ratios = [r.get("dove_over_learning", {}).get("rate_per_s") or 0 for r in rows]
        say(
            min(ratios) >= 5,
            f"cache-hit rate / learning switch: {min(ratios):.2f}x to "
            f"{max(ratios):.2f}x (target 5x)",
        )
        p99s = [
            r["dove"]["done_p99_ms"]["median"]
            for r in rows
            if r["mode"] == "latency" and r["dove"].get("done_p99_ms")
        ]
        if p99s:
            say(
                max(p99s) < 2,
                "dove p99 latency in latency mode: "
                + ", ".join(
                    f"{r['switches']} sw {r['dove']['done_p99_ms']['median']:.2f} ms"
                    for r in rows
                    if r["mode"] == "latency"
                )
                + " (target < 2 ms)",
            )
    summ = results.get("pairs", {}).get("summary", {})
    dove, normal = summ.get("dove"), summ.get("normal")
    if dove:
        first = dove["first_rtt_ms"]
        say(
            first.get("median") is not None and first["median"] <= 3 and dove["first_lost"] == 0,
            f"first-packet RTT {fmt(first)} ms, {dove['first_lost']} first pings lost "
            "(target <= 3 ms, none lost)",
        )
    if dove and normal:
        r = ratio(dove["iperf_mbits"], normal["iperf_mbits"])
        pins = dove.get("packet_ins_during_iperf") or []
        if r is not None:
            say(
                r >= 0.95 and not any(pins),
                f"throughput {r:.3f} of NORMAL's; packet-ins during iperf3 {pins} "
                "(target >= 0.95, zero)",
            )
    scale = {s["system"]: s for s in results.get("scale", []) if "error" not in s}
    if "dove" in scale and "ovn" in scale:
        d, o = scale["dove"], scale["ovn"]
        faster = d.get("reachable_s") is not None and (
            o.get("reachable_s") is None or d["reachable_s"] < o["reachable_s"]
        )
        fewer = d["flows_per_host"]["median"] < o["flows_per_host"]["median"]
        say(
            faster and fewer,
            f"at {d['vms']} VMs: reachable after {_secs(d)} vs "
            f"OVN {_secs(o)}; flows per host "
            f"{d['flows_per_host']['median']:.0f} vs "
            f"{o['flows_per_host']['median']:.0f}",
        )
    lines += _directory_verdicts(results.get("directory", []), say)
    routed = results.get("routing", {}).get("summary", {}).get("dove")
    if routed and routed["routed_over_same_mbits"].get("n"):
        r = routed["routed_over_same_mbits"]
        say(
            r["median"] >= 0.9,
            f"routed throughput / same-subnet: {fmt(r, 3)} (median of the per-build ratios, "
            "target >= 0.9)",
        )
    return lines


def _by_size(samples: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """The directory section's samples that ran, by number of VMs, then by system."""
    sizes: dict[int, dict[str, dict[str, Any]]] = {}
    for s in samples:
        if "error" not in s:
            sizes.setdefault(s["vms"], {})[s["system"]] = s
    return sizes


def _directory_verdicts(samples: list[dict[str, Any]], say: Any) -> list[str]:
    """Issue 11's targets, per size (``say`` appends to the verdict lines)."""
    for vms, got in sorted(_by_size(samples).items()):
        ovn, push, learn = got.get("ovn"), got.get("dove-push"), got.get("dove-learn")
        if push and ovn:
            r = ratio(push["first_packet_ms"], ovn["first_packet_ms"])
            say(
                r is not None and r <= 1.2 and push.get("first_packets_lost") == 0,
                f"at {vms} VMs, push: first packet {fmt(push['first_packet_ms'])} ms, "
                f"{r:.2f}x OVN's {fmt(ovn['first_packet_ms'])} ms (target <= 1.2x)"
                if r is not None
                else f"at {vms} VMs, push: no first-packet figure",
            )
            p, o = push.get("reachable_s"), ovn.get("reachable_s")
            say(
                p is not None and (o is None or p <= o),
                f"at {vms} VMs, push: reachable after the re-plug {_secs(push)} vs "
                f"OVN {_secs(ovn)} (target: no later)",
            )
        if learn:
            first = learn["first_packet_ms"]
            say(
                first.get("median") is not None and first["median"] <= 2,
                f"at {vms} VMs, learn: first packet {fmt(first)} ms (target <= 2 ms)",
            )
        if ovn and ovn["agent_rss_kb"].get("median"):
            rows = [
                (system.removeprefix("dove-"), ratio(s["agent_rss_kb"], ovn["agent_rss_kb"]))
                for system, s in sorted(got.items())
                if system.startswith("dove-")
            ]
            say(
                bool(rows) and all(r is not None and r <= 1.5 for _, r in rows),
                f"at {vms} VMs, agent memory / ovn-controller's: "
                + ", ".join(f"{m} {r:.2f}x" for m, r in rows if r is not None)
                + " (target <= 1.5x)",
            )
    return []


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
    settings = pairs.get("settings", {})
    if settings:
        lines += [
            "",
            "| system | datapath | encap | VM MTU | VM tx offload | versions |",
            "|---|---|---|---|---|---|",
        ]
        for system, info in settings.items():
            tx = info.get("vm_offloads", {}).get("tx-checksumming", "?")
            versions = "; ".join(str(info[k]) for k in ("ovs", "ovn") if info.get(k))
            lines.append(
                f"| {system} | {info.get('datapath')} | {info.get('encap')} | "
                f"{info.get('vm_mtu')} | {tx} | {versions or info.get('kernel')} |"
            )
    errors = [s for s in pairs["samples"] if "error" in s]
    if errors:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {e['system']} rep {e.get('rep')}: `{e['error'][:200]}`" for e in errors]
    return lines


def _controller_section(ctrl: dict[str, Any]) -> list[str]:
    lines = [
        "## Controller",
        "",
        "`benchmarks.ofload` emulates N OpenFlow 1.3 switches as cbench does (latency: one "
        "packet-in outstanding per switch; throughput: a window of 64 per switch). dove-ryu "
        "answers on its cache-hit path (destination learned, flow missing); the learning "
        "switch on its own (destination known). Rates in packet-ins answered per second; "
        "latency until the packet-out; median (min-max).",
        "",
    ]
    if "error" in ctrl:
        return lines + [f"The controller benchmark failed: `{ctrl['error'][:400]}`"]
    lines += [
        "| switches | mode | learning switch /s | dove-ryu /s | dove / learning | "
        "learning p50 / p99 ms | dove p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ctrl.get("summary", []):
        ls, dv = row["learning"], row["dove"]
        r = row.get("dove_over_learning", {}).get("rate_per_s")

        def lat(x: dict[str, Any]) -> str:
            p50, p99 = x.get("done_p50_ms"), x.get("done_p99_ms")
            if not p50 or not p99:
                return "n/a"
            return f"{p50['median']:.2f} / {p99['median']:.2f}"

        lines.append(
            f"| {row['switches']} | {row['mode']} | {fmt(ls['rate_per_s'], 0)} | "
            f"{fmt(dv['rate_per_s'], 0)} | {f'{r:.2f}' if r else 'n/a'} | "
            f"{lat(ls)} | {lat(dv)} |"
        )
    notes = ctrl.get("notes", [])
    if isinstance(notes, list):
        lines += [""] + [f"- {n}" for n in notes if isinstance(n, str) and len(n) < 400]
    return lines


def _migration_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Migration",
        "",
        "A VM on hv1 pings a VM every 5 ms while that VM moves between hv2 and hv3, one "
        "move a second; per move, the largest gap between replies.",
        "",
        "| system | moves | gap median ms | gap p95 ms | gap max ms | lost / sent "
        "| port unplugged ms (the emulation's share) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | failed: `{r['error'][:150]}` |")
            continue
        gaps = sorted(r["gaps_ms"])
        p95 = gaps[min(len(gaps) - 1, max(0, -(-95 * len(gaps) // 100) - 1))] if gaps else None
        lines.append(
            f"| {r['system']} | {r['moves']} | {r['gap_ms']['median']:.0f} | "
            f"{p95:.0f} | {r['gap_ms']['max']:.0f} | {r['lost']} / {r['sent']} | "
            f"{fmt(r.get('unplugged_ms', {}), 0)} |"
        )
    return lines


def _sites_section(sites: dict[str, Any]) -> list[str]:
    lines = [
        "## Sites: VAN proxies",
        "",
        "Two sites with no route between them, two proxies each. Failover: a VM of site 1 "
        "pings a VM of site 2 every 5 ms and the active proxy of one site stops (agent and "
        "datapath); the gap is the longest silence between replies. Each sample is a fresh "
        "deployment; the sites alternate.",
        "",
        "| stopped | gap ms | lost / sent | standby took over |",
        "|---|---|---|---|",
    ]
    for f in sites.get("failover", []):
        if "error" in f:
            lines.append(f"| site {f['site']} | failed: `{f['error'][:150]}` | | |")
            continue
        gap = f"{f['gap_ms']:.0f}" if f.get("gap_ms") is not None else "n/a"
        lines.append(f"| site {f['site']} | {gap} | {f['lost']} / {f['sent']} | {f['took_over']} |")
    lines += [
        "",
        f"Failover gap: {fmt(sites.get('failover_gap_ms', {}), 0)} ms (median, min-max).",
        "",
        "| path | RTT ms | first packet ms |",
        "|---|---|---|",
        f"| in one site (host to host) | {fmt(sites.get('rtt_in_site_ms', {}), 3)} "
        f"| {fmt(sites.get('first_in_site_ms', {}), 1)} |",
        f"| across sites (host, proxy, proxy, host) | {fmt(sites.get('rtt_cross_site_ms', {}), 3)} "
        f"| {fmt(sites.get('first_cross_site_ms', {}), 1)} |",
    ]
    r = sites.get("cross_over_in_site")
    if r:
        lines += ["", f"Cross-site RTT / in-site RTT: {r:.2f}x."]
    return lines


def _routing_section(routing: dict[str, Any]) -> list[str]:
    summ = routing.get("summary", {})
    lines = [
        "## Routing and the gateway",
        "",
        "Two subnets of one tenant router; a fresh build per system and repetition. A VM "
        "sends to a VM of its own subnet and to one of the other subnet, both on the same "
        "other hypervisor; the first ping to the other subnet comes first, before anything "
        "resolved it. dove-ryu routes on the sending host (issue 12), OVN with a "
        "distributed logical router. Ratios are taken within each build, then summarised: "
        "median (min-max).",
        "",
        "| system | same-subnet Mbit/s | routed Mbit/s | routed / same | same-subnet RTT ms "
        "| routed RTT ms | routed / same RTT | first routed ping ms | first lost | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in ("dove", "ovn"):
        s = summ.get(system)
        if not s:
            continue
        lines.append(
            f"| {system} | {fmt(s['same_mbits'], 0)} | {fmt(s['routed_mbits'], 0)} | "
            f"{fmt(s['routed_over_same_mbits'], 3)} | {fmt(s['same_rtt_ms'], 3)} | "
            f"{fmt(s['routed_rtt_ms'], 3)} | {fmt(s['routed_over_same_rtt'])} | "
            f"{fmt(s['first_routed_ms'])} | {s['first_routed_lost']} of "
            f"{s['first_routed_ms']['n'] + s['first_routed_lost']} | {s['errors']} |"
        )
    over = summ.get("dove_over_ovn")
    if over:

        def x(key: str) -> str:
            return f"{over[key]:.2f}x" if over.get(key) is not None else "n/a"

        lines += [
            "",
            f"dove-ryu / OVN (medians): routed throughput {x('routed_mbits')}, routed RTT "
            f"{x('routed_rtt_ms')}, first routed ping {x('first_routed_ms')}.",
        ]
    pins = summ.get("dove", {}).get("packet_ins_during_routed_iperf")
    if pins:
        lines += ["", f"Packet-ins on the dove-ryu agents during each routed iperf3: {pins}"]
    gw = routing.get("gateway", {})
    lines += [
        "",
        "Through the gateway, one build per system and repetition with two gateways: iperf3 "
        "from a VM to the internet host through the active one (source NAT), then a 5 ms "
        "ping stream to the internet host while the active gateway stops (agent and "
        "datapath); the gap is the longest silence between replies. dove-ryu: two gateway "
        "nodes with `role = gateway`; OVN: the router's distributed gateway port on two "
        "gateway chassis by priority (BFD between chassis).",
        "",
        "| figure | system | median (min-max) | runs |",
        "|---|---|---|---|",
    ]
    for system, g in sorted(gw.items()):
        lines.append(
            f"| SNAT Mbit/s | {system} | {fmt(g['snat_mbits'], 0)} | {g['snat_mbits']['n']} |"
        )
    for system, g in sorted(gw.items()):
        lines.append(
            f"| failover gap ms | {system} | {fmt(g['failover_gap_ms'], 0)} | "
            f"{g['failover_recovered']} recovered of {g['failover_runs']}"
            f"{', ' + str(g['failover_failed']) + ' failed' if g.get('failover_failed') else ''} |"
        )
    over = ratio(
        gw.get("dove", {}).get("failover_gap_ms", {}), gw.get("ovn", {}).get("failover_gap_ms", {})
    )
    if over is not None:
        lines += ["", f"dove-ryu's failover gap / OVN's: {over:.2f}x."]
    failed = [
        f"- {kind.removesuffix('_samples')} {s.get('system', '')}: `{s['error'][:200]}`"
        for kind in ("paths", "gateway_samples")
        for s in routing.get(kind, [])
        if "error" in s
    ]
    if failed:
        lines += ["", "Failed runs:", "", *failed]
    return lines


def _scale_section(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Scale",
        "",
        "All VM ports removed, then added back at once (one OVSDB transaction per "
        "hypervisor); time until every pair of a sample of cross-hypervisor pairs in every "
        "tenant answers a ping (pinging every 50 ms), median (min-max) over the rounds on "
        "one build.",
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
        reach = s.get("reachable") or {"n": 0}
        lines.append(
            f"| {s['system']} | {s['hypervisors']} | {s['vms']} | {s['tenants']} | "
            f"{fmt(reach) if reach.get('n') else 'not within timeout'} | "
            f"{s['unreachable_pairs']} of {s['pairs']} | {fmt(s['flows_per_host'], 0)} | "
            f"{rss_mb} | {f'{per:.2f}' if per is not None else 'n/a'} |"
        )
    return lines


def _directory_section(samples: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Directory: the three resolution modes and OVN at scale",
        "",
        "The same work on each system, one build per system and size: first the first "
        "ping of never-contacted cross-hypervisor pairs, one at a time; then every VM port "
        "removed and added back at once (one OVSDB transaction per hypervisor) and the time "
        "until every sampled pair answers (pinging every 50 ms), median (min-max) over the "
        "rounds. `dove-<mode>`: agents with `discovery = directory` on a 3-member cluster, "
        "every instance in that resolution. Messages per endpoint: LEARN requests and "
        "replies, rows the directory's monitors brought (each changed row counts once) and "
        "transactions sent, over the "
        "endpoints the agents came to know during the rounds.",
        "",
        "| system | hypervisors | VMs | first packet ms | first lost | / OVN "
        "| reachable after s | / OVN | unreachable pairs | flows per host | agent RSS MB "
        "| / OVN | messages per endpoint (LEARN + directory) | directory member RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sizes = _by_size(samples)
    for s in samples:
        if "error" in s:
            lines.append(f"| {s['system']} | {s.get('hypervisors', '')} | {s.get('vms', '')} "
                         f"| failed: `{s['error'][:150]}` |")  # fmt: skip
            continue
        ovn = sizes.get(s["vms"], {}).get("ovn")

        def over(key: str, s: dict[str, Any] = s, ovn: dict[str, Any] | None = ovn) -> str:
            r = ratio(s[key], ovn[key]) if ovn and s.get(key) and ovn.get(key) else None
            return f"{r:.2f}x" if r is not None else "n/a"

        rss, drss = s.get("agent_rss_kb", {}), s.get("directory_rss_kb", {})
        per = s.get("messages_per_endpoint")
        directory = s.get("directory_updates", 0) + s.get("directory_transactions", 0)
        messages = f"{per:.2f} ({s['learn_messages']} + {directory})" if per is not None else "n/a"
        reach = s.get("reachable") or {"n": 0}
        cells = [
            s["system"],
            s["hypervisors"],
            s["vms"],
            fmt(s.get("first_packet_ms", {})),
            s.get("first_packets_lost", "n/a"),
            over("first_packet_ms"),
            fmt(reach) if reach.get("n") else "not within timeout",
            over("reachable"),
            f"{s['unreachable_pairs']} of {s['pairs']}",
            fmt(s["flows_per_host"], 0),
            f"{rss['median'] / 1024:.0f}" if rss.get("n") else "n/a",
            over("agent_rss_kb"),
            messages if s["system"] != "ovn" else "n/a",
            f"{drss['median'] / 1024:.0f}" if drss.get("n") else "n/a",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
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
        f"{m['iperf3']}; Python {m['python']}; dove-ryu {m.get('commit', 'n/a')}.",
        "",
        f"Datapath: {m['datapath']}. VM MTU: {m['vm_mtu']}. Offload: {m['offload']}.",
        "",
        TARGETS,
        *_verdicts(results),
        "",
    ]
    if "controller" in results:
        lines += _controller_section(results["controller"]) + [""]
    if "pairs" in results:
        lines += _pairs_section(results["pairs"]) + [""]
    if "migration" in results:
        lines += _migration_section(results["migration"]) + [""]
    if "scale" in results:
        lines += _scale_section(results["scale"]) + [""]
    if "directory" in results:
        lines += _directory_section(results["directory"]) + [""]
    if "sites" in results:
        lines += _sites_section(results["sites"]) + [""]
    if "routing" in results:
        lines += _routing_section(results["routing"]) + [""]
    if "ovsrestart" in results:
        from benchmarks.ovs_restart_bench import report_section

        lines += report_section(results["ovsrestart"]) + [""]
    if "agentrestart" in results:
        from benchmarks import agent_restart_bench

        lines += agent_restart_bench.report_section(results["agentrestart"]) + [""]
    if "geneve" in results:
        from benchmarks import geneve_bench

        lines += geneve_bench.report_section(results["geneve"]) + [""]
    if "kernelvtep" in results:
        from benchmarks import kernel_vtep_bench

        lines += kernel_vtep_bench.report_section(results["kernelvtep"]) + [""]
    plots = _plots(results, out)
    if plots:
        lines += ["## Plots", "", *plots, ""]
    lines += ["All samples: `samples.json` beside this file."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


PUBLISH_HEADER = """\
# Benchmarks

The latest full run of `sudo scripts/bench.sh` (about 20 minutes on the 2-core test
machine), copied here from its results folder by
`.venv/bin/python -m benchmarks.report --publish results/<run>`. To reproduce: on a
Debian 12 machine, as root, from the repository root, run `sudo scripts/bench.sh`; add
`--quick` for a check that finishes within 5 minutes. Every figure is a median with its
min-max spread over the repetitions, measured side by side in one run.

"""


def publish(run: Path, root: Path) -> Path:
    """BENCHMARKS.md (and its plots under docs/benchmarks/) from a run's folder."""
    import shutil

    plots = root / "docs" / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    for png in run.glob("*.png"):
        shutil.copy(png, plots / png.name)
    text = (run / "report.md").read_text()
    text = re.sub(r"\]\((\w+\.png)\)", r"](docs/benchmarks/\1)", text)
    text = text.replace("# dove-ryu benchmark report\n", "", 1)
    text = text.replace(
        "`samples.json` beside this file", f"`{run}/samples.json` (not kept in the repository)"
    )
    notes = Path(__file__).with_name("notes.md")
    if notes.exists():  # the reading of the figures, kept by hand beside the code
        text = text.replace("## Controller", notes.read_text() + "\n## Controller", 1)
    target = root / "BENCHMARKS.md"
    target.write_text(PUBLISH_HEADER + text.lstrip())
    return target


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a run's report again, or publish it.")
    parser.add_argument("run", type=Path, help="a results folder with samples.json")
    parser.add_argument("--publish", action="store_true", help="also write BENCHMARKS.md")
    args = parser.parse_args()
    write_report(json.loads((args.run / "samples.json").read_text()), args.run)
    if args.publish:
        print(publish(args.run, Path(__file__).resolve().parent.parent))
