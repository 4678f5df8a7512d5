"""What every emulation is made of, whatever its layout (dove_topo: one site; sites: several).

Planned and running VMs, plugging a VM into its hypervisor, the Mininet constructor, an
underlay probe's address, warming underlay legs, and the teardown a running net offers.
Builders (dove_topo, sites) and operations on a running net (migration, traffic) import
from here; this module imports only the nodes (hypervisor).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Self, TypeVar

from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo

from mininet_topos.hypervisor import BR_DOVE, Hypervisor, wait_until

FIRST_INSTANCE = 5001
UNDERLAY_NET = "10.99.0"
VM_MTU = 1450  # VXLAN over a 1500-byte underlay


@dataclass(frozen=True)
class VmPlan:
    """One VM as planned, before Mininet exists."""

    name: str
    tenant: int  # 1-based
    index: int  # 1-based within the tenant
    hypervisor: str
    instance: int
    mac: str
    ip_cidr: str
    port: str  # hypervisor-side veth name, unique machine-wide so it can migrate

    @property
    def ip(self) -> str:
        return self.ip_cidr.split("/")[0]


@dataclass
class VmRecord:
    """A running VM: its Mininet host, the hypervisor it is plugged into, its DOVE identity."""

    name: str
    host: Host
    hypervisor: Hypervisor
    tenant: int
    instance: int
    mac: str
    ip: str
    ip_cidr: str
    port: str  # hypervisor-side interface (an OVS Interface on br-dove)

    @classmethod
    def plugged(cls, plan: VmPlan, host: Host, hv: Hypervisor, port: str, **more: Any) -> Self:
        """The record of ``plan``'s VM, plugged into ``hv`` at ``port`` (``more``: a
        subclass's own fields)."""
        return cls(
            plan.name,
            host,
            hv,
            plan.tenant,
            plan.instance,
            plan.mac,
            plan.ip,
            plan.ip_cidr,
            port,
            **more,
        )


def instance_peers(hv: Hypervisor, vms: Iterable[VmRecord]) -> dict[int, set[str]]:
    """For each instance with a VM on ``hv``: the underlay addresses of the other
    hypervisors that have a VM of it, among ``vms`` (what ``hv``'s agent should list as
    the instance's members)."""
    vms = list(vms)
    return {
        vm.instance: {
            v.hypervisor.underlay_ip
            for v in vms
            if v.instance == vm.instance and v.hypervisor is not hv
        }
        for vm in vms
        if vm.hypervisor is hv
    }


def prepare_vm(
    hv: Hypervisor, vm: Host, mac: str, ip_cidr: str, mtu: int = VM_MTU, tx_off: bool = True
) -> str:
    """Give an already-linked VM its MAC, address and MTU; return the hypervisor-side veth."""
    links = vm.connectionsTo(hv)
    if not links:
        raise ValueError(f"{vm.name} has no link to {hv.name}")
    vm_intf, hv_intf = links[0]
    vm_intf.setMAC(mac)
    vm_intf.setIP(ip_cidr)
    vm.cmd(f"ip link set {vm_intf.name} mtu {mtu}")
    if tx_off:
        out, err, rc = vm.pexec(["ethtool", "-K", vm_intf.name, "tx", "off"])
        if rc != 0:
            raise RuntimeError(f"{vm.name}: ethtool -K {vm_intf.name} tx off: {err or out}")
    return str(hv_intf.name)


def attach_vm(
    hv: Hypervisor, vm: Host, instance: int, mac: str, ip_cidr: str, mtu: int = VM_MTU
) -> str:
    """Plug an already-linked VM into br-dove and mark its port with its DOVE identity.

    The marks go on the OVS Interface row (design.md section 2), in the same transaction as
    the add-port, so the agent never sees an unmarked VM port. Returns the port name.
    """
    port = prepare_vm(hv, vm, mac, ip_cidr, mtu=mtu)
    hv.make_port_only(port)
    ip = str(ipaddress.ip_interface(ip_cidr).ip)
    hv.vsctl(
        "add-port",
        BR_DOVE,
        port,
        "--",
        "set",
        "Interface",
        port,
        f'external_ids:dove-instance="{instance}"',
        f'external_ids:attached-mac="{mac}"',
        f'external_ids:dove-ips="{ip}"',
    )
    return port


