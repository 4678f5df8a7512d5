"""The directory of issue 11 in the emulation: three ovsdb-server members on the underlay
elect a leader, and the agents run with ``discovery = directory`` (no peers list).

Agents register and find each other through the directory; a hypervisor whose agent
stops stops being a member (the reapers beside the members mark its row dead), and one
that starts is a member at once, with no change anywhere else.  No agent is sent
another's heartbeat, and a reaper killed and restarted changes nothing.  dovectl reads
the cluster and its tables from a hypervisor's namespace (through br-phy, the agents'
path); a killed leader is replaced within seconds, and a restarted member rejoins and
catches up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mininet_topos.dove_agent import admin, agent_cmd, connected_status
from mininet_topos.dove_topo import plug_vm
from mininet_topos.hypervisor import wait_until
from tests.tools.nodes import DOVECTL, run
from tests.tools.nodes import dovectl_directory as dovectl


@pytest.fixture(scope="module")
def dnet() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.dove_topo import build_dove_net

    net, _ = build_dove_net(hypervisors=3, tenants=2, vms_per_tenant=2, directory=True)
    try:
        yield net
    finally:
        net.stop()


def insert_host(node: Any, remotes: str, name: str, ip: str) -> None:
    """A Host row and its Host_Liveness row, as an agent registers itself (whose
    heartbeat then never moves: the reapers mark it dead after 3.5 s)."""
    row = {
        "name": name,
        "underlay_ip": ip,
        "site": "s1",
        "role": "host",
        "instances": ["set", [5001]],
        "alive": True,
    }
    beat = {"name": name, "heartbeat": 1, "heartbeat_interval": 1.0}
    txn = [
        "DOVE_Directory",
        {"op": "insert", "table": "Host", "row": row},
        {"op": "insert", "table": "Host_Liveness", "row": beat},
    ]
    run(node, "ovsdb-client", "--timeout=10", "transact", remotes, json.dumps(txn))


def host_names(node: Any, db: str) -> set[str]:
    return {r["name"] for r in dovectl(node, "hosts", "--db", db)}


def alive(hv: Any) -> set[str]:
    """The hosts ``hv``'s agent takes as alive members, by name."""
    return set(admin(hv)["directory"]["alive"].values())


def knows(hv: Any, other: Any) -> bool:
    """Whether ``hv``'s agent takes ``other`` as alive, or as a member of an instance."""
    status = admin(hv)
    members = {m for i in status["instances"].values() for m in i["members"]}
    return other.name in status["directory"]["alive"].values() or other.underlay_ip in members


def reachable(hv: Any) -> bool | None:
    """Whether ``hv``'s agent has the directory (None: the agent is not up yet)."""
    status = connected_status(hv)
    return None if status is None else bool(status["directory"]["reachable"])


def pings(vm: Any, ip: str) -> bool:
    return " 0% packet loss" in vm.host.cmd(f"ping -c1 -W1 {ip}")


# ------------------------------------------------------------------ agents


def test_agents_register_and_reach_each_other_through_the_directory(dnet: Any) -> None:
    cluster = dnet.directory
    rows = {r["name"]: r for r in dovectl(dnet.hypervisors[0], "hosts", "--db", cluster.remotes)}
    assert {"hv1", "hv2", "hv3"} <= set(rows)
    for hv in dnet.hypervisors:
        config = hv.in_rundir("dove.ini").read_text()
        assert "discovery = directory" in config and "peers" not in config
        served = {int(i) for i in admin(hv)["instances"] if admin(hv)["instances"][i]["local"]}
        assert set(rows[hv.name]["instances"]) == served
    for tenant in (1, 2):
        vms = dnet.tenant_vms(tenant)
        for a in vms:
            for b in vms:
                if a is not b:
                    assert pings(a, b.ip), f"{a.name} -> {b.name}"


