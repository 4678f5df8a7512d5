"""Benchmark peer 'ovn': OVN (Debian's 23.03) in the same emulation, the strongest peer.

Central part in the ``probe`` namespace on the underlay: NB and SB ovsdb-servers (TCP 6641 and
6642) and ovn-northd, all from a private run directory. Per hypervisor: its private userspace
OVS (br-phy keeps the underlay address, since userspace tunnels need it) and an
ovn-controller in the hypervisor namespace that drives ``br-int`` and Geneve tunnels. One
logical switch per tenant (``t<instance>``), one logical port per VM, named after the VM.
For issue 12's routing benchmark, ``add_router`` joins a tenant's switches with a
distributed logical router (the same ``dove_ryu.model.Router`` the dove emulation declares:
the same gateway addresses and MACs), and ``add_gateway`` gives it a distributed gateway
port with SNAT on a gateway chassis, onto the emulation's external network.

Nothing of OVN runs in the root namespace (bootstrap.sh keeps Debian's services stopped).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from mininet.node import Host

from dove_ryu.model import Router
from mininet_topos.hypervisor import (
    BR_INT,
    Hypervisor,
    OvsCommandError,
    pid_alive,
    read_pidfile,
    reap_rundirs,
    remove_rundir,
    stop_daemons,
    wait_until,
)

NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
NB_PORT = 6641
SB_PORT = 6642
RUNDIR_PREFIX = "dove-ovn-central-"
# Stopped in this order: northd first, so it does not log the databases going away.
CENTRAL_DAEMONS = ("ovn-northd", "ovnnb_db", "ovnsb_db")
# NOTE (OVN 23.03): Geneve with OVN's 8-byte metadata option costs 58 bytes over a 1500-byte
# underlay (IPv4 20 + UDP 8 + Geneve 8 + option 8 + inner Ethernet 14), 8 more than VXLAN:
# the VMs get MTU 1442, as OVN itself advertises for Geneve.
VM_MTU = 1442


def switch_name(instance: int) -> str:
    return f"t{instance}"


def router_name(router_id: int) -> str:
    return f"r{router_id}"


def router_port(router_id: int, instance: int) -> str:
    """The logical router port on instance ``instance``'s switch."""
    return f"r{router_id}-t{instance}"


