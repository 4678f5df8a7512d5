"""The three resolution modes of issue 11 side by side, in one deployment on the directory.

One emulation for the module: hypervisors hv1-hv3 with agents in ``discovery = directory``
and three tenants with the same address plan (VM i: MAC 02:00:00:00:00:0i, IP 10.0.0.i),
each spread over all three hypervisors, each instance in another mode, set in the
directory before any agent starts:

    tenant 1, instance 5001: learn     tenant 2, instance 5002: lookup
    tenant 3, instance 5003: push

For each mode: the first packet to a destination never contacted is answered, by the
path the mode says (LEARN, the directory's copy, pushed flows); every VM of the instance
is reached across hypervisors while the other tenants' VMs with the same addresses
receive nothing; a TCP stream survives its receiver's move to another hypervisor and
back, and the directory shows where it is after each move.  Then one agent restarts and
gets its members and its push and lookup endpoints back from the directory (no LEARN),
and a fourth hypervisor, added to the running deployment, serves a VM of every mode that
the others reach with no change to them; when its agent stops, the others forget it in
every mode, and a miss for one of its VMs is not resolved to it again (its rows stay in
the directory).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mininet.util import quietRun

from mininet_topos.demo import in_echos
from mininet_topos.dove_agent import admin, agent_cmd, agent_config, connected_status
from mininet_topos.emulation import UNDERLAY_NET, instance_peers, warm_underlay
from mininet_topos.hypervisor import Hypervisor, wait_until
from tests.tools.nodes import DOVECTL, run
from tests.tools.nodes import dovectl_directory as dovectl
from tests.tools.transfer import transfer

MODES = {5001: "learn", 5002: "lookup", 5003: "push"}  # instance -> resolution
INSTANCE = {mode: instance for instance, mode in MODES.items()}
TENANT = {mode: instance - 5000 for instance, mode in MODES.items()}  # tenant t: 5000 + t
HYPERVISORS = 3


@dataclass
class Deployment:
    """The running emulation, and what a later agent needs to join it."""

    net: Any  # mininet_topos.dove_topo.DoveNet
    key: str

    def config(self, hv: Hypervisor) -> str:
        """``hv``'s dove.ini, as build_dove_net writes it for the directory."""
        cluster = self.net.directory
        return agent_config(
            hv,
            [],
            self.key,
            directory=cluster.agent_remotes,
            ssl=cluster.pki.issue(hv.name),
        )


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.directory import ClusterPki
    from mininet_topos.dove_topo import build_net, wait_ready

    # build_dove_net's steps, with the modes set in the directory before the agents start.
    net = build_net(
        HYPERVISORS, tenants=3, vms_per_tenant=3, directory=True, directory_pki=ClusterPki()
    )
    try:
        d = Deployment(net, secrets.token_hex(16))
        for instance, mode in MODES.items():
            set_resolution(net.hypervisors[0], net.directory.remotes, instance, mode)
        for hv in net.hypervisors:
            hv.start_agent(d.config(hv), agent_cmd())
        wait_ready(net, 60.0)
        yield d
    finally:
        net.stop()


@pytest.fixture
def dnet(deployment: Deployment) -> Any:
    """The emulation (under this name, conftest saves its evidence when a test fails)."""
    return deployment.net


# ------------------------------------------------------------------ helpers


def set_resolution(node: Any, remotes: str, instance: int, mode: str) -> None:
    args = ["--db", remotes, "--instance", str(instance), "--mode", mode]
    run(node, DOVECTL, "directory", "resolution", *args)


def published_at(dnet: Any, vm: Any) -> set[str]:
    """The hosts whose Endpoint row the directory has for ``vm``."""
    rows = dovectl(
        dnet.hypervisors[0], "endpoints", "--db", dnet.directory.remotes,
        "--instance", str(vm.instance),
    )  # fmt: skip
    return {r["host"] for r in rows if r["mac"] == vm.mac}


def learned(hv: Any, instance: int) -> dict[str, str]:
    """What ``hv``'s agent has learned (or been pushed) of ``instance``: MAC -> host."""
    rows = admin(hv)["instances"].get(str(instance), {}).get("learned", [])
    return {r["mac"]: r["host"] for r in rows}