def test_a_stopped_hypervisor_leaves_and_a_started_one_joins_with_no_change_elsewhere(
    dnet: Any,
) -> None:
    # A tenant with VMs on two hypervisors: ``peer`` stays, ``vm``'s hypervisor goes.
    peer, vm = next(
        (a, b)
        for a in dnet
        for b in dnet
        if a.tenant == b.tenant and a.hypervisor is not b.hypervisor
    )
    stays, goes = peer.hypervisor, vm.hypervisor
    assert goes.name in alive(stays)
    goes.stop_agent()
    try:
        # Its heartbeat stops: after 3.5 of its 1 s intervals, judged on the reapers'
        # clocks, its row is marked dead; it is neither alive nor a member anywhere.
        wait_until(lambda: not knows(stays, goes), 15.0, "the stopped one to go", step=0.1)
    finally:
        goes.start_agent(None, agent_cmd())
    wait_until(lambda: connected_status(goes), 15.0, "the started one to have its switch")
    wait_until(lambda: goes.name in alive(stays), 15.0, "the started one to join", step=0.1)
    wait_until(lambda: pings(peer, vm.ip), 15.0, f"{peer.name} to reach {vm.name} again")


def directory_updates(hv: Any) -> int:
    """Monitor updates the agent's directory client took in (``dovectl counters``)."""
    return int(admin(hv, "counters").get("directory_updates", 0))


def heartbeats(node: Any, remotes: str) -> dict[str, int]:
    return {
        r["name"]: r["heartbeat"]
        for r in dovectl(node, "hosts", "--db", remotes)
        if r["heartbeat"] is not None
    }


def test_heartbeats_reach_no_agent_and_a_restarted_reaper_changes_nothing(dnet: Any) -> None:
    cluster, hvs = dnet.directory, dnet.hypervisors
    names = {hv.name for hv in hvs}

    def rows_alive() -> bool:
        rows = {r["name"]: r for r in dovectl(hvs[0], "hosts", "--db", cluster.remotes)}
        return all(n in rows and rows[n]["alive"] for n in names)

    wait_until(rows_alive, 15.0, "every hypervisor's row alive", step=0.2)

    def counts() -> dict[str, int]:
        return {hv.name: directory_updates(hv) for hv in hvs}

    # Quiet: nothing comes or goes (a row changed by the test before has arrived).
    seen: list[dict[str, int]] = []

    def settled() -> bool:
        seen.append(counts())
        return len(seen) > 1 and seen[-1] == seen[-2]

    wait_until(settled, 15.0, "the deployment to be quiet", step=1.0)
    before, start = seen[-1], heartbeats(hvs[0], cluster.remotes)
    members = {hv.name: alive(hv) for hv in hvs}  # those sharing an instance with it
    assert all(members.values())
    for m in cluster.members:  # every reaper killed and started again
        m.kill_reaper()
        m.start_reaper()

    def beaten(times: int) -> bool:
        now = heartbeats(hvs[0], cluster.remotes)
        return all(now[n] >= start[n] + times for n in names)

    # Five heartbeats of every host: more than a lifetime (3.5 intervals), which the
    # fresh reapers sat through, judging nothing they had not watched stand still.
    wait_until(lambda: beaten(5), 20.0, "five heartbeats of every host", step=0.5)
    assert counts() == before  # the heartbeats moved; no agent was sent one
    assert rows_alive()
    assert {hv.name: alive(hv) for hv in hvs} == members


def set_resolution(node: Any, remotes: str, instance: int, mode: str) -> None:
    """As an operator sets it."""
    args = ["--db", remotes, "--instance", str(instance), "--mode", mode]
    run(node, DOVECTL, "directory", "resolution", *args)
    assert {"id": instance, "resolution": mode}.items() <= next(
        r for r in dovectl(node, "instances", "--db", remotes) if r["id"] == instance
    ).items()


def learned_macs(hv: Any, instance: int) -> set[str]:
    rows = admin(hv)["instances"].get(str(instance), {}).get("learned", [])
    return {r["mac"] for r in rows}


def new_vm_in_mode(dnet: Any, tenant: int, mode: str, n: int) -> tuple[Any, Any, Any, Any]:
    """The tenant's instance set to ``mode``, then a new VM of it plugged into another
    hypervisor than the tenant's first VM: (that first VM, its host, the new VM, its host)."""
    a = dnet.tenant_vms(tenant)[0]
    here = a.hypervisor
    there = next(h for h in dnet.hypervisors if h is not here)
    set_resolution(here, dnet.directory.remotes, a.instance, mode)
    mac, cidr = f"02:00:00:00:00:{n:02x}", f"10.0.0.{n}/24"
    return a, here, plug_vm(dnet, f"t{tenant}vm9", there, tenant, mac, cidr), there


