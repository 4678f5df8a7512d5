"""The controller restarted under traffic (issue 13, point 1): dove-ryu next to OVN.

One build per system: two hypervisors, one tenant, its VM t1vm1 on hv1 and t1vm2 on hv2
(plus pairs of VMs that never talked, for the first packet). A 5 ms ping stream runs from
t1vm1 to t1vm2 while the destination host's controller restarts, in two ways:

- ``sigterm``: SIGTERM, wait for the exit, start again;
- ``sigkill``: SIGKILL, then start again.

dove-ryu's controller is the host's dove agent (restarted as tests/mininet/test_restart.py
does); OVN's is the chassis' ovn-controller (``mininet_topos.ovn.restart_controller``).
Per sample: echoes lost, the longest silence between replies, and the time from the
signal until the new process is connected (dove: the status says ``connected``; OVN:
``connection-status`` says ``connected``) and back in control (dove: the take-over is
over, status ``takeover.settling`` false; OVN: an ``ovn-nbctl --wait=hv sync`` issued
once it is connected has returned, i.e. every chassis applied the current contents).
Right after it is back in control, a VM on the restarted host pings, for the first
time, a VM on the other host (dove: the restarted agent must learn it), next to the
same first ping before any restart. Then a TCP stream (iperf3, 100 Mbit/s, the
receiver on the restarted host's side) through each way of restart: what it delivered
and its longest stall (100 ms intervals below a tenth of the median).

    sudo .venv/bin/python -m benchmarks.agent_restart_bench [--reps N] [--out FILE]
    (or: scripts/bench.sh --sections agentrestart)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.stats import fmt, ratio, summary
from mininet_topos.emulation import RunningNet, VmRecord
from mininet_topos.hypervisor import Hypervisor, wait_until
from mininet_topos.traffic import gap_ms, iperf3, parse_stream, ping_stream, stop_stream

SYSTEMS = ("dove", "ovn")
WAYS = ("sigterm", "sigkill")
SETTLE = 0.5  # seconds of stream before the restart, and after it is back in control
BACK_TIMEOUT = 30.0  # seconds a restarted controller may take to be back in control
FIRST_BEFORE = 3  # first pings before any restart, per build
TCP_SECONDS = 4
TCP_RATE = "100M"
TCP_INTERVAL = 0.1
TCP_RESTART_AT = 1.5  # seconds into the TCP stream
STALL_FRACTION = 0.1  # an interval below this share of the median interval is a stall
RTT = re.compile(r"time=([\d.]+) ms")

Progress = Callable[[str], None]


@dataclass
class Bench:
    """One build: its net, the stream's ends, and the pairs (pinger on hv2, target on
    hv1) that have not talked yet."""

    system: str
    net: RunningNet
    src: VmRecord
    dst: VmRecord
    fresh: list[tuple[VmRecord, VmRecord]]

    @property
    def hv(self) -> Hypervisor:
        """The restarted host: the destination's."""
        return self.dst.hypervisor


def build(system: str, pairs: int) -> Bench:
    """Two hypervisors, one tenant: t1vm1@hv1 -> t1vm2@hv2, and ``pairs`` fresh pairs."""
    from mininet_topos.dove_topo import build_dove_net, build_net

    vms = 2 + 2 * pairs  # round-robin: odd VMs (t1vm1, t1vm3, ...) on hv1, even on hv2
    if system == "dove":
        net, _ = build_dove_net(2, 1, vms)
    elif system == "ovn":
        net = build_net(2, 1, vms, mode="ovn")
    else:
        raise ValueError(f"unknown system {system!r}")
    v = net.vms
    assert v[0].hypervisor.name == "hv1" and v[1].hypervisor.name == "hv2"
    fresh = [(v[2 * k + 1], v[2 * k]) for k in range(1, pairs + 1)]
    return Bench(system, net, v[0], v[1], fresh)


# ------------------------------------------------------------------ the controllers


def dove_restart(hv: Hypervisor, kill: bool) -> None:
    from mininet_topos.agents import agent_cmd

    if kill:
        assert hv.agent is not None
        hv.agent.kill()
        hv.agent.wait(5)
    hv.stop_agent()  # SIGTERM, waited for (a killed agent is only reaped)
    hv.start_agent(None, agent_cmd())  # its dove.ini is still in the run directory