def members(hv: Any, instance: int) -> set[str]:
    return set(admin(hv)["instances"].get(str(instance), {}).get("members", []))


def counter(hv: Any, name: str) -> int:
    return int(admin(hv)["counters"].get(name, 0))


def first_ping(src: Any, ip: str) -> str:
    """One ping, answered within 2 s or not: the first packet must not be lost."""
    out = str(src.host.cmd(f"ping -c1 -W2 {ip}"))
    assert " 0% packet loss" in out, f"{src.name} -> {ip}: {out}"
    return out


def pings(src: Any, ip: str, count: int = 1) -> bool:
    return f"{count} received" in src.host.cmd(f"ping -c{count} -i0.1 -W1 {ip}")


def vms_of(dnet: Any, mode: str) -> list[Any]:
    return dnet.tenant_vms(TENANT[mode])


def twins(dnet: Any, vm: Any) -> list[Any]:
    """The VMs of the other tenants with ``vm``'s MAC and IP."""
    return [v for v in dnet if v.tenant != vm.tenant and (v.mac, v.ip) == (vm.mac, vm.ip)]


def wait(cond: Any, timeout: float, what: str) -> Any:
    return wait_until(cond, timeout, what, step=0.05)


def mode_ready(dnet: Any, mode: str, src_hv: Any, dst: Any) -> None:
    """Until ``src_hv`` can send to ``dst`` as its mode says: pushed flows in place (push),
    the destination's row in the directory (lookup), its host a member (learn)."""
    if mode == "push":
        wait(lambda: dst.mac in learned(src_hv, dst.instance), 15.0, f"{dst.name} pushed")
    elif mode == "lookup":
        wait(lambda: published_at(dnet, dst) == {dst.hypervisor.name}, 15.0, f"{dst.name} row")
    wait(
        lambda: dst.hypervisor.underlay_ip in members(src_hv, dst.instance),
        15.0,
        f"{dst.hypervisor.name} a member of {dst.instance} for {src_hv.name}",
    )


# ------------------------------------------------------------------ modes


def test_each_instance_is_in_its_own_mode_in_one_deployment(dnet: Any) -> None:
    rows = dovectl(dnet.hypervisors[0], "instances", "--db", dnet.directory.remotes)
    assert {r["id"]: r["resolution"] for r in rows} == MODES
    for mode in MODES.values():
        assert {v.hypervisor.name for v in vms_of(dnet, mode)} == {"hv1", "hv2", "hv3"}


@pytest.mark.parametrize("mode", ["learn", "lookup", "push"])
def test_the_first_packet_to_a_new_destination_is_answered(dnet: Any, mode: str) -> None:
    src, dst = vms_of(dnet, mode)[:2]
    here, there = src.hypervisor, dst.hypervisor
    assert here is not there
    if mode != "push":  # never contacted: nothing learned of it yet
        assert dst.mac not in learned(here, dst.instance)
    mode_ready(dnet, mode, here, dst)
    names = (
        "learn_requests_sent",
        "resolved_from_directory",
        "packet_in_l2_miss",
        "packet_in_arp_miss",
    )
    before = {(hv.name, n): counter(hv, n) for hv in (here, there) for n in names}

    first_ping(src, dst.ip)

    after = {(hv.name, n): counter(hv, n) for hv in (here, there) for n in names}
    grew = {k for k in after if after[k] > before[k]}
    # Each mode by its own path: a LEARN; the directory's copy; flows already there.
    if mode == "learn":
        assert (here.name, "learn_requests_sent") in grew
    else:
        assert not {g for g in grew if g[1] == "learn_requests_sent"}, grew
    if mode == "lookup":
        assert (here.name, "resolved_from_directory") in grew
    if mode == "push":
        assert not {(here.name, "packet_in_l2_miss"), (here.name, "packet_in_arp_miss")} & grew
    assert learned(here, dst.instance).get(dst.mac) == there.underlay_ip


