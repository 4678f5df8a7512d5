"""The soak's faults, planned from a seed before anything runs (pure: no Mininet).

``plan`` turns an ``Inventory`` (what can be hit: agents, links, VMs, sites with a proxy
pair) and a seed into a list of ``Fault``: when (seconds into the fault phase), what, on
which target, for how long. The same seed and inventory give the same faults, so a failing
soak can be run again as it was. The planner keeps its own picture of where each VM is
(it applies its own migrations) and never hits a target that is still under a fault.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What a fault does; ``hold`` is how long it lasts before it is undone."""

    AGENT_KILL = "agent_kill"  # SIGKILL a host's agent, start it again after hold
    AGENT_TERM = "agent_term"  # SIGTERM (clean stop), start it again after hold
    MIGRATE = "migrate"  # a VM's port moves to another hypervisor (live migration)
    VM_START = "vm_start"  # a spare VM's port is added, marked
    VM_STOP = "vm_stop"  # a spare VM's port is removed
    NETEM_LOSS = "netem_loss"  # tc netem on an underlay link for hold
    NETEM_DELAY = "netem_delay"
    NETEM_REORDER = "netem_reorder"
    PROXY_FAILOVER = "proxy_failover"  # a site's active proxy (agent and site link) down


NETEM_KINDS = (Kind.NETEM_LOSS, Kind.NETEM_DELAY, Kind.NETEM_REORDER)
AGENT_KINDS = (Kind.AGENT_KILL, Kind.AGENT_TERM)

# How often each kind is drawn, relative to the others (among those with a free target).
WEIGHTS: Mapping[Kind, float] = {
    Kind.AGENT_KILL: 3,
    Kind.AGENT_TERM: 2,
    Kind.MIGRATE: 4,
    Kind.VM_START: 2,
    Kind.VM_STOP: 2,
    Kind.NETEM_LOSS: 1.5,
    Kind.NETEM_DELAY: 1.5,
    Kind.NETEM_REORDER: 1.5,
    Kind.PROXY_FAILOVER: 1.5,
}
MIGRATE_BUSY = 3.0  # a migrated VM is left alone this long
CROSS_SITE_SHARE = 0.25  # of migrations, those that leave the VM's site


@dataclass(frozen=True)
class Inventory:
    """What the faults can hit.

    ``hypervisors``: hypervisor name -> site; ``vms``: migratable VM -> its hypervisor at
    the start; ``spares``: VMs that start stopped and are started and stopped (each bound
    to its hypervisor); ``links``: underlay links as ``node:interface``; ``proxy_sites``:
    sites with a proxy pair (failover)."""

    hypervisors: Mapping[str, int]
    vms: Mapping[str, str]
    spares: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    proxy_sites: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fault:
    """One fault: at ``at`` s into the fault phase, ``kind`` on ``target`` for ``hold`` s
    (0: nothing to undo). ``to``: a migration's destination; ``netem``: tc netem's
    arguments."""

    at: float
    kind: Kind
    target: str
    hold: float = 0.0
    to: str = ""
    netem: tuple[str, ...] = ()

    @property
    def ends(self) -> float:
        return self.at + self.hold

    def describe(self) -> str:
        extra = f" -> {self.to}" if self.to else ""
        extra += f" [{' '.join(self.netem)}]" if self.netem else ""
        held = f" for {self.hold:.1f}s" if self.hold else ""
        return f"t+{self.at:.1f}s {self.kind} {self.target}{extra}{held}"


