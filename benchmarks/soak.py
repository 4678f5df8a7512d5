"""A soak under faults: load held for a set time while faults are injected at random.

    scripts/soak.sh [--duration 600] [--seed N] [--json FILE] [--out DIR]   # as root

The emulation is the multi-site one (mininet_topos.sites): two sites of ``--hypervisors``
hypervisors and a proxy pair each, ``--tenants`` tenants with identical address plans
spanning both sites, and one spare VM per tenant and site that the faults start and stop.
Load (soak_load): TCP streams that check every byte, pings between every pair of a
tenant's VMs, a capture in every VM. Faults (soak_plan, from ``--seed``): agent SIGKILLs
and SIGTERMs with restarts, live migrations (inside a site and across), spare VMs started
and stopped (ports added, marked, removed), loss, delay and reordering on the
hypervisors' underlay links and the proxies' WAN links (a userspace relay on each such link,
mininet_topos.impair: this kernel has no sch_netem), a site's active proxy stopped and
brought back. After the faults, a settle time, then every agent's state is checked against
where the VMs are. Exit status 1 on any failure (soak_report.FAILURES), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel

from benchmarks import soak_check as check
from benchmarks.soak_faults import Agents, Injector
from benchmarks.soak_load import Load
from benchmarks.soak_plan import Inventory, counts, plan
from benchmarks.soak_report import table, verdict
from mininet_topos.dove_agent import admin
from mininet_topos.emulation import FIRST_INSTANCE, prepare_vm
from mininet_topos.sites import (
    Proxy,
    SitesNet,
    SitesSpec,
    SiteVm,
    build_sites_net,
    wait_proxies_active,
)

ROOT = Path(__file__).resolve().parent.parent
SPARE_INDEX = 9  # a spare VM is VM 9 of its tenant in its site (MAC ..:0s:09, 10.0.0.s9)


def add_spares(snet: SitesNet) -> dict[str, SiteVm]:
    """One spare VM per tenant and site, linked to a hypervisor but not plugged (stopped)."""
    spares = {}
    for t in range(1, snet.spec.tenants + 1):
        for s in snet.spec.site_numbers:
            name = f"t{t}s{s}x{SPARE_INDEX}"
            hvs = snet.site_hvs(s)
            hv = hvs[t % len(hvs)]
            host = snet.net.addHost(name, ip=None)
            snet.net.addLink(host, hv, intfName1=f"{name}-eth0", intfName2=f"{name}-p")
            mac, cidr = (
                f"02:00:00:00:{s:02x}:{SPARE_INDEX:02x}",
                f"10.0.0.{10 * s + SPARE_INDEX}/24",
            )
            port = prepare_vm(hv, host, mac, cidr)
            ip = cidr.split("/")[0]
            instance = FIRST_INSTANCE + t - 1
            spares[name] = SiteVm(name, host, hv, t, instance, mac, ip, cidr, port, home=s)
    return spares


def inventory(snet: SitesNet, spares: dict[str, SiteVm]) -> Inventory:
    links = [f"{h.name}:{h.uplink}" for h in snet.hypervisors]
    links += [f"{p.name}:{p.wan_uplink}" for p in snet.proxies]
    return Inventory(
        hypervisors={h.name: h.site for h in snet.hypervisors},
        vms={v.name: v.hypervisor.name for v in snet.vms},
        spares=tuple(spares),
        links=tuple(links),
        proxy_sites=tuple(s for s in snet.spec.site_numbers if len(snet.site_proxies(s)) > 1),
    )


def facts(snet: SitesNet, running: list[SiteVm]) -> tuple[list[check.NodeFact], list[check.VmFact]]:
    nodes = [
        check.NodeFact(
            n.name,
            n.site,
            "proxy" if isinstance(n, Proxy) else "host",
            n.underlay_ip,
            n.wan_ip if isinstance(n, Proxy) else "",
        )
        for n in snet.nodes
    ]
    vms = [check.VmFact(v.name, v.instance, v.mac, v.ip, v.hypervisor.name) for v in running]
    return nodes, vms


def statuses(snet: SitesNet) -> dict[str, Any]:
    found = {}
    for n in snet.nodes:
        try:
            found[n.name] = admin(n)
        except (OSError, ValueError):
            continue
    return found


def settled_state(snet: SitesNet, running: list[SiteVm], settle: float) -> list[str]:
    """Poll the stale-state check until it is clean or ``settle`` s have passed; its last
    answer."""
    nodes, vms = facts(snet, running)
    deadline = time.monotonic() + settle
    while True:
        problems = check.stale_state(nodes, vms, statuses(snet))
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(2.0)


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")


def rss_table(agents: Agents) -> tuple[dict[str, Any], list[str]]:
    """Per agent: processes, RSS after the first one's warm-up and at the end; leaks."""
    rows: dict[str, Any] = {}
    leaks = []
    for name in dict.fromkeys(p.node for p in agents.processes):
        procs = [p for p in agents.processes if p.node == name]
        first = procs[0]
        warm = [m for t, m in first.samples if t - first.started >= check.RSS_WARMUP_S]
        start = warm[0] if warm else (first.samples[0][1] if first.samples else None)
        ends = [p.samples[-1][1] for p in procs if p.samples]
        rows[name] = {
            "processes": len(procs),
            "start_mib": start,
            "end_mib": ends[-1] if ends else None,
        }
        for p in procs:
            why = check.rss_leak(p.samples, p.started)
            if why:
                leaks.append(f"{name} (pid {p.pid}): {why}")
    return rows, leaks


