"""Beyond one machine, on paper (issue 11, item 7): an analytic model of a DOVE
deployment's control plane in each resolution mode, and of OVN by the same method.

Pure and deterministic: no I/O, no randomness, no clock.  Every figure is a small
formula over a `Deployment` (how many hosts and endpoints, how instances spread) and
a set of `Costs` (per-message costs measured in the emulation, or the defaults
below with where they came from).  `benchmarks.simulate` is the command around it.

What each mode sends, read from the code (dove_ryu/agent/arrivals.py, host.py,
host_misses.py, adapters/directory.py):

- a VM that arrives sends ENDPOINT to every other host serving its instance; one that
  leaves sends UN-LEARN to its learners and every host serving the instance (every
  mode); an ENDPOINT for a VM a host never learned installs nothing;
- ``learn``: a miss sends a LEARN to every host serving the instance, the owner
  replies; with ``discovery = static`` every host announces to every peer it lists
  (all hosts) every ``announce_interval``, and at once when what it serves changes;
- ``discovery = directory`` (all of lookup, push, and learn so configured): no
  announcements; every host raises its Host_Liveness row's heartbeat once per
  ``directory_heartbeat_interval`` (one transaction, sent back to its own client and
  to the reapers beside the members, which alone monitor every Host_Liveness row),
  publishes its VMs as Endpoint rows (one transaction per change), and monitors the
  Host rows of every host sharing an instance with it, its own, and the Endpoint
  rows of its ``lookup`` and ``push`` instances (a ``learn`` instance's rows are
  written but reach no agent); a Host row changes only when
  what the host serves changes (or a reaper marks it dead: host deaths are not
  modelled);
- every monitor is served by the Raft leader, which also writes every transaction
  and replicates it to the two followers (an upper bound: the agents' IDL connects
  to any member, which spreads the monitors over the three);
- ``lookup`` answers a miss from the monitored copy (no LEARN); ``push`` installs the
  copy's endpoints ahead of any packet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

SYSTEMS = ("learn-static", "learn-directory", "lookup", "push", "ovn")

# Published OVN figures found (none at 3,000 chassis was found; see `PUBLISHED`).
PUBLISHED: tuple[tuple[str, str], ...] = (
    (
        "1,000 sandbox hypervisors, 10,000 ports on 40 switches: `ovn-nbctl --wait=hv sync` "
        "took 4 min 52.9 s while every chassis's nb_cfg write was sent to every other "
        "chassis (O(n^2) monitor updates), 11.4 s once that row moved to Chassis_Private, "
        "monitored by its own chassis only",
        "https://www.mail-archive.com/ovs-dev@openvswitch.org/msg42155.html",
    ),
    (
        "ovn-controller RSS 822,232 kB on a node with 292 pods of a 27-node cluster "
        "(lflow cache unlimited); a 1 GB cache limit chosen from 120-node density runs",
        "https://github.com/openshift/cluster-network-operator/pull/1147",
    ),
    (
        "ovn-controller at scale: 1.17 GB, 376 MB with the lflow cache disabled (OVN 20.09)",
        "https://github.com/ovn-kubernetes/ovn-kubernetes/pull/1745",
    ),
    (
        "ovn-heater's port binding to ovn-installed latency, example output: avg 1149 ms, "
        "95% 1711 ms, max 15665 ms over 13,750 ports (deployment size not stated)",
        "https://github.com/ovn-org/ovn-heater/pull/115",
    ),
    (
        "2,000 chassis, 200,000 ports, 3-member NB and SB clusters: updates and listings "
        "'have a large delay' (no figure given)",
        "https://github.com/ovn-org/ovn/issues/260",
    ),
    (
        "OVSDB relay exists because 'hundreds or even thousands' of ovn-controllers on a "
        "3-5 member cluster lead to performance issues; more members raise latency",
        "https://docs.openvswitch.org/en/latest/topics/ovsdb-relay/",
    ),
)


@dataclass(frozen=True)
class InstanceClass:
    """Instances of one size: each spans ``span`` hosts and holds ``vms`` VMs;
    ``share`` of all endpoints are in instances of this class."""

    name: str
    span: int
    vms: int
    share: float


# Tenants' instances spanning a few to hundreds of hosts, a third of the VMs each way.
DEFAULT_MIX = (
    InstanceClass("small", span=4, vms=20, share=0.3),
    InstanceClass("medium", span=32, vms=200, share=0.4),
    InstanceClass("large", span=256, vms=2000, share=0.3),
)


@dataclass(frozen=True)
class Deployment:
    hosts: int = 10_000
    endpoints: int = 1_000_000
    mix: tuple[InstanceClass, ...] = DEFAULT_MIX
    announce_interval: float = 2.0  # dove_ryu.config default: static announcements
    heartbeat_interval: float = 2.0  # directory_heartbeat_interval (default: announce_interval)
    reapers: int = 3  # one beside each member, each monitoring every Host_Liveness row
    talk_peers: int = 10  # other VMs of its instance a VM talks to (who learns it)
    # Churn, per endpoint: each VM lives a day (one start, one stop), 1 in 10 moves a day.
    starts_per_endpoint_s: float = 1 / 86400
    stops_per_endpoint_s: float = 1 / 86400
    moves_per_endpoint_s: float = 0.1 / 86400

    def scaled(self, hosts: int) -> Deployment:
        """The same deployment per host (endpoints per host, mix) on ``hosts`` hosts;
        spans capped at the number of hosts."""
        per_host = self.endpoints / self.hosts
        mix = tuple(replace(c, span=min(c.span, hosts)) for c in self.mix)
        return replace(self, hosts=hosts, endpoints=round(per_host * hosts), mix=mix)


@dataclass(frozen=True)
class Costs:
    """Per-message costs; defaults from BENCHMARKS.md (commit 633e8d9's run) or, where
    the emulation measures nothing, stated assumptions (`sources` says which)."""

    # LEARN requests + replies per learned endpoint = slope * members asked + base.
    # BENCHMARKS.md Scale: 13.35 per endpoint with 9 members; one point: ratio only.
    learn_msgs_slope: float = 13.35 / 10
    learn_msgs_base: float = 13.35 / 10
    # First packet by LEARN with one member asked (2 hypervisors): BENCHMARKS.md 4.31 ms;
    # each further member costs one more unicast sent by the asking agent.
    learn_fp_ms: float = 4.31
    learn_fp_per_member_ms: float = 0.023  # BENCHMARKS.md: the core's 23 us per packet-in
    first_packet_ms: dict[str, float] = field(
        default_factory=lambda: {"push": 0.75, "lookup": 0.75, "ovn": 0.68}
    )
    # Agent time per endpoint it handles (own port or a remote one), from the re-plug:
    # 3.12 s (dove) / 2.63 s (OVN) for 10 hosts x 1,000 endpoints on 2 cores.
    agent_ms_per_endpoint: dict[str, float] = field(
        default_factory=lambda: {
            "learn-static": 3.12e3 * 2 / 10_000,
            "learn-directory": 3.12e3 * 2 / 10_000,
            "lookup": 3.12e3 * 2 / 10_000,
            "push": 3.12e3 * 2 / 10_000,
            "ovn": 2.63e3 * 2 / 10_000,
        }
    )
    # Agent RSS = base + per known endpoint.  dove: 67.5 MB at 40 VMs, 69 MB at 1,000
    # (BENCHMARKS.md); OVN: 23 MB at 1,000, its slope assumed dove's.
    rss_base_mb: dict[str, float] = field(
        default_factory=lambda: {
            "dove": 67.5 - 40 * 1.5 / 960 * 1000 / 1024,
            "ovn": 23.0 - 1000 * 1.5 / 960 * 1000 / 1024,
        }
    )
    rss_kb_per_endpoint: dict[str, float] = field(
        default_factory=lambda: {"dove": 1.5 * 1000 / 960, "ovn": 1.5 * 1000 / 960}
    )
    # The directory: not measured by the emulation (samples.json has counts, no CPU).
    txn_cpu_us: float = 200.0  # leader CPU per small transaction, Raft log append included
    update_cpu_us: float = 20.0  # leader CPU per monitor update message to one client
    commit_ms: float = 1.5  # leader append + one follower's ack (quorum of 3) + fsync
    publish_wait_ms: float = 1.0  # port watcher -> directory client, woken at once
    northd_ms: float = 10.0  # OVN: ovn-northd's incremental run per NB change (assumed)
    sources: dict[str, str] = field(default_factory=dict)


def defaults() -> Costs:
    return Costs(
        sources={
            "learn messages": "BENCHMARKS.md Scale: 13.35 per endpoint, 9 members (one point)",
            "first packet": "BENCHMARKS.md: LEARN 4.31 ms (2 hosts), push 0.7-0.8 ms "
            "(README), OVN 0.68 ms",
            "per member asked": "assumed: the core's 23 us per packet-in (BENCHMARKS.md)",
            "agent per endpoint": "BENCHMARKS.md Scale: reachable 3.12 s (dove), 2.63 s "
            "(OVN) for 10 x 1,000 endpoints on 2 cores",
            "agent memory": "BENCHMARKS.md: 67-68 MB at 40 VMs, 69 MB at 1,000; OVN 23 MB",
            "directory": "assumed, not measured: 200 us per transaction, 20 us per update, "
            "1.5 ms commit, 1 ms publish wait (the port watcher wakes the client)",
        }
    )


# ---------------------------------------------------------------- the deployment


def instances(d: Deployment, c: InstanceClass) -> float:
    return c.share * d.endpoints / c.vms


def served_per_host(d: Deployment, c: InstanceClass) -> float:
    """Instances of class ``c`` one host serves, on average."""
    return instances(d, c) * c.span / d.hosts


def known_per_host(d: Deployment) -> float:
    """Endpoints of the instances a host serves: its monitored copy (and OVN's)."""
    return sum(served_per_host(d, c) * c.vms for c in d.mix)


def neighbours(d: Deployment) -> float:
    """Other hosts sharing at least one instance with a host (whose Host rows it
    monitors), instances placed at random: (N-1) * (1 - prod (1 - (s-1)/(N-1))^k)."""
    n = d.hosts - 1
    if n <= 0:
        return 0.0
    alone = math.prod((1 - (c.span - 1) / n) ** served_per_host(d, c) for c in d.mix)
    return n * (1 - alone)


def alone(c: InstanceClass) -> float:
    """Chance a VM is its instance's only one on its host (the host starts or stops
    serving the instance with it): (1 - 1/s)^(v-1)."""
    return (1 - 1 / c.span) ** (c.vms - 1) if c.span > 1 else 0.0


def learners(d: Deployment, c: InstanceClass) -> float:
    """Other hosts that learn a VM: where its ``talk_peers`` peers run,
    (s-1) * (1 - (1 - 1/s)^P)."""
    peers = min(d.talk_peers, c.vms - 1)
    return (c.span - 1) * (1 - (1 - 1 / c.span) ** peers) if c.span > 1 else 0.0


# -------------------------------------------------------- messages per event

KINDS = (
    "LEARN+reply",
    "ENDPOINT",
    "UN-LEARN",
    "announcements",
    "directory transactions",
    "monitor updates",
)


def learn_messages(costs: Costs, members: float) -> float:
    """LEARN requests and replies to learn one endpoint with ``members`` hosts asked."""
    return costs.learn_msgs_slope * members + costs.learn_msgs_base


def _event(d: Deployment, costs: Costs, system: str, c: InstanceClass, event: str) -> dict:
    s, n = c.span, d.hosts
    members = s - 1
    changes = alone(c) * (2 if event == "move" else 1)  # Host rows / announcements
    m = dict.fromkeys(KINDS, 0.0)
    if system == "ovn":
        # NB change -> northd's SB transaction -> the chassis claims (or releases);
        # each SB transaction reaches the chassis that have the datapath.
        m["directory transactions"] = 2
        m["monitor updates"] = 2 * s
        return m
    if event in ("stop", "move"):
        m["UN-LEARN"] = members
    if event in ("start", "move"):
        m["ENDPOINT"] = members
    if event == "start" and system.startswith("learn"):
        m["LEARN+reply"] = learners(d, c) * learn_messages(costs, members)
    if system == "learn-static":
        m["announcements"] = changes * (n - 1)
    else:
        m["directory transactions"] = 2 if event == "move" else 1
        # An Endpoint row reaches the hosts serving the instance in lookup and push (in
        # learn, no agent monitors it: its own client only); a Host row change reaches
        # the host's neighbours.
        endpoint_watchers = 1 if system.startswith("learn") else s
        m["monitor updates"] = m[
            "directory transactions"
        ] * endpoint_watchers + changes * neighbours(d)
    return m


def messages(d: Deployment, costs: Costs, system: str, event: str) -> dict[str, float]:
    """Control messages of one VM start, move or stop, by kind, endpoint-weighted."""
    total = sum(c.share for c in d.mix)
    out = dict.fromkeys(KINDS, 0.0)
    for c in d.mix:
        for k, v in _event(d, costs, system, c, event).items():
            out[k] += c.share / total * v
    return out


# ---------------------------------------------------------------- steady state


@dataclass(frozen=True)
class Load:
    txn_per_s: float  # transactions at the directory (OVN: its southbound database)
    updates_per_s: float  # monitor update messages the leader sends
    host_msgs_per_s: float  # messages between hosts, deployment-wide
    leader_cores: float  # the leader's CPU for those, in cores


def heartbeat_receivers(d: Deployment) -> float:
    """Monitors a heartbeat is sent to: its host's own client (which writes its row
    through the IDL, so monitors it) and every reaper; no other agent (until schema
    1.1.0 the heartbeat was in the Host row, sent to ``neighbours(d) + 1`` clients)."""
    return 1 + d.reapers


def rates(d: Deployment) -> dict[str, float]:
    return {
        "start": d.starts_per_endpoint_s * d.endpoints,
        "stop": d.stops_per_endpoint_s * d.endpoints,
        "move": d.moves_per_endpoint_s * d.endpoints,
    }


def load(d: Deployment, costs: Costs, system: str) -> Load:
    """Heartbeats (or announcements) every interval, plus the churn's events."""
    txn = updates = host = 0.0
    if system == "learn-static":
        host = d.hosts * (d.hosts - 1) / d.announce_interval
    elif system != "ovn":  # OVN writes nothing periodic to its southbound database
        txn = d.hosts / d.heartbeat_interval
        updates = d.hosts * heartbeat_receivers(d) / d.heartbeat_interval
    for event, rate in rates(d).items():
        m = messages(d, costs, system, event)
        txn += rate * m["directory transactions"]
        updates += rate * m["monitor updates"]
        host += rate * sum(m[k] for k in ("LEARN+reply", "ENDPOINT", "UN-LEARN", "announcements"))
    cores = (txn * costs.txn_cpu_us + updates * costs.update_cpu_us) / 1e6
    return Load(txn, updates, host, cores)


# ------------------------------------------------------------------ convergence


def learn_first_packet_ms(costs: Costs, members: float) -> float:
    """A LEARN answered: the first packet with ``members`` hosts asked."""
    return costs.learn_fp_ms + costs.learn_fp_per_member_ms * max(members - 1, 0)


def hop_ms(costs: Costs) -> float:
    """One control message between agents: half of what a LEARN adds to a pushed first
    packet (request and reply)."""
    return max(costs.learn_fp_ms - costs.first_packet_ms["push"], 0.0) / 2


def fan_out_ms(costs: Costs, span: float, leader_cores: float) -> float:
    """The leader's monitor updates to the ``span`` hosts serving an instance, slowed
    by its load (1 / (1 - utilisation)); inf when it is saturated."""
    if leader_cores >= 1:
        return math.inf
    return span * costs.update_cpu_us / 1e3 / (1 - leader_cores)


def convergence_ms(d: Deployment, costs: Costs, system: str, event: str) -> float:
    """Until every host that needs the new location has it, endpoint-weighted
    (``learn``: the learners' first packet; directory modes: commit and fan-out)."""
    cores = load(d, costs, system).leader_cores
    apply = costs.agent_ms_per_endpoint[system]
    total = sum(c.share for c in d.mix)
    out = 0.0
    for c in d.mix:
        members = c.span - 1
        direct = hop_ms(costs) + members * costs.learn_fp_per_member_ms + apply
        if system == "ovn":
            fan = fan_out_ms(costs, c.span, cores)
            if event == "start":  # NB, northd, SB, the chassis's claim, then fan-out
                t = 3 * costs.commit_ms + costs.northd_ms + 2 * fan + apply
            else:  # release / claim in the SB, then fan-out
                t = costs.commit_ms + fan + apply
        elif event != "start":
            t = direct  # UN-LEARN and ENDPOINT between the hosts, in every mode
        elif system.startswith("learn"):
            t = learn_first_packet_ms(costs, members)
        else:
            fan = fan_out_ms(costs, c.span, cores)
            t = costs.publish_wait_ms + costs.commit_ms + fan + apply
        out += c.share / total * t
    return out


def memory_mb(d: Deployment, costs: Costs, system: str) -> float:
    """Agent RSS per host: a base plus each endpoint it holds (``learn``, static or
    directory discovery: those its VMs talk to; lookup and push: the monitored copy of
    the instances it serves; OVN: its datapaths' port bindings)."""
    known = known_per_host(d)
    if system.startswith("learn"):
        known = min(known, d.endpoints / d.hosts * d.talk_peers)
    key = "ovn" if system == "ovn" else "dove"
    return costs.rss_base_mb[key] + costs.rss_kb_per_endpoint[key] * known / 1024


# -------------------------------------------------------------------- calibration


def linear_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = slope * x + intercept``; with two points, the line through
    them.  One point (or equal x): slope 0 through the mean."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


EMULATION_SYSTEMS = {
    "dove-learn": ("learn-static", "learn-directory"),
    "dove-lookup": ("lookup",),
    "dove-push": ("push",),
    "ovn": ("ovn",),
}


def emulation_span(sample: dict) -> int:
    """Hosts serving one tenant in the emulation: its VMs go round-robin."""
    return min(int(sample["hypervisors"]), int(sample["vms"]) // int(sample["tenants"]))


def emulation_known(sample: dict) -> float:
    """Endpoints of the tenants one hypervisor serves."""
    span = emulation_span(sample)
    return (
        int(sample["tenants"])
        * span
        / int(sample["hypervisors"])
        * (int(sample["vms"]) / int(sample["tenants"]))
    )


def _median(s: dict, key: str) -> float | None:
    v = s.get(key)
    if isinstance(v, dict):
        v = v.get("median")
    return float(v) if v is not None else None


def fit(samples: Sequence[dict], cores: int = 2) -> tuple[Costs, list[str]]:
    """Costs fitted from the benchmark's ``directory`` samples (one per system and
    size); what is not in them keeps its default.  Returns the notes of each fit."""
    costs, notes = defaults(), []
    by = {
        k: [s for s in samples if s.get("system") == k and "error" not in s]
        for k in EMULATION_SYSTEMS
    }

    def line(system: str, fx: object, key: str, what: str) -> tuple[float, float] | None:
        assert callable(fx)
        pts = [(fx(s), v) for s in by[system] if (v := _median(s, key)) is not None]
        if len(pts) < 2:
            notes.append(f"{what}: {len(pts)} sample(s) of {system}, default kept")
            return None
        slope, intercept = linear_fit(pts)
        shown = ", ".join(f"({x:g}, {y:.4g})" for x, y in pts)
        notes.append(
            f"{what} ({system}): points {shown} -> slope {slope:.4g}, intercept {intercept:.4g}"
        )
        return slope, intercept

    def members(s: dict) -> float:
        return emulation_span(s) - 1

    got = line(
        "dove-learn", members, "messages_per_endpoint", "LEARN messages per endpoint vs members"
    )
    if got:
        costs = replace(costs, learn_msgs_slope=max(got[0], 0.0), learn_msgs_base=max(got[1], 0.0))
        costs.sources["learn messages"] = "fitted: calibration samples"
    got = line("dove-learn", members, "first_packet_ms", "LEARN first packet ms vs members")
    if got:
        per = max(got[0], 0.0)
        costs = replace(costs, learn_fp_per_member_ms=per, learn_fp_ms=got[1] + per)
        costs.sources["per member asked"] = "fitted: calibration samples"
    fp = dict(costs.first_packet_ms)
    for system, key in (("dove-push", "push"), ("dove-lookup", "lookup"), ("ovn", "ovn")):
        vals = [v for s in by[system] if (v := _median(s, "first_packet_ms")) is not None]
        if vals:
            fp[key] = sum(vals) / len(vals)
            notes.append(f"first packet {key}: mean of {', '.join(f'{v:.3g}' for v in vals)} ms")
    costs = replace(costs, first_packet_ms=fp)
    costs.sources["first packet"] = "fitted: calibration samples (medians)"

    agent = dict(costs.agent_ms_per_endpoint)
    rss_base, rss_kb = dict(costs.rss_base_mb), dict(costs.rss_kb_per_endpoint)
    for system, rows in EMULATION_SYSTEMS.items():

        def handled(s: dict) -> float:  # endpoints handled by all agents, per core
            return int(s["hypervisors"]) * emulation_known(s) / cores

        pts = [
            (handled(s), float(s["reachable_s"]) * 1e3) for s in by[system] if s.get("reachable_s")
        ]
        if len(pts) >= 2:
            slope, intercept = linear_fit(pts)
            for r in rows:
                agent[r] = max(slope, 0.0)
            notes.append(
                f"re-plug ms vs endpoints handled per core ({system}): slope {slope:.4g} ms, "
                f"intercept {intercept:.4g} ms"
            )
        got = line(system, emulation_known, "agent_rss_kb", "agent RSS kB vs endpoints known")
        if got and system in ("dove-push", "ovn"):
            key = "ovn" if system == "ovn" else "dove"
            rss_kb[key], rss_base[key] = max(got[0], 0.0), got[1] / 1024
        for s in by[system]:
            if s.get("replugged_endpoints") and s.get("directory_updates") is not None:
                notes.append(
                    f"check ({system}, {s['hypervisors']} hv): "
                    f"{s['directory_updates'] / s['replugged_endpoints']:.3g} monitor updates "
                    f"per re-plugged endpoint (unbatched model: span {emulation_span(s)})"
                )
    costs = replace(
        costs, agent_ms_per_endpoint=agent, rss_base_mb=rss_base, rss_kb_per_endpoint=rss_kb
    )
    costs.sources["agent per endpoint"] = "fitted: re-plug time at two sizes"
    costs.sources["agent memory"] = "fitted: RSS at two sizes (dove-push, ovn)"
    directory = directory_cpu(samples)
    if directory is not None:
        costs = replace(costs, txn_cpu_us=directory[0], update_cpu_us=directory[1])
        costs.sources["directory"] = "fitted: directory_cpu_s at two sizes"
        notes.append(
            f"directory: {directory[0]:.3g} us per transaction, {directory[1]:.3g} us per update"
        )
    else:
        notes.append("directory CPU: no directory_cpu_s in the samples; assumed costs kept")
    return costs, notes


def directory_cpu(samples: Sequence[dict]) -> tuple[float, float] | None:
    """Per-transaction and per-update leader CPU (us) from two samples that carry the
    leader's CPU seconds (``directory_cpu_s``): cpu = a * txns + b * updates, solved."""
    rows = [
        s
        for s in samples
        if s.get("directory_cpu_s") is not None and str(s.get("system", "")).startswith("dove")
    ]
    if len(rows) < 2:
        return None
    (t1, u1, c1), (t2, u2, c2) = (
        (
            float(s["directory_transactions"]),
            float(s["directory_updates"]),
            float(s["directory_cpu_s"]),
        )
        for s in rows[:2]
    )
    det = t1 * u2 - t2 * u1
    if det == 0:
        return None
    a = (c1 * u2 - c2 * u1) / det
    b = (t1 * c2 - t2 * c1) / det
    if a < 0 or b < 0:
        return None
    return a * 1e6, b * 1e6
