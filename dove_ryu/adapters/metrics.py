"""The agent's Prometheus metrics, from a copy of the core, through prometheus_client.

`snapshot` copies what the metrics need out of a core: its `StatsView` (the shell
calls it under its lock; counts per instance, never the endpoints, so it stays cheap
at scale), with the switch's flow counts.  Each agent has its own `registry`, whose
collector asks the shell for a snapshot at every scrape and builds the metric
families from it outside the lock.  `TableFlows` is the shell's cache of the
switch's per-table flow counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dove_ryu.agent.stats import PACKET_IN_REASONS, StatsView
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.pipeline import tables_of

if TYPE_CHECKING:
    from dove_ryu.agent import AgentCore

# What `generate_latest` writes (CONTENT_TYPE_LATEST is now 1.0.0, which prometheus_client
# itself sends only to a scraper that asks for it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True)
class Counted:
    """Packets our flows of one purpose handled in one table of the datapath: traffic
    that never reaches the agent (routed, NATed, dropped), counted by the switch and
    shown as ``metric`` with ``labels``.  Entries with the same metric and labels add up."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    table: str
    purpose: Purpose


DATAPATH_COUNTS: tuple[Counted, ...] = (
    Counted("dove_routed_packets_total", (("to", "subnet"),), "l3_route", Purpose.ROUTE),
    Counted("dove_routed_packets_total", (("to", "gateway"),), "l3_route", Purpose.ROUTE_DEFAULT),
    Counted("dove_routed_packets_total", (("to", "inside"),), "ext_unnat", Purpose.ROUTE),
    Counted(
        "dove_nat_packets_total", (("direction", "out"), ("kind", "snat")), "snat", Purpose.SNAT
    ),
    Counted(
        "dove_nat_packets_total",
        (("direction", "out"), ("kind", "floating_ip")),
        "snat",
        Purpose.FLOATING_IP,
    ),
    Counted(
        "dove_nat_packets_total", (("direction", "in"), ("kind", "snat")), "ext_in", Purpose.SNAT
    ),
    Counted(
        "dove_nat_packets_total",
        (("direction", "in"), ("kind", "floating_ip")),
        "ext_in",
        Purpose.FLOATING_IP,
    ),
    Counted("dove_dhcp_packets_total", (), "port_security", Purpose.DHCP),
    Counted(
        "dove_datapath_drops_total", (("reason", "spoofed"),), "port_security", Purpose.DROP_SPOOF
    ),
    Counted(
        "dove_datapath_drops_total", (("reason", "not_member"),), "classify", Purpose.DROP_NONMEMBER
    ),
    Counted(
        "dove_datapath_drops_total",
        (("reason", "unclassified"),),
        "classify",
        Purpose.DROP_UNCLASSIFIED,
    ),
    Counted("dove_datapath_drops_total", (("reason", "no_route"),), "l3_route", Purpose.DROP_MISS),
    Counted(
        "dove_datapath_drops_total", (("reason", "external"),), "ext_in", Purpose.DROP_EXTERNAL
    ),
    Counted(
        "dove_datapath_drops_total", (("reason", "external"),), "ext_unnat", Purpose.DROP_EXTERNAL
    ),
)
_DATAPATH_HELP = {
    "dove_routed_packets_total": "IPv4 packets routed in the datapath, by where to: another "
    "subnet of the router, the active gateway, or (a gateway) into a subnet from outside.",
    "dove_nat_packets_total": "Packets through the gateway's conntrack NAT, by direction and kind.",
    "dove_dhcp_packets_total": "VMs' DHCP requests taken to the agent (not flooded).",
    "dove_datapath_drops_total": "Packets our flows dropped in the datapath, by reason.",
}


def counted_for(role: str) -> tuple[Counted, ...]:
    """The datapath counts an agent of ``role`` has (its pipeline has their tables)."""
    names = {t.name for t in tables_of(role)}
    return tuple(c for c in DATAPATH_COUNTS if c.table in names)


Question = str | Counted  # a table's flow count, or one datapath count


