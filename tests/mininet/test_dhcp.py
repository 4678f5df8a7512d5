"""DHCP answered on the host (issue 12, item 3; docs/routing.md "DHCP on the host"), with
a real client: busybox ``udhcpc`` (Debian package ``udhcpc``) in a VM's namespace.

Layout as in test_dove.py: t1vm1@hv1, t1vm2@hv2 (instance 5001), t2vm1@hv2, t2vm2@hv3
(instance 5002).  The tests share one emulation and put back what they change.

The client runs with our own dispatcher script (``SCRIPT``): it configures the interface
as busybox's default.script does (address, netmask, MTU, default route) and records
what it was told, but writes no /etc/resolv.conf: a Mininet host shares the machine's
filesystem, and the default script would overwrite the machine's resolver.

Routed instances (the router option and default route) are the routing branch's; here
the instance is on no router: the prefix comes from the ``dove-ips`` mark.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.openflow.cookies import Purpose  # noqa: E402
from mininet_topos.agents import admin  # noqa: E402
from mininet_topos.dhcp_client import lease_of, udhcpc, write_script  # noqa: E402
from mininet_topos.dove_topo import VmRecord  # noqa: E402
from mininet_topos.hypervisor import wait_until  # noqa: E402
from tests.tools import ovs  # noqa: E402
from tests.tools.capture import Capture, settle  # noqa: E402
from tests.tools.nodes import received, run  # noqa: E402

DNS = "192.0.2.53"
DOVE_EXTRA = {"dhcp_dns": DNS}  # read by conftest's `dove` fixture
# DHCP on the underlay, bare or inside VXLAN: the inner UDP ports sit 50 bytes into the
# outer UDP datagram (UDP 8, VXLAN 8, Ethernet 14, IPv4 20).
DHCP_ON_UNDERLAY = (
    "udp port 67 or udp port 68 or (udp dst port 4789 and "
    "(udp[50:2] = 67 or udp[50:2] = 68 or udp[52:2] = 67 or udp[52:2] = 68))"
)


def vm_named(dove: Any, name: str) -> VmRecord:
    return next(vm for vm in dove.net.vms if vm.name == name)


def set_ips(vm: VmRecord, marks: str | None) -> None:
    """Write (or remove) the port's ``dove-ips`` mark, as an orchestrator would."""
    if marks is None:
        vm.hypervisor.vsctl("remove", "Interface", vm.port, "external_ids", "dove-ips")
    else:
        vm.hypervisor.vsctl("set", "Interface", vm.port, f'external_ids:dove-ips="{marks}"')


def dhcp_flows(vm: VmRecord) -> list[ovs.FlowLine]:
    return [f for f in ovs.flows(vm.hypervisor, Purpose.DHCP) if f"dl_src={vm.mac}" in f.text]


def remark(vm: VmRecord, marks: str | None) -> None:
    """Give the port new marks and wait until its agent took them: its DHCP flow goes
    (the marks removed), then comes back with the new ones (if they give an address)."""
    set_ips(vm, None)
    wait_until(lambda: not dhcp_flows(vm), 10.0, f"{vm.name}: DHCP flow removed")
    if marks is not None:
        set_ips(vm, marks)
        wait_until(lambda: dhcp_flows(vm), 10.0, f"{vm.name}: DHCP flow for {marks}")