def test_in_push_mode_a_new_vm_is_known_everywhere_before_its_first_packet(dnet: Any) -> None:
    a, here, vm, there = new_vm_in_mode(dnet, 1, "push", 0x99)
    # Sent ahead, both ways: each side has the other's flows before any packet.
    wait_until(lambda: vm.mac in learned_macs(here, a.instance), 15.0, "the push to arrive")
    wait_until(lambda: a.mac in learned_macs(there, a.instance), 15.0, "the push back")
    before = {hv.name: admin(hv)["counters"] for hv in (here, there)}

    out = a.host.cmd(f"ping -c3 -W1 {vm.ip}")
    assert " 0% packet loss" in out, out

    for hv in (here, there):
        counters = admin(hv)["counters"]
        for name in ("learn_requests_sent", "packet_in_l2_miss", "packet_in_arp_miss"):
            assert counters.get(name, 0) == before[hv.name].get(name, 0), (hv.name, name)


def test_in_lookup_mode_a_miss_is_answered_from_the_directory_not_by_learn(dnet: Any) -> None:
    cluster = dnet.directory
    a, here, vm, there = new_vm_in_mode(dnet, 2, "lookup", 0x98)
    rows = lambda: dovectl(here, "endpoints", "--db", cluster.remotes, "--instance", "5002")  # noqa: E731
    wait_until(lambda: any(r["mac"] == vm.mac for r in rows()), 15.0, "the VM's row")
    assert vm.mac not in learned_macs(here, a.instance)  # nothing ahead of the packet
    before = {hv.name: admin(hv)["counters"] for hv in (here, there)}

    out = a.host.cmd(f"ping -c3 -W1 {vm.ip}")

    assert " 0% packet loss" in out, out
    for hv in (here, there):
        counters = admin(hv)["counters"]
        assert counters.get("learn_requests_sent", 0) == before[hv.name].get(
            "learn_requests_sent", 0
        ), hv.name
    resolved = admin(here)["counters"].get("resolved_from_directory", 0)
    assert resolved > before[here.name].get("resolved_from_directory", 0)


def as_host(hv: Any, cluster: Any, *ops: dict[str, Any]) -> str:
    """A transaction over the agents' SSL remote with ``hv``'s certificate: what a host
    (or a process holding its key) may do there.  Returns ovsdb-client's answer."""
    files = cluster.pki.issue(hv.name)
    argv = [
        "ovsdb-client",
        "--timeout=10",
        f"--private-key={files.private_key}",
        f"--certificate={files.certificate}",
        f"--ca-cert={files.ca_cert}",
        "transact",
        cluster.agent_remotes,
        json.dumps(["DOVE_Directory", *ops]),
    ]
    out, err, _ = hv.pexec(argv)
    return str(out) + str(err)


def test_a_host_may_write_its_own_rows_and_no_other_hosts(dnet: Any) -> None:
    cluster = dnet.directory
    hv1, hv2 = dnet.hypervisors[:2]
    for host, refused in (("hv1", True), ("hv2", False)):
        row = {"instance": 5001, "mac": "02:00:00:00:00:77", "host": host, "seq": 1}
        answer = as_host(hv2, cluster, {"op": "insert", "table": "Endpoint", "row": row})
        assert ("permission error" in answer) is refused, answer
    where = [["name", "==", "hv1"]]
    for table, row in (("Host_Liveness", {"heartbeat": 0}), ("Host", {"alive": False})):
        update = {"op": "update", "table": table, "where": where, "row": row}
        assert "permission error" in as_host(hv2, cluster, update), table
    rows = dovectl(hv1, "endpoints", "--db", cluster.remotes, "--instance", "5001")
    forged = {(r["host"], r["mac"]) for r in rows if r["mac"] == "02:00:00:00:00:77"}
    assert forged == {("hv2", "02:00:00:00:00:77")}
    gone = {"op": "delete", "table": "Endpoint", "where": [["mac", "==", "02:00:00:00:00:77"]]}
    assert "permission error" not in as_host(hv2, cluster, gone)
    assert "hv1" in alive(hv2)  # hv1's heartbeat untouched


