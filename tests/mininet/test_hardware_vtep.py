"""A hardware VTEP driven through hardware_vtep (issue 14, docs/interop.md section 3).

One emulation for the module: the directory cluster, two DOVE hypervisors in
``discovery = directory`` with tenants A (instance 5001) and B (5002) on the same address
plan (VM i: MAC 02:00:00:00:00:0i, IP 10.0.0.i; A's VM 1 on hv1 and VM 2 on hv2, B's the
other way round), the OVS VTEP emulator (``ovs-vtep``, switch ``tor1``) with a bare-metal
server (bm1, 10.0.0.51) on its port tor-eth1 bound to A's instance, untagged (this kernel
has no 8021q module for a tagged server), and the VTEP controller (``dove-agent`` with
``role = vtep-controller``) in the switch's namespace, on its hardware_vtep database over
TCP.  Instance A resolves by ``lookup``: hosts find the switch's MACs in the directory.

The controller writes A's VMs into Ucast_Macs_Remote at their hosts (none of B's);
bm1 pings and streams TCP to A's VMs on both hypervisors and hears nothing of B; the
switch's local MAC becomes a directory Endpoint row at its tunnel IP; a migration of A's
VM moves its locator and bm1's pings to it recover.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mininet_topos.dove_agent import ADMIN_SOCKET, admin, agent_binary, agent_cmd, agent_config
from mininet_topos.emulation import warm_underlay
from mininet_topos.hypervisor import wait_until
from mininet_topos.migration import migrate
from tests.tools.capture import Capture, settle
from tests.tools.nodes import DOVECTL, received, run
from tests.tools.nodes import dovectl_directory as dovectl
from tests.tools.transfer import transfer

A, B = 5001, 5002
SWITCH = "tor1"
BM_MAC, BM_IP = "02:00:00:00:05:01", "10.0.0.51"


@dataclass
class Deployment:
    net: Any  # mininet_topos.dove_topo.DoveNet
    vtep: Any  # mininet_topos.hw_vtep.HwVtep
    bm: Any  # mininet_topos.hw_vtep.BareMetal


def controller_config(dnet: Any, vtep: Any, port: str, key: str) -> str:
    cluster = dnet.directory
    ssl = cluster.pki.issue(SWITCH)  # the controller's identity: its row is named tor1
    settings = {
        "role": "vtep-controller",
        "host_name": SWITCH,
        "discovery": "directory",
        "directory": cluster.agent_remotes,
        "directory_private_key": ssl.private_key,
        "directory_certificate": ssl.certificate,
        "directory_ca_cert": ssl.ca_cert,
        "auth_key": key,
        "announce_interval": 1.0,
        "admin_socket": str(vtep.in_rundir(ADMIN_SOCKET)),
        "vtep_ovsdb": vtep.ovsdb_remote,
        "vtep_switch": SWITCH,
        "vtep_bindings": f"{port}:0={A}",
    }
    return "[dove]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.directory import ClusterPki
    from mininet_topos.dove_topo import build_net, wait_ready
    from mininet_topos.hw_vtep import add_bare_metal, add_hw_vtep

    net = build_net(2, tenants=2, vms_per_tenant=2, directory=True, directory_pki=ClusterPki())
    try:
        key = secrets.token_hex(16)
        remotes = net.directory.remotes
        args = ["--db", remotes, "--instance", str(A), "--mode", "lookup"]
        run(net.hypervisors[0], DOVECTL, "directory", "resolution", *args)
        for hv in net.hypervisors:
            ssl = net.directory.pki.issue(hv.name)
            text = agent_config(hv, [], key, directory=net.directory.agent_remotes, ssl=ssl)
            hv.start_agent(text, agent_cmd())
        vtep = add_hw_vtep(net.net, name="tor", ps_name=SWITCH)
        bm = add_bare_metal(net.net, vtep, "bm1", BM_MAC, f"{BM_IP}/24")
        warm_underlay([*net.hypervisors, vtep])
        cmd = [agent_binary(), "--config-file", "dove.ini", "--log-file", "agent.log"]
        vtep.start_agent(controller_config(net, vtep, bm.port, key), cmd)
        wait_ready(net, 60.0)
        wait_until(lambda: _controller(vtep), 30.0, "the VTEP controller connected")
        yield Deployment(net, vtep, bm)
    finally:
        net.stop()


@pytest.fixture
def dnet(deployment: Deployment) -> Any:
    """The emulation (under this name, conftest saves its evidence when a test fails)."""
    return deployment.net


def _controller(vtep: Any) -> dict[str, Any] | None:
    if vtep.agent is not None and vtep.agent.poll() is not None:
        out = vtep.in_rundir("agent.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the VTEP controller exited with {vtep.agent.returncode}:\n{out}")
    try:
        status = admin(vtep, "vtep")
    except (OSError, ValueError):
        return None
    ready = status["connected"] and status["directory_connected"]
    return status if ready and status["directory_complete"] else None


def remote_macs(vtep: Any, ls: str) -> tuple[dict[str, str], set[str]]:
    """The switch's Ucast_Macs_Remote (MAC -> locator IP) and unknown-dst locators of
    ``ls``, as vtep-ctl lists them."""
    out = vtep.vtepctl("list-remote-macs", ls, check=False)  # none before it is made
    ucast: dict[str, str] = {}
    flood: set[str] = set()
    section = ""
    for line in out.splitlines():
        if "-mac-remote" in line:
            section = line.strip()
            continue
        if "->" not in line:
            continue
        mac, _, locator = (p.strip() for p in line.partition("->"))
        ip = locator.split("/")[-1]
        if section.startswith("ucast"):
            ucast[mac] = ip
        elif mac == "unknown-dst":
            flood.add(ip)
    return ucast, flood


def tenant(d: Deployment, t: int) -> list[Any]:
    return d.net.tenant_vms(t)


def pings(node: Any, ip: str, count: int = 3) -> int:
    return received(node.cmd(f"ping -c{count} -i0.2 -W1 {ip}"))


# ------------------------------------------------------------------ tests


def test_remote_macs_are_tenant_a_vms_at_their_hosts(deployment: Deployment) -> None:
    d = deployment
    wanted = {vm.mac: vm.hypervisor.underlay_ip for vm in tenant(d, 1)}
    hosts = {hv.underlay_ip for hv in d.net.hypervisors}
    ls = f"dove-{A}"
    wait_until(
        lambda: remote_macs(d.vtep, ls) == (wanted, hosts),
        20.0,
        f"{ls}'s remote MACs {wanted} and flood set {hosts}",
    )
    # B's VMs have the same MACs on the other hypervisors: none of them is written, and B
    # has no logical switch on this switch at all.
    b_at = {vm.mac: vm.hypervisor.underlay_ip for vm in tenant(d, 2)}
    assert all(b_at[mac] != where for mac, where in wanted.items())
    switches = d.vtep.vtepctl("list-ls").split()
    assert f"dove-{B}" not in switches and ls in switches
    binding = d.vtep.vtepctl("list-bindings", SWITCH, d.bm.port)
    assert ls in binding
    assert d.vtep.vtepctl("get", "Logical_Switch", ls, "replication_mode").strip() == (
        "source_node"
    )


def test_bare_metal_reaches_tenant_a_on_both_hypervisors_and_nothing_of_b(
    deployment: Deployment,
) -> None:
    d = deployment
    a_vms, b_vms = tenant(d, 1), tenant(d, 2)
    assert {vm.hypervisor.name for vm in a_vms} == {"hv1", "hv2"}
    bm = d.bm.host
    # Nothing bm1 sends reaches tenant B (whose VMs have A's addresses and MACs).
    captures = [Capture(vm.host, vm.host.intf().name, f"host {BM_IP}") for vm in b_vms]
    try:
        for vm in a_vms:  # every A VM answers bm1, on either hypervisor: ping, then TCP
            wait_until(lambda vm=vm: pings(bm, vm.ip, 1) == 1, 15.0, f"bm1 -> {vm.name}")
            assert pings(bm, vm.ip, 5) == 5, f"bm1 -> {vm.name}"
            with transfer(d.bm, vm, port=5201, total=2_000_000):
                pass
        for vm in a_vms:  # and the other way (bm1's MAC from the directory: lookup)
            assert pings(vm.host, BM_IP, 3) == 3, f"{vm.name} -> bm1"
        settle()
    finally:
        for c in captures:
            c.stop()
    for c in captures:
        assert not c.packets(), f"tenant B saw bm1's traffic: {c}"
    # B's VMs look for 10.0.0.51 in their own tenant: nothing of it reaches bm1.
    with Capture(bm, d.bm.intf, "not ip6") as at_bm:
        for vm in b_vms:
            assert pings(vm.host, BM_IP, 2) == 0, f"{vm.name} (tenant B) reached bm1"
        settle()
    # (A's VMs may check their ARP entry for bm1 meanwhile: unicast, never an echo.)
    from_b = at_bm.matching(
        lambda line: (
            "ICMP echo request" in line
            or ("who-has 10.0.0.51" in line and "ff:ff:ff:ff:ff:ff" in line)
        )
    )
    assert not from_b, f"tenant B reached bm1: {at_bm}"


def test_the_switch_local_mac_is_a_directory_endpoint(deployment: Deployment) -> None:
    d = deployment
    bm = d.bm.host
    bm.cmd(f"ping -c1 -W1 {tenant(d, 1)[0].ip}")  # the switch learns bm1's MAC
    wait_until(
        lambda: any(
            r["mac"] == BM_MAC and r["host"] == SWITCH
            for r in dovectl(
                d.net.hypervisors[0],
                "endpoints",
                "--db",
                d.net.directory.remotes,
                "--instance",
                str(A),
            )  # fmt: skip
        ),
        15.0,
        "bm1's MAC in the directory at tor1",
    )
    hosts = dovectl(d.net.hypervisors[0], "hosts", "--db", d.net.directory.remotes)
    row = next(h for h in hosts if h["name"] == SWITCH)
    assert row["role"] == "vtep" and row["underlay_ip"] == d.vtep.underlay_ip
    instances = row["instances"] if isinstance(row["instances"], list) else [row["instances"]]
    assert instances == [A] and row["alive"] is True
    status = admin(d.vtep, "vtep")
    assert {m["mac"] for m in status["local_macs"]} == {BM_MAC}
    assert status["counters"]["vtep_transactions"] >= 1
    assert status["counters"]["vtep_malformed_rows"] == 0


def test_a_migration_moves_the_locator_and_bare_metal_follows(deployment: Deployment) -> None:
    d = deployment
    vm = tenant(d, 1)[0]
    old, new = vm.hypervisor, next(hv for hv in d.net.hypervisors if hv is not vm.hypervisor)
    ls = f"dove-{A}"
    assert remote_macs(d.vtep, ls)[0][vm.mac] == old.underlay_ip
    try:
        migrate(d.net, vm, new)
        wait_until(
            lambda: remote_macs(d.vtep, ls)[0].get(vm.mac) == new.underlay_ip,
            15.0,
            f"{vm.name}'s locator at {new.name}",
        )
        # The emulation's port move bounces the VM's link, and Linux then forgets its
        # neighbours.  The VM asks for bm1's address itself: ovs-vtep reports no IP in
        # Ucast_Macs_Local, so no host can answer, and the host sends the ARP request to
        # its external VTEPs at once (the switch is one, from its vtep row): bm1 answers.
        vm.host.cmd(f"ip neigh flush dev {vm.host.intf().name}")
        wait_until(lambda: pings(vm.host, d.bm.ip, 1) == 1, 15.0, f"{vm.name} moved -> bm1")
        wait_until(lambda: pings(d.bm.host, vm.ip, 1) == 1, 15.0, f"bm1 -> {vm.name} moved")
        assert pings(d.bm.host, vm.ip, 5) == 5
    finally:
        if vm.hypervisor is not old:
            migrate(d.net, vm, old)


def test_dovectl_vtep_and_a_clean_stop(deployment: Deployment) -> None:
    d = deployment
    out = run(d.vtep, DOVECTL, "--admin-socket", str(d.vtep.in_rundir(ADMIN_SOCKET)), "vtep")
    assert f"{SWITCH}" in out and BM_MAC in out and "tor-eth1:0=5001" in out
    d.vtep.agent.terminate()
    assert d.vtep.agent.wait(10) == 0