def intf_state(vm: VmRecord) -> tuple[list[str], int, str]:
    """(IPv4 addresses with prefixes, MTU, the default route) of the VM's interface."""
    intf = vm.host.intf().name
    addrs = run(vm.host, "ip", "-4", "-o", "addr", "show", "dev", intf).split()
    cidrs = [addrs[i + 1] for i, word in enumerate(addrs) if word == "inet"]
    link = run(vm.host, "ip", "-o", "link", "show", "dev", intf).split()
    mtu = int(link[link.index("mtu") + 1])
    return cidrs, mtu, run(vm.host, "ip", "-4", "route", "show", "default").strip()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The dispatcher script and the file it records the lease in."""
    yield write_script(tmp_path)


def restore(vm: VmRecord) -> None:
    """The VM as the emulation made it: its marks, address and MTU."""
    remark(vm, vm.ip)
    intf = vm.host.intf().name
    run(vm.host, "ip", "-4", "addr", "flush", "dev", intf)
    run(vm.host, "ip", "addr", "add", vm.ip_cidr, "dev", intf)
    run(vm.host, "ip", "link", "set", "dev", intf, "mtu", "1450")


def test_a_vm_takes_its_address_from_its_own_host_and_nothing_crosses_the_underlay(
    dove: Any, client: tuple[Path, Path]
) -> None:
    script, lease_file = client
    vm, peer = vm_named(dove, "t1vm1"), vm_named(dove, "t1vm2")
    hv = vm.hypervisor
    intf = vm.host.intf().name
    # A prefix only the mark gives (the emulation's VMs are /24), an MTU only DHCP gives.
    remark(vm, f"{vm.ip}/20")
    run(vm.host, "ip", "-4", "addr", "flush", "dev", intf)
    run(vm.host, "ip", "link", "set", "dev", intf, "mtu", "1500")
    before = admin(hv, "counters")
    caps = [
        Capture(h, h.uplink, DHCP_ON_UNDERLAY, inbound_only=False, label=f"{h.name} uplink")
        for h in dove.net.hypervisors
    ]
    try:
        rc, out = udhcpc(vm, script, tries=5)
        assert rc == 0, f"udhcpc in {vm.name} got no lease:\n{out}"
        settle()
        leaked = [line for cap in caps for line in cap.packets()]
        assert leaked == [], "DHCP on the underlay:\n" + "\n".join(leaked)

        assert lease_file.exists(), f"the client configured nothing:\n{out}"
        lease = lease_of(lease_file)
        assert (lease["ip"], lease["subnet"], lease["mtu"]) == (vm.ip, "255.255.240.0", "1450")
        assert lease["dns"].split() == [DNS] and lease["router"] == ""
        assert lease["serverid"] == "169.254.169.254" and lease["lease"] == "86400"
        cidrs, mtu, default = intf_state(vm)
        assert cidrs == [f"{vm.ip}/20"] and mtu == 1450 and default == ""
        after = admin(hv, "counters")
        assert after.get("dhcp_acks", 0) - before.get("dhcp_acks", 0) >= 1
        assert after.get("dhcp_offers", 0) - before.get("dhcp_offers", 0) >= 1
        for other in dove.net.hypervisors:  # no other host answered
            if other is not hv:
                assert admin(other, "counters").get("dhcp_offers", 0) == 0, other.name

        out, err, _ = vm.host.pexec(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", peer.ip])
        assert received(out) >= 1, out + err
    finally:
        for cap in caps:
            cap.stop()
        restore(vm)


def test_a_port_without_an_address_gets_no_answer_its_dhcp_is_layer_2(
    dove: Any, client: tuple[Path, Path]
) -> None:
    script, lease_file = client
    vm = vm_named(dove, "t2vm1")  # instance 5002: its peer t2vm2 is on hv3
    hv = vm.hypervisor
    intf = vm.host.intf().name
    remark(vm, None)
    run(vm.host, "ip", "-4", "addr", "flush", "dev", intf)
    before = admin(hv, "counters")
    # The same filter sees the client's broadcasts flooded to hv3 inside VXLAN: they are
    # plain layer 2 (a tenant may run its own server), and the filter does see DHCP.
    flooded = Capture(dove.net.hypervisors[2], dove.net.hypervisors[2].uplink, DHCP_ON_UNDERLAY)
    try:
        rc, out = udhcpc(vm, script, tries=2)

        assert rc != 0, f"udhcpc in {vm.name} got a lease:\n{out}"
        assert not lease_file.exists()
        assert intf_state(vm)[0] == []
        after = admin(hv, "counters")
        for name in ("dhcp_offers", "dhcp_acks", "dhcp_naks"):
            assert after.get(name, 0) == before.get(name, 0), name
        flooded.wait_for(lambda line: "4789" in line, 5.0, "the DISCOVER flooded to hv3")
    finally:
        flooded.stop()
        restore(vm)
