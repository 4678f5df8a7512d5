"""The Prometheus metrics: the histogram, the text rendered from real cores (read back by a
strict parser), the per-table flow cache, the new settings, and the HTTP adapter on
loopback."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dove_ryu.adapters import metrics
from dove_ryu.adapters.metrics import Snapshot, TableFlows, render
from dove_ryu.adapters.metrics_http import MetricsServer
from dove_ryu.agent import AgentCore, make_core
from dove_ryu.agent.stats import (
    PACKET_IN_REASONS,
    InstanceCounts,
    LatencyHistogram,
    packet_in_reason,
)
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.flows import TAG_ARP_MISS, TAG_FLOOD, TAG_L2_MISS
from dove_ryu.openflow.pipeline import BY_NAME
from dove_ryu.protocol.messages import Announce
from tests.tools import promtext
from tests.unit.test_core import (
    KEY_HEX,
    MAC_A,
    MAC_B,
    OTHER_KEY,
    eth,
    ip,
    signed_frame,
    three_hosts,
)

pytestmark = pytest.mark.unit

GOOD = {"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX}


def scrape_of(core: AgentCore, table_flows: dict[str, int] | None = None) -> promtext.Scrape:
    text = render(metrics.snapshot(core, table_flows or {}))
    scrape = promtext.parse(text)
    for family in scrape.families.values():
        assert family.name.startswith("dove_"), family.name
        assert (family.kind == "counter") == family.name.endswith("_total"), family.name
        assert family.help, family.name
    return scrape


# ------------------------------------------------------------------- histogram


def test_histogram_buckets_are_cumulative_inclusive_and_end_in_the_count() -> None:
    h = LatencyHistogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.002, 0.05, 0.1, 3.0, 0.0):
        h.observe(value)

    assert h.cumulative() == [(0.001, 3), (0.01, 4), (0.1, 6), (math.inf, 7)]
    assert h.count == 7 and h.sum == pytest.approx(3.1535)
    copy = h.copy()
    h.observe(1.0)
    assert copy.count == 7 and h.count == 8  # a snapshot does not move with the core


def test_the_default_buckets_span_a_millisecond_to_two_seconds() -> None:
    bounds = LatencyHistogram().bounds
    assert bounds[0] == 0.001 and bounds[-1] == 2.0 and list(bounds) == sorted(bounds)


@pytest.mark.parametrize("bounds", [(), (0.1, 0.01), (0.1, 0.1), (0.1, math.inf)])
def test_histogram_bounds_must_increase_and_be_finite(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram(bounds)


# ------------------------------------------------------------------ packet-ins


@pytest.mark.parametrize(
    ("cookie", "reason"),
    [
        (Cookie(Purpose.INSTANCE, 5001, TAG_L2_MISS), "l2_miss"),
        (Cookie(Purpose.INSTANCE, 5001, TAG_ARP_MISS), "arp_miss"),
        (Cookie(Purpose.EGRESS_MISS, 5001), "not_here"),
        (Cookie(Purpose.WAN_OVERSIZE, 5001), "wan_oversize"),
        (Cookie(Purpose.INSTANCE, 5001, TAG_FLOOD), "unexpected"),
        (Cookie(Purpose.LEARNED, 5001, 1), "unexpected"),
        (None, "unexpected"),
    ],
)
def test_packet_in_reason_comes_from_the_punting_flow(cookie: Cookie | None, reason: str) -> None:
    assert packet_in_reason(cookie) == reason
    assert reason in PACKET_IN_REASONS


# ------------------------------------------------------------------- rendering


def test_a_learn_shows_in_counters_latency_packet_ins_and_endpoints() -> None:
    net = three_hosts()
    h1, h2 = net.hosts[1].core, net.hosts[2].core
    before = scrape_of(h1)
    assert before.value("dove_learn_latency_seconds_count") == 0
    assert before.value("dove_packet_ins_total", reason="l2_miss") == 0

    net.send(1, 1, eth(MAC_A, MAC_B))  # a misses b: held, LEARN to host 2
    net.now += 0.004  # the answer takes 4 ms
    net.deliver()

    s1, s2 = scrape_of(h1, {"classify": 7, "l2_forward": 5}), scrape_of(h2)
    assert s1.value("dove_packet_ins_total", reason="l2_miss") == 1
    assert s1.value("dove_packet_ins_total", reason="arp_miss") == 0
    assert s1.value("dove_learn_requests_sent_total") == 1
    assert s1.value("dove_learn_replies_received_total") == 1
    assert s1.value("dove_learn_timeouts_total") == 0
    assert s2.value("dove_learn_requests_received_total") == 1
    assert s2.value("dove_learn_replies_sent_total") == 1
    assert s1.value("dove_learn_latency_seconds_count") == 1
    assert s1.value("dove_learn_latency_seconds_sum") == pytest.approx(0.004)
    assert s1.value("dove_learn_latency_seconds_bucket", le="0.0025") == 0
    assert s1.value("dove_learn_latency_seconds_bucket", le="0.005") == 1
    assert s1.value("dove_learn_latency_seconds_bucket", le="+Inf") == 1
    assert s1.value("dove_learn_pending") == 0
    # Host 1: a, a2 (5001) and x (5002) here; b learned; host 2 serves 5001, host 3 5002.
    assert s1.value("dove_instance_endpoints", instance="5001", kind="local") == 2
    assert s1.value("dove_instance_endpoints", instance="5001", kind="learned") == 1
    assert s1.value("dove_instance_endpoints", instance="5002", kind="local") == 1
    assert s1.value("dove_instance_members", instance="5001") == 1
    # Host 2 learned a from its request (gleaned).
    assert s2.value("dove_instance_endpoints", instance="5001", kind="learned") == 1
    assert s1.value("dove_table_flows", table="classify") == 7
    assert s1.value("dove_agent_info", host="h1", role="host", underlay_ip="10.99.0.1") == 1
    assert s1.value("dove_switch_connected") == 1
    assert "dove_proxy_active" not in s1.families
    # Whatever else the core counts is there too, by name.
    assert s1.value("dove_events_total", event="ports_added") == 3


def test_dropped_control_messages_are_one_metric_by_reason() -> None:
    net = three_hosts()
    core = net.hosts[1].core
    assert scrape_of(core).samples("dove_drops_total") == {}

    forged = signed_frame(Announce(frozenset({5001})), ip(2), OTHER_KEY)
    core.control_message(net.now, forged, ip(2))
    core.control_message(net.now, forged, ip(2))
    core.control_message(net.now, b"\x00garbage", ip(2))

    scrape = scrape_of(core)
    assert scrape.value("dove_drops_total", reason="control_bad_mac") == 2
    assert scrape.value("dove_drops_total", reason="control_truncated") == 1


def test_a_proxy_says_so_and_whether_it_is_active() -> None:
    cfg = from_mapping(
        {
            **GOOD,
            "underlay_ip": "10.99.0.201",
            "role": "proxy",
            "site": "s1",
            "wan_ip": "172.31.0.11",
            "wan_peers": "172.31.0.21",
            "host_name": "s1px1",
        }
    )
    core = make_core(cfg, 0.0)
    scrape = scrape_of(core)
    info = {"host": "s1px1", "role": "proxy", "site": "s1", "wan_ip": "172.31.0.11"}
    assert scrape.value("dove_agent_info", underlay_ip="10.99.0.201", **info) == 1
    assert scrape.value("dove_proxy_active") == 0
    assert scrape.value("dove_switch_connected") == 0
    core.switch_connected(10.0, 1)  # a proxy claims once its switch is taken over
    core.tick(10.0)  # nobody else active: it takes over
    assert scrape_of(core).value("dove_proxy_active") == 1


def _snapshot(**changes: object) -> Snapshot:
    base: dict[str, object] = {
        "host": "hv1",
        "role": "host",
        "site": "",
        "underlay_ip": "10.99.0.1",
        "wan_ip": "",
        "connected": True,
        "proxy_active": None,
        "pending": 0,
        "counters": {},
        "packet_ins": {},
        "instances": {},
        "latency": LatencyHistogram(),
        "table_flows": {},
    }
    return Snapshot(**{**base, **changes})  # type: ignore[arg-type]


def test_label_values_are_escaped() -> None:
    odd = 'hv "one"\\two\nthree'
    text = render(_snapshot(host=odd, counters={"drop_a\\b": 1}))

    # prometheus_client's own parser reads back what its exposition wrote.
    read = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    info = {"host": odd, "role": "host", "underlay_ip": "10.99.0.1"}
    assert read[("dove_agent_info", frozenset(info.items()))] == 1
    assert read[("dove_drops_total", frozenset({("reason", "a\\b")}))] == 1
    scrape = promtext.parse(text)
    assert scrape.value("dove_agent_info", host=odd, role="host", underlay_ip="10.99.0.1") == 1
    assert scrape.value("dove_drops_total", reason="a\\b") == 1


def test_each_agent_has_a_registry_of_its_own() -> None:
    one, two = (metrics.registry(lambda h=h: _snapshot(host=h)) for h in ("hv1", "hv2"))
    assert REGISTRY not in (one, two)
    for reg, host in ((one, "hv1"), (two, "hv2")):
        scrape = promtext.parse(generate_latest(reg).decode())
        assert [dict(k)["host"] for k in scrape.samples("dove_agent_info")] == [host]
    assert b"dove_" not in generate_latest(REGISTRY)


def test_every_line_is_a_comment_or_a_sample_and_families_come_whole() -> None:
    h = LatencyHistogram()
    h.observe(0.0031)
    h.observe(0.7)
    text = render(
        _snapshot(
            counters={"learn_timeouts": 2, "drop_pending_full": 1, "ports_rejected": 3, "x": 4},
            packet_ins={"arp_miss": 5},
            latency=h,
            table_flows={"classify": 12, "l2_forward": 4},
            instances={5001: InstanceCounts(2, 1, 2)},
        )
    )
    scrape = promtext.parse(text)
    assert text.count("# TYPE dove_learn_latency_seconds histogram") == 1
    assert scrape.value("dove_learn_latency_seconds_bucket", le="0.005") == 1
    assert scrape.value("dove_learn_latency_seconds_bucket", le="1.0") == 2
    assert scrape.value("dove_learn_latency_seconds_count") == 2
    assert scrape.value("dove_learn_timeouts_total") == 2
    assert scrape.value("dove_ports_rejected") == 3  # a gauge, not an event
    assert scrape.value("dove_events_total", event="x") == 4
    assert scrape.samples("dove_events_total") == {frozenset({("event", "x")}): 4}
    # Every reason is there from the start, so rate() sees the first one.
    assert {dict(k)["reason"] for k in scrape.samples("dove_packet_ins_total")} == set(
        PACKET_IN_REASONS
    )
    assert [dict(k)["table"] for k in scrape.samples("dove_table_flows")] == [
        "classify",
        "l2_forward",
    ]


# ------------------------------------------------------------------ flow cache


def test_table_flows_are_asked_at_most_every_max_age_and_filled_by_replies() -> None:
    cache = TableFlows(max_age=5.0)
    assert cache.due(0.0)
    cache.asked(0.0, {11: "classify", 12: "l2_forward"})
    assert not cache.due(4.9) and cache.due(5.0)
    assert cache.answered(99, 3) is False  # not ours
    assert cache.answered(11, 7) is False
    assert cache.answered(12, 2) is True  # the last one awaited
    assert cache.counts == {"classify": 7, "l2_forward": 2}
    assert cache.answered(12, 9) is False  # a duplicate changes nothing
    cache.asked(5.0, {13: "classify"})  # a reply lost last time is not waited for
    cache.forget()
    assert cache.counts == {} and cache.due(5.1)


# --------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({**GOOD, "metrics_port": "65536"}, "metrics_port"),
        ({**GOOD, "metrics_port": "-1"}, "metrics_port"),
        ({**GOOD, "metrics_port": "9479.5"}, "metrics_port"),
        ({**GOOD, "metrics_port": "http"}, "metrics_port"),
        ({**GOOD, "metrics_port": ""}, "metrics_port"),
        ({**GOOD, "metrics_host": "localhost"}, "metrics_host"),
        ({**GOOD, "metrics_host": "::1"}, "metrics_host"),
    ],
)
def test_metrics_settings_are_checked_and_named(values: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[dove\] {setting}\b"):
        from_mapping(values)


def test_metrics_are_off_by_default_and_on_loopback_when_on() -> None:
    default = from_mapping(GOOD)
    assert default.metrics.metrics_port == 0
    assert default.metrics.metrics_host == IPv4Address("127.0.0.1")
    on = from_mapping({**GOOD, "metrics_port": " 9479 ", "metrics_host": "0.0.0.0"})
    assert on.metrics.metrics_port == 9479
    assert on.metrics.metrics_host == IPv4Address("0.0.0.0")
    assert from_mapping({**GOOD, "metrics_port": "0"}).metrics.metrics_port == 0


# -------------------------------------------------------------- HTTP adapter


@contextmanager
def serving(take: Callable[[], Snapshot]) -> Iterator[str]:
    server = MetricsServer("127.0.0.1", 0, metrics.registry(take))
    server.start()
    try:
        host, port = server.address
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_endpoint_serves_the_text_and_refuses_the_rest() -> None:
    calls: list[int] = []

    def take() -> Snapshot:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return _snapshot()

    with serving(take) as base:
        status, headers, body = fetch(f"{base}/metrics")
        assert status == 200 and headers["Content-Type"] == metrics.CONTENT_TYPE
        promtext.parse(body.decode())
        assert fetch(f"{base}/metrics")[0] == 500  # a failing render: an answer, not a hang
        assert fetch(f"{base}/metrics?x=1")[0] == 200  # and the next scrape works
        head = fetch(f"{base}/metrics", "HEAD")
        assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 0
        assert fetch(f"{base}/")[0] == 404
        assert fetch(f"{base}/metrics/x")[0] == 404
        status, headers, _ = fetch(f"{base}/metrics", "POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert fetch(f"{base}/metrics", "DELETE")[0] == 405
        assert len(calls) == 4  # refused requests never render


def test_a_silent_or_garbled_client_does_not_hold_up_a_scrape() -> None:
    with serving(_snapshot) as base:
        port = int(base.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        garbled = socket.create_connection(("127.0.0.1", port))
        garbled.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        try:
            start = time.monotonic()
            assert fetch(f"{base}/metrics")[0] == 200
            assert time.monotonic() - start < 1.0
            assert b"400" in garbled.recv(4096)  # Bad request (as HTTP/0.9: no status line)
        finally:
            for s in [*silent, garbled]:
                s.close()


def test_stopping_a_server_that_never_started_returns() -> None:
    server = MetricsServer("127.0.0.1", 0, metrics.registry(_snapshot))
    done = threading.Event()
    threading.Thread(target=lambda: (server.stop(), done.set()), daemon=True).start()
    assert done.wait(2.0)


def test_a_taken_port_is_an_os_error_for_the_shell_to_report() -> None:
    with serving(_snapshot) as base:
        port = int(base.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            MetricsServer("127.0.0.1", port, metrics.registry(_snapshot))


# ------------------------------------------------------- datapath counts (issue 12)


def test_each_datapath_count_is_a_purpose_its_table_holds() -> None:
    for counted in metrics.DATAPATH_COUNTS:
        table = BY_NAME[counted.table]
        assert counted.purpose in table.cookies, counted
        assert counted.metric in metrics._DATAPATH_HELP, counted


def test_datapath_counts_are_filled_by_replies_and_summed_by_labels() -> None:
    routed = metrics.counted_for("host")
    subnet = next(c for c in routed if c.purpose is Purpose.ROUTE)
    spoofed = next(c for c in routed if c.purpose is Purpose.DROP_SPOOF)
    cache = TableFlows(max_age=5.0)
    cache.asked(0.0, {1: "l3_route", 2: subnet, 3: spoofed})
    assert cache.answered(2, flow_count=4, packet_count=40) is False
    assert cache.answered(3, flow_count=2, packet_count=7) is False
    assert cache.answered(1, flow_count=4) is True
    assert cache.counts == {"l3_route": 4} and cache.packets == {subnet: 40, spoofed: 7}
    scrape = promtext.parse(render(_snapshot(datapath_packets=cache.packets)))
    assert scrape.value("dove_routed_packets_total", to="subnet") == 40
    assert scrape.value("dove_routed_packets_total", to="gateway") == 0  # there from the start
    assert scrape.value("dove_datapath_drops_total", reason="spoofed") == 7
    assert scrape.value("dove_dhcp_packets_total") == 0
    # A host has no NAT tables: no NAT family, and no gateway-only series.
    assert "dove_nat_packets_total" not in scrape.families
    assert frozenset({("to", "inside")}) not in scrape.samples("dove_routed_packets_total")
    cache.forget()
    assert cache.packets == {}


def test_a_gateway_counts_nat_both_ways_and_external_drops_as_one_series() -> None:
    ext = [c for c in metrics.counted_for("gateway") if c.labels == (("reason", "external"),)]
    assert len(ext) == 2  # ext_in and ext_unnat drop for the same reason
    snap = _snapshot(role="gateway", datapath_packets={ext[0]: 3, ext[1]: 4})
    scrape = promtext.parse(render(snap))
    assert scrape.value("dove_datapath_drops_total", reason="external") == 7
    assert scrape.value("dove_nat_packets_total", direction="in", kind="floating_ip") == 0
    assert scrape.value("dove_routed_packets_total", to="inside") == 0
    assert "dove_dhcp_packets_total" not in scrape.families  # no VM ports
