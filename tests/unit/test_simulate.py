"""The simulation's model (issue 11, item 7): its formulas against sums done by hand,
how each mode's load scales, the calibration fit, and the command end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import sim_model as m
from benchmarks.simulate import main

pytestmark = pytest.mark.unit


def one_class(span: int, vms: int, hosts: int = 8, **kw: float) -> m.Deployment:
    return m.Deployment(
        hosts=hosts,
        endpoints=hosts * 10,
        mix=(m.InstanceClass("x", span=span, vms=vms, share=1.0),),
        **kw,  # type: ignore[arg-type]
    )


def test_learn_messages_of_a_start_in_a_small_instance_by_hand() -> None:
    # 4 hosts serve the instance, 8 VMs, each talks to 3 others; a LEARN is asked of
    # the 3 other members and answered once (slope 1, base 1).
    d = one_class(span=4, vms=8, talk_peers=3)
    costs = replace(m.defaults(), learn_msgs_slope=1.0, learn_msgs_base=1.0)
    got = m.messages(d, costs, "learn-static", "start")
    learners = 3 * (1 - (3 / 4) ** 3)  # other hosts where its 3 peers run
    assert got["LEARN+reply"] == pytest.approx(learners * (3 + 1))
    assert got["ENDPOINT"] == 3  # to every other member
    assert got["announcements"] == pytest.approx((3 / 4) ** 7 * 7)  # alone: to all 7 peers
    assert got["directory transactions"] == got["monitor updates"] == 0
    stop = m.messages(d, costs, "learn-static", "stop")
    assert (stop["UN-LEARN"], stop["LEARN+reply"], stop["ENDPOINT"]) == (3, 0, 0)
    move = m.messages(d, costs, "learn-static", "move")
    assert (move["UN-LEARN"], move["ENDPOINT"]) == (3, 3)


def test_push_and_lookup_ask_nobody_and_go_through_the_directory() -> None:
    d = one_class(span=4, vms=8)
    for system in ("push", "lookup"):
        start = m.messages(d, m.defaults(), system, "start")
        assert start["LEARN+reply"] == start["announcements"] == 0
        assert start["directory transactions"] == 1
        # every member's monitor, the writer's own included, plus the Host row's
        # watchers when the host starts serving the instance with this VM
        assert start["monitor updates"] == pytest.approx(4 + (3 / 4) ** 7 * m.neighbours(d))


def test_push_event_load_scales_with_the_span_not_the_deployment() -> None:
    def per_start(hosts: int, span: int) -> float:
        d = one_class(span=span, vms=5000, hosts=hosts)
        return m.messages(d, m.defaults(), "push", "start")["monitor updates"]

    assert per_start(100, 32) == pytest.approx(32, rel=1e-6)
    assert per_start(10_000, 32) == pytest.approx(per_start(100, 32), rel=1e-6)
    assert per_start(10_000, 64) == pytest.approx(2 * per_start(10_000, 32), rel=1e-6)


def test_heartbeats_reach_only_their_sender_and_the_reapers() -> None:
    # Every host serves the one instance that spans them all: each heartbeat goes to
    # its own host's client and the 3 reapers, not to the 7 others (schema 1.2.0);
    # static announcements go to all N-1 peers.
    d = replace(one_class(span=8, vms=5000), starts_per_endpoint_s=0, stops_per_endpoint_s=0,
                moves_per_endpoint_s=0)  # fmt: skip
    assert m.neighbours(d) == pytest.approx(7)
    push = m.load(d, m.defaults(), "push")
    assert push.txn_per_s == pytest.approx(8 / 2.0)
    assert push.updates_per_s == pytest.approx(8 * (1 + 3) / 2.0)
    slower = m.load(replace(d, heartbeat_interval=10.0), m.defaults(), "push")
    assert slower.updates_per_s == pytest.approx(push.updates_per_s / 5)
    assert m.load(d, m.defaults(), "learn-static").host_msgs_per_s == pytest.approx(8 * 7 / 2.0)
    assert m.load(d, m.defaults(), "ovn").txn_per_s == 0


def test_a_saturated_leader_never_converges() -> None:
    d = m.Deployment()  # 10,000 hosts: their heartbeats' transactions fill one core
    costs = m.defaults()
    assert m.load(d, costs, "push").leader_cores > 1
    assert math.isinf(m.convergence_ms(d, costs, "push", "start"))
    # moves and stops go between the hosts: the directory is not on their path
    assert math.isfinite(m.convergence_ms(d, costs, "push", "move"))
    small = d.scaled(100)
    assert m.convergence_ms(small, costs, "push", "start") < 200
    slower = replace(d, heartbeat_interval=6.0)  # a third of the transactions
    assert m.convergence_ms(slower, costs, "push", "start") < 200


def test_linear_fit() -> None:
    assert m.linear_fit([(1, 3), (3, 7)]) == pytest.approx((2, 1))
    assert m.linear_fit([(2, 5)]) == (0.0, 5)


def synthetic(system: str, hv: int, **values: object) -> dict:
    return {"system": system, "hypervisors": hv, "vms": 100 * hv, "tenants": 2 * hv, **values}


def test_the_fit_recovers_known_constants() -> None:
    samples = []
    for hv in (10, 20):
        members = hv - 1  # 50 VMs per tenant, round-robin: every tenant on every host
        known = 100 * hv
        handled = hv * known / 2  # endpoints handled by all agents, per core
        samples.append(
            synthetic(
                "dove-learn",
                hv,
                messages_per_endpoint=1.25 * members + 0.5,
                first_packet_ms={"median": 3.0 + 0.04 * members},
                reachable_s=(100 + 0.3 * handled) / 1e3,
                agent_rss_kb={"median": 50_000 + 3 * known},
            )
        )
        samples.append(
            synthetic(
                "dove-push",
                hv,
                first_packet_ms={"median": 0.8},
                reachable_s=(50 + 0.2 * handled) / 1e3,
                agent_rss_kb={"median": 60_000 + 2 * known},
                directory_transactions=100 * hv,
                directory_updates=1000 * hv * hv,
                directory_cpu_s=(100 * hv * 150 + 1000 * hv * hv * 15) / 1e6,
            )
        )
        samples.append(synthetic("ovn", hv, error="did not build"))
    costs, notes = m.fit(samples, cores=2)
    assert costs.learn_msgs_slope == pytest.approx(1.25)
    assert costs.learn_msgs_base == pytest.approx(0.5)
    assert costs.learn_fp_per_member_ms == pytest.approx(0.04)
    assert costs.learn_fp_ms == pytest.approx(3.04)  # one member asked
    assert costs.first_packet_ms["push"] == pytest.approx(0.8)
    assert costs.agent_ms_per_endpoint["push"] == pytest.approx(0.2)
    assert costs.agent_ms_per_endpoint["learn-directory"] == pytest.approx(0.3)
    assert costs.rss_kb_per_endpoint["dove"] == pytest.approx(2)
    assert costs.rss_base_mb["dove"] == pytest.approx(60_000 / 1024)
    assert (costs.txn_cpu_us, costs.update_cpu_us) == pytest.approx((150, 15))
    # what had no samples keeps its default, and says so
    assert costs.rss_kb_per_endpoint["ovn"] == m.defaults().rss_kb_per_endpoint["ovn"]
    assert any("0 sample(s) of ovn" in n for n in notes)


def test_the_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calibration = tmp_path / "samples.json"
    calibration.write_text(
        json.dumps({"directory": [synthetic("dove-push", 4, first_packet_ms={"median": 0.9})]})
    )
    out = tmp_path / "out"
    args = ["--hosts", "50", "--endpoints", "5000", "--json", "--out", str(out)]
    assert main([*args, "--calibration", str(calibration)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["systems"]) == set(m.SYSTEMS)
    assert result["deployment"]["hosts"] == 50
    assert result["costs"]["first_packet_ms"]["push"] == pytest.approx(0.9)
    push = result["systems"]["push"]
    assert push["messages"]["start"]["directory transactions"] == 1
    assert all(p["url"].startswith("https://") for p in result["published"])
    assert (out / "simulation.png").stat().st_size > 0
    assert "| push |" in (out / "report.md").read_text()
