"""DOVE emulation topology: hypervisors with private userspace OVS, tenant VMs, one underlay.

Every tenant gets the SAME address plan (VM i: MAC 02:00:00:00:00:<i+1>, IP 10.0.0.<i+1>/24)
so that isolation between overlapping tenants is exercised by default. VM i of tenant t runs on
hypervisor (i + t) % H, so each tenant spans several hypervisors.

    sudo python -m mininet_topos.dove_topo --hypervisors 3 --tenants 2 --vms-per-tenant 2

Besides 'dove' and its 'normal' baseline, the benchmark peers 'learning' (mininet_topos.peers),
'kernel' (mininet_topos.kernel_vxlan) and 'ovn' (mininet_topos.ovn) build the same VMs with the
same names and addresses on other forwarding planes.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo
from mininet.util import quietRun

from mininet_topos import kernel_vxlan, ovn, peers
from mininet_topos.hypervisor import BR_DOVE, MODES, Hypervisor, cleanup_stale, wait_until
from mininet_topos.underlay import UnderlayBridge

FIRST_INSTANCE = 5001
UNDERLAY_NET = "10.99.0"
UNDERLAY_SWITCH = "ul1"
# A host on the underlay that serves no instance: tests send forged tunnel and
# control traffic from it; operators can capture the underlay there.
PROBE = "probe"
PROBE_CIDR = f"{UNDERLAY_NET}.250/24"
VM_MTU = 1450  # VXLAN over a 1500-byte underlay
SINGLE_TENANT_MODES = ("normal", "learning")  # one fixed VXLAN mesh with one key


@dataclass(frozen=True)
class TopoSpec:
    """How big the emulation is and which forwarding it uses."""

    hypervisors: int = 3
    tenants: int = 2
    vms_per_tenant: int = 2
    mode: str = "dove"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if min(self.hypervisors, self.tenants, self.vms_per_tenant) < 1:
            raise ValueError("hypervisors, tenants and vms_per_tenant must be >= 1")
        if self.vms_per_tenant > 250:
            raise ValueError("at most 250 VMs per tenant (one /24 per tenant)")
        if self.mode in SINGLE_TENANT_MODES and self.tenants != 1:
            raise ValueError(f"mode={self.mode!r} (one fixed VXLAN mesh) supports one tenant only")


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


def vm_mtu(mode: str) -> int:
    """The VMs' MTU: 1500 minus the encapsulation overhead of the mode's tunnels."""
    return ovn.VM_MTU if mode == "ovn" else VM_MTU


def hv_name(index: int) -> str:
    return f"hv{index}"


def plan_vms(spec: TopoSpec) -> list[VmPlan]:
    """The address plan: identical per tenant, spread round-robin over the hypervisors."""
    plans = []
    for t in range(spec.tenants):
        for i in range(spec.vms_per_tenant):
            name = f"t{t + 1}vm{i + 1}"
            plans.append(
                VmPlan(
                    name=name,
                    tenant=t + 1,
                    index=i + 1,
                    hypervisor=hv_name((i + t) % spec.hypervisors + 1),
                    instance=FIRST_INSTANCE + t,
                    mac=f"02:00:00:00:00:{i + 1:02x}",
                    ip_cidr=f"10.0.0.{i + 1}/24",
                    port=f"{name}-p",
                )
            )
    return plans


class DoveTopo(Topo):
    """Hypervisors on one underlay bridge, VMs linked to their hypervisor.

    Underlay links are added first so that each hypervisor's uplink is ``<hv>-eth0``.
    """

    def build(self, spec: TopoSpec = TopoSpec()) -> None:  # noqa: B008 - frozen dataclass
        underlay = self.addSwitch(UNDERLAY_SWITCH, cls=UnderlayBridge)
        for n in range(1, spec.hypervisors + 1):
            hv = self.addHost(
                hv_name(n),
                cls=Hypervisor,
                index=n,
                mode=spec.mode,
                underlay_cidr=f"{UNDERLAY_NET}.{n}/24",
                ip=None,
            )
            self.addLink(hv, underlay, intfName1=f"{hv}-eth0")
        # In OVN mode the probe also hosts OVN's central part (NB, SB, northd).
        self.addHost(PROBE, cls=ovn.OvnCentral if spec.mode == "ovn" else Host, ip=None)
        self.addLink(PROBE, underlay, intfName1=f"{PROBE}-eth0")
        for vm in plan_vms(spec):
            self.addHost(vm.name, ip=None)
            self.addLink(vm.name, vm.hypervisor, intfName1=f"{vm.name}-eth0", intfName2=vm.port)


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


def attach_vm(hv: Hypervisor, vm: Host, instance: int, mac: str, ip_cidr: str) -> str:
    """Plug an already-linked VM into br-dove and mark its port with its DOVE identity.

    The marks go on the OVS Interface row (design.md section 2), in the same transaction as
    the add-port, so the agent never sees an unmarked VM port. Returns the port name.
    """
    port = prepare_vm(hv, vm, mac, ip_cidr)
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


@dataclass
class DoveNet(RunningNet):
    """A running emulation: the Mininet net, its hypervisors and VMs."""

    net: Mininet
    spec: TopoSpec
    hypervisors: list[Hypervisor]
    vms: list[VmRecord] = field(default_factory=list)

    @property
    def probe(self) -> Host:
        """The underlay host that serves no VM (in mode 'ovn' an ovn.OvnCentral)."""
        return self.net.get(PROBE)

    @property
    def nodes(self) -> list[Hypervisor]:
        """Every node that runs OVS (and, in mode 'dove', an agent)."""
        return list(self.hypervisors)

    def probes(self) -> list[Host]:
        return [self.probe]

    def hv(self, name: str) -> Hypervisor:
        return next(h for h in self.hypervisors if h.name == name)

    def vm(self, name: str) -> VmRecord:
        return next(v for v in self.vms if v.name == name)

    def tenant_vms(self, tenant: int) -> list[VmRecord]:
        return [v for v in self.vms if v.tenant == tenant]

    def __iter__(self) -> Iterator[VmRecord]:
        return iter(self.vms)


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


def _attach(mode: str, hv: Hypervisor, host: Host, plan: VmPlan) -> str:
    """Plug one planned VM into its hypervisor the way ``mode`` forwards; return the port."""
    if mode == "kernel":
        port = prepare_vm(hv, host, plan.mac, plan.ip_cidr, tx_off=kernel_vxlan.VM_TX_OFF)
        kernel_vxlan.plug(hv, port, plan.instance, VM_MTU)
        return port
    if mode == "ovn":
        port = prepare_vm(hv, host, plan.mac, plan.ip_cidr, mtu=ovn.VM_MTU)
        ovn.plug(hv, port, plan.name)
        return port
    return attach_vm(hv, host, plan.instance, plan.mac, plan.ip_cidr)


def _program_kernel_fdb(dnet: DoveNet) -> None:
    """Kernel mode: each hypervisor learns, statically, where its tenants' remote VMs are."""
    for hv in dnet.hypervisors:
        for instance in sorted({v.instance for v in dnet.vms if v.hypervisor is hv}):
            remote = [
                (v.mac, v.hypervisor.underlay_ip)
                for v in dnet.vms
                if v.instance == instance and v.hypervisor is not hv
            ]
            kernel_vxlan.program_fdb(hv, instance, remote)


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


