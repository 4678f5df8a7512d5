"""Live migration with un-learn (issue #4), in Mininet with real agents.

Layout: t1vm1@hv1, t1vm2@hv2, t2vm1@hv2, t2vm2@hv3.  t1vm2 moves between hv2 and hv3;
hv3 also holds t2vm2, which has the same MAC and IP in the other tenant.
"""

from __future__ import annotations

import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.tools.transfer import transfer

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
STREAM = str(REPO / "tests" / "tools" / "stream.py")
DEPARTURE_MEMORY = 3.0  # seconds; short, so "nothing stale remains" can be checked soon
DOVE_EXTRA = {"departure_memory": DEPARTURE_MEMORY}  # read by conftest's `dove` fixture


def status(hv: Any) -> dict[str, Any]:
    from mininet_topos.agents import admin

    return admin(hv)


def learned_at(hv: Any, instance: int, mac: str) -> str | None:
    info = status(hv)["instances"].get(str(instance), {})
    return next((e["host"] for e in info.get("learned", []) if e["mac"] == mac), None)


def flow_count(hv: Any) -> int:
    return len(hv.ofctl("dump-flows", "br-dove").splitlines()) - 1


def state(dove: Any) -> dict[str, tuple[int, int]]:
    """Per hypervisor: (flows on br-dove, learned entries)."""
    out = {}
    for hv in dove.net.hypervisors:
        st = status(hv)
        learned = sum(len(i["learned"]) for i in st["instances"].values())
        out[hv.name] = (flow_count(hv), learned)
    return out


def ping_ok(src: Any, dst_ip: str, count: int = 3) -> bool:
    out = src.host.cmd(f"ping -c{count} -i0.1 -W1 {dst_ip}")
    return f"{count} received" in out


def wait(cond: Any, timeout: float, what: str) -> None:
    from mininet_topos.hypervisor import wait_until

    wait_until(cond, timeout, what, step=0.05)


def pick(dove: Any) -> tuple[Any, Any, Any, Any, Any]:
    net = dove.net
    return (net.vm("t1vm1"), net.vm("t1vm2"), net.vm("t2vm2"), net.hv("hv2"), net.hv("hv3"))


def other(vm: Any, a: Any, b: Any) -> Any:
    return b if vm.hypervisor is a else a


def test_tcp_transfer_survives_five_migrations(dove: Any) -> None:
    from mininet_topos.migration import migrate

    sender, mover, _, hv2, hv3 = pick(dove)
    # About 12 s at 2 MB/s: the moves happen mid-transfer.
    with transfer(sender, mover, port=7777, total=24_000_000):
        for _ in range(5):
            time.sleep(1.5)  # let the stream run between moves
            migrate(dove.net, mover, other(mover, hv2, hv3))


def test_twenty_migrations_leave_nothing_stale(dove: Any) -> None:
    from mininet_topos.migration import migrate

    a, mover, _, hv2, hv3 = pick(dove)
    home = mover.hypervisor
    for x, y in ((a, mover), (mover, a)):
        assert ping_ok(x, y.ip)
    time.sleep(DEPARTURE_MEMORY + 1)  # earlier tests' departures are forgotten
    before = state(dove)
    for _ in range(20):
        migrate(dove.net, mover, other(mover, hv2, hv3))
    assert mover.hypervisor is home
    for x, y in ((a, mover), (mover, a)):
        assert ping_ok(x, y.ip), f"{x.name} -> {y.name} after 20 moves"
    wait(
        lambda: state(dove) == before,
        DEPARTURE_MEMORY + 10,
        f"flows and learn tables back to {before}",
    )


def test_moving_tenant_a_leaves_its_twin_in_tenant_b_alone(dove: Any) -> None:
    from mininet_topos.demo import in_echos
    from mininet_topos.migration import migrate

    a, mover, twin, hv2, hv3 = pick(dove)
    b_peer = dove.net.vm("t2vm1")
    assert ping_ok(b_peer, twin.ip)
    b_before = {hv.name: status(hv)["instances"].get("5002") for hv in dove.net.hypervisors}
    echoes = in_echos(twin)
    migrate(dove.net, mover, other(mover, hv2, hv3))
    assert ping_ok(a, mover.ip)
    b_after = {hv.name: status(hv)["instances"].get("5002") for hv in dove.net.hypervisors}
    for name in b_before:
        if b_before[name] is None:
            continue
        strip = [{k: v for k, v in e.items() if k != "age"} for e in b_before[name]["learned"]]
        assert strip == [
            {k: v for k, v in e.items() if k != "age"} for e in b_after[name]["learned"]
        ], name
        assert b_before[name]["local"] == b_after[name]["local"], name
    # The twin (same MAC and IP) saw none of tenant A's pings.
    assert in_echos(twin) == echoes
    assert ping_ok(b_peer, twin.ip)


def test_migration_converges_with_the_old_hosts_agent_stopped(dove: Any) -> None:
    from mininet_topos.agents import agent_cmd, wait_ready
    from mininet_topos.migration import migrate

    a, mover, _, hv2, hv3 = pick(dove)
    assert ping_ok(a, mover.ip)
    old = mover.hypervisor
    old.stop_agent()
    try:
        migrate(dove.net, mover, other(mover, hv2, hv3))
        wait(lambda: ping_ok(a, mover.ip, count=1), 10, "the moved VM reachable")
        assert learned_at(a.hypervisor, 5001, mover.mac) == mover.hypervisor.underlay_ip
    finally:
        old.start_agent(None, agent_cmd())  # its dove.ini is still in the run directory
        wait_ready(dove.net)


def test_a_replayed_old_announcement_does_not_pull_traffic_back(dove: Any) -> None:
    from dove_ryu.protocol.messages import EndpointHere, encode
    from mininet_topos.migration import migrate

    a, mover, _, hv2, hv3 = pick(dove)
    assert ping_ok(a, mover.ip)
    old = mover.hypervisor
    entry = next(
        e for e in status(a.hypervisor)["instances"]["5001"]["learned"] if e["mac"] == mover.mac
    )
    migrate(dove.net, mover, other(mover, hv2, hv3))
    new_host = mover.hypervisor.underlay_ip
    wait(lambda: learned_at(a.hypervisor, 5001, mover.mac) == new_host, 5, "move followed")
    # The old host's announcement, with its old sequence number, authentic and sent from
    # the old host's address: once as new, then exactly replayed.
    stale = EndpointHere(
        5001, mover.mac, (IPv4Address(mover.ip),), IPv4Address(old.underlay_ip), int(entry["seq"])
    )
    frame = encode(
        stale,
        sender=IPv4Address(old.underlay_ip),
        receiver=IPv4Address(a.hypervisor.underlay_ip),
        counter=int(time.time() * 1e6),
        key=dove.key,
    )
    before = status(a.hypervisor)["counters"]
    script = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{old.underlay_ip}', 0)); d=bytes.fromhex(sys.argv[1]); "
        f"[s.sendto(d, ('{a.hypervisor.underlay_ip}', 4799)) for _ in range(2)]"
    )
    old.run(PYTHON, "-c", script, frame.hex())
    wait(
        lambda: (
            status(a.hypervisor)["counters"].get("drop_control_replay", 0)
            > before.get("drop_control_replay", 0)
        ),
        5,
        "the replay counted",
    )
    after = status(a.hypervisor)["counters"]
    assert after.get("endpoint_stale", 0) == before.get("endpoint_stale", 0) + 1
    assert learned_at(a.hypervisor, 5001, mover.mac) == new_host
    assert ping_ok(a, mover.ip)