def summarize(
    args: argparse.Namespace,
    snet: SitesNet,
    faults: list[Any],
    seen: dict[str, Any],
    agents: Agents,
    stale: list[str],
    span: tuple[float, float],
) -> dict[str, Any]:
    pings, streams, captured = seen["pings"], seen["streams"], seen["captured"]
    spare_pings = [p.outcome for p in seen["spare_pings"] if p.outcome]
    broken_streams = [line for s in streams for line in check.stream_problems(s, *span)]
    broken_pings = [p for p in pings if p.longest_gap_s > check.PING_BROKEN_S]
    foreign = {vm: len(f) for vm, (_, f) in captured.items() if f}
    rss, leaks = rss_table(agents)
    crashes = [
        f"{c.node} (pid {c.pid}) exited {c.returncode}: ...{c.tail[-300:]}" for c in agents.crashes
    ]
    spec = snet.spec
    summary: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit(),
        "seed": args.seed,
        "duration_s": args.duration,
        "settle_s": args.settle,
        "topology": (
            f"{spec.sites} sites x ({spec.hypervisors} hypervisors + {spec.proxies} proxies), "
            f"{spec.tenants} tenants with identical plans, {len(snet.vms)} VMs + "
            f"{spec.tenants * spec.sites} spare VMs"
        ),
        "faults": counts(faults),
        "load": {
            "streams": len(streams),
            "stream_bytes": sum(s.received for s in streams),
            "ping_pairs": len(pings),
            "pings_sent": sum(p.sent for p in pings),
            "spare_pings_sent": sum(p.sent for p in spare_pings),
            "frames_captured": sum(n for n, _ in captured.values()),
        },
        "lost": {
            "pings_lost": sum(p.lost for p in pings),
            "longest_ping_gap_s": max((p.longest_gap_s for p in pings), default=0.0),
            "ping_pairs_broken": len(broken_pings),
            "spare_pings_lost": sum(p.lost for p in spare_pings),
            "streams_broken": sum(1 for s in streams if check.stream_problems(s, *span)),
            "longest_stall_s": max((s.longest_stall(*span) for s in streams), default=0.0),
            "cross_tenant_frames": sum(foreign.values()),
            "agents_crashed": len(crashes),
            "agents_leaking": len(leaks),
            "stale_entries": len(stale),
        },
        "rss": rss,
        "problems": {
            "streams": broken_streams,
            "cross_tenant": [f"{vm}: {n} frames" for vm, n in foreign.items()],
            "crashes": crashes,
            "leaks": leaks,
            "stale": stale,
        },
    }
    summary["failures"] = verdict(summary)
    return summary


