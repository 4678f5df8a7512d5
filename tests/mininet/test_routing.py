"""Routing between a tenant's subnets on the hypervisors (issue 12 items 1 and 7).

One emulation for the module: 3 hypervisors, 2 tenants with identical plans, 2 subnets
each (VM i in subnet (i-1) % 2, 10.0.<subnet>.<i>, gateway 10.0.<subnet>.254), a router
per tenant, static discovery and LEARN.  Layout of tenant 1: vm1 (10.0.0.1) and vm4
(10.0.1.4) on hv1, vm2 (10.0.1.2) on hv2, vm3 (10.0.0.3) on hv3; tenant 2 has the same
addresses on other hypervisors.  The first-packet test runs first: nothing has talked yet.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.model import router_mac
from mininet_topos.agents import ADMIN_SOCKET, admin
from mininet_topos.dhcp_client import take_address
from mininet_topos.dove_topo import DoveNet, VmRecord
from mininet_topos.hypervisor import wait_until
from tests.tools import netsend
from tests.tools.capture import Capture, settle
from tests.tools.nodes import send_frames
from tests.tools.scrape import scrape
from tests.tools.transfer import transfer

DOVECTL = str(Path(sys.executable).parent / "dovectl")


@pytest.fixture(scope="module")
def dnet() -> Iterator[DoveNet]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.agents import build_dove_net

    net, _ = build_dove_net(hypervisors=3, tenants=2, vms_per_tenant=4, subnets=2, routers=True)
    try:
        yield net
    finally:
        net.stop()


def ping(src: VmRecord, dst_ip: str, count: int = 1, ttl: int | None = None) -> int:
    """Echo replies received."""
    cmd = ["ping", "-n", "-c", str(count), "-W", "2", "-i", "0.2"]
    if ttl is not None:
        cmd += ["-t", str(ttl)]
    out, _, _ = src.host.pexec([*cmd, dst_ip])
    for line in out.splitlines():
        if "packets transmitted" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"no ping summary: {out}")


def counters(dnet: DoveNet, hv: str) -> dict[str, Any]:
    return admin(dnet.hv(hv), "counters")


def test_the_first_routed_packet_is_not_lost(dnet: DoveNet) -> None:
    src, dst = dnet.vm("t1vm3"), dnet.vm("t1vm2")  # hv3 -> hv2, never talked
    assert src.hypervisor is not dst.hypervisor and src.instance != dst.instance
    assert ping(src, dst.ip, count=1) == 1


def test_ping_across_subnets_on_other_and_same_hypervisor(dnet: DoveNet) -> None:
    a = dnet.vm("t1vm1")
    assert ping(a, dnet.vm("t1vm2").ip, count=3) == 3  # hv1 -> hv2
    same = dnet.vm("t1vm4")
    assert same.hypervisor is a.hypervisor and same.instance != a.instance
    assert ping(a, same.ip, count=3) == 3
    assert ping(dnet.vm("t2vm1"), dnet.vm("t2vm2").ip, count=3) == 3  # tenant 2's router


def test_no_packet_in_in_steady_state(dnet: DoveNet) -> None:
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    assert ping(a, b.ip, count=2) == 2
    before = {hv.name: counters(dnet, hv.name).get("packet_in", 0) for hv in dnet.hypervisors}
    assert ping(a, b.ip, count=10) == 10
    after = {hv.name: counters(dnet, hv.name).get("packet_in", 0) for hv in dnet.hypervisors}
    assert after == before


def test_tcp_across_subnets(dnet: DoveNet) -> None:
    with transfer(dnet.vm("t1vm1"), dnet.vm("t1vm2"), 5201, 2_000_000) as outcome:
        pass
    assert outcome


def test_tenants_with_identical_plans_stay_apart(dnet: DoveNet) -> None:
    captures = [Capture(v.host, v.host.intf().name, "icmp") for v in dnet.tenant_vms(2)]
    try:
        assert ping(dnet.vm("t1vm1"), "10.0.1.2", count=3) == 3
        assert ping(dnet.vm("t1vm3"), "10.0.1.4", count=3) == 3
        settle()
    finally:
        for c in captures:
            c.stop()
    assert [c.packets() for c in captures] == [[] for _ in captures]


def test_a_vm_spoofing_the_gateway_address_or_mac_is_dropped(dnet: DoveNet) -> None:
    a, seer = dnet.vm("t1vm1"), dnet.vm("t1vm3")  # same subnet, other hypervisors
    gw_mac = router_mac(a.instance)
    bcast = "ff:ff:ff:ff:ff:ff"
    cap = Capture(seer.host, seer.host.intf().name, "arp or ether src " + gw_mac)
    try:
        # The claim on the gateway address and a frame from the gateway MAC go nowhere;
        # the same claim on its own address (the control) is flooded to the subnet.
        claim_gw = netsend.ethernet(
            bcast, a.mac, 0x0806, netsend.arp(2, a.mac, "10.0.0.254", bcast, "10.0.0.254")
        )
        from_gw_mac = netsend.udp_frame(gw_mac, bcast, "10.0.0.254", "10.0.0.3", 9)
        control = netsend.ethernet(bcast, a.mac, 0x0806, netsend.arp(2, a.mac, a.ip, bcast, a.ip))
        send_frames(a, [claim_gw, from_gw_mac, control])
        wait_until(lambda: any(a.ip in p for p in cap.packets()), 5.0, "the control claim")
        settle()
    finally:
        cap.stop()
    assert not [p for p in cap.packets() if "10.0.0.254" in p or gw_mac in p]


def test_ttl_reaching_zero_is_dropped_and_counted(dnet: DoveNet) -> None:
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    before = counters(dnet, a.hypervisor.name).get("ttl_expired", 0)
    assert ping(a, b.ip, count=1, ttl=1) == 0
    assert counters(dnet, a.hypervisor.name).get("ttl_expired", 0) > before


def test_dovectl_shows_the_routers(dnet: DoveNet) -> None:
    hv = dnet.hv("hv1")
    cmd = [DOVECTL, "--admin-socket", str(Path(hv.rundir) / ADMIN_SOCKET), "routers"]
    out, err, rc = hv.pexec(cmd, env=hv.ovs_env())
    assert rc == 0, out + err
    assert "10.0.0.254/24" in out and "10.0.1.254/24" in out
    assert router_mac(dnet.vm("t1vm1").instance) in out


def dovectl(hv: Any, *args: str) -> str:
    cmd = [DOVECTL, "--admin-socket", str(Path(hv.rundir) / ADMIN_SOCKET), *args]
    out, err, rc = hv.pexec(cmd, env=hv.ovs_env())
    assert rc == 0, f"dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return str(out)


def test_trace_explains_a_routed_packet_to_the_vm_it_reaches(dnet: DoveNet) -> None:
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")  # 10.0.0.1@hv1 -> 10.0.1.2@hv2
    assert ping(a, b.ip, count=1) == 1  # resolved: the neighbour flow is there
    peers = []
    for hv in dnet.hypervisors:
        peers += ["--peer", f"{hv.underlay_ip}={Path(hv.rundir) / ADMIN_SOCKET}:{hv.rundir}"]
    args = ["trace", "--from", a.port, "--to", b.ip, "--follow", *peers]
    report = json.loads(dovectl(a.hypervisor, *args, "--json"))
    first = report["hops"][0]
    purposes = [s["origin"]["purpose"] for s in first["steps"] if s["origin"]]
    assert purposes[purposes.index("router_port") :][:3] == ["router_port", "route", "neighbor"]
    text = dovectl(a.hypervisor, *args)
    assert [(v["node"], v["kind"], v.get("port")) for v in report["verdict"]] == [
        (b.hypervisor.name, "delivered", b.port)
    ], text
    assert "off its subnet 10.0.0.0/24, to router 1's gateway 10.0.0.254" in text
    assert f"{b.ip} is in router 1's subnet of instance {b.instance}: routed on this host" in text
    assert f"{b.ip} in instance {b.instance} is at {b.mac}" in text


def test_a_vm_of_a_routed_subnet_takes_address_and_router_by_dhcp(dnet: DoveNet) -> None:
    vm, other = dnet.vm("t2vm2"), dnet.vm("t2vm1")  # 10.0.1.2 and 10.0.0.1, tenant 2
    try:

        def dhcp_seen() -> float:
            return scrape(vm.hypervisor).value("dove_dhcp_packets_total")

        before = dhcp_seen()
        lease = take_address(vm)
        assert lease.get("ip") == vm.ip and lease.get("subnet") == "255.255.255.0", lease
        assert lease.get("router") == "10.0.1.254" and lease.get("mtu") == "1450", lease
        route = vm.host.cmd("ip -4 route show default")
        assert "via 10.0.1.254" in route, route
        assert ping(vm, other.ip, count=2) == 2  # routed, with what DHCP gave it
        # The switch counted the DISCOVER and the REQUEST it took to the agent.
        wait_until(lambda: dhcp_seen() >= before + 2, 15.0, "DHCP packets counted", 0.5)
    finally:
        intf = vm.host.intf().name
        vm.host.cmd(f"ip -4 addr flush dev {intf}; ip addr add {vm.ip_cidr} dev {intf}")
        vm.host.cmd(f"ip link set dev {intf} mtu 1450; ip route replace default via 10.0.1.254")


def test_routed_packets_show_in_prometheus(dnet: DoveNet) -> None:
    """Routing never reaches the agent: the switch counts it, by cookie purpose."""
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")

    def routed() -> float:
        return scrape(a.hypervisor).value("dove_routed_packets_total", to="subnet")

    assert ping(a, b.ip, count=1) == 1
    before = routed()
    assert ping(a, b.ip, count=5) == 5
    wait_until(lambda: routed() >= before + 5, 15.0, "routed packets counted", 0.5)