# ----------------------------------------------------------------- cluster


def test_the_emulation_comes_up_with_a_leader_that_every_member_names(dnet: Any) -> None:
    cluster = dnet.directory
    leader = cluster.wait_leader()
    status = dovectl(leader, "status", "--ctl", leader.ctl)
    assert status["role"] == "leader" and status["term"] >= 1
    assert len(status["members"]) == 3
    assert {m["address"] for m in status["members"]} == {
        f"tcp:{m.address}:6643" for m in cluster.members
    }
    for m in cluster.members:
        s = m.cluster_status()
        assert s is not None and s.status == "cluster member" and s.leader == status["leader"]
    # As an operator types it in the Mininet CLI (README): the shell has OVS_RUNDIR.
    text = leader.cmd("ovs-appctl -t $OVS_RUNDIR/ovsdb-server.ctl cluster/status DOVE_Directory")
    assert "Role: leader" in text


def test_status_from_a_hypervisor_shows_three_members_and_the_leader(dnet: Any) -> None:
    cluster, hv = dnet.directory, dnet.hypervisors[0]
    leader = cluster.wait_leader()
    status = dovectl(hv, "status", "--db", cluster.remotes)
    roles = {m["remote"]: m["role"] for m in status["members"]}
    assert roles == {
        f"tcp:{m.address}:6641": ("leader" if m is leader else "follower") for m in cluster.members
    }
    assert status["leader_address"] == f"tcp:{leader.address}:6641"
    text = run(hv, DOVECTL, "directory", "status", "--db", cluster.remotes)
    assert f"leader {status['leader']} at tcp:{leader.address}:6641" in text


def test_hosts_written_with_ovsdb_client_are_read_back_by_dovectl(dnet: Any) -> None:
    cluster, hv = dnet.directory, dnet.hypervisors[0]
    insert_host(hv, cluster.remotes, "fake1", "10.99.0.201")
    (row,) = [r for r in dovectl(hv, "hosts", "--db", cluster.remotes) if r["name"] == "fake1"]
    assert row["underlay_ip"] == "10.99.0.201" and row["instances"] == [5001]
    text = run(hv, DOVECTL, "directory", "hosts", "--db", cluster.remotes)
    assert text.splitlines()[0].split()[:2] == ["NAME", "UNDERLAY"]
    assert any(line.split()[:2] == ["fake1", "10.99.0.201"] for line in text.splitlines())
    # Every agent publishes its VMs: the tenant's endpoints, each at its hypervisor.
    rows = dovectl(hv, "endpoints", "--db", cluster.remotes, "--instance", "5001")
    published = {(r["host"], r["mac"]) for r in rows}
    assert published == {(v.hypervisor.name, v.mac) for v in dnet if v.instance == 5001}


def test_killing_the_leader_elects_another_within_seconds(dnet: Any) -> None:
    cluster, hv = dnet.directory, dnet.hypervisors[0]
    old = cluster.wait_leader()
    insert_host(hv, cluster.remotes, "before-kill", "10.99.0.101")
    started = time.monotonic()
    cluster.kill(old)
    new = cluster.wait_leader(timeout=10.0)
    took = time.monotonic() - started
    assert new is not old and took < 10.0, cluster.describe()
    status = dovectl(hv, "status", "--db", cluster.remotes)
    roles = {m["remote"]: m["role"] for m in status["members"]}
    assert roles[f"tcp:{old.address}:6641"] == "unreachable"
    assert roles[f"tcp:{new.address}:6641"] == "leader"
    # What was committed survives, and the two left can still commit.
    insert_host(hv, cluster.remotes, "after-kill", "10.99.0.102")
    assert {"before-kill", "after-kill"} <= host_names(hv, cluster.remotes)
    print(f"leader {old.name} killed; {new.name} leads after {took:.2f}s")