@dataclass
class _Picture:
    """The planner's view as faults accumulate: placements, spares up, busy targets."""

    inv: Inventory
    placement: dict[str, str]
    up: set[str] = field(default_factory=set)
    busy: dict[str, float] = field(default_factory=dict)  # target -> free again at

    def free(self, target: str, now: float) -> bool:
        return self.busy.get(target, 0.0) <= now

    def candidates(self, kind: Kind, now: float) -> list[str]:
        inv = self.inv
        if kind in AGENT_KINDS:
            found = list(inv.hypervisors)
        elif kind is Kind.MIGRATE:
            found = [vm for vm in inv.vms if any(self.destinations(vm))]
        elif kind is Kind.VM_START:
            found = [s for s in inv.spares if s not in self.up]
        elif kind is Kind.VM_STOP:
            found = [s for s in inv.spares if s in self.up]
        elif kind in NETEM_KINDS:
            found = list(inv.links)
        else:
            found = [f"site{s}" for s in inv.proxy_sites]
        return [t for t in found if self.free(t, now)]

    def destinations(self, vm: str) -> tuple[list[str], list[str]]:
        """Other hypervisors of the VM's site, and those of other sites."""
        here = self.placement[vm]
        site = self.inv.hypervisors[here]
        same = [h for h, s in self.inv.hypervisors.items() if s == site and h != here]
        other = [h for h, s in self.inv.hypervisors.items() if s != site]
        return same, other


def _netem(kind: Kind, rng: random.Random) -> tuple[str, ...]:
    if kind is Kind.NETEM_LOSS:
        return ("loss", f"{rng.choice((1, 2, 5))}%")
    if kind is Kind.NETEM_DELAY:
        return ("delay", f"{rng.randint(20, 80)}ms", f"{rng.randint(5, 20)}ms")
    return ("delay", "10ms", "reorder", f"{rng.choice((10, 25))}%", "50%")


def _hold(kind: Kind, rng: random.Random) -> float:
    if kind in AGENT_KINDS:
        return round(rng.uniform(0.5, 3.0), 1)
    if kind in NETEM_KINDS:
        return round(rng.uniform(5.0, 20.0), 1)
    if kind is Kind.PROXY_FAILOVER:
        return round(rng.uniform(5.0, 15.0), 1)
    return 0.0


def plan(inv: Inventory, seed: int, duration: float, mean_gap: float = 8.0) -> list[Fault]:
    """Faults for ``duration`` s, one every ``mean_gap`` s on average (exponential gaps),
    each undone before ``duration``. Reproducible: depends on the arguments only."""
    rng = random.Random(seed)
    pic = _Picture(inv, dict(inv.vms))
    faults: list[Fault] = []
    now = 0.0
    while True:
        now += rng.expovariate(1.0 / mean_gap)
        if now >= duration:
            return faults
        kinds = [k for k in Kind if pic.candidates(k, now)]
        if not kinds:
            continue
        kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        target = rng.choice(pic.candidates(kind, now))
        hold = min(_hold(kind, rng), max(duration - now - 0.1, 0.0))
        fault = Fault(round(now, 1), kind, target, hold)
        if kind is Kind.MIGRATE:
            same, other = pic.destinations(target)
            pool = other if (not same or (other and rng.random() < CROSS_SITE_SHARE)) else same
            to = rng.choice(pool)
            pic.placement[target] = to
            fault = Fault(fault.at, kind, target, to=to)
            pic.busy[target] = now + MIGRATE_BUSY
        elif kind is Kind.VM_START:
            pic.up.add(target)
            pic.busy[target] = now + MIGRATE_BUSY
        elif kind is Kind.VM_STOP:
            pic.up.discard(target)
            pic.busy[target] = now + MIGRATE_BUSY
        else:
            if kind in NETEM_KINDS:
                fault = Fault(fault.at, kind, target, hold, netem=_netem(kind, rng))
            pic.busy[target] = now + hold + 1.0
        faults.append(fault)


def counts(faults: list[Fault]) -> dict[str, int]:
    """How many faults of each kind (every kind listed, zeros included)."""
    return {str(k): sum(1 for f in faults if f.kind is k) for k in Kind}


def final_placement(inv: Inventory, faults: list[Fault]) -> dict[str, str]:
    """Where each migratable VM is once every fault has run."""
    placement = dict(inv.vms)
    for f in faults:
        if f.kind is Kind.MIGRATE:
            placement[f.target] = f.to
    return placement
