"""Benchmark peer 'kernel': Linux bridges and kernel VXLAN, the flannel / l2population shape.

No OVS at all in the hypervisor namespace. Per tenant (DOVE instance) a bridge ``brt<inst>``
and a VXLAN device ``vx<inst>`` (VNI = instance, UDP 4789, no learning); the VM's veth is a
port of the tenant bridge. Forwarding to remote VMs comes from static FDB entries, as an
l2population agent would program them: one per remote VM MAC, and one all-zeros entry per
remote hypervisor of the tenant for broadcast, unknown unicast and multicast (head-end
replication). This is the kernel's own figure for an overlay on this machine.
"""

from __future__ import annotations

from collections.abc import Iterable

from mininet_topos.hypervisor import Hypervisor

VXLAN_PORT = 4789
BUM_MAC = "00:00:00:00:00:00"
# NOTE (Linux 6.18, veth + bridge + vxlan, all in the kernel): unlike the userspace OVS modes,
# the VM veths do NOT need `ethtool -K tx off` here: the kernel's VXLAN transmit path resolves
# partial checksums and GSO itself, and TCP works with the offloads on. Measured on the 2-core
# VM, iperf3 5 s between two hypervisors: 5.2-5.9 Gbit/s with offloads on, 2.6 Gbit/s with
# tx off (RTT 0.08-0.10 ms either way), so they stay on; describe() reports them.
VM_TX_OFF = False


def bridge_name(instance: int) -> str:
    return f"brt{instance}"


def vxlan_name(instance: int) -> str:
    return f"vx{instance}"


def _run(hv: Hypervisor, *args: str) -> str:
    return hv.run(*args)  # no private OVS in kernel mode: the plain environment


def _quiet(hv: Hypervisor, intf: str) -> None:
    """No IPv6 (no link-local address, no ND/MLD of the hypervisor's own) on a tenant device."""
    _run(hv, "sysctl", "-qw", f"net.ipv6.conf.{intf}.disable_ipv6=1")


def ensure_tenant(hv: Hypervisor, instance: int) -> None:
    """Create the tenant's bridge and VXLAN device on ``hv`` once."""
    br, vx = bridge_name(instance), vxlan_name(instance)
    if hv.pexec(["ip", "link", "show", br])[2] == 0:
        return
    _run(hv, "ip", "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    _quiet(hv, br)
    _run(
        hv,
        "ip", "link", "add", vx, "type", "vxlan",
        "id", str(instance),
        "local", hv.underlay_ip,
        "dstport", str(VXLAN_PORT),
        "nolearning",
        "dev", hv.uplink,
    )  # fmt: skip
    _quiet(hv, vx)
    _run(hv, "ip", "link", "set", vx, "master", br, "up")
    _run(hv, "ip", "link", "set", br, "up")


def plug(hv: Hypervisor, port: str, instance: int, mtu: int) -> None:
    """Make the hypervisor side of a VM's veth a port of its tenant bridge."""
    ensure_tenant(hv, instance)
    _quiet(hv, port)
    _run(hv, "ip", "addr", "flush", "dev", port)
    _run(hv, "ip", "link", "set", port, "mtu", str(mtu))
    if VM_TX_OFF:
        hv.ethtool_tx_off(port)
    _run(hv, "ip", "link", "set", port, "master", bridge_name(instance), "up")


def program_fdb(hv: Hypervisor, instance: int, remote: Iterable[tuple[str, str]]) -> None:
    """Static forwarding on ``hv`` for one tenant; ``remote`` is (VM MAC, hypervisor IP).

    Every hypervisor IP named gets the all-zeros (BUM) entry too, once.
    """
    vx = vxlan_name(instance)
    bum: list[str] = []
    for mac, ip in remote:
        _run(hv, "bridge", "fdb", "append", mac, "dev", vx, "dst", ip)
        if ip not in bum:
            bum.append(ip)
    for ip in bum:
        _run(hv, "bridge", "fdb", "append", BUM_MAC, "dev", vx, "dst", ip)
