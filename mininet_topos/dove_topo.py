"""DOVE emulation topology: hypervisors with private userspace OVS, tenant VMs, one underlay.

Every tenant gets the SAME address plan (VM i: MAC 02:00:00:00:00:<i+1>, IP 10.0.0.<i+1>/24)
so that isolation between overlapping tenants is exercised by default. VM i of tenant t runs on
hypervisor (i + t) % H, so each tenant spans several hypervisors.

    sudo python -m mininet_topos.dove_topo --hypervisors 3 --tenants 2 --vms-per-tenant 2

Besides 'dove' and its 'normal' baseline, the benchmark peers 'learning'
(mininet_topos.learning), 'kernel' (mininet_topos.kernel_vxlan) and 'ovn' (mininet_topos.ovn)
build the same VMs with the same names and addresses on other forwarding planes.
``build_net`` builds any mode; ``build_dove_net`` adds an agent on every hypervisor and
returns once they are ready. ``--directory`` (``directory=True``) adds the directory of
issue 11 beside the hypervisors: a 3-member OVSDB cluster (mininet_topos.directory), and
the agents find their peers there instead of in a ``peers`` list.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo
from mininet.util import quietRun

from dove_ryu.ctl.dircluster import agent_remotes, cluster_remotes
from dove_ryu.openflow.tunnels import mtu as tunnel_mtu
from mininet_topos import kernel_vtep, kernel_vxlan, learning, ovn
from mininet_topos.directory import MEMBERS as DIRECTORY_MEMBERS
from mininet_topos.directory import ClusterPki, DirectoryCluster, DirectoryMember, member_name
from mininet_topos.directory import cleanup_stale as cleanup_directory
from mininet_topos.dove_agent import admin, agent_cmd, agent_config, agent_ready, has_local
from mininet_topos.emulation import (
    FIRST_INSTANCE,
    UNDERLAY_NET,
    VM_MTU,
    RunningNet,
    VmPlan,
    VmRecord,
    address_probe,
    attach_vm,
    detach_vm,  # noqa: F401 - re-exported: its import path before emulation.py
    instance_peers,
    new_mininet,
    prepare_vm,
    warm_legs,  # noqa: F401 - re-exported: its import path before emulation.py
    warm_underlay,
)
from mininet_topos.hypervisor import MODES, Hypervisor, cleanup_stale, wait_until
from mininet_topos.kernel_vtep import KernelVtep
from mininet_topos.migration import cli_class
from mininet_topos.underlay import UnderlayBridge

UNDERLAY_SWITCH = "ul1"
# A host on the underlay that serves no instance: tests send forged tunnel and
# control traffic from it; operators can capture the underlay there.
PROBE = "probe"
PROBE_CIDR = f"{UNDERLAY_NET}.250/24"
DIRECTORY_FIRST = 241  # directory member n gets <UNDERLAY_NET>.(240 + n)
SINGLE_TENANT_MODES = ("normal", "learning")  # one fixed VXLAN mesh with one key


@dataclass(frozen=True)
class TopoSpec:
    """How big the emulation is and which forwarding it uses."""

    hypervisors: int = 3
    tenants: int = 2
    vms_per_tenant: int = 2
    mode: str = "dove"
    directory: bool = False  # a 3-member directory cluster on the underlay
    subnets: int = 1  # per tenant: VM i is in subnet (i-1) % subnets (docs/routing.md)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if min(self.hypervisors, self.tenants, self.vms_per_tenant) < 1:
            raise ValueError("hypervisors, tenants and vms_per_tenant must be >= 1")
        if self.subnets not in (1, 2):
            raise ValueError("subnets must be 1 or 2")
        if self.vms_per_tenant > 250:
            raise ValueError("at most 250 VMs per tenant (one /24 per tenant)")
        if self.mode in SINGLE_TENANT_MODES and self.tenants != 1:
            raise ValueError(f"mode={self.mode!r} (one fixed VXLAN mesh) supports one tenant only")


def vm_mtu(mode: str) -> int:
    """The VMs' MTU: 1500 minus the encapsulation overhead of the mode's tunnels."""
    return ovn.VM_MTU if mode == "ovn" else VM_MTU


def hv_name(index: int) -> str:
    return f"hv{index}"


def directory_address(index: int) -> str:
    """Directory member ``index``'s (1-based) underlay address."""
    return f"{UNDERLAY_NET}.{DIRECTORY_FIRST + index - 1}"