class OvnCentral(Host):
    """The probe host, plus OVN's NB/SB databases and ovn-northd in a private rundir.

    ``start_central()`` is called once the host has its underlay address; ``terminate()``
    stops the daemons and removes the rundir (kept if DOVE_KEEP_RUNDIR=1).
    """

    def __init__(self, name: str, **params: Any) -> None:
        self.rundir: Path | None = None
        super().__init__(name, **params)

    def env(self) -> dict[str, str]:
        """OVN and OVS tools look for sockets, pid and log files here, not in /var/run."""
        d = str(self._dir())
        return {**os.environ, "OVN_RUNDIR": d, "OVS_RUNDIR": d, "OVN_DBDIR": d, "OVS_DBDIR": d}

    def _dir(self) -> Path:
        if self.rundir is None:
            raise RuntimeError(f"{self.name}: OVN central not started")
        return self.rundir

    def run(self, *args: str, check: bool = True) -> str:
        """Run argv in this namespace with the OVN environment; return stdout."""
        cmd = [str(a) for a in args]
        out, err, rc = self.pexec(cmd, env=self.env())
        if check and rc != 0:
            raise OvsCommandError(self.name, cmd, rc, err or out)
        return out

    def nbctl(self, *args: str, check: bool = True) -> str:
        """ovn-nbctl against this central's NB database."""
        d = self._dir()
        return self.run(
            "ovn-nbctl", f"--db=unix:{d / 'ovnnb_db.sock'}", "--timeout=30", *args, check=check
        )

    def sbctl(self, *args: str, check: bool = True) -> str:
        """ovn-sbctl against this central's SB database."""
        d = self._dir()
        return self.run(
            "ovn-sbctl", f"--db=unix:{d / 'ovnsb_db.sock'}", "--timeout=30", *args, check=check
        )

    def _ovsdb(self, db: str, schema: str, port: int) -> None:
        d = self._dir()
        self.run("ovsdb-tool", "create", str(d / f"{db}.db"), schema)
        self.run(
            "ovsdb-server",
            str(d / f"{db}.db"),
            f"--remote=punix:{d / f'{db}.sock'}",
            f"--remote=ptcp:{port}",
            f"--pidfile={d / f'{db}.pid'}",
            f"--log-file={d / f'{db}.log'}",
            f"--unixctl={d / f'{db}.ctl'}",
            "--detach",
            "--no-chdir",
        )

    def start_central(self) -> None:
        """NB and SB ovsdb-servers and ovn-northd, detached, in a fresh rundir."""
        base = os.environ.get("DOVE_RUNDIR_BASE") or None
        self.rundir = Path(tempfile.mkdtemp(prefix=RUNDIR_PREFIX, dir=base))
        d = self.rundir
        self.cmd(f"export OVN_RUNDIR={d} OVS_RUNDIR={d}")  # CLI: `probe ovn-nbctl show`
        self._ovsdb("ovnnb_db", NB_SCHEMA, NB_PORT)
        self._ovsdb("ovnsb_db", SB_SCHEMA, SB_PORT)
        self.run(
            "ovn-northd",
            f"--ovnnb-db=unix:{d / 'ovnnb_db.sock'}",
            f"--ovnsb-db=unix:{d / 'ovnsb_db.sock'}",
            f"--pidfile={d / 'ovn-northd.pid'}",
            f"--log-file={d / 'ovn-northd.log'}",
            f"--unixctl={d / 'ovn-northd.ctl'}",
            "--detach",
            "--no-chdir",
        )
        self.nbctl("--no-wait", "init")

    def stop_central(self) -> None:
        stop_daemons(self.rundir, CENTRAL_DAEMONS)

    def terminate(self) -> None:
        try:
            self.stop_central()
        finally:
            remove_rundir(self.rundir)
            super().terminate()


def cleanup_stale(base: str | None = None) -> list[Path]:
    """Kill OVN central daemons left by a crashed run (our pidfiles only); remove the rundirs.

    ovn-controllers live in hypervisor rundirs and are handled by hypervisor.cleanup_stale.
    """
    return reap_rundirs(f"{RUNDIR_PREFIX}*", CENTRAL_DAEMONS, base)


def start_controller(hv: Hypervisor, sb_remote: str) -> None:
    """Register ``hv`` as chassis ``hv.name`` and start its ovn-controller, detached.

    NOTE (OVN 23.03): ovn-controller must get OVS_RUNDIR too, not only the database socket:
    it reaches ovs-vswitchd over ``$OVS_RUNDIR/br-int.mgmt``, which is in the private rundir.
    """
    hv.vsctl(
        "set",
        "Open_vSwitch",
        ".",
        f"external_ids:system-id={hv.name}",
        f'external_ids:ovn-remote="{sb_remote}"',
        "external_ids:ovn-encap-type=geneve",
        f"external_ids:ovn-encap-ip={hv.underlay_ip}",
        f"external_ids:ovn-bridge={BR_INT}",
        "external_ids:ovn-bridge-datapath-type=netdev",
    )
    _run_controller(hv)


def _run_controller(hv: Hypervisor) -> None:
    hv.run(
        "ovn-controller",
        f"unix:{hv.db_sock}",
        f"--pidfile={hv.in_rundir('ovn-controller.pid')}",
        f"--log-file={hv.in_rundir('ovn-controller.log')}",
        "--detach",
        "--no-chdir",
        env={**hv.ovs_env(), "OVN_RUNDIR": str(hv.rundir)},
    )


def restart_controller(hv: Hypervisor, kill: bool) -> None:
    """Stop ``hv``'s ovn-controller (SIGTERM, or SIGKILL with ``kill``), wait for it to exit,
    and start it again as ``start_controller`` did (issue 13's restart benchmark).

    Neither signal runs ovn-controller's ``exit`` command, so the chassis record and
    br-int's flows stay; the new process reconnects and reinstalls its flows."""
    pid = read_pidfile(hv.in_rundir("ovn-controller.pid"))
    if pid is None or not pid_alive(pid):
        raise RuntimeError(f"{hv.name}: ovn-controller is not running")
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10.0, f"{hv.name}'s ovn-controller to exit", step=0.01)
    _run_controller(hv)