def build_net(
    hypervisors: int = 3,
    tenants: int = 2,
    vms_per_tenant: int = 2,
    mode: str = "dove",
    agent_cmd: list[str] | None = None,
    agent_config: Any = None,
) -> DoveNet:
    """Build and start the emulation; tear it down again if any step fails.

    ``mode`` is one of MODES: 'dove' (agents), 'normal' (NORMAL + VXLAN mesh), or a benchmark
    peer: 'learning' (MAC-learning controller), 'kernel' (Linux bridge + kernel VXLAN), 'ovn'.
    Returns once the peer forwards (controllers connected, OVN ports up and synced).
    ``agent_cmd``/``agent_config`` (dove mode only) start an agent on every hypervisor:
    ``agent_config`` is the dove.ini text, or a callable ``(hv) -> text``.
    """
    spec = TopoSpec(hypervisors, tenants, vms_per_tenant, mode)
    if agent_cmd and mode != "dove":
        raise ValueError("agents run in mode='dove' only")
    net = new_mininet(DoveTopo(spec=spec))
    try:
        net.build()
        net.start()
        dnet = DoveNet(net, spec, [net.get(hv_name(n)) for n in range(1, hypervisors + 1)])
        probe = net.get(PROBE)
        probe.cmd(f"ip addr add {PROBE_CIDR} dev {PROBE}-eth0; ip link set {PROBE}-eth0 up")
        probe.cmd(f"ethtool -K {PROBE}-eth0 tx off")
        if mode in SINGLE_TENANT_MODES:
            for hv in dnet.hypervisors:
                mesh = {p.name: p.underlay_ip for p in dnet.hypervisors if p is not hv}
                hv.add_mesh_tunnels(mesh, key=FIRST_INSTANCE)
        plans = plan_vms(spec)
        if mode == "ovn":
            assert isinstance(probe, ovn.OvnCentral)
            probe.start_central()
            sb_remote = f"tcp:{PROBE_CIDR.split('/')[0]}:{ovn.SB_PORT}"
            for hv in dnet.hypervisors:
                ovn.start_controller(hv, sb_remote)
            ovn.add_switches(probe, [(p.instance, p.name, p.mac, p.ip) for p in plans])
        for plan in plans:
            hv, host = net.get(plan.hypervisor), net.get(plan.name)
            port = _attach(mode, hv, host, plan)
            dnet.vms.append(
                VmRecord(
                    plan.name,
                    host,
                    hv,
                    plan.tenant,
                    plan.instance,
                    plan.mac,
                    plan.ip,
                    plan.ip_cidr,
                    port,
                )
            )
        if mode == "kernel":
            _program_kernel_fdb(dnet)
        warm_underlay(dnet.hypervisors)
        if mode == "learning":
            for hv in dnet.hypervisors:
                peers.start_learning_switch(hv)
            peers.wait_learning_connected(dnet.hypervisors)
        if mode == "ovn":
            ovn.wait_ready(probe, dnet.hypervisors, [p.name for p in plans])
        if agent_cmd:
            for hv in dnet.hypervisors:
                text = agent_config(hv) if callable(agent_config) else (agent_config or "")
                hv.start_agent(text, agent_cmd)
        return dnet
    except BaseException:
        net.stop()
        raise


