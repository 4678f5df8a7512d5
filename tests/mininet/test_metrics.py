"""The agents' Prometheus endpoints, scraped from inside each hypervisor's namespace
(issue 6, item 5).

Layout as in test_dove.py: t1vm1@hv1, t1vm2@hv2 (instance 5001), t2vm1@hv2, t2vm2@hv3
(instance 5002); a `probe` on the underlay forges control traffic.  The tests share one
emulation and run in file order: the learning test needs VMs that never talked.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from dove_ryu.config import HostConfig  # noqa: E402
from dove_ryu.openflow import cookies  # noqa: E402
from dove_ryu.protocol.messages import LearnRequest, encode  # noqa: E402
from mininet_topos.agents import METRICS_PORT, admin  # noqa: E402
from mininet_topos.dove_topo import PROBE, VmRecord  # noqa: E402
from mininet_topos.hypervisor import Hypervisor, wait_until  # noqa: E402
from tests.tools import netsend, ovs, promtext  # noqa: E402
from tests.tools.nodes import send_frames  # noqa: E402
from tests.tools.scrape import fetch, scrape  # noqa: E402

PYTHON = sys.executable
NETSEND = str(Path(netsend.__file__).resolve())
PROBE_IP = "10.99.0.250"


def ping(src: VmRecord, dst_ip: str, count: int = 1) -> tuple[int, str]:
    out, err, rc = src.host.pexec(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", dst_ip])
    return rc, out + err


def our_flows_per_table(hv: Hypervisor) -> Counter[str]:
    """Our flows (by cookie) in each table, from ovs-ofctl (no table= means table 0)."""
    tables: Counter[str] = Counter()
    for flow in ovs.flows(hv):
        if cookies.decode(flow.cookie) is not None:
            found = [f for f in flow.text.split(", ") if f.startswith("table=")]
            # --names quotes names with an underscore: table="port_security"
            tables[found[0].removeprefix("table=").strip('"') if found else "classify"] += 1
    return tables


def agents_alive(dove: Any) -> None:
    for hv in dove.net.hypervisors:
        assert hv.agent is not None and hv.agent.poll() is None, f"{hv.name}: agent died"


# ------------------------------------------------------------------------------ tests


def test_every_agent_serves_prometheus_text(dove: Any) -> None:
    for hv in dove.net.hypervisors:
        s = scrape(hv)
        assert s.value("dove_agent_info", host=hv.name, role="host", underlay_ip=hv.underlay_ip)
        assert s.value("dove_switch_connected") == 1
        assert "dove_proxy_active" not in s.families
        for family in s.families.values():
            assert family.help and family.name.startswith("dove_"), family
            assert (family.kind == "counter") == family.name.endswith("_total"), family.name


def test_a_first_ping_shows_in_learn_counters_and_latency(dove: Any) -> None:
    a, b = dove.net.tenant_vms(1)
    asker, answerer = a.hypervisor, b.hypervisor
    assert asker is not answerer
    before_a, before_b = scrape(asker), scrape(answerer)

    rc, out = ping(a, b.ip)
    assert rc == 0, out

    after_a, after_b = scrape(asker), scrape(answerer)

    def rose(after: promtext.Scrape, before: promtext.Scrape, name: str, **labels: str) -> float:
        return after.value(name, 0, **labels) - before.value(name, 0, **labels)

    report = f"{asker.name} counters: {admin(asker, 'counters')}"
    # a's ARP for b missed on hv1, which asked hv2; hv2 answered.
    assert rose(after_a, before_a, "dove_packet_ins_total", reason="arp_miss") >= 1, report
    assert rose(after_a, before_a, "dove_learn_requests_sent_total") >= 1, report
    assert rose(after_a, before_a, "dove_learn_replies_received_total") >= 1, report
    assert rose(after_b, before_b, "dove_learn_requests_received_total") >= 1
    assert rose(after_b, before_b, "dove_learn_replies_sent_total") >= 1
    assert rose(after_a, before_a, "dove_learn_timeouts_total") == 0, report
    learns = rose(after_a, before_a, "dove_learn_latency_seconds_count")
    assert learns >= 1, report
    # Answered within the histogram's range, and its time is in the sum.
    assert rose(after_a, before_a, "dove_learn_latency_seconds_bucket", le="2.0") == learns
    assert 0 < rose(after_a, before_a, "dove_learn_latency_seconds_sum") < 2.0 * learns
    # The numbers are the core's, as dovectl shows them.
    counters = admin(asker, "counters")
    for name in ("learn_requests_sent", "learn_replies_received", "learned"):
        metric = "dove_learn_latency_seconds_count" if name == "learned" else f"dove_{name}_total"
        assert after_a.value(metric) == counters.get(name, 0), (name, counters)


def shown_flows_when_they_agree(hv: Hypervisor) -> dict[str, float]:
    """dove_table_flows once it matches ovs-ofctl (the agent asks every few seconds)."""
    last: list[tuple[dict[str, float], Counter[str]]] = []

    def agree() -> dict[str, float] | None:
        s = scrape(hv)
        shown = {dict(k)["table"]: v for k, v in s.samples("dove_table_flows").items()}
        dumped = our_flows_per_table(hv)
        last.append((shown, dumped))
        same = all(shown.get(t, 0) == n for t, n in dumped.items())
        return shown if same and sum(shown.values()) == sum(dumped.values()) else None

    try:
        return wait_until(agree, 15.0, "the flows", 1.0)  # type: ignore[no-any-return]
    except TimeoutError:
        shown, dumped = last[-1]
        raise AssertionError(f"{hv.name}: dove_table_flows {shown} != {dict(dumped)}") from None


def test_flows_per_table_are_the_switchs(dove: Any) -> None:
    for hv in dove.net.hypervisors:
        shown = shown_flows_when_they_agree(hv)
        assert shown["classify"] > 0 and shown["l2_forward"] > 0, shown
        assert set(shown) >= {"classify", "port_security", "arp_nd", "l2_forward", "flood"}


def test_endpoints_and_members_per_instance_match_the_vms(dove: Any) -> None:
    vms = dove.net.vms
    for hv in dove.net.hypervisors:
        s = scrape(hv)
        local = {
            int(dict(k)["instance"]): v
            for k, v in s.samples("dove_instance_endpoints").items()
            if dict(k)["kind"] == "local" and v
        }
        expected = Counter(vm.instance for vm in vms if vm.hypervisor is hv)
        assert local == dict(expected), (hv.name, local)
        for instance in expected:
            others = {vm.hypervisor.name for vm in vms if vm.instance == instance} - {hv.name}
            assert s.value("dove_instance_members", instance=str(instance)) == len(others)
    # hv1 learned t1vm2 in the first-ping test.
    a, b = dove.net.tenant_vms(1)
    learned = scrape(a.hypervisor).value(
        "dove_instance_endpoints", instance=str(a.instance), kind="learned"
    )
    assert learned >= 1


def test_a_forged_control_message_counts_as_a_drop_by_reason(dove: Any) -> None:
    a, _ = dove.net.tenant_vms(1)
    hv = a.hypervisor
    probe = dove.net.net.get(PROBE)
    forged = encode(
        LearnRequest(instance=a.instance, request_id=301, mac=a.mac),
        sender=IPv4Address(PROBE_IP),
        receiver=IPv4Address(hv.underlay_ip),
        counter=int(time.time() * 1_000_000),
        key=random.randbytes(32),  # not the deployment key
    )
    before = scrape(hv).value("dove_drops_total", 0, reason="control_bad_mac")

    out, err, rc = probe.pexec(
        [PYTHON, NETSEND, "udp", "--dst", hv.underlay_ip, "--port", str(HostConfig.control_port),
         "--hex", forged.hex(), "--hex", forged.hex()]
    )  # fmt: skip
    assert rc == 0, out + err

    wait_until(
        lambda: scrape(hv).value("dove_drops_total", 0, reason="control_bad_mac") >= before + 2,
        5.0,
        f"{hv.name}: dove_drops_total{{reason=control_bad_mac}} +2",
        step=0.2,
    )
    agents_alive(dove)


def test_bad_requests_and_stuck_clients_harm_neither_agent_nor_endpoint(dove: Any) -> None:
    a, b = dove.net.tenant_vms(1)
    hv = a.hypervisor
    assert fetch(hv, "/")["status"] == 404
    assert fetch(hv, "/metrics/../admin")["status"] == 404
    refused = fetch(hv, "/metrics", "POST")
    assert refused["status"] == 405 and refused["headers"]["Allow"] == "GET, HEAD"
    # Clients that connect and say nothing, or say nonsense, while traffic flows.
    hold = (
        "import socket, sys, time\n"
        "s = [socket.create_connection(('127.0.0.1', int(sys.argv[1]))) for _ in range(4)]\n"
        "s[0].sendall(b'\\x16\\x03\\x01 nonsense\\r\\n\\r\\n')\n"
        "time.sleep(8)\n"
    )
    stuck = hv.popen([PYTHON, "-c", hold, str(METRICS_PORT)])
    try:
        time.sleep(0.5)
        start = time.monotonic()
        scrape(hv)
        took = time.monotonic() - start
        rc, out = ping(a, b.ip, count=5)
        assert rc == 0, out
        assert took < 3.0, f"a scrape took {took:.1f}s next to stuck clients"
    finally:
        stuck.kill()
        stuck.wait()
    agents_alive(dove)
    assert scrape(hv).value("dove_switch_connected") == 1


def test_frames_dropped_in_the_datapath_show_by_reason(dove: Any) -> None:
    """A drop that never reaches the agent (a VM sending from a MAC not its own) is
    counted by the switch and shows as dove_datapath_drops_total{reason="spoofed"}."""
    a, b = dove.net.tenant_vms(1)
    hv = a.hypervisor

    def spoofed() -> float:
        return scrape(hv).value("dove_datapath_drops_total", reason="spoofed")

    before = spoofed()
    spoof = netsend.random_unicast_mac(random.Random(12))
    send_frames(a, [netsend.udp_frame(spoof, b.mac, a.ip, b.ip, 9003)] * 6)
    # The agent asks the switch every few seconds.
    wait_until(lambda: spoofed() >= before + 6, 15.0, "the spoofed frames counted", 0.5)
    assert scrape(hv).value("dove_routed_packets_total", to="subnet") == 0  # nothing routed
