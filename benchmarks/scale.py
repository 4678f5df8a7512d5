"""Scale: every VM port removed, then added back at once, on a deployment of hundreds
or thousands of VMs; and, for the directory (issue 11), the same work in each resolution
mode next to OVN, with the first packet to a never-contacted VM measured first.

Systems: ``dove`` (static peers, LEARN), ``dove-learn``, ``dove-lookup`` and ``dove-push``
(``discovery = directory`` with a 3-member cluster, every instance in that resolution),
and ``ovn``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.stats import summary
from mininet_topos.agents import admin, build_dove_net
from mininet_topos.dove_topo import DoveNet, VmRecord, build_net, pushed, set_resolution
from mininet_topos.hypervisor import wait_until

RTT = re.compile(r"time=([\d.]+) ms")
DIRECTORY_MODES = ("learn", "lookup", "push")
DIRECTORY_SYSTEMS = tuple(f"dove-{m}" for m in DIRECTORY_MODES) + ("ovn",)

# The agent's counters of what it learned, by whichever way (LEARN, a request it
# answered, the directory's push, a lookup in its copy of the directory).
KNOWN_COUNTERS = ("learned", "learned_from_request", "endpoint_pushed", "resolved_from_directory")
LEARN_COUNTERS = ("learn_requests_sent", "learn_replies_sent")
DIRECTORY_COUNTERS = ("directory_updates", "directory_transactions")

Progress = Callable[[str], None]


def is_dove(system: str) -> bool:
    return system == "dove" or system.startswith("dove-")


def build(system: str, hypervisors: int, tenants: int, vms_per_tenant: int) -> DoveNet:
    """The system's emulation, ready to forward; for ``dove-<mode>`` every instance is in
    that resolution (and, for push, every endpoint pushed) before it returns."""
    if system == "dove":
        dnet, _ = build_dove_net(hypervisors, tenants, vms_per_tenant)
        return dnet
    if system.startswith("dove-"):
        mode = system.removeprefix("dove-")
        if mode not in DIRECTORY_MODES:
            raise ValueError(f"unknown system {system!r}")
        dnet, _ = build_dove_net(hypervisors, tenants, vms_per_tenant, directory=True)
        try:
            instances = sorted({vm.instance for vm in dnet.vms})
            if mode != "learn":
                for instance in instances:
                    set_resolution(dnet, instance, mode)
            if mode == "push":
                wait_until(
                    lambda: all(pushed(dnet, i) for i in instances),
                    60.0 + len(dnet.vms) / 10,
                    "every endpoint to be pushed",
                    step=0.5,
                )
        except BaseException:
            dnet.stop()
            raise
        return dnet
    return build_net(hypervisors, tenants, vms_per_tenant, mode=system)


def vm_ports(dnet: DoveNet) -> dict[Any, list[tuple[str, str, str]]]:
    """Per hypervisor: (bridge, port, external_ids) of its VM ports, as they are now."""
    found: dict[Any, list[tuple[str, str, str]]] = {}
    for vm in dnet.vms:
        hv = vm.hypervisor
        bridge = hv.vsctl("port-to-br", vm.port).strip()
        ids = hv.vsctl("get", "Interface", vm.port, "external_ids").strip()
        found.setdefault(hv, []).append((bridge, vm.port, ids))
    return found


def replug(ports: dict[Any, list[tuple[str, str, str]]], unplug: bool) -> None:
    """Remove or re-add every VM port, one OVSDB transaction per hypervisor."""
    for hv, rows in ports.items():
        args: list[str] = []
        for bridge, port, ids in rows:
            if unplug:
                args += ["--", "--if-exists", "del-port", bridge, port]
            else:
                args += ["--", "add-port", bridge, port]
                args += ["--", "set", "Interface", port, f"external_ids={ids}"]
        hv.vsctl(*args)


def sample_pairs(
    dnet: DoveNet, per_tenant: int, offset: int = 0
) -> list[tuple[VmRecord, VmRecord]]:
    """Up to ``per_tenant`` cross-hypervisor pairs of each tenant, spread over its VMs;
    ``offset`` picks other pairs than offset 0 does."""
    pairs = []
    for tenant in sorted({vm.tenant for vm in dnet.vms}):
        vms = dnet.tenant_vms(tenant)
        crossing = [
            (a, b) for a in vms for b in vms if a is not b and a.hypervisor is not b.hypervisor
        ]
        step = max(1, len(crossing) // per_tenant)
        pairs += crossing[offset % step :: step][:per_tenant]
    return pairs


def reach_times(
    pairs: list[tuple[VmRecord, VmRecord]], t0: float, timeout: float
) -> list[float | None]:
    """Per pair, seconds from t0 until its first answered ping (None: never).

    Every pair pings every 50 ms until one echo comes back, all pairs at once.  A ping
    that gives up early (the VM's kernel failed to resolve the address: three ARP
    requests unanswered, about 3 s) is started again while the timeout lasts."""

    def start(a: VmRecord, b: VmRecord) -> Any:
        left = max(1, int(timeout - (time.monotonic() - t0)))
        return a.host.popen(
            ["ping", "-c1", "-i0.05", "-w", str(left), b.ip],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    procs = [start(a, b) for a, b in pairs]
    done: list[float | None] = [None] * len(procs)
    while any(d is None for d in done) and time.monotonic() - t0 < timeout + 2:
        for i, proc in enumerate(procs):
            if done[i] is not None or proc.poll() is None:
                continue
            if proc.returncode == 0:
                done[i] = time.monotonic() - t0
            elif time.monotonic() - t0 < timeout:
                procs[i] = start(*pairs[i])
            else:
                done[i] = -1.0
        time.sleep(0.005)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    return [d if d is not None and d >= 0 else None for d in done]


def first_packets(pairs: list[tuple[VmRecord, VmRecord]]) -> tuple[list[float], int]:
    """The first ping of each pair, one pair at a time (nothing else in flight):
    RTTs in ms, and how many were lost."""
    found, lost = [], 0
    for a, b in pairs:
        rtt = RTT.findall(a.host.cmd(f"ping -c1 -W2 {b.ip}"))
        if rtt:
            found.append(float(rtt[0]))
        else:
            lost += 1
    return found, lost


def rss_kb(pattern: str) -> list[int]:
    """Resident memory of the processes whose command line matches."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if pattern in cmdline and "pgrep" not in cmdline:
                found.append(pid_rss_kb(int(proc.name)))
        except (OSError, AttributeError):
            continue
    return found


