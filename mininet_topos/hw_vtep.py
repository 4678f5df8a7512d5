"""An emulated hardware VTEP: the OVS VTEP emulator (``ovs-vtep``) in a Mininet namespace.

``HwVtep`` is a Mininet host, built like a hypervisor (``mininet_topos.hypervisor``): a
private run directory (``dove-<name>-*``), a private ovsdb-server and a userspace
ovs-vswitchd, the underlay address on ``br-phy`` (userspace tunnels are routed from an
OVS bridge that owns their source address).  Beside them:

* the ovsdb-server serves two databases, ``Open_vSwitch`` (conf.db) and ``hardware_vtep``
  (vtep.db, /usr/share/openvswitch/vtep.ovsschema), on the unix socket ``<rundir>/db.sock``
  (where ovs-vsctl and vtep-ctl look, through OVS_RUNDIR) and on TCP ``VTEP_OVSDB_PORT``
  of the loopback (where the VTEP controller connects);
* the physical switch: an OVS bridge named after it (``ps_name``, default ``tor1``) with
  one port per bare-metal link (``<name>-eth1``, ...), registered in ``hardware_vtep`` as a
  ``Physical_Switch`` whose ``tunnel_ips`` is the underlay address;
* ``ovs-vtep``, the emulator proper: it reads ``hardware_vtep`` (logical switches, VLAN
  bindings, remote MACs and locators) and builds bridges, patch ports, VXLAN ports and
  flows in ``Open_vSwitch``; it writes the MACs it learns to ``Ucast_Macs_Local``.

NOTE (openvswitch-vtep 3.1.0): ovs-vtep makes each logical switch's bridge (and its BFD
bridge) with the physical switch bridge's ``datapath_type``, so building the physical
switch bridge with ``datapath_type=netdev`` is all it takes on a machine without the OVS
kernel module: the script is run unchanged.  It needs the ``ovs`` Python package, which
Debian's openvswitch-vtep does not pull in (python3-openvswitch); it is run with this
venv's interpreter, which has it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mininet.node import Host

from mininet_topos.emulation import UNDERLAY_NET, VM_MTU
from mininet_topos.gateway import _enslave, _root_end
from mininet_topos.hypervisor import (
    DAEMONS,
    VSWITCH_SCHEMA,
    Hypervisor,
    reap_rundirs,
    stop_daemons,
    wait_until,
)

VTEP_SCHEMA = "/usr/share/openvswitch/vtep.ovsschema"
OVS_VTEP = "/usr/share/openvswitch/scripts/ovs-vtep"
VTEP_OVSDB_PORT = 6640
VTEP_DAEMONS = ("ovs-vtep", *DAEMONS)  # stopped in this order
RUNDIR_PATTERN = "dove-tor*-*"


class HwVtep(Hypervisor):
    """The VTEP emulator's namespace (see the module docstring).

    Extra parameters (``addHost``): ``index``, ``underlay_cidr`` as for a hypervisor;
    ``ps_name``: the Physical_Switch and its bridge; ``ports``: how many bare-metal links
    (``<name>-eth1`` ...) join the physical switch (the links must exist: add them before
    the network starts)."""

    def __init__(self, name: str, ps_name: str = "tor1", ports: int = 1, **params: Any) -> None:
        self.ps_name = ps_name
        self.port_count = ports
        super().__init__(name, mode="normal", **params)

    @property
    def ovsdb_remote(self) -> str:
        """Where the VTEP controller reaches this switch's hardware_vtep database."""
        return f"tcp:127.0.0.1:{VTEP_OVSDB_PORT}"

    @property
    def switch_ports(self) -> list[str]:
        return [f"{self.name}-eth{i}" for i in range(1, self.port_count + 1)]

    def vtepctl(self, *args: str, check: bool = True) -> str:
        """vtep-ctl against this switch's hardware_vtep database."""
        return self.run("vtep-ctl", f"--db=unix:{self.db_sock}", "--timeout=20", *args, check=check)

    def start_ovs(self) -> None:
        base = os.environ.get("DOVE_RUNDIR_BASE") or None
        self.rundir = Path(tempfile.mkdtemp(prefix=f"dove-{self.name}-", dir=base))
        d = self.rundir
        self.cmd(f"export OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d}")
        self.run("ovsdb-tool", "create", str(d / "conf.db"), VSWITCH_SCHEMA)
        self.run("ovsdb-tool", "create", str(d / "vtep.db"), VTEP_SCHEMA)
        self.run(
            "ovsdb-server",
            str(d / "conf.db"),
            str(d / "vtep.db"),
            f"--remote=punix:{self.db_sock}",
            f"--remote=ptcp:{VTEP_OVSDB_PORT}:127.0.0.1",
            f"--pidfile={d / 'ovsdb-server.pid'}",
            f"--log-file={d / 'ovsdb-server.log'}",
            "--detach",
            "--no-chdir",
        )
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()
        self.setup_br_phy()
        self.setup_physical_switch()
        self.start_emulator()

    def setup_physical_switch(self) -> None:
        ps = self.ps_name
        self.vsctl("add-br", ps, "--", "set", "Bridge", ps, "datapath_type=netdev")
        for port in self.switch_ports:
            self.make_port_only(port)
            self.vsctl("add-port", ps, port)
        self.vtepctl("add-ps", ps)
        self.vtepctl("set", "Physical_Switch", ps, f"tunnel_ips={self.underlay_ip}")

    def start_emulator(self) -> None:
        d = self._dir()
        self.run(
            sys.executable,
            OVS_VTEP,
            f"--log-file={d / 'ovs-vtep.log'}",
            f"--pidfile={d / 'ovs-vtep.pid'}",
            "--detach",
            "--no-chdir",
            self.ps_name,
        )
        # It registers the physical switch's ports in hardware_vtep once it runs.
        wait_until(
            lambda: set(self.switch_ports) <= set(self.vtepctl("list-ports", self.ps_name).split()),
            15.0,
            f"{self.name}: ovs-vtep lists the physical ports",
            step=0.2,
        )

    def stop_ovs(self) -> None:
        stop_daemons(self.rundir, VTEP_DAEMONS)


