"""Routing between a tenant's subnets and out through the gateways over Geneve (issue 14
point 1: "routing when it exists"), in Mininet with real agents.

One emulation for the module: 2 hypervisors with ``tunnel_type = geneve``, 2 tenants
with identical plans, 2 subnets each (vm1 10.0.0.1, vm2 10.0.1.2, gateway
10.0.<subnet>.254), a router per tenant, and the two gateways of `mininet_topos.gateway`
(source NAT to the internet host), Geneve too.  A routed packet is routed on the sending
VM's host into the destination's instance, so on the underlay it is Geneve with the
destination instance's VNI and the DOVE option.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.mininet.test_gateway import World
from tests.mininet.test_geneve import underlay_capture
from tests.tools.capture import settle
from tests.tools.transfer import transfer


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    from mininet_topos.agents import build_dove_net
    from mininet_topos.gateway import add_gateways, hosts_and_gateways

    net, key = build_dove_net(
        hypervisors=2,
        tenants=2,
        vms_per_tenant=2,
        extra={"peers": hosts_and_gateways(2)},
        subnets=2,
        routers=True,
        tunnel_type="geneve",
    )
    try:
        ext = add_gateways(net, key, extra={"tunnel_type": "geneve"})
        try:
            yield World(net, ext)  # test_gateway's: the evidence plugin knows it
        finally:
            ext.stop()
    finally:
        net.stop()


@pytest.fixture
def dnet(world: World) -> Any:
    return world.dnet


def received(src: Any, dst_ip: str, count: int) -> int:
    out, _, _ = src.host.pexec(["ping", "-n", "-c", str(count), "-W", "2", "-i", "0.2", dst_ip])
    for line in out.splitlines():
        if "packets transmitted" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"no ping summary: {out}")


def test_the_first_routed_packet_crosses_hypervisors_over_geneve(dnet: Any) -> None:
    src, dst = dnet.vm("t1vm1"), dnet.vm("t1vm2")  # never talked
    assert src.hypervisor is not dst.hypervisor and src.instance != dst.instance
    assert received(src, dst.ip, 1) == 1


def test_routed_packets_are_geneve_into_the_destination_instance(dnet: Any) -> None:
    src, dst = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    with underlay_capture(src.hypervisor, 4) as seen:
        settle()  # tshark is up
        assert received(src, dst.ip, 3) == 3
    assert seen, "nothing captured"
    vnis = set()
    for dstport, vni, option_class, _ in seen:
        assert dstport == "6081" and option_class.lower() in ("0xff0d", str(0xFF0D)), seen
        vnis.add(int(vni, 0))
    # Requests routed on src's host into dst's instance, replies on dst's into src's.
    assert vnis == {src.instance, dst.instance}, seen


def test_tcp_across_subnets_and_the_other_tenant_alike(dnet: Any) -> None:
    with transfer(dnet.vm("t1vm1"), dnet.vm("t1vm2"), port=7821, total=2_000_000):
        pass
    assert received(dnet.vm("t2vm1"), dnet.vm("t2vm2").ip, 3) == 3


def test_vms_reach_the_internet_through_a_geneve_gateway(world: World) -> None:
    from mininet_topos.gateway import INTERNET_IP, fetch, floating_ip, snat_address
    from mininet_topos.hypervisor import wait_until

    dnet, ext = world.dnet, world.ext
    for vm in (dnet.vm("t1vm1"), dnet.vm("t2vm2")):
        wait_until(
            lambda vm=vm: fetch(vm.host, f"http://{INTERNET_IP}/index.html"),
            30.0,
            f"{vm.name} fetches the page through the gateway",
            step=0.5,
        )
    log = ext.http_log()
    # t1vm1 has tenant 1's floating IP; t2vm2 leaves by tenant 2's source NAT.
    assert floating_ip(1) in log and snat_address(2) in log
    assert "10.0." not in log
