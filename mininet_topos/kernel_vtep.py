"""An external VTEP for the emulations: a Linux kernel VXLAN device on the underlay.

A host of its own (its own namespace) on the underlay bridge runs no agent and no OVS:
one VXLAN device (VNI = the instance, UDP 4789, the kernel's own MAC learning on) with
the tenant address on it, as a bare-metal server would have.  Static all-zeros FDB
entries send its broadcast, unknown unicast and multicast to each hypervisor of the
instance (head-end replication, as `mininet_topos.kernel_vxlan` programs them); the
unicast way to a VM it learns from the frames it receives.  The agents declare it with
`external_vteps` (`settings`), docs/interop.md section 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mininet.node import Host
from mininet.util import quietRun

from mininet_topos.emulation import UNDERLAY_NET, VM_MTU, address_probe
from mininet_topos.kernel_vxlan import BUM_MAC, VXLAN_PORT


@dataclass(frozen=True)
class KernelVtep:
    """One kernel VTEP: its name, underlay address (``<UNDERLAY_NET>.index``), the
    instance its VXLAN device carries, and its own address and MAC in that instance."""

    name: str = "vtep1"
    index: int = 60
    instance: int = 5001
    ip_cidr: str = "10.0.0.200/24"
    mac: str = "02:00:00:00:ee:01"

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY_NET}.{self.index}"

    @property
    def ip(self) -> str:
        return self.ip_cidr.split("/")[0]

    @property
    def device(self) -> str:
        return f"vx{self.instance}"

    @property
    def uplink(self) -> str:
        return f"{self.name}-eth0"


def settings(vteps: Sequence[KernelVtep]) -> dict[str, Any]:
    """The agents' `external_vteps` for ``vteps`` (nothing when there are none)."""
    if not vteps:
        return {}
    return {"external_vteps": ", ".join(f"{v.name}={v.underlay_ip}:{v.instance}" for v in vteps)}


def _run(host: Host, *cmd: str) -> str:
    out, err, rc = host.pexec(list(cmd))
    if rc != 0:
        raise RuntimeError(f"{host.name}: {' '.join(cmd)}: {err or out}")
    return str(out)


def add_kernel_vtep(
    net: Any, vtep: KernelVtep, hypervisor_ips: Iterable[str], underlay: str = "ul1"
) -> Host:
    """Add ``vtep`` to a running Mininet ``net`` on its underlay bridge: a host with an
    uplink, a VXLAN device for the instance and the BUM entries to each of
    ``hypervisor_ips`` (those serving the instance)."""
    host = net.addHost(vtep.name, ip=None)
    link = net.addLink(host, net.get(underlay), intfName1=vtep.uplink)
    root_end = link.intf2.name
    # As UnderlayBridge does for its ports: no address in the root namespace.
    for cmd in (
        f"sysctl -qw net.ipv6.conf.{root_end}.disable_ipv6=1",
        f"ip addr flush dev {root_end}",
        f"ethtool -K {root_end} tx off",
        f"ip link set {root_end} master {underlay} up",
    ):
        quietRun(cmd)
    address_probe(host, f"{vtep.underlay_ip}/24")
    vx = vtep.device
    _run(
        host,
        "ip", "link", "add", vx, "type", "vxlan",
        "id", str(vtep.instance),
        "local", vtep.underlay_ip,
        "dstport", str(VXLAN_PORT),
        "dev", vtep.uplink,
    )  # fmt: skip
    _run(host, "sysctl", "-qw", f"net.ipv6.conf.{vx}.disable_ipv6=1")
    _run(host, "ip", "link", "set", vx, "address", vtep.mac, "mtu", str(VM_MTU))
    _run(host, "ip", "addr", "add", vtep.ip_cidr, "dev", vx)
    _run(host, "ip", "link", "set", vx, "up")
    for ip in hypervisor_ips:
        _run(host, "bridge", "fdb", "append", BUM_MAC, "dev", vx, "dst", ip)
    return host