class TableFlows:
    """What the switch counts for us, asked at most every ``max_age`` s: our flows per
    table, and the packets of `DATAPATH_COUNTS`.

    When `due`, the shell sends one aggregate-stats request per question and calls
    `asked` with their transaction ids; each reply goes to `answered`."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.asked_at: float | None = None
        self.waiting: dict[int, Question] = {}  # xid -> what it asked
        self.counts: dict[str, int] = {}  # table name -> our flows there
        self.packets: dict[Counted, int] = {}

    def due(self, now: float) -> bool:
        return self.asked_at is None or now - self.asked_at >= self.max_age

    def asked(self, now: float, xids: Mapping[int, Question]) -> None:
        self.asked_at = now
        self.waiting = dict(xids)  # a reply that never came is not waited for again

    def answered(self, xid: int, flow_count: int, packet_count: int = 0) -> bool:
        """Take one reply; True when it was the last one awaited."""
        question = self.waiting.pop(xid, None)
        if question is None:
            return False
        if isinstance(question, Counted):
            self.packets[question] = packet_count
        else:
            self.counts[question] = flow_count
        return not self.waiting

    def forget(self) -> None:
        """The switch went away: its counts say nothing any more."""
        self.asked_at, self.waiting, self.counts, self.packets = None, {}, {}, {}


@dataclass(frozen=True)
class Snapshot(StatsView):
    """What one scrape shows: the core's numbers, and the switch's flows per table."""

    table_flows: Mapping[str, int] = field(default_factory=dict)  # in pipeline order;
    # empty until the switch answers
    datapath_packets: Mapping[Counted, int] = field(default_factory=dict)  # likewise
    signing_key: int = 0  # the id of the deployment key this agent signs with
    accepted_keys: tuple[int, ...] = ()  # the ids it accepts
    accepted_by_key: Mapping[int, int] = field(default_factory=dict)  # messages, by key id


def snapshot(
    core: AgentCore,
    table_flows: Mapping[str, int],
    datapath_packets: Mapping[Counted, int] | None = None,
) -> Snapshot:
    """Copy the core's numbers (call under the lock that guards the core)."""
    view = core.stats_view()
    channel = core.p.channel
    return Snapshot(
        **{f.name: getattr(view, f.name) for f in fields(view)},
        table_flows=dict(table_flows),
        datapath_packets=dict(datapath_packets or {}),
        signing_key=channel.keys.signing,
        accepted_keys=channel.keys.ids,
        accepted_by_key=dict(channel.accepted_by_key),
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


class SnapshotCollector(Collector):
    """The agent's metric families, built at each scrape from ``take()``'s snapshot.

    ``take`` is the shell's: it copies the core under the shell's lock; the families
    are built outside it."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self.take = take

    def collect(self) -> Iterator[Metric]:
        return families(self.take())


def registry(take: Callable[[], Snapshot]) -> CollectorRegistry:
    """One agent's registry (never the global default: two agents in a process, as in
    the tests, must not share one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(take))
    return reg


def render(snap: Snapshot) -> str:
    """The exposition text of one snapshot."""
    return generate_latest(registry(lambda: snap)).decode()


