"""ovs-vswitchd restarted under traffic (issue 13, point 2): dove-ryu next to OVN.

One build per system: two hypervisors, one tenant with a VM on each. A 5 ms ping stream
runs from the VM on hv1 to the VM on hv2 while one hypervisor's ovs-vswitchd restarts
(`mininet_topos.ovs_restart`; ovsdb-server, the agent and ovn-controller keep running), in
turn the sender's and the receiver's, in two ways:

- ``restore``: as ``ovs-ctl restart`` does: flows saved (``ovs-save``), the daemon started
  under ``flow-restore-wait``, the flows replayed, the flag cleared, the controller then
  connects (on OVS 3.1 br-dove is flushed as it regains its controller and the agent
  programs it; OVN's br-int keeps the replayed flows);
- ``plain``: a stop and a start: the switch comes back empty and its controller programs it.

The gap is the longest silence between echo replies from the restart on. Both systems
share everything but their controller, so the ratio dove / OVN is what the controller adds.

    sudo .venv/bin/python -m benchmarks.ovs_restart_bench [--reps N] [--out FILE]
    (or: scripts/bench.sh --sections ovsrestart)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.routing_bench import stream_through_failover
from benchmarks.stats import fmt, ratio, summary
from mininet_topos.emulation import RunningNet, VmRecord
from mininet_topos.ovs_restart import Restart, restart_vswitchd

SYSTEMS = ("dove", "ovn")
VARIANTS = ("restore", "plain")
SETTLE = 0.5  # seconds of stream before the restart, and after it came back

Progress = Callable[[str], None]


def build(system: str) -> tuple[RunningNet, VmRecord, VmRecord]:
    """Two hypervisors, one tenant, its VM on hv1 and its VM on hv2."""
    from mininet_topos.dove_topo import build_dove_net, build_net

    if system == "dove":
        net, _ = build_dove_net(2, 1, 2)
    elif system == "ovn":
        net = build_net(2, 1, 2, mode="ovn")
    else:
        raise ValueError(f"unknown system {system!r}")
    src, dst = net.vms[0], net.vms[1]
    assert src.hypervisor.name == "hv1" and dst.hypervisor.name == "hv2"
    return net, src, dst


def steps_ms(done: Restart) -> dict[str, float]:
    """Each step's time from the stop (ms): how long the daemon was away, the replay."""
    return {
        name: round((at - done.stopped) * 1000, 1)
        for name in ("gone", "started", "addressed", "restored", "released")
        if (at := getattr(done, name))
    }


def restart_sample(
    system: str, src: VmRecord, dst: VmRecord, side: str, variant: str
) -> dict[str, Any]:
    """One restart of ``side``'s ovs-vswitchd under the stream ``src`` -> ``dst``."""
    hv = src.hypervisor if side == "sender" else dst.hypervisor
    done: list[Restart] = []
    # Before each stream the pair must answer (the previous restart is over).
    warm = src.host.cmd(f"ping -c3 -i0.05 -W1 {dst.ip}")
    if "3 received" not in warm:
        return {"system": system, "side": side, "variant": variant, "error": warm[-200:]}
    got = stream_through_failover(
        src,
        dst.ip,
        lambda: done.append(restart_vswitchd(hv, restore=variant == "restore")),
        SETTLE,
    )
    return {
        "system": system,
        "side": side,
        "variant": variant,
        **got,
        "steps_ms": steps_ms(done[0]) if done else {},
        "saved_flows": done[0].saved_flows if done else None,
    }