def controller_connected(hv: Hypervisor) -> bool:
    """``hv``'s ovn-controller answers and is connected to the southbound database."""
    out = hv.run(
        "ovn-appctl",
        "-t",
        "ovn-controller",
        "connection-status",
        check=False,
        env={**hv.ovs_env(), "OVN_RUNDIR": str(hv.rundir)},
    )
    return out.strip() == "connected"


def add_switches(central: OvnCentral, ports: Iterable[tuple[int, str, str, str]]) -> None:
    """One logical switch per instance and one port per VM: (instance, lsp, mac, ip).

    All in one ovn-nbctl transaction, so northd computes the flows once.
    """
    args: list[str] = []
    seen: set[int] = set()
    for instance, lsp, mac, ip in ports:
        if instance not in seen:
            seen.add(instance)
            args += ["--", "ls-add", switch_name(instance)]
        args += [
            "--",
            "lsp-add",
            switch_name(instance),
            lsp,
            "--",
            "lsp-set-addresses",
            lsp,
            f"{mac} {ip}",
        ]
    if args:
        central.nbctl("--no-wait", *args[1:])


def add_router(central: OvnCentral, router: Router) -> None:
    """A distributed logical router joining the switches of ``router``'s subnets.

    Each subnet gets a router port with its gateway address and the gateway MAC dove-ryu
    derives for it, and the switch a ``router`` port facing it, in one transaction. OVN
    routes on the sending VM's chassis, as dove-ryu does (no hop through a central node).
    """
    name = router_name(router.router_id)
    args = ["--", "lr-add", name]
    for subnet in router.subnets:
        lrp = router_port(router.router_id, subnet.instance)
        lsp = f"{switch_name(subnet.instance)}-{name}"
        args += ["--", "lrp-add", name, lrp, subnet.mac, str(subnet.gateway)]
        args += ["--", "lsp-add", switch_name(subnet.instance), lsp]
        args += ["--", "lsp-set-type", lsp, "router"]
        args += ["--", "lsp-set-addresses", lsp, "router"]
        args += ["--", "lsp-set-options", lsp, f"router-port={lrp}"]
    central.nbctl("--no-wait", *args[1:])


EXTERNAL_SWITCH = "ext"
EXTERNAL_NETWORK = "extnet"  # the physical network name of the localnet port
BR_EXT = "br-ext"  # on a gateway chassis: the bridge the localnet port is mapped to


@dataclass(frozen=True)
class OvnGateway:
    """A router's way out in OVN: a distributed gateway port on ``chassis`` (in order of
    priority, the first active) with the router's external address, SNAT of its subnets,
    and a default route to ``nexthop``."""

    external: IPv4Interface  # the router's address on the external network
    nexthop: str
    chassis: tuple[str, ...]
    mac: str = "0a:d0:ff:00:00:01"


def add_gateway(central: OvnCentral, router: Router, gw: OvnGateway) -> None:
    """The external logical switch (a localnet port onto ``extnet``), the router's gateway
    port on it, bound to ``gw.chassis`` by priority, SNAT and the default route."""
    name = router_name(router.router_id)
    lrp = f"{name}-ext"
    args = ["--may-exist", "ls-add", EXTERNAL_SWITCH]
    args += ["--", "--may-exist", "lsp-add", EXTERNAL_SWITCH, "ext-localnet"]
    args += ["--", "lsp-set-type", "ext-localnet", "localnet"]
    args += ["--", "lsp-set-addresses", "ext-localnet", "unknown"]
    args += ["--", "lsp-set-options", "ext-localnet", f"network_name={EXTERNAL_NETWORK}"]
    args += ["--", "lrp-add", name, lrp, gw.mac, str(gw.external)]
    args += ["--", "lsp-add", EXTERNAL_SWITCH, f"ext-{name}"]
    args += ["--", "lsp-set-type", f"ext-{name}", "router"]
    args += ["--", "lsp-set-addresses", f"ext-{name}", "router"]
    args += ["--", "lsp-set-options", f"ext-{name}", f"router-port={lrp}"]
    for prio, chassis in enumerate(gw.chassis):
        args += ["--", "lrp-set-gateway-chassis", lrp, chassis, str(100 - prio)]
    for subnet in router.subnets:
        args += ["--", "lr-nat-add", name, "snat", str(gw.external.ip), str(subnet.network)]
    args += ["--", "lr-route-add", name, "0.0.0.0/0", gw.nexthop]
    central.nbctl("--no-wait", *args)


