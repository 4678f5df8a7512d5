"""The soak's faults applied to a running multi-site emulation, and the watch on its agents.

``Agents`` starts, kills and stops agents for the faults, and a thread of its own samples
every agent's RSS and notices an agent that exited without the soak asking (a crash: it is
recorded and the agent started again, so the soak goes on). ``Injector`` runs the planned
faults (soak_plan.Fault) in time order on one thread: it alone uses the nodes' shells.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak_load import Load
from benchmarks.soak_plan import AGENT_KINDS, NETEM_KINDS, Fault, Kind
from mininet_topos.dove_agent import agent_cmd
from mininet_topos.emulation import attach_vm, detach_vm
from mininet_topos.hypervisor import OvsCommandError
from mininet_topos.impair import Impairment
from mininet_topos.migration import migrate
from mininet_topos.relays import impairment_from_netem
from mininet_topos.sites import SitesNet, active_proxy

RSS_EVERY = 5.0  # seconds between RSS samples
# Without relays (SitesSpec.impairable) and without netem (a kernel built without
# sch_netem): a rate limit below the link's load.
FALLBACK_RATE = {Kind.NETEM_LOSS: "256kbit", Kind.NETEM_DELAY: "1mbit"}


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class Process:
    """One agent process of a node: when it started and its RSS samples (t, MiB)."""

    node: str
    pid: int
    started: float
    samples: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Crash:
    node: str
    pid: int
    returncode: int | None
    at: float
    tail: str


class Agents:
    """The agents of every node: restarts for the faults, RSS samples, crashes."""

    def __init__(self, snet: SitesNet) -> None:
        self.snet = snet
        self.lock = threading.Lock()
        self.processes: list[Process] = []
        self.crashes: list[Crash] = []
        self.down: set[str] = set()  # stopped by the soak, on purpose
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        now = time.time()
        for node in snet.nodes:
            assert node.agent is not None
            self.processes.append(Process(node.name, node.agent.pid, now))

    def begin(self) -> None:
        self._thread.start()

    def end(self) -> None:
        self._quit.set()
        self._thread.join(10)
        self._sample()

    def kill(self, name: str, sig: int) -> None:
        """Stop a node's agent with ``sig`` (SIGKILL or SIGTERM) and wait for it."""
        node = self.snet.hv(name)
        with self.lock:
            self.down.add(name)
            if node.agent is not None and node.agent.poll() is None:
                if sig == signal.SIGKILL:
                    node.agent.kill()
                    node.agent.wait(10)
            node.stop_agent()  # SIGTERM if still running; closes its output either way

    def start(self, name: str) -> None:
        node = self.snet.hv(name)
        with self.lock:
            proc = node.start_agent(None, agent_cmd())  # its dove.ini stays as it was
            self.processes.append(Process(name, proc.pid, time.time()))
            self.down.discard(name)

    def _watch(self) -> None:
        next_sample = 0.0
        while not self._quit.wait(1.0):
            self._crashed()
            if time.monotonic() >= next_sample:
                self._sample()
                next_sample = time.monotonic() + RSS_EVERY

    def _crashed(self) -> None:
        for node in self.snet.nodes:
            with self.lock:
                agent = node.agent
                if node.name in self.down or agent is None or agent.poll() is None:
                    continue
                out = node.in_rundir("agent.out").read_text(errors="replace")[-1500:]
                self.crashes.append(Crash(node.name, agent.pid, agent.returncode, time.time(), out))
                node.stop_agent()
            self.start(node.name)

    def _sample(self) -> None:
        now = time.time()
        with self.lock:
            live = {n.name: n.agent.pid for n in self.snet.nodes if n.agent is not None}
        for p in self.processes:
            if live.get(p.node) == p.pid:
                mib = rss_mib(p.pid)
                if mib is not None:
                    p.samples.append((now, mib))


@dataclass
class Applied:
    """A fault as it ran: when, and what went wrong applying it (not a verdict)."""

    fault: Fault
    began: float = 0.0
    error: str = ""
    detail: str = ""


