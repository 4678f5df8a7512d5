"""A kernel VXLAN VTEP joins tenant A (docs/interop.md section 2, issue 14 point 4).

One emulation for the module: 3 hypervisors, tenants A (instance 5001) and B (5002)
with the same addresses, 3 VMs each (one of each tenant on every hypervisor), and a
kernel VTEP (`mininet_topos.kernel_vtep`) in its own namespace on the underlay: a VXLAN
device with VNI 5001, its own tenant address 10.0.0.200, all-zeros FDB entries to the
hypervisors.  The agents declare it in `external_vteps`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dove_ryu.openflow.cookies import Purpose
from mininet_topos.kernel_vtep import KernelVtep
from tests.tools import ovs
from tests.tools.capture import Capture, settle
from tests.tools.netsend import ethernet, random_unicast_mac
from tests.tools.transfer import transfer

A, B = 5001, 5002
VTEP = KernelVtep(instance=A)
MAX_MACS = 32
NETSEND = str(Path(__file__).resolve().parents[1] / "tools" / "netsend.py")


@pytest.fixture(scope="module")
def dnet() -> Iterator[Any]:
    from mininet_topos.agents import build_dove_net

    net, _ = build_dove_net(
        hypervisors=3,
        tenants=2,
        vms_per_tenant=3,
        extra={"external_max_macs": MAX_MACS},
        kernel_vteps=[VTEP],
    )
    try:
        yield net
    finally:
        net.stop()


def vtep(dnet: Any) -> Any:
    return dnet.net.get(VTEP.name)


def ping(node: Any, ip: str, count: int = 3) -> bool:
    return f"{count} received" in node.cmd(f"ping -c{count} -i0.1 -W1 {ip}")


def test_the_vtep_pings_and_talks_tcp_to_a_on_every_hypervisor(dnet: Any) -> None:
    host = vtep(dnet)
    vms = dnet.tenant_vms(1)
    assert sorted(vm.hypervisor.name for vm in vms) == ["hv1", "hv2", "hv3"]
    for vm in vms:
        assert ping(host, vm.ip), f"{VTEP.name} -> {vm.name}"
        assert ping(vm.host, VTEP.ip), f"{vm.name} -> {VTEP.name}"
    sender = SimpleNamespace(host=host, ip=VTEP.ip, name=VTEP.name)
    with transfer(sender, vms[1], port=7801, total=2_000_000):
        pass
    with transfer(vms[2], sender, port=7802, total=2_000_000):
        pass


def test_an_address_no_dove_host_knows_is_asked_of_the_vtep(dnet: Any) -> None:
    """Unknown destinations: an ARP request nobody answered a LEARN for goes to the
    instance's VTEPs, whose answer comes back to the VM."""
    from mininet_topos.agents import admin

    host = vtep(dnet)
    host.cmd(f"ip addr add 10.0.0.201/24 dev {VTEP.device}")
    vm = dnet.vm("t1vm3")
    sent = admin(vm.hypervisor, "vteps")["counters"].get("vtep_unknown_sent", 0)
    # Each request goes to the VTEP as it is asked (and a LEARN to the DOVE hosts).
    out = vm.host.cmd(f"arping -c3 -w4 -I {vm.host.intf().name} 10.0.0.201")
    assert out.lower().count(f"bytes from {VTEP.mac} (10.0.0.201)") == 3, out
    assert admin(vm.hypervisor, "vteps")["counters"]["vtep_unknown_sent"] > sent


def test_what_it_learned_is_in_the_datapath_as_vtep_learned(dnet: Any) -> None:
    for hv in dnet.hypervisors:
        learned = ovs.flows(hv, Purpose.VTEP_LEARNED)
        assert any(f"dl_dst={VTEP.mac}" in f.text for f in learned), (hv.name, learned)
        assert all("idle_timeout=300" in f.text and "priority=50" in f.text for f in learned)


def test_an_agent_restart_keeps_what_the_datapath_learned(dnet: Any) -> None:
    from mininet_topos.agents import admin, agent_cmd
    from mininet_topos.hypervisor import wait_until

    hv = dnet.hv("hv2")
    assert ping(vtep(dnet), dnet.vm("t1vm2").ip)

    def learned() -> list[Any]:
        return [f for f in ovs.flows(hv, Purpose.VTEP_LEARNED) if f"dl_dst={VTEP.mac}" in f.text]

    [before] = learned()
    generation = admin(hv)["takeover"]["generation"]
    hv.stop_agent()
    hv.start_agent(None, agent_cmd())

    def settled() -> bool:
        try:
            st = admin(hv)
        except Exception:  # still starting
            return False
        return bool(st["connected"]) and not st["takeover"]["settling"]

    wait_until(settled, 30.0, "the restarted agent settled (its sweep done)")
    assert admin(hv)["takeover"]["generation"] != generation
    [after] = learned()  # the sweep of the old generation left it
    assert after.cookie == before.cookie
    assert ping(vtep(dnet), dnet.vm("t1vm2").ip)


