"""dove-ryu side by side with OVN, OVS NORMAL, kernel VXLAN and a learning switch.

    sudo scripts/bench.sh [--quick]
        [--sections controller,first,dataplane,migration,scale,sites,directory,routing,
                    ovsrestart,agentrestart,geneve] (also: kernelvtep)
                          [--out DIR]

Every system runs in the same emulation (namespaced hypervisors with their own
OVS, VMs on veths) in one run, so the figures are comparable; each figure is
repeated and reported as median with min-max spread, with ratios to the peers.
Writes report.md, samples.json and PNG plots to the results folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel

from benchmarks.scale import DIRECTORY_SYSTEMS, build, run_directory, scale_sample
from benchmarks.stats import summary
from mininet_topos.agents import admin
from mininet_topos.dove_topo import MODES, DoveNet
from mininet_topos.peers import describe
from mininet_topos.traffic import TrafficError, iperf3, mbits

RTT = re.compile(r"time=([\d.]+) ms")
ROOT = Path(__file__).resolve().parent.parent
STARTED = time.monotonic()

DATAPLANE_SYSTEMS = ("dove", "ovn", "normal", "kernel", "learning")
FIRST_PACKET_SYSTEMS = ("dove", "ovn", "normal")
SCALE_SYSTEMS = ("dove", "ovn")
MIGRATION_SYSTEMS = ("dove", "ovn", "normal")


def progress(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {text}", file=sys.stderr, flush=True)


def available(system: str) -> bool:
    return system == "dove" or system in MODES


def rtts(output: str) -> list[float]:
    return [float(x) for x in RTT.findall(output)]


def packet_ins(dnet: DoveNet) -> int:
    return sum(admin(hv)["counters"].get("packet_in", 0) for hv in dnet.hypervisors)


# ------------------------------------------------------- first packet + data plane


def pair_sample(system: str, seconds: int, with_iperf: bool, settings: dict) -> dict[str, Any]:
    """One fresh build of two hypervisors with a VM each: first ping, steady RTT, iperf3.

    The system's versions, MTU and offloads go into ``settings`` the first time."""
    started = time.monotonic()
    dnet = build(system, 2, 1, 2)
    build_s = time.monotonic() - started
    try:
        if system not in settings:
            settings[system] = describe(dnet)
        a, b = dnet.vms[0], dnet.vms[1]
        assert a.hypervisor is not b.hypervisor
        first = rtts(a.host.cmd(f"ping -c1 -W2 {b.ip}"))
        steady = rtts(a.host.cmd(f"ping -c20 -i0.05 -W2 {b.ip}"))
        sample: dict[str, Any] = {
            "system": system,
            "build_s": build_s,
            "first_rtt_ms": first[0] if first else None,
            "first_lost": not first,
            "steady_rtt_ms": sorted(steady)[len(steady) // 2] if steady else None,
        }
        if with_iperf:
            before = packet_ins(dnet) if system == "dove" else None
            try:
                sample["iperf_mbits"] = mbits(iperf3(a, b, seconds))
            except TrafficError as e:
                sample["iperf_mbits"] = None
                sample["iperf_error"] = str(e)[-300:]
            if before is not None:
                sample["packet_ins_during_iperf"] = packet_ins(dnet) - before
        return sample
    finally:
        dnet.stop()


def run_pairs(
    systems: list[str], reps: int, seconds: int, with_iperf: bool, settings: dict
) -> list[dict]:
    """Repetitions interleaved across systems, so drift hits all of them alike."""
    samples = []
    for rep in range(reps):
        order = systems if rep % 2 == 0 else list(reversed(systems))
        for system in order:
            progress(f"pair rep {rep + 1}/{reps}: {system}")
            try:
                sample = pair_sample(system, seconds, with_iperf, settings)
            except Exception as e:  # a peer failing must not lose the other figures
                sample = {"system": system, "error": f"{type(e).__name__}: {e}"[-500:]}
            sample["rep"] = rep
            samples.append(sample)
            progress(f"  {json.dumps({k: v for k, v in sample.items() if k != 'rep'})[:200]}")
    return samples


def summarize_pairs(samples: list[dict], systems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in systems:
        rows = [s for s in samples if s["system"] == system and "error" not in s]
        out[system] = {
            key: summary([r.get(key) for r in rows])
            for key in ("first_rtt_ms", "steady_rtt_ms", "iperf_mbits", "build_s")
        }
        out[system]["first_lost"] = sum(1 for r in rows if r.get("first_lost"))
        out[system]["errors"] = sum(1 for s in samples if s["system"] == system and "error" in s)
        if system == "dove":
            out[system]["packet_ins_during_iperf"] = [
                r.get("packet_ins_during_iperf") for r in rows
            ]
    return out


# ------------------------------------------------------------------- controller


def run_controller(quick: bool, out: Path) -> dict[str, Any]:
    path = out / "controller.json"
    cmd = [sys.executable, "-m", "benchmarks.controller_bench", "--out", str(path)]
    if quick:
        cmd.append("--quick")
    progress("controller: " + " ".join(cmd[1:]))
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=1500,
    )
    for line in proc.stderr.splitlines()[-30:]:
        progress(f"  {line}")
    if proc.returncode != 0 or not path.exists():
        return {"error": f"exit {proc.returncode}: {proc.stderr[-500:]}"}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# -------------------------------------------------------------------- migration

PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)")