def test_a_restarted_member_rejoins_and_catches_up(dnet: Any) -> None:
    cluster, hv = dnet.directory, dnet.hypervisors[0]
    down = [m for m in cluster.members if m.server_pid is None]
    if not down:  # this test alone: make a member go down first
        down = [next(m for m in cluster.members if m is not cluster.wait_leader())]
        cluster.kill(down[0])
    member = down[0]
    insert_host(hv, cluster.remotes, "while-down", "10.99.0.103")
    cluster.restart(member)
    status = member.cluster_status()
    assert status is not None and status.status == "cluster member", cluster.describe()
    assert len(status.servers) == 3
    # Its own socket serves what was written while it was down.
    wait_until(
        lambda: "while-down" in host_names(member, f"unix:{member.sock}"),
        10.0,
        f"{member.name} to catch up",
        step=0.1,
    )


# ------------------------------------------------------------------ faults


def whole(cluster: Any) -> Any:
    """Every member serving again; returns the leader."""
    for m in cluster.members:
        if m.server_pid is None:
            cluster.restart(m)
    return cluster.wait_leader()


def cross_pair(dnet: Any) -> tuple[Any, Any]:
    """Two VMs of one tenant on different hypervisors."""
    return next(
        (a, b)
        for a in dnet
        for b in dnet
        if a.tenant == b.tenant and a.hypervisor is not b.hypervisor
    )


def ping_stream(vm: Any, ip: str, count: int) -> Any:
    """``count`` pings 10 ms apart, in the background; `.communicate()` gives the summary."""
    return vm.host.popen(["ping", "-i", "0.01", "-c", str(count), "-W", "1", ip])


def received(summary: str) -> tuple[int, int]:
    line = next(x for x in summary.splitlines() if "packets transmitted" in x)
    sent, got = (int(x.split()[0]) for x in line.split(", ")[:2])
    return sent, got


def test_the_leader_killed_under_traffic_loses_no_packet_and_agents_follow(dnet: Any) -> None:
    cluster = dnet.directory
    whole(cluster)
    a, b = cross_pair(dnet)
    assert pings(a, b.ip)
    stream = ping_stream(a, b.ip, 400)  # 4 s
    old = cluster.wait_leader()
    cluster.kill(old)
    new = cluster.wait_leader(timeout=10.0)
    out, _ = stream.communicate(timeout=30)
    sent, got = received(out.decode())
    assert got == sent, out.decode()
    # The agents reconnected to the new leader: a hypervisor that restarts now is
    # registered and taken back by the others within seconds.
    goes = b.hypervisor
    goes.stop_agent()
    goes.start_agent(None, agent_cmd())
    started = time.monotonic()
    wait_until(lambda: connected_status(goes), 15.0, "the restarted agent to have its switch")
    wait_until(lambda: reachable(goes), 15.0, "the agent to reconnect")
    rows = {r["name"]: r for r in dovectl(a.hypervisor, "hosts", "--db", cluster.remotes)}
    assert goes.name in rows
    wait_until(lambda: pings(a, b.ip), 15.0, f"{a.name} to reach {b.name}")
    print(
        f"leader {old.name} killed, {new.name} leads; rejoined in {time.monotonic() - started:.1f}s"
    )


def test_with_the_directory_down_traffic_flows_and_its_return_changes_no_flow(
    dnet: Any,
) -> None:
    cluster = dnet.directory
    whole(cluster)
    a, b = cross_pair(dnet)
    hv = a.hypervisor
    assert pings(a, b.ip)
    connects = admin(hv)["counters"].get("switch_connected", 0)
    for m in cluster.members:
        cluster.kill(m)
    wait_until(lambda: reachable(hv) is False, 15.0, "the loss to show")
    scrape = hv.cmd("curl -s http://127.0.0.1:9479/metrics")
    assert "dove_directory_reachable 0.0" in scrape
    # Longer than a heartbeat's lifetime (3.5 x 2 s): nobody is judged meanwhile.
    stream = ping_stream(a, b.ip, 900)  # 9 s
    out, _ = stream.communicate(timeout=40)
    sent, got = received(out.decode())
    assert got == sent, out.decode()
    assert b.hypervisor.name in alive(hv)
    for m in cluster.members:  # all at once: one alone has no majority to elect with
        m.start_server()
    cluster.wait_leader(timeout=20.0)
    wait_until(lambda: reachable(hv), 20.0, "the directory to return")
    assert pings(a, b.ip)
    assert b.hypervisor.name in alive(hv)
    assert admin(hv)["counters"].get("switch_connected", 0) == connects  # no resync, no flush
