"""IPv6 at layer 2 (issue 13, point 3), on the shared 3-hypervisor emulation.

Every VM gets fd00::<n>/64 (n as in its 10.0.0.<n>), the same plan in both tenants, and
its port's ``dove-ips`` lists both addresses.  t1vm1@hv1, t1vm2@hv2 (instance 5001),
t2vm1@hv2, t2vm2@hv3 (instance 5002).  Asserted: ping6 and TCP over IPv6 across
hypervisors in both tenants; Neighbor Solicitations answered on the host (a responder
flow counts them, none crosses the underlay), unknown targets resolved by the agent and
never flooded; nothing of one tenant's ND reaches the other; spoofed IPv4 and IPv6
sources dropped and counted.
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from dove_ryu.openflow.cookies import Purpose
from mininet_topos.agents import admin
from mininet_topos.dove_topo import VmRecord
from mininet_topos.hypervisor import BR_DOVE, wait_until
from tests.tools import ovs
from tests.tools.capture import Capture, settle
from tests.tools.nodes import send_frames

NS_TEXT = "neighbor solicitation"


def v6(vm: VmRecord) -> str:
    return f"fd00::{IPv4Address(vm.ip).packed[3]:x}"


def intf(vm: VmRecord) -> str:
    return str(vm.host.intf().name)


def ping6(src: VmRecord, dst: str, count: int = 1) -> tuple[int, str]:
    out, err, rc = src.host.pexec(["ping", "-6", "-n", "-c", str(count), "-W", "2", dst])
    return rc, out + err


def nd_flow_packets(hv: Any, target: str) -> int:
    """Packets the arp_nd responder flows for ``target`` answered on ``hv``."""
    return sum(
        f.n_packets
        for f in ovs.flows(hv)
        if f"nd_target={target}" in f.text and "nd_reply" in f.text
    )


@pytest.fixture(scope="module")
def net(dove: Any) -> Iterator[Any]:
    """The emulation with IPv6 addresses on every VM and in every port's marks."""
    dnet = dove.net
    for vm in dnet:
        name = intf(vm)
        vm.host.cmd(f"sysctl -qw net.ipv6.conf.{name}.accept_dad=0")
        vm.host.cmd(f"sysctl -qw net.ipv6.conf.{name}.disable_ipv6=0")
        vm.host.cmd(f"sysctl -qw net.ipv6.conf.{name}.accept_ra=0")
        vm.host.cmd(f"ip -6 addr add {v6(vm)}/64 dev {name} nodad")
        vm.hypervisor.vsctl(
            "set", "Interface", vm.port, f'external_ids:dove-ips="{vm.ip},{v6(vm)}"'
        )
    for vm in dnet:
        wait_until(
            lambda vm=vm: f"nd_target={v6(vm)}" in vm.hypervisor.ofctl("dump-flows", BR_DOVE),
            15.0,
            f"{vm.hypervisor.name} to answer for {v6(vm)}",
        )
        wait_until(
            lambda vm=vm: "fe80::" in vm.host.cmd(f"ip -6 addr show dev {intf(vm)} scope link"),
            10.0,
            f"{vm.name}'s link-local address",
        )
    yield dnet


def test_ping6_across_hypervisors_in_tenants_with_identical_plans(net: Any) -> None:
    for tenant in (1, 2):
        a, b = net.tenant_vms(tenant)
        assert a.hypervisor is not b.hypervisor
        rc, out = ping6(a, v6(b), count=3)
        assert rc == 0, out
        neigh = a.host.cmd(f"ip -6 neigh show {v6(b)} dev {intf(a)}")
        assert b.mac in neigh, neigh  # its own tenant's VM, though both share MAC and address