def directory_remotes() -> str:
    """What the emulation's agents get as ``directory =``."""
    return cluster_remotes(directory_address(n) for n in range(1, DIRECTORY_MEMBERS + 1))


def subnet_instance(tenant: int, subnet: int) -> int:
    """The instance of a tenant's (1-based) subnet (0-based)."""
    return FIRST_INSTANCE + (tenant - 1) + 100 * subnet


def plan_vms(spec: TopoSpec) -> list[VmPlan]:
    """The address plan: identical per tenant, spread round-robin over the hypervisors."""
    plans = []
    for t in range(spec.tenants):
        for i in range(spec.vms_per_tenant):
            name = f"t{t + 1}vm{i + 1}"
            subnet = i % spec.subnets  # subnet 0 is the one-subnet plan exactly
            plans.append(
                VmPlan(
                    name=name,
                    tenant=t + 1,
                    index=i + 1,
                    hypervisor=hv_name((i + t) % spec.hypervisors + 1),
                    instance=subnet_instance(t + 1, subnet),
                    mac=f"02:00:00:00:00:{i + 1:02x}",
                    ip_cidr=f"10.0.{subnet}.{i + 1}/24",
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
        if spec.directory:
            for n in range(1, DIRECTORY_MEMBERS + 1):
                name = member_name(n)
                cidr = f"{directory_address(n)}/24"
                self.addHost(name, cls=DirectoryMember, index=n, cidr=cidr, ip=None)
                self.addLink(name, underlay, intfName1=f"{name}-eth0")
        for vm in plan_vms(spec):
            self.addHost(vm.name, ip=None)
            self.addLink(vm.name, vm.hypervisor, intfName1=f"{vm.name}-eth0", intfName2=vm.port)


@dataclass
class DoveNet(RunningNet):
    """A running emulation: the Mininet net, its hypervisors and VMs, and its directory
    cluster when it has one."""

    net: Mininet
    spec: TopoSpec
    hypervisors: list[Hypervisor]
    vms: list[VmRecord] = field(default_factory=list)
    directory: DirectoryCluster | None = None

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

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.directory is not None and self.directory.pki is not None:
                self.directory.pki.remove()


def _attach(mode: str, hv: Hypervisor, host: Host, plan: VmPlan, mtu: int = VM_MTU) -> str:
    """Plug one planned VM into its hypervisor the way ``mode`` forwards; return the port."""
    if mode == "kernel":
        port = prepare_vm(hv, host, plan.mac, plan.ip_cidr, tx_off=kernel_vxlan.VM_TX_OFF)
        kernel_vxlan.plug(hv, port, plan.instance, VM_MTU)
        return port
    if mode == "ovn":
        port = prepare_vm(hv, host, plan.mac, plan.ip_cidr, mtu=ovn.VM_MTU)
        ovn.plug(hv, port, plan.name)
        return port
    return attach_vm(hv, host, plan.instance, plan.mac, plan.ip_cidr, mtu)


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


def build_net(
    hypervisors: int = 3,
    tenants: int = 2,
    vms_per_tenant: int = 2,
    mode: str = "dove",
    agent_cmd: list[str] | None = None,
    agent_config: Any = None,
    directory: bool = False,
    directory_pki: ClusterPki | None = None,
    subnets: int = 1,
    vm_mtu: int = VM_MTU,
) -> DoveNet:
    """Build and start the emulation; tear it down again if any step fails.

    ``mode`` is one of MODES: 'dove' (agents), 'normal' (NORMAL + VXLAN mesh), or a benchmark
    peer: 'learning' (MAC-learning controller), 'kernel' (Linux bridge + kernel VXLAN), 'ovn'.
    Returns once the peer forwards (controllers connected, OVN ports up and synced).
    ``agent_cmd``/``agent_config`` (dove mode only) start an agent on every hypervisor:
    ``agent_config`` is the dove.ini text, or a callable ``(hv) -> text``.
    ``directory`` adds a 3-member directory cluster on the underlay, with a leader before
    any agent starts (``dnet.directory``).
    """
    spec = TopoSpec(hypervisors, tenants, vms_per_tenant, mode, directory, subnets)
    if agent_cmd and mode != "dove":
        raise ValueError("agents run in mode='dove' only")
    net = new_mininet(DoveTopo(spec=spec))
    try:
        net.build()
        net.start()
        dnet = DoveNet(net, spec, [net.get(hv_name(n)) for n in range(1, hypervisors + 1)])
        probe = net.get(PROBE)
        address_probe(probe, PROBE_CIDR)
        if directory:
            dnet.directory = DirectoryCluster(
                (net.get(member_name(n)) for n in range(1, DIRECTORY_MEMBERS + 1)), directory_pki
            )
            dnet.directory.start()
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
            port = _attach(mode, hv, host, plan, vm_mtu)
            dnet.vms.append(VmRecord.plugged(plan, host, hv, port))
        if mode == "kernel":
            _program_kernel_fdb(dnet)
        warm_underlay(dnet.hypervisors)
        if mode == "learning":
            for hv in dnet.hypervisors:
                learning.start_learning_switch(hv)
            learning.wait_learning_connected(dnet.hypervisors)
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


def underlay_ip(index: int) -> str:
    return f"{UNDERLAY_NET}.{index}"


def _agent_ready(dnet: DoveNet, hv: Hypervisor) -> bool:
    return agent_ready(hv, instance_peers(hv, dnet.vms))


def wait_ready(dnet: DoveNet, timeout: float = 30.0) -> None:
    """Until every agent is connected and knows the members of its instances."""
    for hv in dnet.hypervisors:
        wait_until(partial(_agent_ready, dnet, hv), timeout, f"{hv.name} agent ready")


def build_dove_net(
    hypervisors: int = 3,
    tenants: int = 2,
    vms_per_tenant: int = 2,
    extra: dict[str, Any] | None = None,
    timeout: float = 60.0,
    directory: bool = False,
    subnets: int = 1,
    routers: bool = False,
    tunnel_type: str = "vxlan",
    kernel_vteps: Sequence[KernelVtep] = (),
) -> tuple[DoveNet, str]:
    """The emulation with an agent on every hypervisor, ready to forward.

    With ``directory`` the agents are configured with ``discovery = directory`` and the
    cluster's remotes instead of a peers list.  ``subnets`` = 2 gives each tenant two
    subnets; ``routers`` joins them with a router per tenant (router id = tenant, gateway
    10.0.<subnet>.254), the VMs routing through it (`mininet_topos.routing`).
    ``tunnel_type`` = "geneve": the agents send and take Geneve (with the DOVE option),
    the VMs get its MTU (1442).
    ``kernel_vteps`` adds kernel VXLAN VTEPs on the underlay, declared to every agent as
    external VTEPs (`mininet_topos.kernel_vtep`; `dnet.net.get(vtep.name)`).
    Returns the net and the deployment key (tests forge messages with it)."""
    if tunnel_type != "vxlan":
        extra = {"tunnel_type": tunnel_type, **(extra or {})}
    key = os.environ.get("DOVE_AUTH_KEY") or secrets.token_hex(16)
    peers = [underlay_ip(n) for n in range(1, hypervisors + 1)]
    # The directory's agents speak SSL, each with its own certificate (RBAC).
    pki = ClusterPki() if directory else None
    remotes = agent_remotes(directory_address(n) for n in range(1, DIRECTORY_MEMBERS + 1))
    if kernel_vteps:
        extra = {**kernel_vtep.settings(kernel_vteps), **(extra or {})}
    dnet = build_net(
        hypervisors,
        tenants,
        vms_per_tenant,
        mode="dove",
        agent_cmd=agent_cmd(),
        agent_config=lambda hv: agent_config(
            hv,
            peers,
            key,
            extra,
            directory=remotes if pki else None,
            ssl=pki.issue(hv.name) if pki else None,
        ),
        directory=directory,
        directory_pki=pki,
        subnets=subnets,
        vm_mtu=tunnel_mtu(tunnel_type),
    )
    try:
        for vtep in kernel_vteps:
            serving = {vm.hypervisor.underlay_ip for vm in dnet.vms if vm.instance == vtep.instance}
            kernel_vtep.add_kernel_vtep(dnet.net, vtep, sorted(serving), UNDERLAY_SWITCH)
        wait_ready(dnet, timeout)
        if routers:
            from mininet_topos.routing import route_tenants

            route_tenants(dnet, timeout)
    except BaseException:
        dnet.stop()
        raise
    return dnet, key


def plug_vm(
    dnet: DoveNet,
    name: str,
    hv: Hypervisor,
    tenant: int,
    mac: str,
    ip_cidr: str,
    timeout: float = 10.0,
) -> VmRecord:
    """Plug one more VM of ``tenant`` into ``hv`` of a running emulation with agents (its
    port ``<name>-p``), add it to ``dnet.vms`` and wait until the agent has taken it."""
    host = dnet.net.addHost(name, ip=None)
    port = f"{name}-p"
    dnet.net.addLink(host, hv, intfName1=f"{name}-eth0", intfName2=port)
    instance = dnet.tenant_vms(tenant)[0].instance
    attach_vm(hv, host, instance, mac, ip_cidr)
    ip = ip_cidr.split("/")[0]
    vm = VmRecord(name, host, hv, tenant, instance, mac, ip, ip_cidr, port)
    dnet.vms.append(vm)
    wait_until(partial(has_local, hv, instance, mac), timeout, f"{hv.name} agent to take {name}")
    return vm


def set_resolution(dnet: DoveNet, instance: int, mode: str) -> None:
    """Set an instance's resolution in the directory, as an operator would (dovectl)."""
    assert dnet.directory is not None, "resolution is a directory setting"
    dovectl = str(Path(sys.executable).parent / "dovectl")
    argv = [dovectl, "directory", "resolution", "--db", dnet.directory.remotes,
            "--instance", str(instance), "--mode", mode]  # fmt: skip
    out, err, rc = dnet.hypervisors[0].pexec(argv)
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err or out}")


def pushed(dnet: DoveNet, instance: int) -> bool:
    """Every host of the instance's VMs has learned the VMs of the others."""
    vms = [vm for vm in dnet.vms if vm.instance == instance]
    for hv in {vm.hypervisor for vm in vms}:
        status = admin(hv)["instances"].get(str(instance), {})
        macs = {r["mac"] for r in status.get("learned", [])}
        if any(o.mac not in macs for o in vms if o.hypervisor is not hv):
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Build the emulation, open the Mininet CLI, tear down on exit."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hypervisors", type=int, default=3)
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--vms-per-tenant", type=int, default=2)
    p.add_argument("--mode", choices=MODES, default="dove")
    p.add_argument(
        "--directory",
        action="store_true",
        help="a 3-member directory cluster beside the hypervisors; agents use it for discovery",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--clean", action="store_true", help="only clean up after a crashed run")
    args = p.parse_args(argv)
    setLogLevel(args.log_level)
    if args.clean:
        from mininet_topos import hw_vtep  # imports gateway, which imports this module

        for d in (
            cleanup_stale() + ovn.cleanup_stale() + cleanup_directory() + hw_vtep.cleanup_stale()
        ):
            print(f"removed {d}")
        quietRun(f"ip link del {UNDERLAY_SWITCH}")
        # A veth whose namespace outlived its run (a process still held it) stays
        # behind in the root namespace and would clash with the next emulation's.
        for name in re.findall(
            r"^\d+: ((?:ul1|ul-s\d+|wan)-eth\d+)[@:]", quietRun("ip -o link"), re.M
        ):
            quietRun(f"ip link del {name}")
            print(f"removed link {name}")
        return
    if args.mode == "dove":
        dnet, _ = build_dove_net(
            args.hypervisors, args.tenants, args.vms_per_tenant, directory=args.directory
        )
    else:
        dnet = build_net(
            args.hypervisors, args.tenants, args.vms_per_tenant, args.mode, directory=args.directory
        )
    print(
        "hypervisors: "
        + ", ".join(f"{hv.name} ({hv.underlay_ip}, rundir {hv.rundir})" for hv in dnet.hypervisors)
    )
    if dnet.directory is not None:
        print(
            f"directory {dnet.directory.remotes}: "
            + ", ".join(f"{m.name} (ctl {m.ctl})" for m in dnet.directory.members)
        )
    try:
        cli_class(dnet)(dnet.net)
    finally:
        dnet.stop()


if __name__ == "__main__":
    main()