def dove_status(hv: Hypervisor) -> dict[str, Any] | None:
    from mininet_topos.agents import admin

    try:
        return admin(hv)
    except (OSError, ValueError):  # the agent is still starting
        return None


def dove_connected(hv: Hypervisor) -> bool:
    st = dove_status(hv)
    return bool(st and st["connected"])


def dove_in_control(hv: Hypervisor) -> bool:
    st = dove_status(hv)
    return bool(st and st["connected"] and not st["takeover"]["settling"])


def restart_and_wait(b: Bench, kill: bool) -> dict[str, Any]:
    """Restart ``b.hv``'s controller; times (ms from the signal) until it is connected and
    back in control. Returns the signal's time too (``at``, epoch seconds)."""
    from mininet_topos import ovn

    hv = b.hv
    at = time.time()
    if b.system == "dove":
        dove_restart(hv, kill)
        started = time.time()
        wait_until(lambda: dove_connected(hv), BACK_TIMEOUT, "the agent connected", step=0.02)
        connected = time.time()
        wait_until(lambda: dove_in_control(hv), BACK_TIMEOUT, "the take-over over", step=0.02)
        back = time.time()
    else:
        ovn.restart_controller(hv, kill)
        started = time.time()
        wait_until(
            lambda: ovn.controller_connected(hv), BACK_TIMEOUT, "ovn-controller connected",
            step=0.02,
        )  # fmt: skip
        connected = time.time()
        central = b.net.probe  # type: ignore[attr-defined]
        central.nbctl("--wait=hv", "sync")
        back = time.time()
    return {
        "at": at,
        "started_ms": round((started - at) * 1000, 1),
        "connected_ms": round((connected - at) * 1000, 1),
        "in_control_ms": round((back - at) * 1000, 1),
    }


# ------------------------------------------------------------------------ samples


def first_ping(pinger: VmRecord, target: VmRecord) -> float | None:
    """The RTT (ms) of a first ping between two VMs that never talked; None if lost."""
    got = RTT.findall(pinger.host.cmd(f"ping -c1 -W2 {target.ip}"))
    return float(got[0]) if got else None


def stream_sample(b: Bench, way: str) -> dict[str, Any]:
    """One restart of the destination's controller under the 5 ms stream; then the first
    ping of a fresh pair across the restarted host."""
    warm = b.src.host.cmd(f"ping -c3 -i0.05 -W1 {b.dst.ip}")
    if "3 received" not in warm:
        return {"error": f"no path before the restart: {warm[-200:]}"}
    proc, log = ping_stream(b.src, b.dst.ip)
    try:
        time.sleep(SETTLE)
        times = restart_and_wait(b, kill=way == "sigkill")
        first = None
        if b.fresh:
            pinger, target = b.fresh.pop()
            first = first_ping(pinger, target)
        time.sleep(SETTLE)
    finally:
        output = stop_stream(proc, log)
    replies, sent, received = parse_stream(output)
    return {
        **times,
        "gap_ms": gap_ms(replies, times["at"]),
        "sent": sent,
        "lost": sent - received if sent is not None and received is not None else None,
        "first_ms": first,
        "first_lost": first is None,
    }