def families(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot, in exposition order."""
    c = snap.counters
    info = {"host": snap.host, "role": snap.role, "underlay_ip": snap.underlay_ip}
    if snap.site:
        info |= {"site": snap.site, "wan_ip": snap.wan_ip}
    agent = GaugeMetricFamily(
        "dove_agent_info", "The agent: host, role, its legs, site.", labels=list(info)
    )
    agent.add_metric(list(info.values()), 1)
    yield agent
    yield GaugeMetricFamily(
        "dove_switch_connected",
        "1 while the agent has its bridge connected and programmed.",
        value=int(snap.connected),
    )
    if snap.proxy_active is not None and snap.role == "gateway":
        yield GaugeMetricFamily(
            "dove_gateway_active",
            "1 while this gateway is the active one (hosts send it their routers' traffic).",
            value=int(snap.proxy_active),
        )
    elif snap.proxy_active is not None:
        yield GaugeMetricFamily(
            "dove_proxy_active",
            "1 while this proxy is its site's active one.",
            value=int(snap.proxy_active),
        )
    if snap.directory_reachable is not None:
        yield GaugeMetricFamily(
            "dove_directory_reachable",
            "1 while the directory answers (discovery = directory).",
            value=int(snap.directory_reachable),
        )
    # A counter family drops its name's "_total" and the exposition adds it back; with no
    # `created` given there are no "_created" samples.
    packet_ins = CounterMetricFamily(
        "dove_packet_ins_total",
        "Packets the pipeline sent to the agent, by the flow that sent them.",
        labels=["reason"],
    )
    for reason in PACKET_IN_REASONS:
        packet_ins.add_metric([reason], snap.packet_ins.get(reason, 0))
    yield packet_ins
    for counter, help_text in _NAMED_COUNTERS.items():
        yield CounterMetricFamily(f"dove_{counter}_total", help_text, value=c.get(counter, 0))
    unlearn = CounterMetricFamily(
        "dove_unlearn_sent_total", "UN-LEARN messages sent, by cause.", labels=["cause"]
    )
    for cause, counter in _UNLEARN_CAUSES:
        unlearn.add_metric([cause], c.get(counter, 0))
    yield unlearn
    yield GaugeMetricFamily("dove_learn_pending", "LEARNs in flight.", value=snap.pending)
    yield HistogramMetricFamily(
        "dove_learn_latency_seconds",
        "From a LEARN's first request to its answer.",
        buckets=[(floatToGoString(le), n) for le, n in snap.latency.cumulative()],
        sum_value=snap.latency.sum,
    )
    drops = CounterMetricFamily(
        "dove_drops_total",
        "Control messages, packet-ins and requests dropped, by reason "
        "(control_* are control messages that failed decoding or authentication).",
        labels=["reason"],
    )
    for name, n in sorted(c.items()):
        if name.startswith("drop_"):
            drops.add_metric([name.removeprefix("drop_")], n)
    yield drops
    events = CounterMetricFamily(
        "dove_events_total",
        "Every other core counter, by name (as dovectl counters shows them).",
        labels=["event"],
    )
    for name, n in sorted(c.items()):
        if not name.startswith("drop_") and name not in _NOT_EVENTS:
            events.add_metric([name], n)
    yield events
    yield GaugeMetricFamily(
        "dove_ports_rejected",
        "VM ports ignored for bad OVSDB marks.",
        value=c.get("ports_rejected", 0),
    )
    per_instance = sorted(snap.instances.items())
    endpoints = GaugeMetricFamily(
        "dove_instance_endpoints",
        "Endpoints per instance: VM ports here (local) and remote ones learned.",
        labels=["instance", "kind"],
    )
    members = GaugeMetricFamily(
        "dove_instance_members",
        "Other hosts (and, for a proxy, remote proxies) serving the instance.",
        labels=["instance"],
    )
    for i, counts in per_instance:
        endpoints.add_metric([str(i), "local"], counts.local)
        endpoints.add_metric([str(i), "learned"], counts.learned)
        members.add_metric([str(i)], counts.members)
    yield endpoints
    yield members
    flows = GaugeMetricFamily(
        "dove_table_flows",
        "Our flows in each table, as the switch counts them (refreshed every few seconds).",
        labels=["table"],
    )
    for table, n in snap.table_flows.items():
        flows.add_metric([table], n)
    yield flows
    yield from _datapath_families(snap)
    yield from _key_families(snap)


def _key_families(snap: Snapshot) -> Iterator[Metric]:
    """Which deployment keys the agent holds and which its peers use: before a key is
    retired, its series stops rising everywhere (docs/control-plane.md section 5)."""
    yield GaugeMetricFamily(
        "dove_auth_key_signing", "The id of the key this agent signs with.", value=snap.signing_key
    )
    accepted = GaugeMetricFamily(
        "dove_auth_key_accepted", "1 for each key id this agent accepts.", labels=["key_id"]
    )
    for key_id in snap.accepted_keys:
        accepted.add_metric([str(key_id)], 1)
    yield accepted
    messages = CounterMetricFamily(
        "dove_control_accepted_total",
        "Control messages accepted (authenticated, not replayed), by the key id that signed them.",
        labels=["key_id"],
    )
    for key_id in sorted(set(snap.accepted_keys) | set(snap.accepted_by_key)):
        messages.add_metric([str(key_id)], snap.accepted_by_key.get(key_id, 0))
    yield messages


def _datapath_families(snap: Snapshot) -> Iterator[Metric]:
    """The datapath counts of the agent's role: every series from the start (zero until
    the switch answers), so that rate() sees the first packets."""
    sums: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
    for counted in counted_for(snap.role):
        series = sums.setdefault(counted.metric, {})
        series[counted.labels] = series.get(counted.labels, 0) + snap.datapath_packets.get(
            counted, 0
        )
    for metric, series in sums.items():
        label_names = [name for name, _ in next(iter(series))]
        family = CounterMetricFamily(metric, _DATAPATH_HELP[metric], labels=label_names)
        for labels, n in series.items():
            family.add_metric([value for _, value in labels], n)
        yield family