def run_system(system: str, reps: int, progress: Progress) -> list[dict[str, Any]]:
    """``reps`` restarts of each variant on one build, sides and variants alternating."""
    samples: list[dict[str, Any]] = []
    progress(f"ovsrestart: building {system}")
    try:
        net, src, dst = build(system)
    except Exception as e:
        return [{"system": system, "error": f"build: {type(e).__name__}: {e}"[-500:]}]
    try:
        for rep in range(reps):
            side = ("sender", "receiver")[rep % 2]
            for variant in VARIANTS if rep % 2 == 0 else tuple(reversed(VARIANTS)):
                try:
                    sample = restart_sample(system, src, dst, side, variant)
                except Exception as e:  # one failed restart must not lose the others
                    sample = {"system": system, "side": side, "variant": variant,
                              "error": f"{type(e).__name__}: {e}"[-500:]}  # fmt: skip
                sample["rep"] = rep
                samples.append(sample)
                progress(f"  {system} {variant} {side}: gap {sample.get('gap_ms')} ms")
    finally:
        net.stop()
    return samples


def summarize(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per system and variant: the gap (median, spread), what was lost, how many came
    back; dove / OVN per variant; restore / plain per system."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        for variant in VARIANTS:
            runs = [s for s in samples if s["system"] == system and s.get("variant") == variant]
            good = [s for s in runs if "error" not in s]
            out[f"{system}/{variant}"] = {
                "gap_ms": summary([s.get("gap_ms") for s in good]),
                "lost": summary([s.get("lost") for s in good]),
                "recovered": sum(1 for s in good if s.get("gap_ms") is not None),
                "runs": len(runs),
                "failed": len(runs) - len(good),
            }
    ratios: dict[str, float | None] = {}
    for variant in VARIANTS:
        ratios[f"dove_over_ovn/{variant}"] = ratio(
            out["dove/" + variant]["gap_ms"], out["ovn/" + variant]["gap_ms"]
        )
    for system in SYSTEMS:
        ratios[f"{system}/restore_over_plain"] = ratio(
            out[system + "/restore"]["gap_ms"], out[system + "/plain"]["gap_ms"]
        )
    out["ratios"] = ratios
    return out


def run_ovs_restart(reps: int, progress: Progress) -> dict[str, Any]:
    """The whole section: both systems, ``reps`` restarts of each variant."""
    samples = [s for system in SYSTEMS for s in run_system(system, reps, progress)]
    return {"samples": samples, "summary": summarize(samples)}


def report_section(result: dict[str, Any]) -> list[str]:
    """The report's section (markdown lines)."""
    summ = result["summary"]
    lines = [
        "## ovs-vswitchd restart",
        "",
        "A 5 ms ping stream between VMs on two hypervisors while one hypervisor's "
        "ovs-vswitchd restarts (the sender's and the receiver's in turn; ovsdb-server and "
        "the controller keep running). restore: as `ovs-ctl restart` (flows saved, "
        "flow-restore-wait, replayed, flag cleared); plain: stop and start, the controller "
        "reprograms an empty switch. Gap: the longest silence between replies.",
        "",
        "| system | variant | gap ms, median (min-max) | echoes lost, median | runs |",
        "|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        for variant in VARIANTS:
            s = summ[f"{system}/{variant}"]
            failed = f", {s['failed']} failed" if s["failed"] else ""
            lost = s["lost"]["median"]
            lines.append(
                f"| {system} | {variant} | {fmt(s['gap_ms'], 0)} | "
                f"{'n/a' if lost is None else f'{lost:.0f}'} | "
                f"{s['recovered']} recovered of {s['runs']}{failed} |"
            )
    r = summ["ratios"]

    def x(key: str) -> str:
        return "n/a" if r.get(key) is None else f"{r[key]:.2f}x"

    lines += [
        "",
        f"dove-ryu's gap / OVN's: {x('dove_over_ovn/restore')} with flow-restore-wait, "
        f"{x('dove_over_ovn/plain')} without. With / without flow-restore-wait: dove-ryu "
        f"{x('dove/restore_over_plain')}, OVN {x('ovn/restore_over_plain')}.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    from mininet.log import setLogLevel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6, help="restarts per system and variant")
    parser.add_argument("--out", type=Path, default=None, help="write the samples here (JSON)")
    args = parser.parse_args(argv)
    setLogLevel("error")
    result = run_ovs_restart(args.reps, lambda text: print(text, file=sys.stderr, flush=True))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    print("\n".join(report_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