def detach_vm(hv: Hypervisor, port: str) -> None:
    """Unplug a VM port from br-dove (the veth itself stays)."""
    hv.vsctl("--if-exists", "del-port", BR_DOVE, port)


def address_probe(host: Host, cidr: str, mtu: int | None = None) -> None:
    """A probe's one interface: address, MTU, tx off (it may send to userspace OVS), up."""
    intf = f"{host.name}-eth0"
    cmds = [["ip", "addr", "add", cidr, "dev", intf], ["ethtool", "-K", intf, "tx", "off"]]
    if mtu is not None:
        cmds.append(["ip", "link", "set", intf, "mtu", str(mtu)])
    cmds.append(["ip", "link", "set", intf, "up"])
    for cmd in cmds:
        out, err, rc = host.pexec(cmd)
        if rc != 0:
            raise RuntimeError(f"{host.name}: {' '.join(cmd)}: {err or out}")


def new_mininet(topo: Topo) -> Mininet:
    """A Mininet for our topologies: no controller (agents or peers come later), our own
    MACs and addresses, nothing waits for switches to connect."""
    return Mininet(
        topo=topo,
        controller=None,
        build=False,
        autoSetMacs=False,
        autoStaticArp=False,
        waitConnected=False,
    )


class RunningNet:
    """What every running emulation offers: tearing it all down (VMs, nodes with their
    agent, OVS and rundir, the bridges), also as a context manager."""

    net: Mininet

    def stop(self) -> None:
        self.net.stop()

    def __enter__(self: _Net) -> _Net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_Net = TypeVar("_Net", bound=RunningNet)


def warm_underlay(hypervisors: list[Hypervisor], timeout: float = 10.0) -> None:
    """Ping every peer over the underlay until it answers (see warm_legs)."""
    warm_legs([(hv, hv.underlay_dev, hv.underlay_ip) for hv in hypervisors], timeout)


def warm_legs(legs: list[tuple[Hypervisor, str, str]], timeout: float = 10.0) -> None:
    """Ping, between every two of ``legs`` (node, device owning the address, address), until
    the other answers.

    Proves the underlay works and fills both the kernel ARP table and OVS's tunnel neighbour
    cache (tnl/neigh), so the first tunnelled packet is not lost to underlay ARP resolution.
    All legs must share one network; a node with several (a VAN proxy) is warmed once per
    network.

    NOTE (OVS 3.1.0): pings alone did not reliably fill tnl/neigh: the side that answers the
    ARP request learns its peer from that request in the kernel, never ARPs itself, and its
    OVS was then left without the entry about 1 time in 2 (seen with OVN, where the first
    tunnelled packet is the echo reply, which was dropped). The entries are set explicitly.
    """
    for hv, dev, _ip in legs:
        for peer, peer_dev, peer_ip in legs:
            if peer is hv:
                continue
            wait_until(
                partial(_pings, hv, dev, peer_ip),
                timeout,
                f"underlay {hv.name} -> {peer.name} ({peer_ip})",
                step=0.05,
            )
            if hv.rundir is not None and peer.rundir is not None:  # both run userspace OVS
                mac = peer.run("cat", f"/sys/class/net/{peer_dev}/address").strip()
                hv.appctl("tnl/neigh/set", dev, peer_ip, mac)


def _pings(hv: Hypervisor, dev: str, ip: str) -> bool:
    """One ping from ``dev`` to ``ip`` is answered within a second."""
    return bool(hv.pexec(["ping", "-c1", "-W1", "-I", dev, ip])[2] == 0)