def make_gateway_chassis(hv: Hypervisor, uplink: str) -> None:
    """Let ``hv`` (a chassis of mode 'ovn') carry gateway ports: ``br-ext`` with its leg in
    the external network (``uplink``, a veth already in its namespace), mapped to
    ``extnet``, and the chassis marked as a gateway."""
    hv.make_port_only(uplink)
    hv.vsctl("--may-exist", "add-br", BR_EXT, "--", "set", "Bridge", BR_EXT,
             "datapath_type=netdev", "--", "--may-exist", "add-port", BR_EXT, uplink)  # fmt: skip
    hv.vsctl(
        "set",
        "Open_vSwitch",
        ".",
        f"external_ids:ovn-bridge-mappings={EXTERNAL_NETWORK}:{BR_EXT}",
        'external_ids:ovn-cms-options="enable-chassis-as-gw"',
    )


def plug(hv: Hypervisor, port: str, lsp: str) -> None:
    """Put a VM's hypervisor-side veth on br-int, bound to logical port ``lsp``."""
    hv.make_port_only(port)
    hv.vsctl(
        "add-port",
        BR_INT,
        port,
        "--",
        "set",
        "Interface",
        port,
        f'external_ids:iface-id="{lsp}"',
    )


def _ports_up(central: OvnCentral, names: set[str]) -> bool:
    out = central.nbctl("--format=csv", "--no-headings", "--columns=name,up", "list",
                        "Logical_Switch_Port")  # fmt: skip
    up = {
        row.split(",")[0].strip('"')
        for row in out.splitlines()
        if row.split(",")[-1].strip() == "true"
    }
    return names <= up


def wait_ready(
    central: OvnCentral, hypervisors: list[Hypervisor], lsps: Iterable[str], timeout: float = 60.0
) -> None:
    """Until every logical port is up and every chassis has applied the NB contents.

    ``up`` only says a chassis claimed the port; ``--wait=hv sync`` then waits until every
    ovn-controller has caught up (its flows and tunnels are in place).
    """
    names = set(lsps)

    def ready() -> bool:
        for hv in hypervisors:
            _ensure_controller(hv)
        return _ports_up(central, names)

    wait_until(ready, timeout, "OVN logical ports up")
    central.nbctl("--wait=hv", "sync")
    for hv in hypervisors:
        _ensure_controller(hv)


def _ensure_controller(hv: Hypervisor) -> None:
    """Restart a vanished ovn-controller once; fail with its log if it vanishes again.

    NOTE (OVN 23.03.1 on this machine): in about 1 of 10 builds an ovn-controller was gone
    a moment after start, its log ending after the OVS feature probe with no error, no
    signal message and no kernel trace. It is stateless, so one restart is safe; restarts
    are counted in ``hv.ovn_restarts`` (and reported by peers.describe()).
    """
    pid = read_pidfile(hv.in_rundir("ovn-controller.pid"))
    if pid is not None and pid_alive(pid):
        return
    restarts = getattr(hv, "ovn_restarts", 0)
    log = hv.in_rundir("ovn-controller.log")
    if restarts >= 1:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{hv.name}: ovn-controller is not running:\n{tail}")
    hv.ovn_restarts = restarts + 1  # type: ignore[attr-defined]
    _run_controller(hv)


def versions() -> dict[str, str]:
    """ovn-controller's and ovn-northd's version lines."""
    result = {}
    for tool in ("ovn-controller", "ovn-northd"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        result[tool] = " | ".join(out.stdout.splitlines()[:2])
    return result