def soak(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    spec = SitesSpec(
        sites=2,
        hypervisors=args.hypervisors,
        proxies=2,
        tenants=args.tenants,
        impairable=not args.no_relays,
        relay_seed=args.seed,
    )
    snet, _ = build_sites_net(spec)
    try:
        wait_proxies_active(snet)
        spares = add_spares(snet)
        faults = plan(inventory(snet, spares), args.seed, args.duration, args.mean_gap)
        (out / "faults.txt").write_text("".join(f.describe() + "\n" for f in faults))
        agents = Agents(snet)
        load = Load(list(snet.vms), out)
        load.start(list(spares.values()))
        agents.begin()
        started = time.time()
        time.sleep(args.warmup)
        injector = Injector(snet, agents, load, spares)
        with (out / "faults.log").open("w") as log:
            injector.run(faults, time.monotonic(), Tee(log))
        running = [*snet.vms, *(spares[s] for s in sorted(injector.spares_up))]
        stale = settled_state(snet, running, args.settle)
        ended = time.time()
        seen = load.stop()
        seen["spare_pings"] = load.spare_pings
        agents.end()
        summary = summarize(args, snet, faults, seen, agents, stale, (started, ended))
        summary["relays"] = injector.relay_summary()
        if snet.relays:
            summary["netem"] = (
                "userspace relays (mininet_topos.impair) on every hypervisor's underlay link "
                "and every proxy's WAN link"
            )
        elif injector.netem_ok:
            summary["netem"] = "tc netem"
        else:
            summary["netem"] = (
                f"no relays, no netem in this kernel: {len(injector.fallbacks)} loss/delay "
                f"faults applied as an htb rate limit, {len(injector.skipped)} reorderings "
                "not injected"
            )
        summary["fault_errors"] = [
            f"{a.fault.describe()}: {a.error}" for a in injector.applied if a.error
        ]
        return summary
    finally:
        snet.stop()


class Tee:
    """Writes to a file and to stderr (the fault log as it happens)."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, text: str) -> None:
        self.f.write(text)
        sys.stderr.write(text)

    def flush(self) -> None:
        self.f.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    p.add_argument("--seed", type=int, default=None, help="the faults' seed (default: random)")
    p.add_argument("--mean-gap", type=float, default=8.0, help="mean seconds between faults")
    p.add_argument("--warmup", type=float, default=10.0, help="load alone before the faults")
    p.add_argument(
        "--settle", type=float, default=90.0, help="after the faults, at most, for the state"
    )
    p.add_argument("--hypervisors", type=int, default=2, help="per site")
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument(
        "--no-relays",
        action="store_true",
        help="links without impairment relays: tc netem (or an htb rate limit) instead",
    )
    p.add_argument("--json", type=Path, help="write the summary there")
    p.add_argument("--out", type=Path, help="logs, captures, fault log (default: a temp dir)")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    out = args.out or Path(tempfile.mkdtemp(prefix="dove-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    setLogLevel("warning")
    print(
        f"soak: seed {args.seed}, {args.duration:.0f} s of faults, logs in {out}", file=sys.stderr
    )
    summary = soak(args, out)
    text = json.dumps(summary, indent=2)
    (out / "summary.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    print(table(summary))
    for kind, lines in summary["problems"].items():
        for line in lines:
            print(f"{kind}: {line}")
    for line in summary["fault_errors"]:
        print(f"fault not applied: {line}")
    print("FAILED: " + "; ".join(summary["failures"]) if summary["failures"] else "soak passed")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