def migration_sample(system: str, moves: int, spacing: float) -> dict[str, Any]:
    """A 5 ms ping stream from a VM on hv1 to a VM moving between hv2 and hv3."""
    from mininet_topos.migration import migrate

    dnet = build(system, 3, 1, 2)
    try:
        pinger, mover = dnet.vms[0], dnet.vms[1]
        hv2, hv3 = dnet.hv("hv2"), dnet.hv("hv3")
        warm = pinger.host.cmd(f"ping -c3 -i0.05 -W1 {mover.ip}")
        if "3 received" not in warm:
            return {"system": system, "error": f"no path before moving: {warm[-200:]}"}
        # To a file, not a pipe: a pipe nobody reads fills and stalls the stream.
        log = tempfile.TemporaryFile(mode="w+")
        stream = pinger.host.popen(
            ["ping", "-D", "-i", "0.005", "-W", "1", mover.ip],
            stdout=log,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(spacing)
        moved_at = []
        unplugged = []
        for _ in range(moves):
            moved_at.append(time.time())
            took = migrate(dnet, mover, hv3 if mover.hypervisor is hv2 else hv2)
            unplugged.append(took * 1000)
            time.sleep(spacing)
        stream.send_signal(2)
        stream.wait(timeout=10)
        log.seek(0)
        output = log.read()
    finally:
        dnet.stop()
    replies = [
        (float(m.group(1)), int(m.group(2))) for m in map(PING_LINE.match, output.splitlines()) if m
    ]
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    gaps = []
    for t in moved_at:
        around = [r[0] for r in replies if t - 0.05 <= r[0] <= t + spacing]
        before = [r[0] for r in replies if r[0] < t]
        points = ([before[-1]] if before else []) + around
        gaps.append(
            max((b - a for a, b in zip(points, points[1:], strict=False)), default=spacing) * 1000
        )
    return {
        "system": system,
        "moves": moves,
        "gaps_ms": gaps,
        "gap_ms": summary(gaps),
        # The emulation's own share: the port is absent while it moves between namespaces.
        "unplugged_ms": summary(unplugged),
        "lost": int(sent.group(1)) - int(sent.group(2)) if sent else None,
        "sent": int(sent.group(1)) if sent else None,
    }


# ------------------------------------------------------------------------ report


def describe_machine() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        try:
            return (
                subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
                .stdout.strip()
                .splitlines()[0]
            )
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "kernel": out("uname", "-r"),
        "cpus": os.cpu_count(),
        "ovs": out("ovs-vswitchd", "--version"),
        "ovn": out("ovn-controller", "--version"),
        "iperf3": out("iperf3", "--version"),
        "python": sys.version.split()[0],
        "commit": out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "datapath": "OVS userspace (netdev); kernel VXLAN for the kernel system",
        "vm_mtu": "1450 (VXLAN systems), 1442 (OVN, Geneve)",
        "offload": "tx checksum offload off on VM veths and on every veth feeding userspace OVS",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer and shorter runs, small scale: a change's check (< 5 min)",
    )
    parser.add_argument(
        "--sections",
        default="controller,first,dataplane,migration,scale,sites,directory,routing,ovsrestart,"
        "agentrestart",
    )
    parser.add_argument(
        "--directory-vms",
        default="1000,2000",
        help="the directory section's sizes: 1000 (10 hypervisors), 2000 (20), or both",
    )
    parser.add_argument(
        "--directory-systems",
        default=",".join(DIRECTORY_SYSTEMS),
        help="the directory section's systems (default: the three modes and OVN)",
    )
    parser.add_argument(
        "--routing-parts",
        default="paths,gateway",
        help="the routing section's parts: paths (routed next to same-subnet), gateway "
        "(SNAT throughput and the failover gap)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args(argv)
    setLogLevel("error")
    sections = set(args.sections.split(","))
    reps = args.reps or (5 if not args.quick else 3)
    seconds = 5 if not args.quick else 2
    out = args.out or ROOT / "results" / datetime.now().strftime("bench-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": describe_machine(), "quick": args.quick, "reps": reps}

    if "controller" in sections:
        results["controller"] = run_controller(args.quick, out)
    if sections & {"first", "dataplane"}:
        systems = [s for s in DATAPLANE_SYSTEMS if available(s)]
        if "dataplane" not in sections:
            systems = [s for s in FIRST_PACKET_SYSTEMS if available(s)]
        settings: dict[str, Any] = {}
        samples = run_pairs(systems, reps, seconds, "dataplane" in sections, settings)
        results["pairs"] = {
            "samples": samples,
            "summary": summarize_pairs(samples, systems),
            "settings": settings,
        }
    if "migration" in sections:
        moves = 6 if args.quick else 20
        results["migration"] = []
        for system in [s for s in MIGRATION_SYSTEMS if available(s)]:
            progress(f"migration {system}: {moves} moves")
            try:
                results["migration"].append(migration_sample(system, moves, 1.0))
            except Exception as e:
                results["migration"].append(
                    {"system": system, "error": f"{type(e).__name__}: {e}"[-400:]}
                )
            progress(f"  {json.dumps(results['migration'][-1])[:300]}")
    if "scale" in sections:
        size = (4, 4, 10) if args.quick else (10, 20, 50)
        results["scale"] = []
        for system in [s for s in SCALE_SYSTEMS if available(s)]:
            try:
                results["scale"].append(
                    scale_sample(
                        system,
                        *size,
                        pairs_per_tenant=2,
                        timeout=120 if args.quick else 600,
                        reps=2 if args.quick else 5,
                        progress=progress,
                    )
                )
            except Exception as e:
                results["scale"].append({"system": system, "error": f"{type(e).__name__}: {e}"})
            progress(f"  {json.dumps(results['scale'][-1])[:300]}")

    if "sites" in sections:
        from benchmarks.sites_bench import run_sites

        results["sites"] = run_sites(2 if args.quick else 6, progress)
        progress(f"  failover gap ms {json.dumps(results['sites']['failover_gap_ms'])}")

    if "routing" in sections:
        from benchmarks.routing_bench import run_routing

        parts = tuple(args.routing_parts.split(","))
        results["routing"] = run_routing(reps, seconds, progress, parts)

    if "ovsrestart" in sections:
        from benchmarks.ovs_restart_bench import run_ovs_restart

        results["ovsrestart"] = run_ovs_restart(reps if args.quick else 2 * reps, progress)

    if "agentrestart" in sections:
        from benchmarks.agent_restart_bench import run_agent_restart

        results["agentrestart"] = run_agent_restart(reps, progress, 1 if args.quick else 2)

    if "geneve" in sections:
        from benchmarks.geneve_bench import run_geneve

        results["geneve"] = run_geneve(reps, seconds, progress)
    if "kernelvtep" in sections:  # not in the default list: say --sections kernelvtep
        from benchmarks.kernel_vtep_bench import run_kernel_vtep

        results["kernelvtep"] = run_kernel_vtep(reps, seconds, progress)

    if "directory" in sections:
        vms = tuple(int(n) for n in args.directory_vms.split(","))
        directory_reps = args.reps or (2 if args.quick else 3)
        systems = tuple(args.directory_systems.split(","))
        results["directory"] = run_directory(args.quick, directory_reps, progress, vms, systems)

    (out / "samples.json").write_text(json.dumps(results, indent=2, default=str))
    from benchmarks.report import write_report

    write_report(results, out)
    progress(f"results in {out}")
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