def pid_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def directory_pids(dnet: DoveNet) -> list[int]:
    if dnet.directory is None:
        return []
    return [p for p in (m.server_pid for m in dnet.directory.members) if p]


def counters(dnet: DoveNet) -> dict[str, dict[str, int]]:
    return {hv.name: admin(hv, "counters") for hv in dnet.hypervisors}


def counted(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], names: tuple[str, ...]
) -> int:
    """The rise of the named counters, summed over every agent."""
    return sum(after[h].get(k, 0) - before[h].get(k, 0) for h in after for k in names)


def directory_endpoints(dnet: DoveNet) -> int:
    """Endpoint rows in the directory, read from its leader."""
    assert dnet.directory is not None
    leader = dnet.directory.wait_leader()
    out = leader.run("ovsdb-client", "--format=json", "query", f"unix:{leader.sock}",
                     '["DOVE_Directory",{"op":"select","table":"Endpoint","where":[],'
                     '"columns":["mac"]}]')  # fmt: skip
    return out.count('"mac"')


def forget_all(dnet: DoveNet, system: str, timeout: float) -> None:
    """After every port went: until the control plane has seen them go."""
    if system.startswith("dove-"):
        # The directory no longer lists any endpoint: every agent has published its
        # ports' removal (and, in push mode, been told of the others').
        wait_until(lambda: directory_endpoints(dnet) == 0, timeout, "the endpoints to go", 0.2)
    time.sleep(2.0 if is_dove(system) else 5.0)  # what follows: flows removed, aged