@pytest.mark.parametrize("mode", ["learn", "lookup", "push"])
def test_every_vm_of_the_instance_is_reached_and_no_twin_of_another(dnet: Any, mode: str) -> None:
    vms = vms_of(dnet, mode)
    others = [t for v in vms for t in twins(dnet, v)]
    echoes = {v.name: in_echos(v) for v in vms + others}
    sent = {v.name: 0 for v in vms}
    for a in vms:
        for b in vms:
            if a is not b:
                assert pings(a, b.ip, count=2), f"{a.name} -> {b.name} ({mode})"
                sent[b.name] += 2
    for v in vms:
        assert in_echos(v) == echoes[v.name] + sent[v.name], v.name
    # The other tenants' VMs with the same MACs and IPs heard none of it.
    assert {t.name: in_echos(t) for t in others} == {t.name: echoes[t.name] for t in others}


def moved(dnet: Any, mode: str, sender: Any, mover: Any) -> None:
    """Until the directory has ``mover`` at its new host only and, in lookup and push,
    ``sender``'s host has followed it there through the directory."""
    to = mover.hypervisor
    wait(lambda: published_at(dnet, mover) == {to.name}, 10.0, f"the row at {to.name}")
    if mode != "learn":
        wait(
            lambda: learned(sender.hypervisor, mover.instance).get(mover.mac) == to.underlay_ip,
            10.0,
            f"{sender.hypervisor.name} to follow the move to {to.name}",
        )


@pytest.mark.parametrize("mode", ["learn", "lookup", "push"])
def test_a_tcp_stream_survives_a_move_and_back_and_the_directory_follows(
    dnet: Any, mode: str
) -> None:
    from mininet_topos.migration import migrate

    sender, mover = vms_of(dnet, mode)[:2]
    home = mover.hypervisor
    away = next(h for h in dnet.hypervisors if h not in (home, sender.hypervisor))
    assert published_at(dnet, mover) == {home.name}
    # About 4 s at 2 MB/s: both moves happen mid-stream.
    with transfer(sender, mover, port=7000 + INSTANCE[mode] % 100, total=8_000_000):
        for to in (away, home):
            time.sleep(1.0)  # the stream runs between moves
            migrate(dnet, mover, to)
            moved(dnet, mode, sender, mover)
    assert mover.hypervisor is home
    assert pings(sender, mover.ip)


# ------------------------------------------------------------------ restart


def test_a_restarted_agent_gets_members_and_endpoints_back_without_learn(dnet: Any) -> None:
    hv = dnet.hv("hv2")
    # For lookup and push: a VM here and one it talks to on another hypervisor.
    pairs = {}
    for mode in ("lookup", "push"):
        vms = vms_of(dnet, mode)
        local = next(v for v in vms if v.hypervisor is hv)
        remote = next(v for v in vms if v.hypervisor is not hv)
        assert pings(local, remote.ip) and pings(remote, local.ip)
        pairs[mode] = (local, remote)
    expected = instance_peers(hv, dnet.vms)
    connects = {h.name: counter(h, "switch_connected") for h in dnet.hypervisors if h is not hv}

    hv.stop_agent()
    hv.start_agent(None, agent_cmd())  # its dove.ini stays in the run directory

    wait(lambda: connected_status(hv), 15.0, "the restarted agent to have its switch")
    status = lambda: admin(hv)["instances"]  # noqa: E731
    wait(
        lambda: {int(i): set(s["members"]) for i, s in status().items() if s["local"]} == expected,
        10.0,
        f"{hv.name}'s members back from the directory: {expected}",
    )
    assert set(admin(hv)["directory"]["alive"].values()) == {"hv1", "hv3"}
    local, remote = pairs["push"]
    wait(lambda: remote.mac in learned(hv, remote.instance), 10.0, "the push back")
    hosts = [hv, *{r.hypervisor for _, r in pairs.values()}]
    before = {h.name: counter(h, "learn_requests_sent") for h in hosts}
    for local, remote in pairs.values():
        first_ping(local, remote.ip)
    assert {h.name: counter(h, "learn_requests_sent") for h in hosts} == before
    # Nothing elsewhere reconnected or restarted.
    assert {h.name: counter(h, "switch_connected") for h in dnet.hypervisors if h is not hv} == (
        connects
    )


