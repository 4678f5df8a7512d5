"""The agent's Prometheus metrics: text exposition format 0.0.4, from a copy of the core.

Pure: `snapshot` copies what the metrics need out of a core (the shell calls it under
its lock; counts per instance, never the endpoints, so it stays cheap at scale) and
`render` turns the copy into text outside the lock.  The core keeps two things only
for this module: `LatencyHistogram`, observed when a LEARN is answered, and a count of
packet-ins by `packet_in_reason`.  `TableFlows` is the shell's cache of the switch's
per-table flow counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dove_ryu.agent.stats import PACKET_IN_REASONS, LatencyHistogram

if TYPE_CHECKING:
    from dove_ryu.agent.core import DoveCore
    from dove_ryu.agent.proxy import ProxyCore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TableFlows:
    """The switch's count of our flows per table, asked at most every ``max_age`` s.

    When `due`, the shell sends one aggregate-stats request per table and calls
    `asked` with their transaction ids; each reply goes to `answered`."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.asked_at: float | None = None
        self.waiting: dict[int, str] = {}  # xid -> table name
        self.counts: dict[str, int] = {}

    def due(self, now: float) -> bool:
        return self.asked_at is None or now - self.asked_at >= self.max_age

    def asked(self, now: float, xids: Mapping[int, str]) -> None:
        self.asked_at = now
        self.waiting = dict(xids)  # a reply that never came is not waited for again

    def answered(self, xid: int, flow_count: int) -> bool:
        """Take one reply; True when it was the last one awaited."""
        table = self.waiting.pop(xid, None)
        if table is None:
            return False
        self.counts[table] = flow_count
        return not self.waiting

    def forget(self) -> None:
        """The switch went away: its counts say nothing any more."""
        self.asked_at, self.waiting, self.counts = None, {}, {}


@dataclass(frozen=True)
class InstanceCounts:
    local: int  # VM ports here
    learned: int  # remote endpoints learned
    members: int  # other hosts (for a proxy: and remote proxies) serving the instance


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows, copied out of the core."""

    host: str
    role: str
    site: str
    underlay_ip: str
    wan_ip: str  # a proxy's inter-site leg; "" on a host
    connected: bool
    proxy_active: bool | None  # None on a host
    pending: int
    counters: Mapping[str, int]
    packet_ins: Mapping[str, int]
    instances: Mapping[int, InstanceCounts]
    latency: LatencyHistogram
    table_flows: Mapping[str, int]  # in pipeline order; empty until the switch answers


def snapshot(core: DoveCore, table_flows: Mapping[str, int]) -> Snapshot:
    """Copy the core's numbers (call under the lock that guards the core)."""
    proxy = core.cfg.role == "proxy"
    # As `status` lists them: a host shows what it serves or learned; a proxy every
    # instance it carries.
    instances = set(core.by_instance) | set(core.learned.by_instance)
    if proxy:
        instances |= set(core.members)
    return Snapshot(
        host=core.cfg.name,
        role=core.cfg.role,
        site=core.cfg.proxy.site,
        underlay_ip=str(core.me),
        wan_ip=str(core.cfg.proxy.wan_ip or ""),
        connected=core.tunnel_ofport is not None,
        proxy_active=cast("ProxyCore", core).active if proxy else None,
        pending=len(core.pending),
        counters=dict(core.counters),
        packet_ins=dict(core.packet_ins),
        instances={
            i: InstanceCounts(
                local=len(core.by_instance.get(i, {})),
                learned=len(core.learned.by_instance.get(i, {})),
                members=len(core.members.get(i, {})),
            )
            for i in sorted(instances)
        },
        latency=core.learn_latency.copy(),
        table_flows=dict(table_flows),
    )


# --- rendering ------------------------------------------------------------------------

# Core counters shown as metrics of their own, dove_<counter>_total: counter -> help.
_NAMED_COUNTERS = {
    "learn_requests_sent": "LEARN requests sent, one per host asked.",
    "learn_requests_received": "LEARN requests received.",
    "learn_replies_sent": "LEARN replies sent.",
    "learn_replies_received": "LEARN replies received.",
    "learn_retransmits": "LEARNs asked again for want of an answer.",
    "learn_timeouts": "LEARNs given up after learn_retries retransmits.",
    "unlearn_received": "UN-LEARN messages received.",
}
# UN-LEARNs sent, by cause: a VM left this host; an overlay packet came for a VM that
# is not here; a proxy passed one on.
_UNLEARN_CAUSES = (
    ("departure", "unlearn_sent"),
    ("not_here", "unlearn_sent_reactive"),
    ("relayed", "unlearn_relayed"),
)
# Counters shown elsewhere, or that are not counters.
_NOT_EVENTS = {
    "packet_in",  # the sum of dove_packet_ins_total
    "learned",  # dove_learn_latency_seconds_count
    "learn_latency_ms_total",  # dove_learn_latency_seconds_sum
    "ports_rejected",  # a gauge: the ports rejected now
    *_NAMED_COUNTERS,
    *(counter for _, counter in _UNLEARN_CAUSES),
}

