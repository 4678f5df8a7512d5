"""Routing between a tenant's subnets in directory mode (issue 12 item 1, docs/routing.md).

One emulation for the module: 3 hypervisors with agents in ``discovery = directory``, 2
tenants with identical plans, 2 subnets each and a router per tenant (as in
test_routing.py).  Tenant 1's two instances resolve by ``push``, tenant 2's by
``lookup``, set in the directory before any packet.  A host serves one subnet of a
pair and routes into the other: it monitors that one's hosts (and endpoints) too.

Tenant 1: t1vm1 10.0.0.1 and t1vm4 10.0.1.4 on hv1, t1vm2 10.0.1.2 on hv2, t1vm3
10.0.0.3 on hv3; tenant 2 has the same addresses one hypervisor further (t2vm1 on
hv2, t2vm2 on hv3, t2vm3 on hv1, t2vm4 on hv2).  The first-packet tests run first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from mininet_topos.agents import admin
from mininet_topos.dove_topo import DoveNet, VmRecord, set_resolution
from mininet_topos.hypervisor import wait_until
from tests.tools.capture import Capture, settle

MODES = {1: "push", 2: "lookup"}  # tenant -> resolution of both its subnets


@pytest.fixture(scope="module")
def dnet() -> Iterator[DoveNet]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.agents import build_dove_net

    net, _ = build_dove_net(
        hypervisors=3, tenants=2, vms_per_tenant=4, subnets=2, routers=True, directory=True
    )
    try:
        for tenant, mode in MODES.items():
            for instance in sorted({vm.instance for vm in net.tenant_vms(tenant)}):
                set_resolution(net, instance, mode)
        # Push: every host of a tenant-1 VM has every other tenant-1 VM, in its own
        # subnet and in the one it routes into, before the first packet.
        wait_until(lambda: all_pushed(net, 1), 30.0, "tenant 1's endpoints pushed")
        yield net
    finally:
        net.stop()


def learned(hv: Any, instance: int) -> dict[str, str]:
    """What ``hv``'s agent has learned (or been pushed) of ``instance``: MAC -> host."""
    rows = admin(hv)["instances"].get(str(instance), {}).get("learned", [])
    return {r["mac"]: r["host"] for r in rows}


def all_pushed(dnet: DoveNet, tenant: int) -> bool:
    vms = dnet.tenant_vms(tenant)
    for hv in {vm.hypervisor for vm in vms}:
        for other in [v for v in vms if v.hypervisor is not hv]:
            if learned(hv, other.instance).get(other.mac) != other.hypervisor.underlay_ip:
                return False
    return True


def counter(hv: Any, name: str) -> int:
    return int(admin(hv, "counters").get(name, 0))


def ping(src: VmRecord, dst_ip: str, count: int = 1) -> int:
    """Echo replies received."""
    cmd = ["ping", "-n", "-c", str(count), "-W", "2", "-i", "0.2", dst_ip]
    out, _, _ = src.host.pexec(cmd)
    for line in out.splitlines():
        if "packets transmitted" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"no ping summary: {out}")


def test_the_first_routed_packet_is_pushed_its_way_no_learn(dnet: DoveNet) -> None:
    src, dst = dnet.vm("t1vm3"), dnet.vm("t1vm2")  # hv3 (subnet 0) -> hv2 (subnet 1)
    assert src.hypervisor is not dst.hypervisor and src.instance != dst.instance
    # hv3 serves only subnet 0 of tenant 1, and has subnet 1's VM from the directory.
    assert learned(src.hypervisor, dst.instance)[dst.mac] == dst.hypervisor.underlay_ip
    hvs = (src.hypervisor, dst.hypervisor)
    before = {hv.name: counter(hv, "learn_requests_sent") for hv in hvs}

    assert ping(src, dst.ip, count=1) == 1

    assert {hv.name: counter(hv, "learn_requests_sent") for hv in hvs} == before


def test_the_first_routed_packet_is_looked_up_in_the_directory(dnet: DoveNet) -> None:
    src, dst = dnet.vm("t2vm3"), dnet.vm("t2vm2")  # hv1 (subnet 0) -> hv3 (subnet 1)
    assert src.hypervisor is not dst.hypervisor and src.instance != dst.instance
    here = src.hypervisor
    assert dst.mac not in learned(here, dst.instance)  # never contacted, nothing ahead
    before = counter(here, "resolved_from_directory"), counter(here, "learn_requests_sent")

    assert ping(src, dst.ip, count=1) == 1

    assert counter(here, "resolved_from_directory") > before[0]
    assert counter(here, "learn_requests_sent") == before[1]
    assert learned(here, dst.instance).get(dst.mac) == dst.hypervisor.underlay_ip


def test_tenants_with_identical_plans_stay_apart(dnet: DoveNet) -> None:
    """Each tenant pings across its subnets; the other tenant's VMs with the same
    addresses see nothing."""
    for tenant, other in ((1, 2), (2, 1)):
        captures = [Capture(v.host, v.host.intf().name, "icmp") for v in dnet.tenant_vms(other)]
        try:
            assert ping(dnet.vm(f"t{tenant}vm1"), "10.0.1.2", count=3) == 3
            assert ping(dnet.vm(f"t{tenant}vm3"), "10.0.1.4", count=3) == 3
            settle()
        finally:
            for c in captures:
                c.stop()
        assert [c.packets() for c in captures] == [[] for _ in captures], f"tenant {other}"


@pytest.mark.parametrize("tenant", sorted(MODES))
def test_a_moved_vm_is_still_reached_from_the_other_subnet(dnet: DoveNet, tenant: int) -> None:
    from mininet_topos.migration import migrate

    mover = dnet.vm(f"t{tenant}vm2")  # subnet 1
    sender = dnet.vm(f"t{tenant}vm1")  # subnet 0
    home = mover.hypervisor
    away = next(h for h in dnet.hypervisors if h not in (home, sender.hypervisor))
    assert ping(sender, mover.ip, count=1) == 1
    try:
        migrate(dnet, mover, away)
        wait_until(
            lambda: learned(sender.hypervisor, mover.instance).get(mover.mac) == away.underlay_ip,
            15.0,
            f"{sender.hypervisor.name} to follow {mover.name} to {away.name}",
        )
        assert ping(sender, mover.ip, count=3) == 3
    finally:
        if mover.hypervisor is not home:
            migrate(dnet, mover, home)
