"""Live migration in the emulation, as a hypervisor's live migration does it.

The VM's namespace, interface, MAC, IPs and open sockets stay as they are; its
port (the hypervisor-side veth) leaves the old hypervisor's bridge and namespace
and appears, with the same OVSDB marks, on the new one's; then the VM announces
itself with a gratuitous ARP, as QEMU does after a move (it sends RARP; here a
gratuitous ARP plays that part).
"""

from __future__ import annotations

from typing import Protocol

from mininet.cli import CLI

from dove_ryu.ctl.ports import move_port
from mininet_topos.emulation import VmRecord
from mininet_topos.hypervisor import Hypervisor

MIGRATABLE_MODES = ("dove", "normal", "ovn")


class _Spec(Protocol):
    @property
    def mode(self) -> str: ...


class Net(Protocol):
    """What migration needs of a running emulation: dove_topo.DoveNet, sites.SitesNet."""

    @property
    def spec(self) -> _Spec: ...

    def vm(self, name: str) -> VmRecord: ...

    def hv(self, name: str) -> Hypervisor: ...


def migrate(dnet: Net, vm: VmRecord, to: Hypervisor, announce: bool = True) -> float:
    """Move ``vm`` to hypervisor ``to``; returns how long the port was unplugged (s)."""
    if dnet.spec.mode not in MIGRATABLE_MODES:
        raise ValueError(f"no migration in mode {dnet.spec.mode!r}")
    old = vm.hypervisor
    if to is old:
        raise ValueError(f"{vm.name} is already on {to.name}")
    bridge = old.vsctl("port-to-br", vm.port).strip()
    # One shell round trip per step, in the namespaces Mininet already has shells in.
    unplugged = move_port(
        vm.port,
        f"unix:{old.db_sock}",
        f"unix:{to.db_sock}",
        bridge,
        to.pid,
        run_here=old.cmd,
        run_there=to.cmd,
        require_marks=False,  # the benchmark peers (NORMAL, OVN) mark ports their own way
    )
    hand_over(old, to, vm.port)
    vm.hypervisor = to
    if announce:
        intf = vm.host.intf().name
        vm.host.cmd(f"arping -q -c1 -U -I {intf} {vm.ip}")
    return unplugged


def hand_over(old: Hypervisor, to: Hypervisor, name: str) -> None:
    """Mininet's own record of which node owns the interface (teardown deletes it there)."""
    intf = old.nameToIntf[name]
    old.delIntf(intf)
    intf.node = to
    to.addIntf(intf, moveIntfFn=lambda *_args, **_kw: True)  # already moved


def cli_class(dnet: Net) -> type:
    """The Mininet CLI with a ``migrate <vm> <hypervisor>`` command for this net."""

    class DoveCLI(CLI):  # type: ignore[misc]
        def do_migrate(self, line: str) -> None:
            """migrate <vm> <hypervisor>: live-migrate a VM (its port moves, it stays)."""
            try:
                name, target = line.split()
                vm, to = dnet.vm(name), dnet.hv(target)
                took = migrate(dnet, vm, to)
            except (ValueError, StopIteration) as e:
                print(f"usage: migrate <vm> <hypervisor> ({e})")
                return
            print(f"{name} now on {target} (port unplugged for {took * 1000:.0f} ms)")

    return DoveCLI