class Injector:
    """Runs faults at their times (relative to ``begin``), undoing each after its hold."""

    def __init__(self, snet: SitesNet, agents: Agents, load: Load, spares: dict[str, Any]):
        self.snet, self.agents, self.load, self.spares = snet, agents, load, spares
        self.spares_up: set[str] = set()
        self.applied: list[Applied] = []
        self.failed_over: dict[str, str] = {}  # "site<n>" -> the proxy stopped
        self.netem_ok = True  # until the kernel says it has no netem qdisc
        self.fallbacks: list[Fault] = []  # netem faults applied as an htb rate limit
        self.skipped: list[Fault] = []  # reordering where there is no netem
        self.relayed: list[tuple[Fault, dict[str, int]]] = []  # the relay's counts under it
        self._before: dict[str, dict[str, int]] = {}  # link -> its relay's counts at begin

    def run(self, faults: list[Fault], start: float, log: Any) -> None:
        """Begin and end every fault at its time; returns when the last is undone."""
        steps = sorted(
            [(f.at, 0, i) for i, f in enumerate(faults)]
            + [(f.ends, 1, i) for i, f in enumerate(faults) if f.hold],
            key=lambda s: (s[0], s[1]),
        )
        records = [Applied(f) for f in faults]
        self.applied = records
        for at, undo, i in steps:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rec = records[i]
            try:
                if undo:
                    rec.detail = self._undo(rec.fault) or rec.detail
                else:
                    rec.began = time.monotonic() - start
                    rec.detail = self._do(rec.fault)
            except Exception as e:  # noqa: BLE001 - one fault failing must not end the soak
                rec.error += f"{'undo' if undo else 'do'}: {type(e).__name__}: {e}"[:300]
            print(
                f"[soak t+{time.monotonic() - start:6.1f}s] "
                f"{'end  ' if undo else 'begin'} {rec.fault.describe()} {rec.detail}"
                + (f" ERROR {rec.error}" if rec.error else ""),
                file=log,
                flush=True,
            )

    def _do(self, f: Fault) -> str:
        if f.kind in AGENT_KINDS:
            sig = signal.SIGKILL if f.kind is Kind.AGENT_KILL else signal.SIGTERM
            self.agents.kill(f.target, sig)
        elif f.kind is Kind.MIGRATE:
            took = migrate(self.snet, self.snet.vm(f.target), self.snet.hv(f.to))
            return f"(unplugged {took * 1000:.0f} ms)"
        elif f.kind is Kind.VM_START:
            spare = self.spares[f.target]
            attach_vm(spare.hypervisor, spare.host, spare.instance, spare.mac, spare.ip_cidr)
            self.spares_up.add(f.target)
            self.load.spare_up(spare)
        elif f.kind is Kind.VM_STOP:
            spare = self.spares[f.target]
            self.load.spare_down(spare)
            detach_vm(spare.hypervisor, spare.port)
            self.spares_up.discard(f.target)
        elif f.kind in NETEM_KINDS:
            return self._impair(f)
        elif f.kind is Kind.PROXY_FAILOVER:
            # The whole node fails: its agent and its datapath's site leg.  An agent
            # alone away is held by its standby while BFD still reaches the datapath.
            proxy = active_proxy(self.snet, int(f.target.removeprefix("site")))
            self.agents.kill(proxy.name, signal.SIGTERM)
            proxy.run("ip", "link", "set", proxy.uplink, "down")
            self.failed_over[f.target] = proxy.name
            return f"(stopped {proxy.name} and its site link {proxy.uplink})"
        return ""

    def _impair(self, f: Fault) -> str:
        """The link's relay (mininet_topos.impair) if it has one, else tc netem on the
        link; where the kernel has no netem either, loss and delay become an htb rate limit
        (tail drops, queueing delay) and reordering is not injected."""
        relay = self.snet.relays.get(f.target)
        if relay is not None:
            imp = impairment_from_netem(f.netem)
            self._before[f.target] = _frames(relay.counts())
            relay.set(imp)
            return f"(relay {relay.host.name}: {_brief(imp)})"
        node, intf = f.target.split(":")
        hv = self.snet.hv(node)
        if self.netem_ok:
            try:
                hv.run("tc", "qdisc", "replace", "dev", intf, "root", "netem", *f.netem)
                return ""
            except OvsCommandError as e:
                if "unknown" not in e.err:
                    raise
                self.netem_ok = False
        if f.kind is Kind.NETEM_REORDER:
            self.skipped.append(f)
            return "(no netem here: reordering not injected)"
        rate = FALLBACK_RATE[f.kind]
        hv.run("tc", "qdisc", "replace", "dev", intf, "root", "handle", "1:", "htb", "default", "1")
        hv.run("tc", "class", "replace", "dev", intf, "parent", "1:", "classid", "1:1",
               "htb", "rate", rate, "ceil", rate)  # fmt: skip
        self.fallbacks.append(f)
        return f"(no netem here: htb rate {rate} instead)"

    def _undo(self, f: Fault) -> str:
        if f.kind in AGENT_KINDS:
            self.agents.start(f.target)
        elif f.kind in NETEM_KINDS and f.target in self.snet.relays:
            relay = self.snet.relays[f.target]
            after = _frames(relay.set(Impairment()))
            before = self._before.pop(f.target)
            seen = {k: after[k] - before[k] for k in after}
            self.relayed.append((f, seen))
            return "(relay: " + ", ".join(f"{n} {k}" for k, n in seen.items()) + ")"
        elif f.kind in NETEM_KINDS:
            node, intf = f.target.split(":")
            self.snet.hv(node).run("tc", "qdisc", "del", "dev", intf, "root", check=False)
        elif f.kind is Kind.PROXY_FAILOVER and f.target in self.failed_over:
            name = self.failed_over.pop(f.target)
            proxy = next(p for p in self.snet.proxies if p.name == name)
            proxy.run("ip", "link", "set", proxy.uplink, "up")
            self.agents.start(name)
        return ""

    def relay_summary(self) -> dict[str, dict[str, int]]:
        """Per netem kind: faults applied by a relay and its frame counts under them."""
        found: dict[str, dict[str, int]] = {}
        for f, seen in self.relayed:
            row = found.setdefault(str(f.kind), {"faults": 0, **dict.fromkeys(seen, 0)})
            row["faults"] += 1
            for k, n in seen.items():
                row[k] += n
        return found


def _frames(reply: dict[str, Any]) -> dict[str, int]:
    """A relay's counts reply, both directions summed."""
    keys = ("offered", "forwarded", "dropped", "delayed", "reordered")
    return {k: reply["ab"][k] + reply["ba"][k] for k in keys}


def _brief(imp: Impairment) -> str:
    parts = []
    if imp.loss:
        parts.append(f"loss {imp.loss:.0%}")
    if imp.delay_ms:
        parts.append(f"delay {imp.delay_ms:.0f}+-{imp.jitter_ms:.0f} ms")
    if imp.reorder:
        parts.append(f"{imp.reorder:.0%} held back {imp.reorder_ms:.0f} ms")
    return ", ".join(parts) or "none"