def test_a_broadcast_of_a_reaches_it_once_and_b_never(dnet: Any) -> None:
    host = vtep(dnet)
    a1, b1 = dnet.vm("t1vm1"), dnet.vm("t2vm1")
    bpf = "icmp and ether dst ff:ff:ff:ff:ff:ff"
    with Capture(host, VTEP.device, bpf) as cap:
        b1.host.cmd("ping -b -c1 -W1 10.0.0.255")
        a1.host.cmd("ping -b -c1 -W1 10.0.0.255")
        cap.wait_for(lambda line: a1.mac in line, 5.0, "A's broadcast")
        settle()
    seen = cap.packets()
    assert len([p for p in seen if a1.mac in p]) == 1, seen
    assert len(seen) == 1, seen  # nothing of B's (same MAC, same addresses)


def test_b_is_neither_reached_nor_heard(dnet: Any) -> None:
    host = vtep(dnet)
    b_vms = dnet.tenant_vms(2)
    caps = [Capture(vm.host, vm.host.intf().name, f"ether src {VTEP.mac}") for vm in b_vms]
    try:
        # 10.0.0.1-3 are A's and B's: only A's answer (A's VM is reached, B's never).
        for n in (1, 2, 3):
            assert ping(host, f"10.0.0.{n}")
        host.cmd("ping -b -c2 -i0.2 -W1 10.0.0.255")
        settle()
    finally:
        for cap in caps:
            cap.stop()
    assert [cap.packets() for cap in caps] == [[], [], []]


def test_a_frame_with_bs_vni_is_dropped_and_counted(dnet: Any) -> None:
    host = vtep(dnet)
    hv_ips = [hv.underlay_ip for hv in dnet.hypervisors]
    vx = f"vx{B}"
    host.cmd(
        f"ip link add {vx} type vxlan id {B} local {VTEP.underlay_ip} dstport 4789 "
        f"dev {VTEP.uplink} && ip link set {vx} address 02:00:00:00:ee:02 up"
    )
    for ip in hv_ips:
        host.cmd(f"bridge fdb append 00:00:00:00:00:00 dev {vx} dst {ip}")
    before = sum(ovs.packets(hv, Purpose.DROP_NONMEMBER) for hv in dnet.hypervisors)
    caps = [
        Capture(vm.host, vm.host.intf().name, "ether src 02:00:00:00:ee:02")
        for vm in dnet.tenant_vms(2)
    ]
    try:
        host.cmd(f"arping -c3 -w2 -I {vx} 10.0.0.1")
        from mininet_topos.hypervisor import wait_until

        wait_until(
            lambda: (
                sum(ovs.packets(hv, Purpose.DROP_NONMEMBER) for hv in dnet.hypervisors)
                >= before + 3 * len(hv_ips)
            ),
            5.0,
            "the non-member drops counted",
        )
        settle()
    finally:
        for cap in caps:
            cap.stop()
        host.cmd(f"ip link del {vx}")
    assert [cap.packets() for cap in caps] == [[], [], []]