def main(argv: list[str] | None = None) -> None:
    """Build the emulation, open the Mininet CLI, tear down on exit."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hypervisors", type=int, default=3)
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--vms-per-tenant", type=int, default=2)
    p.add_argument("--mode", choices=MODES, default="dove")
    p.add_argument("--log-level", default="info")
    p.add_argument("--clean", action="store_true", help="only clean up after a crashed run")
    args = p.parse_args(argv)
    setLogLevel(args.log_level)
    if args.clean:
        for d in cleanup_stale() + ovn.cleanup_stale():
            print(f"removed {d}")
        quietRun(f"ip link del {UNDERLAY_SWITCH}")
        return
    if args.mode == "dove":
        from mininet_topos.agents import build_dove_net  # agents builds on this module

        dnet, _ = build_dove_net(args.hypervisors, args.tenants, args.vms_per_tenant)
    else:
        dnet = build_net(args.hypervisors, args.tenants, args.vms_per_tenant, args.mode)
    print(
        "hypervisors: "
        + ", ".join(f"{hv.name} ({hv.underlay_ip}, rundir {hv.rundir})" for hv in dnet.hypervisors)
    )
    try:
        from mininet_topos.migration import cli_class  # builds on this module

        cli_class(dnet)(dnet.net)
    finally:
        dnet.stop()


if __name__ == "__main__":
    main()
