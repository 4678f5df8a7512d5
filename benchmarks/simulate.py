"""DOVE beyond one machine, by simulation (issue 11, item 7): directory load, control
messages per event and convergence per resolution mode, and OVN by the same method.

    .venv/bin/python -m benchmarks.simulate [--hosts 10000 --endpoints 1000000]
        [--calibration results/<run>/samples.json] [--out DIR] [--json]

The model (`benchmarks.sim_model`) is analytic; with ``--calibration`` its per-message
costs are fitted from the emulation's ``directory`` section at two sizes, otherwise
the defaults it states (from BENCHMARKS.md) are used.  Writes report.md,
simulation.json and simulation.png to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks import sim_model as m

SWEEP = (100, 300, 1000, 3000, 10_000)
EVENTS = ("start", "move", "stop")


def assumptions(d: m.Deployment, costs: m.Costs) -> list[str]:
    mix = "; ".join(
        f"{c.name}: {c.vms} VMs over {c.span} hosts, {c.share:.0%} of the endpoints" for c in d.mix
    )
    r = m.rates(d)
    return [
        f"{d.hosts:,} hosts, {d.endpoints:,} endpoints ({d.endpoints / d.hosts:g} per host); "
        f"instances: {mix}; VMs placed at random over their instance's hosts",
        f"a host serves {m.known_per_host(d) / 1:.0f} endpoints' instances and shares an "
        f"instance with {m.neighbours(d):.0f} other hosts (whose Host rows it monitors)",
        f"churn: {r['start']:.1f} starts, {r['stop']:.1f} stops, {r['move']:.2f} moves per "
        "second (each VM lives a day; one in ten moves once a day); a move stays among "
        "its instance's hosts",
        f"heartbeats (directory) every {d.heartbeat_interval:g} s, each a transaction sent "
        f"to its own host's client and the {d.reapers} reapers only (Host_Liveness, schema "
        "1.2.0); announcements (static) every "
        f"{d.announce_interval:g} s, static discovery listing every host as a peer",
        f"a VM talks to {d.talk_peers} others of its instance: the hosts they run on learn it "
        "(learn) and are 'the hosts that need it'",
        "directory: a 3-member Raft cluster; the leader writes every transaction (replicated "
        "to two followers, committed on one ack) and serves every monitor (an upper bound: "
        "the agents connect to any member); one update message per client per transaction "
        "touching "
        f"its rows; leader CPU {costs.txn_cpu_us:g} us per transaction and "
        f"{costs.update_cpu_us:g} us per update, commit {costs.commit_ms:g} ms; "
        "updates are queued behind the load (x 1/(1 - utilisation))",
        f"a new VM's Endpoint row waits {costs.publish_wait_ms:g} ms before it is written "
        "(the port watcher wakes the directory client)",
        "learn with directory discovery publishes Endpoint rows but no agent monitors "
        "a learn instance's (the conditions name lookup and push instances only)",
        "OVN (modelled, not published): no periodic southbound writes; a start is an NB "
        f"transaction, northd ({costs.northd_ms:g} ms, assumed) and an SB transaction, then "
        "the chassis's claim; each SB transaction reaches the chassis that have the "
        "datapath (conditional monitoring); no messages between chassis",
        "sources of the costs: " + "; ".join(f"{k}: {v}" for k, v in sorted(costs.sources.items())),
    ]


def evaluate(d: m.Deployment, costs: m.Costs) -> dict[str, Any]:
    rows = {}
    for system in m.SYSTEMS:
        load = m.load(d, costs, system)
        per = {e: m.messages(d, costs, system, e) for e in EVENTS}
        rows[system] = {
            "directory_txn_per_s": load.txn_per_s,
            "monitor_updates_per_s": load.updates_per_s,
            "host_messages_per_s": load.host_msgs_per_s,
            "leader_cores": load.leader_cores,
            "messages": {e: {**per[e], "total": sum(per[e].values())} for e in EVENTS},
            "convergence_ms": {e: m.convergence_ms(d, costs, system, e) for e in EVENTS},
            "agent_mb": m.memory_mb(d, costs, system),
        }
    return rows


def sweep(d: m.Deployment, costs: m.Costs) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for system in m.SYSTEMS:
        series: dict[str, list[float]] = {"updates": [], "host": [], "start_ms": []}
        for n in SWEEP:
            scaled = d.scaled(n)
            load = m.load(scaled, costs, system)
            series["updates"].append(load.updates_per_s)
            series["host"].append(load.host_msgs_per_s)
            series["start_ms"].append(m.convergence_ms(scaled, costs, system, "start"))
        out[system] = series
    return out


def _num(x: float) -> str:
    if math.isinf(x):
        return "saturated"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(rows: dict[str, Any]) -> list[str]:
    lines = [
        "| system | directory txn/s | monitor updates/s | leader CPU, cores | "
        "host-to-host msgs/s | msgs per start / move / stop | convergence start / move / "
        "stop, ms | agent MB per host |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, r in rows.items():
        msgs = " / ".join(_num(r["messages"][e]["total"]) for e in EVENTS)
        conv = " / ".join(_num(r["convergence_ms"][e]) for e in EVENTS)
        lines.append(
            f"| {system} | {_num(r['directory_txn_per_s'])} | {_num(r['monitor_updates_per_s'])} "
            f"| {_num(r['leader_cores'])} | {_num(r['host_messages_per_s'])} | {msgs} | {conv} "
            f"| {r['agent_mb']:.0f} |"
        )
    return lines


def kinds_table(rows: dict[str, Any]) -> list[str]:
    lines = [
        "| system | event | " + " | ".join(m.KINDS) + " |",
        "|---|---|" + "---|" * len(m.KINDS),
    ]
    for system, r in rows.items():
        for e in EVENTS:
            cells = " | ".join(_num(r["messages"][e][k]) for k in m.KINDS)
            lines.append(f"| {system} | {e} | {cells} |")
    return lines


def plot(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Lines that coincide (push and lookup; both learns' starts) stay visible by style.
    styles = dict(zip(m.SYSTEMS, ("s--", "o-", "^:", "x-", "d-"), strict=True))
    for system, s in curves.items():
        if system == "learn-static":
            left.plot(SWEEP, s["host"], styles[system], label="learn-static: host msgs/s")
        else:
            left.plot(SWEEP, s["updates"], styles[system], label=system)
        pts = [(n, v) for n, v in zip(SWEEP, s["start_ms"], strict=True) if math.isfinite(v)]
        if pts:
            right.plot(*zip(*pts, strict=True), styles[system], label=system)
    x = "hosts (100 endpoints each)"
    left.set(xscale="log", yscale="log", xlabel=x, ylabel="per second")
    left.set_title("directory monitor updates/s (static: host messages/s)", fontsize=9)
    right.set(xscale="log", yscale="log", xlabel=x, ylabel="ms")
    right.set_title("convergence of a VM start (saturated: not drawn)", fontsize=9)
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_calibration(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    samples = data.get("directory") if isinstance(data, dict) else data
    if not isinstance(samples, list):
        raise SystemExit(f"{path}: no 'directory' section (a list of samples)")
    return samples


def report(d: m.Deployment, costs: m.Costs, notes: list[str], rows: dict[str, Any]) -> str:
    out = [
        f"## Simulated: {d.hosts:,} hosts, {d.endpoints:,} endpoints",
        "",
        *table(rows),
        "",
        "Messages per event, by kind (endpoint-weighted means):",
        "",
        *kinds_table(rows),
        "",
        "Assumptions:",
        "",
        *(f"- {a}" for a in assumptions(d, costs)),
        "",
        "Calibration:",
        "",
        *(f"- {n}" for n in notes),
        "",
        "OVN's published figures at scale (none found for 3,000 chassis; OVN's row above "
        "is modelled, not published):",
        "",
        *(f"- {text} ({url})" for text, url in m.PUBLISHED),
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.simulate", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=10_000)
    p.add_argument("--endpoints", type=int, default=1_000_000)
    p.add_argument("--announce-interval", type=float, default=2.0, help="static discovery's")
    p.add_argument(
        "--heartbeat-interval", type=float, default=2.0, help="directory_heartbeat_interval"
    )
    p.add_argument("--calibration", type=Path, help="samples.json of a benchmark run")
    p.add_argument("--cores", type=int, default=2, help="CPUs of the calibration machine")
    p.add_argument("--out", type=Path, help="folder for report.md, simulation.json/.png")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = p.parse_args(argv)
    if args.hosts < 2 or args.endpoints < args.hosts:
        p.error("need at least 2 hosts and one endpoint per host")
    d = m.Deployment(
        hosts=args.hosts,
        endpoints=args.endpoints,
        announce_interval=args.announce_interval,
        heartbeat_interval=args.heartbeat_interval,
    )
    d = replace(d, mix=tuple(replace(c, span=min(c.span, d.hosts)) for c in d.mix))
    if args.calibration:
        costs, notes = m.fit(load_calibration(args.calibration), cores=args.cores)
    else:
        costs, notes = m.defaults(), ["no --calibration: the defaults stated in the model"]
    rows = evaluate(d, costs)
    curves = sweep(d, costs)
    result = {
        "deployment": asdict(d),
        "costs": asdict(costs),
        "calibration": notes,
        "systems": rows,
        "sweep": {"hosts": list(SWEEP), **curves},
        "assumptions": assumptions(d, costs),
        "published": [{"figure": t, "url": u} for t, u in m.PUBLISHED],
    }
    text = report(d, costs, notes, rows)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(text)
        (args.out / "simulation.json").write_text(json.dumps(result, indent=1, default=str))
        plot(curves, args.out / "simulation.png")
    if args.json:
        json.dump(result, sys.stdout, indent=1, default=str)
        print()
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