@dataclass
class BareMetal:
    """A server behind the VTEP emulator's port ``port``, on VLAN ``vlan`` (0: untagged)."""

    host: Host
    switch: HwVtep
    port: str  # the physical switch's port towards it
    vlan: int
    mac: str
    ip: str  # without prefix length
    intf: str  # the host's interface carrying ``ip`` (``<host>-eth0[.<vlan>]``)


def add_hw_vtep(
    net: Any,
    underlay: str = "ul1",
    name: str = "tor",
    index: int = 60,
    ps_name: str = "tor1",
) -> HwVtep:
    """Add the VTEP emulator to a running emulation, its uplink on the underlay bridge
    ``underlay`` at <UNDERLAY_NET>.<index>, with no bare-metal port yet (`add_bare_metal`)."""
    vtep = net.addHost(
        name,
        cls=HwVtep,
        index=index,
        ps_name=ps_name,
        ports=0,
        underlay_cidr=f"{UNDERLAY_NET}.{index}/24",
        ip=None,
    )
    link = net.addLink(vtep, net.get(underlay), intfName1=f"{name}-eth0")
    _enslave(underlay, _root_end(link, vtep))
    vtep.configDefault()  # ovsdb-server, ovs-vswitchd, br-phy, the physical switch, ovs-vtep
    return vtep


def add_bare_metal(
    net: Any, vtep: HwVtep, name: str, mac: str, ip_cidr: str, vlan: int = 0
) -> BareMetal:
    """A bare-metal server on a new port of the physical switch (tagged ``vlan`` unless 0);
    returns once ovs-vtep lists the port in hardware_vtep."""
    vtep.port_count += 1
    port = f"{vtep.name}-eth{vtep.port_count}"
    host = net.addHost(name, ip=None)
    net.addLink(host, vtep, intfName1=f"{name}-eth0", intfName2=port)
    vtep.make_port_only(port)
    vtep.vsctl("add-port", vtep.ps_name, port)
    phys = f"{name}-eth0"
    cmds = [
        ["sysctl", "-qw", f"net.ipv6.conf.{phys}.disable_ipv6=1"],
        ["ip", "link", "set", phys, "address", mac],
        ["ethtool", "-K", phys, "tx", "off"],  # it sends to userspace OVS (hypervisor.py)
        ["ip", "link", "set", phys, "mtu", str(VM_MTU), "up"],
    ]
    intf = phys
    if vlan:
        intf = f"{phys}.{vlan}"
        cmds.append(
            ["ip", "link", "add", "link", phys, "name", intf, "type", "vlan", "id", str(vlan)]
        )
        cmds.append(["sysctl", "-qw", f"net.ipv6.conf.{intf}.disable_ipv6=1"])
        cmds.append(["ip", "link", "set", intf, "mtu", str(VM_MTU), "up"])
    cmds.append(["ip", "addr", "add", ip_cidr, "dev", intf])
    for cmd in cmds:
        out, err, rc = host.pexec(cmd)
        if rc != 0:
            raise RuntimeError(f"{name}: {' '.join(cmd)}: {err or out}")
    wait_until(
        lambda: port in vtep.vtepctl("list-ports", vtep.ps_name).split(),
        15.0,
        f"{vtep.name}: ovs-vtep lists {port}",
        step=0.2,
    )
    return BareMetal(host, vtep, port, vlan, mac, ip_cidr.split("/")[0], intf)


def cleanup_stale(base: str | None = None) -> list[Path]:
    """Kill what a crashed run left in VTEP emulator rundirs and remove them."""
    return reap_rundirs(RUNDIR_PATTERN, VTEP_DAEMONS, base)