def tcp_stalls(intervals: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """From iperf3's intervals (seconds, bytes received): bytes in all, and the longest run
    of intervals below ``STALL_FRACTION`` of the median interval (ms)."""
    if not intervals:
        return {"bytes": 0, "stall_ms": None}
    floor = STALL_FRACTION * statistics.median(n for _, n in intervals)
    longest = run = 0.0
    for seconds, n in intervals:
        run = run + seconds if n < floor else 0.0
        longest = max(longest, run)
    return {"bytes": sum(n for _, n in intervals), "stall_ms": round(longest * 1000, 1)}


def tcp_sample(b: Bench, way: str) -> dict[str, Any]:
    """A rate-limited TCP stream into t1vm1 from t1vm2 (``-R``: the sender sits on the
    restarted host) while the controller restarts ``TCP_RESTART_AT`` s in."""
    got: list[dict[str, Any]] = []
    failed: list[str] = []

    def client() -> None:
        try:
            got.append(iperf3(b.src, b.dst, TCP_SECONDS, extra=("-R", "-b", TCP_RATE, "-i",
                                                                str(TCP_INTERVAL))))  # fmt: skip
        except Exception as e:
            failed.append(f"{type(e).__name__}: {e}"[-300:])

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(TCP_RESTART_AT)
    times = restart_and_wait(b, kill=way == "sigkill")
    thread.join(TCP_SECONDS + 40)
    if failed or not got:
        return {**times, "error": failed[0] if failed else "iperf3 did not finish"}
    result = got[0]
    intervals = [(i["sum"]["seconds"], i["sum"]["bytes"]) for i in result["intervals"]]
    return {
        **times,
        **tcp_stalls(intervals),
        "mbits": float(result["end"]["sum_received"]["bits_per_second"]) / 1e6,
        "retransmits": result["end"].get("sum_sent", {}).get("retransmits"),
    }


def run_system(system: str, reps: int, tcp_reps: int, progress: Progress) -> list[dict[str, Any]]:
    """On one build: first pings before any restart, ``reps`` stream samples per way
    (alternating which way goes first), then ``tcp_reps`` TCP samples per way."""
    samples: list[dict[str, Any]] = []
    progress(f"agentrestart: building {system}")
    try:
        b = build(system, FIRST_BEFORE + reps * len(WAYS))
    except Exception as e:
        return [{"system": system, "error": f"build: {type(e).__name__}: {e}"[-500:]}]

    def add(kind: str, way: str | None, rep: int, take: Callable[..., dict[str, Any]],
            *args: Any) -> None:  # fmt: skip
        try:
            sample = take(*args)
        except Exception as e:  # one failed restart must not lose the others
            sample = {"error": f"{type(e).__name__}: {e}"[-500:]}
        samples.append({"system": system, "kind": kind, "way": way, "rep": rep, **sample})
        shown = {k: v for k, v in sample.items() if k != "at"}
        progress(f"  {system} {kind} {way or ''}: {json.dumps(shown)[:220]}")

    try:
        b.src.host.cmd(f"ping -c3 -i0.05 -W1 {b.dst.ip}")
        for rep in range(FIRST_BEFORE):
            pinger, target = b.fresh.pop()
            add("first", None, rep, _first, pinger, target)
        for rep in range(reps):
            for way in WAYS if rep % 2 == 0 else tuple(reversed(WAYS)):
                add("stream", way, rep, stream_sample, b, way)
        for rep in range(tcp_reps):
            for way in WAYS:
                add("tcp", way, rep, tcp_sample, b, way)
    finally:
        b.net.stop()
    return samples


def _first(pinger: VmRecord, target: VmRecord) -> dict[str, Any]:
    first = first_ping(pinger, target)
    return {"first_ms": first, "first_lost": first is None}


# ------------------------------------------------------------------------ summary


def summarize(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per system and way: the stream's figures, the first ping after the restart, the TCP
    stream's; per system the first ping before any restart; dove / OVN per way."""
    out: dict[str, Any] = {}

    def good(system: str, kind: str, way: str | None) -> tuple[list[dict[str, Any]], int]:
        runs = [
            s for s in samples
            if s["system"] == system and s.get("kind") == kind and s.get("way") == way
        ]  # fmt: skip
        ok = [s for s in runs if "error" not in s]
        return ok, len(runs) - len(ok)

    for system in SYSTEMS:
        for way in WAYS:
            ok, failed = good(system, "stream", way)
            row: dict[str, Any] = {
                key: summary([s.get(key) for s in ok])
                for key in ("lost", "gap_ms", "connected_ms", "in_control_ms", "first_ms")
            }
            row["first_lost"] = sum(1 for s in ok if s.get("first_lost"))
            row["runs"], row["failed"] = len(ok) + failed, failed
            tcp, tcp_failed = good(system, "tcp", way)
            row["tcp"] = {
                "mbits": summary([s.get("mbits") for s in tcp]),
                "stall_ms": summary([s.get("stall_ms") for s in tcp]),
                "retransmits": summary([s.get("retransmits") for s in tcp]),
                "runs": len(tcp) + tcp_failed,
                "failed": tcp_failed,
            }
            out[f"{system}/{way}"] = row
        ok, failed = good(system, "first", None)
        out[f"{system}/first_before"] = {
            "first_ms": summary([s.get("first_ms") for s in ok]),
            "first_lost": sum(1 for s in ok if s.get("first_lost")),
            "runs": len(ok) + failed,
        }
    ratios: dict[str, float | None] = {}
    for way in WAYS:
        for key in ("gap_ms", "in_control_ms"):
            ratios[f"dove_over_ovn/{way}/{key}"] = ratio(
                out[f"dove/{way}"][key], out[f"ovn/{way}"][key]
            )
    out["ratios"] = ratios
    return out


def run_agent_restart(reps: int, progress: Progress, tcp_reps: int = 2) -> dict[str, Any]:
    """The whole section: both systems, ``reps`` restarts of each way under the stream."""
    samples = [s for system in SYSTEMS for s in run_system(system, reps, tcp_reps, progress)]
    return {"samples": samples, "summary": summarize(samples)}


# ------------------------------------------------------------------------- report


def report_section(result: dict[str, Any]) -> list[str]:
    """The report's section (markdown lines)."""
    summ = result["summary"]
    lines = [
        "## Agent restart",
        "",
        "A 5 ms ping stream between VMs on two hypervisors while the destination host's "
        "controller (dove-ryu's agent, OVN's ovn-controller) is stopped with SIGTERM or "
        "killed with SIGKILL and started again. Gap: the longest silence between replies. "
        "Connected / in control: from the signal until the new process is connected "
        "(dove: to its bridge; OVN: to the southbound database) and back in control "
        "(dove: take-over settled; OVN: an `--wait=hv sync` returned).",
        "",
        "| system | way | echoes lost, median (min-max) | gap ms | connected ms | "
        "in control ms | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        for way in WAYS:
            s = summ[f"{system}/{way}"]
            failed = f", {s['failed']} failed" if s["failed"] else ""
            lines.append(
                f"| {system} | {way} | {fmt(s['lost'], 0)} | {fmt(s['gap_ms'], 0)} | "
                f"{fmt(s['connected_ms'], 0)} | {fmt(s['in_control_ms'], 0)} | "
                f"{s['runs']}{failed} |"
            )
    r = summ["ratios"]

    def x(key: str) -> str:
        return "n/a" if r.get(key) is None else f"{r[key]:.2f}x"

    lines += [
        "",
        "dove-ryu / OVN, medians: gap "
        + ", ".join(f"{x(f'dove_over_ovn/{w}/gap_ms')} ({w})" for w in WAYS)
        + "; in control "
        + ", ".join(f"{x(f'dove_over_ovn/{w}/in_control_ms')} ({w})" for w in WAYS)
        + ".",
        "",
        "First ping from a VM on the restarted host to a VM on the other host it never "
        "talked to (dove-ryu: the agent must learn it), ms:",
        "",
        "| system | before any restart | after sigterm | after sigkill | lost |",
        "|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        before = summ[f"{system}/first_before"]
        after = [summ[f"{system}/{w}"] for w in WAYS]
        lost = before["first_lost"] + sum(a["first_lost"] for a in after)
        lines.append(
            f"| {system} | {fmt(before['first_ms'], 1)} | {fmt(after[0]['first_ms'], 1)} | "
            f"{fmt(after[1]['first_ms'], 1)} | {lost} |"
        )
    lines += [
        "",
        f"TCP through the restart (iperf3 at {TCP_RATE}bit/s, {TCP_SECONDS} s, the "
        f"restart {TCP_RESTART_AT} s in; stall: the longest run of 100 ms intervals "
        "below a tenth of the median):",
        "",
        "| system | way | Mbit/s delivered | longest stall ms | retransmits | runs |",
        "|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        for way in WAYS:
            t = summ[f"{system}/{way}"]["tcp"]
            failed = f", {t['failed']} failed" if t["failed"] else ""
            lines.append(
                f"| {system} | {way} | {fmt(t['mbits'], 1)} | {fmt(t['stall_ms'], 0)} | "
                f"{fmt(t['retransmits'], 0)} | {t['runs']}{failed} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    from mininet.log import setLogLevel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="restarts per system and way")
    parser.add_argument("--tcp-reps", type=int, default=2, help="TCP restarts per way")
    parser.add_argument("--out", type=Path, default=None, help="write the samples here (JSON)")
    args = parser.parse_args(argv)
    setLogLevel("error")
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    result = run_agent_restart(args.reps, progress, args.tcp_reps)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    print("\n".join(report_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