def test_tcp_over_ipv6(net: Any) -> None:
    a, b = net.tenant_vms(1)
    server = b.host.popen(["iperf3", "-s", "-1", "-p", "5206"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: ":5206 " in b.host.cmd("ss -Hltn"), 5.0, "iperf3 to listen")
        out, err, rc = a.host.pexec(
            ["timeout", "30", "iperf3", "-6", "-c", v6(b), "-p", "5206", "-t", "2", "-J"]
        )
    finally:
        server.wait(timeout=10)
    assert rc == 0, out + err
    result = json.loads(out)
    assert result["start"]["connected"][0]["remote_host"] == v6(b)
    assert result["end"]["sum_received"]["bytes"] > 0


def test_a_solicitation_for_a_known_address_is_answered_on_the_host(net: Any) -> None:
    a, b = net.tenant_vms(1)
    assert ping6(a, v6(b))[0] == 0  # learned (by LEARN or by its ENDPOINT announcement)
    before = nd_flow_packets(a.hypervisor, v6(b))
    with Capture(b.hypervisor, b.hypervisor.uplink, "udp port 4789") as underlay:
        a.host.cmd(f"ip -6 neigh flush dev {intf(a)}")
        rc, out = ping6(a, v6(b))
        assert rc == 0, out
        settle()
    assert nd_flow_packets(a.hypervisor, v6(b)) > before
    assert not underlay.matching(lambda line: NS_TEXT in line), underlay
    neigh = a.host.cmd(f"ip -6 neigh show {v6(b)} dev {intf(a)}")
    assert b.mac in neigh, neigh


def test_unknown_targets_go_to_the_agent_and_nd_stays_in_its_tenant(net: Any) -> None:
    t1a, t1b = net.tenant_vms(1)
    t2a = next(vm for vm in net.tenant_vms(2) if vm.hypervisor is t1b.hypervisor)
    before = admin(t1a.hypervisor, "counters").get("packet_in_nd_miss", 0)
    with (
        Capture(t2a.host, intf(t2a), "icmp6") as other_tenant,
        Capture(t1b.host, intf(t1b), "icmp6") as same_tenant,
    ):
        t1a.host.cmd(f"ip -6 neigh flush dev {intf(t1a)}")
        assert ping6(t1a, "fd00::77")[0] != 0  # nobody has it
        assert ping6(t1a, v6(t1b))[0] == 0
        settle()
    assert admin(t1a.hypervisor, "counters").get("packet_in_nd_miss", 0) > before
    assert not same_tenant.matching(lambda line: "fd00::77" in line), same_tenant
    assert not other_tenant.matching(lambda line: NS_TEXT in line), other_tenant


def _ipv4_udp(mac: str, dst_mac: str, src: str, dst: str) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 12, 0) + b"spoof"
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        IPv4Address(src).packed, IPv4Address(dst).packed,
    )  # fmt: skip
    return (
        bytes.fromhex(dst_mac.replace(":", "") + mac.replace(":", "")) + b"\x08\x00" + header + udp
    )


def _ipv6_udp(mac: str, dst_mac: str, src: str, dst: str) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 13, 0) + b"spoof"
    header = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64)
    header += IPv6Address(src).packed + IPv6Address(dst).packed
    return (
        bytes.fromhex(dst_mac.replace(":", "") + mac.replace(":", "")) + b"\x86\xdd" + header + udp
    )


def _guard(hv: Any, port: str, proto: str) -> int:
    """Packets the port's priority-110 guard for ``proto`` dropped."""
    return sum(
        f.n_packets
        for f in ovs.flows(hv, Purpose.DROP_SPOOF)
        if f"priority=110,{proto},in_port={port} " in f.text.replace('"', "")
    )


def test_spoofed_ipv4_and_ipv6_sources_are_dropped_and_counted(net: Any) -> None:
    a, b = net.tenant_vms(1)
    assert ping6(a, v6(b))[0] == 0 and b.mac  # b's MAC is learned on a's host
    before4, before6 = _guard(a.hypervisor, a.port, "ip"), _guard(a.hypervisor, a.port, "ipv6")
    with Capture(b.host, intf(b), "udp port 9") as cap:
        frames = [
            _ipv4_udp(a.mac, b.mac, "10.0.0.99", b.ip),
            _ipv6_udp(a.mac, b.mac, "fd00::99", v6(b)),
            _ipv4_udp(a.mac, b.mac, a.ip, b.ip),  # its own address: delivered
        ]
        send_frames(a, frames)
        cap.wait_for(lambda line: a.ip in line, 5.0, "the honest datagram")
        settle()
    assert not cap.matching(lambda line: "10.0.0.99" in line or "fd00::99" in line), cap
    assert _guard(a.hypervisor, a.port, "ip") == before4 + 1
    assert _guard(a.hypervisor, a.port, "ipv6") == before6 + 1