def migrate_under_vtep_pings(dnet: Any, mover: Any, to: Any) -> None:
    """The VTEP pings ``mover`` every 50 ms for 5 s while it moves to ``to`` (after 1 s).

    The port is away for the move's unplugged time; the VM's gratuitous ARP from its new
    host reaches the VTEP through the flood group and moves its FDB entry at once.  The
    bound: the pings of the unplugged time plus 0.5 s (agent and FDB reaction)."""
    from mininet_topos.migration import migrate

    host = vtep(dnet)
    assert ping(host, mover.ip)
    count, interval = 100, 0.05
    proc = host.popen(
        ["ping", "-c", str(count), "-i", str(interval), "-W", "1", mover.ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # the stream runs before the move (a stream, not a condition)
    unplugged = migrate(dnet, mover, to)
    out, _ = proc.communicate(timeout=30)
    received = int(re.search(r"(\d+) received", out).group(1))  # type: ignore[union-attr]
    lost = count - received
    print(f"migration under a kernel VTEP's pings: {lost} of {count} lost, {unplugged:.3f}s away")
    assert lost <= int((unplugged + 0.5) / interval) + 1, out
    assert ping(host, mover.ip)


def test_a_vm_migrates_while_the_vtep_pings_it(dnet: Any) -> None:
    mover = dnet.vm("t1vm1")
    to = dnet.hv("hv2") if mover.hypervisor.name != "hv2" else dnet.hv("hv3")
    migrate_under_vtep_pings(dnet, mover, to)


def test_tshark_reads_every_data_packet_as_vxlan_with_the_instance(
    dnet: Any, tmp_path: Path
) -> None:
    host = vtep(dnet)
    pcap = tmp_path / "underlay.pcap"
    cmd = ["tcpdump", "-Z", "root", "--immediate-mode", "-U", "-i", VTEP.uplink, "-w", str(pcap)]
    cmd.append("udp port 4789")
    dump = host.popen(cmd, stderr=subprocess.PIPE, text=True)
    from mininet_topos.hypervisor import wait_until

    assert dump.stderr is not None
    wait_until(lambda: "listening" in dump.stderr.readline(), 5.0, "tcpdump listening")
    try:
        for vm in dnet.tenant_vms(1):
            assert ping(host, vm.ip, count=2)
        # 24 bytes of pcap header, then 16 + 148 bytes or more per VXLAN ping packet.
        wait_until(lambda: pcap.stat().st_size >= 24 + 12 * 164, 5.0, "the pings captured")
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(5)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            "udp.port==4789,vxlan",
            "-T",
            "fields",
            "-e",
            "vxlan.vni",
            "-e",
            "icmp.type",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line.strip()]
    assert len(rows) >= 12, rows  # 3 VMs x 2 pings x (request + reply), at least
    assert {vni for vni, _ in rows} == {str(A)}, rows


def dovectl(hv: Any, *args: str) -> str:
    from mininet_topos.agents import ADMIN_SOCKET

    dovectl = str(Path(sys.executable).parent / "dovectl")
    cmd = [dovectl, "--admin-socket", str(Path(str(hv.rundir)) / ADMIN_SOCKET), *args]
    out, err, rc = hv.pexec(cmd, env=hv.ovs_env())
    assert rc == 0, f"dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return str(out)


def test_dovectl_shows_the_vtep_its_flows_and_traces_to_it(dnet: Any) -> None:
    vm = dnet.vm("t1vm2")
    hv = vm.hypervisor
    assert ping(vtep(dnet), vm.ip)
    listed = dovectl(hv, "vteps")
    assert VTEP.name in listed and VTEP.underlay_ip in listed and str(A) in listed
    # What the datapath learned behind it, read from the bridge, against the bound.
    [shown] = json.loads(dovectl(hv, "--json", "vteps"))["vteps"]
    learned = shown["learned"][str(A)]
    assert 1 <= learned <= MAX_MACS and shown["max_macs"] == MAX_MACS, shown
    assert f"{A}: {learned}/{MAX_MACS}" in listed, listed
    text = dovectl(hv, "flows", "--instance", str(A))
    assert f"accepts tunnels from external VTEP {VTEP.underlay_ip}, learns its MACs" in text
    assert f"{VTEP.mac} behind external VTEP {VTEP.underlay_ip}, learned in the datapath" in text
    args = ["trace", "--from", vm.port, "--to", VTEP.mac, "--instance", str(A), "--json"]
    report = json.loads(dovectl(hv, *args))
    assert [(o["kind"], o["next_hop"]) for o in report["hops"][0]["outcomes"]] == [
        ("tunnel", VTEP.underlay_ip)
    ]


def test_learning_behind_it_is_bounded_and_the_agent_keeps_running(dnet: Any) -> None:
    import random

    host = vtep(dnet)
    rng = random.Random(14)
    frames = [
        ethernet("ff:ff:ff:ff:ff:ff", random_unicast_mac(rng), 0x88B5, b"x" * 46).hex()
        for _ in range(3 * MAX_MACS)
    ]
    args = [a for f in frames for a in ("--hex", f)]
    out = host.cmd(" ".join([sys.executable, NETSEND, "frames", "--iface", VTEP.device, *args]))
    assert "sent" in out, out
    from mininet_topos.hypervisor import wait_until

    # The hypervisors serving A now (the migration left one without A's VMs).
    serving = sorted({vm.hypervisor for vm in dnet.tenant_vms(1)}, key=lambda hv: hv.name)
    assert len(serving) >= 2
    for hv in serving:
        wait_until(
            lambda hv=hv: len(ovs.flows(hv, Purpose.VTEP_LEARNED)) >= MAX_MACS,
            5.0,
            f"{hv.name} learned up to the bound",
        )
    settle()
    for hv in serving:
        assert len(ovs.flows(hv, Purpose.VTEP_LEARNED)) == MAX_MACS
    from mininet_topos.agents import admin

    for hv in dnet.hypervisors:
        assert admin(hv, "status")["connected"]
    assert ping(host, dnet.vm("t1vm2").ip)  # its own MAC was learned before: still there