def scale_sample(
    system: str,
    hypervisors: int,
    tenants: int,
    vms_per_tenant: int,
    pairs_per_tenant: int,
    timeout: float,
    reps: int,
    progress: Progress,
    first_pairs: int = 0,
) -> dict[str, Any]:
    """Build once; then (``first_pairs``) the first ping of that many never-contacted
    pairs; then ``reps`` rounds of every port gone and back at once."""
    progress(f"scale {system}: building {hypervisors} hypervisors, {tenants * vms_per_tenant} VMs")
    started = time.monotonic()
    dnet = build(system, hypervisors, tenants, vms_per_tenant)
    sample: dict[str, Any] = {
        "system": system,
        "hypervisors": hypervisors,
        "vms": len(dnet.vms),
        "tenants": tenants,
        "build_s": time.monotonic() - started,
    }
    try:
        if first_pairs:
            per_tenant = max(1, -(-first_pairs // tenants))
            firsts, lost = first_packets(sample_pairs(dnet, per_tenant, offset=1)[:first_pairs])
            sample["first_packet_ms"] = summary(firsts)
            sample["first_packets_lost"] = lost
            progress(f"  {system} first packet ms: {sample['first_packet_ms']}, lost {lost}")
        ports = vm_ports(dnet)
        pairs = sample_pairs(dnet, pairs_per_tenant)
        before = counters(dnet) if is_dove(system) else {}
        cpu_before = cpu_s(directory_pids(dnet))
        # The expensive build once; the measured event (every port gone, then back at
        # once) several times on it.
        rounds = []
        for rep in range(reps):
            replug(ports, unplug=True)
            forget_all(dnet, system, timeout)
            t0 = time.monotonic()
            replug(ports, unplug=False)
            times = reach_times(pairs, t0, timeout)
            reached = [t for t in times if t is not None]
            rounds.append(
                {
                    "all_reached_s": max(reached) if len(reached) == len(times) else None,
                    "median_pair_s": summary(reached)["median"],
                    "unreachable": len(times) - len(reached),
                }
            )
            progress(f"  {system} round {rep + 1}/{reps}: {rounds[-1]}")
        sample["rounds"] = rounds
        sample["reachable"] = summary([r["all_reached_s"] for r in rounds])
        sample["reachable_s"] = sample["reachable"]["median"]
        sample["pairs"] = len(pairs)
        sample["unreachable_pairs"] = max(r["unreachable"] for r in rounds)
        sample["replugged_endpoints"] = len(dnet.vms) * reps
        bridge = "br-dove" if is_dove(system) else "br-int"
        flow_counts = [
            len(hv.ofctl("dump-flows", bridge).splitlines()) - 1 for hv in dnet.hypervisors
        ]
        sample["flows_per_host"] = summary(flow_counts)
        if is_dove(system):
            sample["agent_rss_kb"] = summary(rss_kb("dove-agent"))
            after = counters(dnet)
            sample["learn_messages"] = counted(before, after, LEARN_COUNTERS)
            sample["directory_updates"] = counted(before, after, DIRECTORY_COUNTERS[:1])
            sample["directory_transactions"] = counted(before, after, DIRECTORY_COUNTERS[1:])
            known = counted(before, after, KNOWN_COUNTERS)
            sample["learned_endpoints"] = known
            messages = (
                sample["learn_messages"]
                + sample["directory_updates"]
                + sample["directory_transactions"]
            )
            sample["messages_per_endpoint"] = messages / known if known else None
            # The old name, LEARN messages only, for reports of static mode.
            sample["learn_messages_per_endpoint"] = (
                sample["learn_messages"] / known if known else None
            )
            if dnet.directory is not None:
                # The whole cluster's CPU over the rounds, what their transactions and
                # monitor updates cost (the simulation fits its costs on it).
                sample["directory_cpu_s"] = cpu_s(directory_pids(dnet)) - cpu_before
                pids = [m.server_pid for m in dnet.directory.members]
                sample["directory_rss_kb"] = summary([pid_rss_kb(p) for p in pids if p])
        else:
            sample["agent_rss_kb"] = summary(rss_kb("ovn-controller"))
        return sample
    finally:
        dnet.stop()


# Issue 11's two sizes: (hypervisors, tenants, VMs per tenant), by number of VMs; quick
# mode's stand-ins keep the ratio of VMs to hypervisors small enough for 5 minutes.
DIRECTORY_SIZES = {1000: (10, 20, 50), 2000: (20, 40, 50)}
QUICK_SIZES = {1000: (4, 4, 10), 2000: (6, 6, 10)}


def run_directory(
    quick: bool,
    reps: int,
    progress: Progress,
    vms: tuple[int, ...] = (1000, 2000),
    systems: tuple[str, ...] = DIRECTORY_SYSTEMS,
) -> list[dict[str, Any]]:
    """The same work in the three resolution modes and OVN, at two sizes (issue 11):
    1,000 VMs on 10 hypervisors and 2,000 on 20 (quick: 40 on 4 and 60 on 6)."""
    sizes = [(QUICK_SIZES if quick else DIRECTORY_SIZES)[n] for n in vms]
    samples: list[dict[str, Any]] = []
    for hypervisors, tenants, per_tenant in sizes:
        for system in systems:
            try:
                sample = scale_sample(
                    system,
                    hypervisors,
                    tenants,
                    per_tenant,
                    pairs_per_tenant=2,
                    timeout=120 if quick else 600,
                    reps=reps,
                    progress=progress,
                    first_pairs=2 * tenants if quick else 40,
                )
            except Exception as e:  # a peer failing must not lose the other figures
                sample = {
                    "system": system,
                    "hypervisors": hypervisors,
                    "vms": tenants * per_tenant,
                    "error": f"{type(e).__name__}: {e}"[-500:],
                }
            samples.append(sample)
            shown = {k: v for k, v in sample.items() if k != "rounds"}
            progress(f"  {str(shown)[:300]}")
    return samples