Labels = Mapping[str, str]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(int(value))  # bool too
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        self.lines += [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: Labels, value: float) -> None:
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.lines.append(
            f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
        )


def render(snap: Snapshot) -> str:
    """The exposition text of one snapshot."""
    out = _Text()
    c = snap.counters
    info = {"host": snap.host, "role": snap.role, "underlay_ip": snap.underlay_ip}
    if snap.site:
        info |= {"site": snap.site, "wan_ip": snap.wan_ip}
    out.family("dove_agent_info", "gauge", "The agent: host, role, its legs, site.", [(info, 1)])
    out.family(
        "dove_switch_connected",
        "gauge",
        "1 while the agent has its bridge connected and programmed.",
        [({}, int(snap.connected))],
    )
    if snap.proxy_active is not None:
        out.family(
            "dove_proxy_active",
            "gauge",
            "1 while this proxy is its site's active one.",
            [({}, int(snap.proxy_active))],
        )
    out.family(
        "dove_packet_ins_total",
        "counter",
        "Packets the pipeline sent to the agent, by the flow that sent them.",
        [({"reason": r}, snap.packet_ins.get(r, 0)) for r in PACKET_IN_REASONS],
    )
    for counter, help_text in _NAMED_COUNTERS.items():
        out.family(f"dove_{counter}_total", "counter", help_text, [({}, c.get(counter, 0))])
    out.family(
        "dove_unlearn_sent_total",
        "counter",
        "UN-LEARN messages sent, by cause.",
        [({"cause": cause}, c.get(counter, 0)) for cause, counter in _UNLEARN_CAUSES],
    )
    out.family("dove_learn_pending", "gauge", "LEARNs in flight.", [({}, snap.pending)])
    out.family(
        "dove_learn_latency_seconds",
        "histogram",
        "From a LEARN's first request to its answer.",
        [],
    )
    for bound, n in snap.latency.cumulative():
        out.sample("dove_learn_latency_seconds_bucket", {"le": _number(bound)}, n)
    out.sample("dove_learn_latency_seconds_sum", {}, snap.latency.sum)
    out.sample("dove_learn_latency_seconds_count", {}, snap.latency.count)
    drops = sorted((k.removeprefix("drop_"), v) for k, v in c.items() if k.startswith("drop_"))
    out.family(
        "dove_drops_total",
        "counter",
        "Control messages, packet-ins and requests dropped, by reason "
        "(control_* are control messages that failed decoding or authentication).",
        [({"reason": reason}, n) for reason, n in drops],
    )
    events = sorted(
        (k, v) for k, v in c.items() if not k.startswith("drop_") and k not in _NOT_EVENTS
    )
    out.family(
        "dove_events_total",
        "counter",
        "Every other core counter, by name (as dovectl counters shows them).",
        [({"event": event}, n) for event, n in events],
    )
    out.family(
        "dove_ports_rejected",
        "gauge",
        "VM ports ignored for bad OVSDB marks.",
        [({}, c.get("ports_rejected", 0))],
    )
    per_instance = sorted(snap.instances.items())
    out.family(
        "dove_instance_endpoints",
        "gauge",
        "Endpoints per instance: VM ports here (local) and remote ones learned.",
        [
            ({"instance": str(i), "kind": kind}, n)
            for i, counts in per_instance
            for kind, n in (("local", counts.local), ("learned", counts.learned))
        ],
    )
    out.family(
        "dove_instance_members",
        "gauge",
        "Other hosts (and, for a proxy, remote proxies) serving the instance.",
        [({"instance": str(i)}, counts.members) for i, counts in per_instance],
    )
    out.family(
        "dove_table_flows",
        "gauge",
        "Our flows in each table, as the switch counts them (refreshed every few seconds).",
        [({"table": t}, n) for t, n in snap.table_flows.items()],
    )
    return "\n".join(out.lines) + "\n"