# ------------------------------------------------------------------ join


def add_hypervisor(dnet: Any, index: int) -> Hypervisor:
    """One more hypervisor on the running emulation's underlay, with OVS but no agent yet."""
    from mininet_topos.dove_topo import UNDERLAY_SWITCH, hv_name

    hv = dnet.net.addHost(
        hv_name(index),
        cls=Hypervisor,
        index=index,
        mode="dove",
        underlay_cidr=f"{UNDERLAY_NET}.{index}/24",
        ip=None,
    )
    link = dnet.net.addLink(hv, dnet.net.get(UNDERLAY_SWITCH), intfName1=f"{hv.name}-eth0")
    # The underlay is a Linux bridge: its new port, as UnderlayBridge.start makes them.
    port = link.intf2.name
    quietRun(f"ethtool -K {port} tx off")
    quietRun(f"ip link set {port} master {UNDERLAY_SWITCH} up")
    hv.configDefault()  # Mininet's config: starts OVS, br-phy, br-dove
    dnet.hypervisors.append(hv)
    warm_underlay(dnet.hypervisors)
    return hv


def test_a_hypervisor_added_later_serves_every_mode_with_no_change_elsewhere(
    deployment: Deployment, dnet: Any
) -> None:
    from mininet_topos.dove_topo import plug_vm

    olds = list(dnet.hypervisors)
    before = {
        h.name: (h.agent.pid, h.in_rundir("dove.ini").read_text(), counter(h, "switch_connected"))
        for h in olds
    }
    new = add_hypervisor(dnet, 4)
    new.start_agent(deployment.config(new), agent_cmd())
    wait(lambda: connected_status(new), 15.0, "hv4's agent to have its switch")
    # One VM of each tenant there, all three with the same MAC and IP.
    vms = {
        mode: plug_vm(dnet, f"t{TENANT[mode]}vm9", new, TENANT[mode], "02:00:00:00:00:09",
                      "10.0.0.9/24")
        for mode in MODES.values()
    }  # fmt: skip
    echoes = {mode: in_echos(vm) for mode, vm in vms.items()}
    for mode, vm in vms.items():
        for src in [v for v in vms_of(dnet, mode) if v.hypervisor is not new]:
            mode_ready(dnet, mode, src.hypervisor, vm)
            first_ping(src, vm.ip)
    # Each new VM heard its own tenant only: one echo from each of its three VMs.
    assert {m: in_echos(vm) - echoes[m] for m, vm in vms.items()} == dict.fromkeys(vms, 3)
    after = {
        h.name: (h.agent.pid, h.in_rundir("dove.ini").read_text(), counter(h, "switch_connected"))
        for h in olds
    }
    assert after == before
    for h in olds:
        assert "hv4" in set(admin(h)["directory"]["alive"].values()), h.name


def test_a_hypervisor_that_leaves_is_forgotten_in_every_mode(dnet: Any) -> None:
    gone = dnet.hv("hv4")
    vms = [v for v in dnet if v.hypervisor is gone]
    assert {v.instance for v in vms} == set(MODES)
    stay = [h for h in dnet.hypervisors if h is not gone]

    def forgotten(h: Any) -> bool:
        status = admin(h)
        return "hv4" not in set(status["directory"]["alive"].values()) and all(
            gone.underlay_ip not in i["members"]
            and all(r["host"] != gone.underlay_ip for r in i["learned"])
            for i in status["instances"].values()
        )

    gone.stop_agent()
    for h in stay:
        wait(lambda: forgotten(h), 15.0, f"{h.name} to forget hv4")  # noqa: B023
    # Its OVS still forwards what it had: a miss for one of its VMs must not be
    # resolved to it again, whatever the mode (its rows stay in the directory).
    for vm in vms:
        src = next(v for v in dnet.tenant_vms(vm.tenant) if v.hypervisor is not gone)
        out = src.host.cmd(f"ping -c1 -W1 {vm.ip}")
        assert " 0% packet loss" not in out, f"{src.name} -> {vm.name} ({MODES[vm.instance]})"
        assert vm.mac not in learned(src.hypervisor, vm.instance), MODES[vm.instance]
