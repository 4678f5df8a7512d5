"""A kernel VXLAN VTEP joins tenant A while the DOVE hosts speak Geneve among themselves
(issue 14 point 4: "the same with Geneve between DOVE hosts").

One emulation for the module: 2 hypervisors with ``tunnel_type = geneve`` that also take
VXLAN (``accept_tunnel_types = vxlan, geneve``: the VTEP's), tenants A (5001) and B
(5002) with the same addresses, a VM of each on each hypervisor, and the kernel VTEP of
`mininet_topos.kernel_vtep` declared as an external VTEP of A.  Between hosts every data
packet is Geneve with the DOVE option; to and from the VTEP, VXLAN without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.mininet.test_external_vtep import VTEP, A, migrate_under_vtep_pings, ping, vtep
from tests.mininet.test_geneve import underlay_capture
from tests.tools.capture import Capture, settle
from tests.tools.transfer import transfer


@pytest.fixture(scope="module")
def dnet() -> Iterator[Any]:
    from mininet_topos.agents import build_dove_net

    net, _ = build_dove_net(
        hypervisors=2,
        tenants=2,
        vms_per_tenant=2,
        extra={"accept_tunnel_types": "vxlan,geneve"},
        tunnel_type="geneve",
        kernel_vteps=[VTEP],
    )
    try:
        yield net
    finally:
        net.stop()


def test_hosts_speak_geneve_to_each_other_and_vxlan_to_the_vtep(dnet: Any) -> None:
    a1, a2 = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    assert a1.hypervisor is not a2.hypervisor
    with underlay_capture(a1.hypervisor, 5) as seen:
        settle()  # tshark is up
        assert ping(a1.host, a2.ip)
        assert ping(vtep(dnet), a1.ip)
    geneve = [row for row in seen if row[0] == "6081"]
    vxlan = [row for row in seen if row[0] == "4789"]
    assert geneve and vxlan, seen
    for _, _, option_class, _ in geneve:
        assert option_class.lower() in ("0xff0d", str(0xFF0D)), seen
    # A's pings (B's VMs may talk meanwhile: their own VNI, never the VTEP's tunnel).
    assert A in {int(vni, 0) for _, vni, _, _ in geneve}, seen
    for _, _, option_class, vxlan_vni in vxlan:
        assert vxlan_vni == str(A) and not option_class, seen


def test_the_vtep_pings_and_talks_tcp_to_a_on_both_hypervisors(dnet: Any) -> None:
    host = vtep(dnet)
    vms = dnet.tenant_vms(1)
    assert sorted(vm.hypervisor.name for vm in vms) == ["hv1", "hv2"]
    for vm in vms:
        assert ping(host, vm.ip), f"{VTEP.name} -> {vm.name}"
        assert ping(vm.host, VTEP.ip), f"{vm.name} -> {VTEP.name}"
    sender = SimpleNamespace(host=host, ip=VTEP.ip, name=VTEP.name)
    with transfer(sender, vms[1], port=7811, total=2_000_000):
        pass
    with transfer(vms[0], sender, port=7812, total=2_000_000):
        pass


def test_a_broadcast_of_a_reaches_it_once_and_b_never(dnet: Any) -> None:
    host = vtep(dnet)
    a1, b1 = dnet.vm("t1vm1"), dnet.vm("t2vm1")
    with Capture(host, VTEP.device, "icmp and ether dst ff:ff:ff:ff:ff:ff") as cap:
        b1.host.cmd("ping -b -c1 -W1 10.0.0.255")
        a1.host.cmd("ping -b -c1 -W1 10.0.0.255")
        cap.wait_for(lambda line: a1.mac in line, 5.0, "A's broadcast")
        settle()
    seen = cap.packets()
    assert len(seen) == 1 and a1.mac in seen[0], seen  # once, and nothing of B's


def test_b_is_neither_reached_nor_heard(dnet: Any) -> None:
    host = vtep(dnet)
    caps = [
        Capture(vm.host, vm.host.intf().name, f"ether src {VTEP.mac}") for vm in dnet.tenant_vms(2)
    ]
    try:
        for n in (1, 2):  # A's and B's addresses: only A's VMs answer
            assert ping(host, f"10.0.0.{n}")
        host.cmd("ping -b -c2 -i0.2 -W1 10.0.0.255")
        settle()
    finally:
        for cap in caps:
            cap.stop()
    assert [cap.packets() for cap in caps] == [[], []]


def test_a_vm_migrates_while_the_vtep_pings_it(dnet: Any) -> None:
    mover = dnet.vm("t1vm1")
    to = dnet.hv("hv2") if mover.hypervisor.name != "hv2" else dnet.hv("hv1")
    migrate_under_vtep_pings(dnet, mover, to)  # as with VXLAN hosts
    a_other = next(vm for vm in dnet.tenant_vms(1) if vm is not mover)
    assert ping(mover.host, a_other.ip)  # and Geneve between the hosts still carries A
