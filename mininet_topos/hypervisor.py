"""An emulated hypervisor: a Mininet host running its own userspace Open vSwitch.

Each hypervisor namespace gets a private ovsdb-server and ovs-vswitchd (``datapath_type=netdev``,
since there is no OVS kernel module here) in a private run directory, so that several
hypervisors can coexist on one machine next to the machine's own OVS. Inside it:

* ``br-phy`` owns the underlay address and the uplink port (userspace tunnels are routed
  through an OVS bridge that owns the tunnel source IP, not through a plain veth);
* ``br-dove`` is the DOVE switch: one flow-based VXLAN port ``vxlan0`` and an OpenFlow 1.3
  controller on 127.0.0.1:6653 (the agent), or, in ``normal`` mode (benchmark baseline), a
  standalone NORMAL bridge with a full mesh of fixed VXLAN ports.

Benchmark peers (``mininet_topos.peers``, ``kernel_vxlan``, ``ovn``) reuse the same node:
``learning`` is the normal mesh behind a secure bridge and a MAC-learning controller,
``ovn`` swaps br-dove for OVN's br-int (driven by ovn-controller), and ``kernel`` runs no OVS
at all (the underlay address sits on the uplink, tenants on Linux bridges + kernel VXLAN).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from mininet.node import Host

VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
BR_PHY = "br-phy"
BR_DOVE = "br-dove"
BR_WAN = "br-wan"  # a VAN proxy's inter-site leg (mininet_topos.sites)
TUNNEL_PORT = "vxlan0"
AGENT_OFP_PORT = 6653
BR_INT = "br-int"  # OVN's integration bridge (mode "ovn")
MODES = ("dove", "normal", "learning", "kernel", "ovn")
# Daemons a hypervisor may run from its rundir, in the order they are stopped.
DAEMONS = ("ovn-controller", "ovs-vswitchd", "ovsdb-server")


class OvsCommandError(RuntimeError):
    """An OVS tool run inside a hypervisor namespace failed."""

    def __init__(self, node: str, cmd: list[str], rc: int, err: str) -> None:
        super().__init__(f"{node}: {' '.join(cmd)} -> rc={rc}: {err.strip()}")
        self.cmd, self.rc, self.err = cmd, rc, err


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(step)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a reaped-later zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait for the exit, SIGKILL if it does not come in time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit")
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"pid {pid} survived SIGKILL")


def read_pidfile(path: Path) -> int | None:
    """The pid in an OVS pidfile, or None if there is none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def dpid_for(index: int, bridge: str) -> str:
    """A stable 16-hex-digit datapath id: 'd0e0' for br-dove, 'd0e1' for br-phy, 'd0e2' for
    br-wan, then index."""
    prefix = {BR_DOVE: 0xD0E0, BR_WAN: 0xD0E2}.get(bridge, 0xD0E1)
    return f"{(prefix << 48) | index:016x}"


def stop_daemons(rundir: Path | None, daemons: tuple[str, ...]) -> None:
    """Kill ``daemons`` (in that order) by their pidfiles in ``rundir`` and wait for them."""
    if rundir is None:
        return
    for daemon in daemons:
        pid = read_pidfile(rundir / f"{daemon}.pid")
        if pid is not None:
            kill_pid(pid)


def remove_rundir(rundir: Path | None) -> None:
    """Remove a node's run directory, unless DOVE_KEEP_RUNDIR=1 keeps it for a post-mortem."""
    if rundir is not None and os.environ.get("DOVE_KEEP_RUNDIR") != "1":
        shutil.rmtree(rundir, ignore_errors=True)


def cleanup_stale(base: str | None = None) -> list[Path]:
    """Kill OVS daemons left in dove-* rundirs by a crashed run and remove those rundirs."""
    return reap_rundirs("dove-hv*-*", DAEMONS, base)


def working_in(directory: Path) -> list[int]:
    """The processes whose working directory is ``directory``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == str(directory):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def reap_rundirs(pattern: str, daemons: tuple[str, ...], base: str | None = None) -> list[Path]:
    """Kill the daemons a crashed run left in run directories matching ``pattern`` and
    remove the directories.  Only pids read from our own pidfiles, and only when their
    command line names that directory, and the processes that run in it (agents and
    reapers have it as their working directory)."""
    removed = []
    for d in Path(base or tempfile.gettempdir()).glob(pattern):
        for pid in working_in(d):
            kill_pid(pid)
        for daemon in daemons:
            pid = read_pidfile(d / f"{daemon}.pid")
            if pid is None or not pid_alive(pid):
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(d) in cmdline:
                kill_pid(pid)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


class Hypervisor(Host):
    """A Mininet host that runs a private userspace OVS with br-phy and br-dove.

    Extra constructor parameters (pass them to ``addHost``):
      index: 1-based hypervisor number (datapath ids are derived from it);
      underlay_cidr: the underlay address for br-phy, e.g. '10.99.0.1/24';
      mode: 'dove' (flow-based tunnel, secure, agent controller), 'normal' (NORMAL baseline)
        or a benchmark peer: 'learning', 'ovn', 'kernel' (see the module docstring);
      uplink: the interface towards the underlay switch (default '<name>-eth0').
    OVS is started in ``config()``, which Mininet calls once the links exist (in 'kernel' mode
    only the underlay address is set, and ``rundir`` stays None).
    """

    def __init__(
        self,
        name: str,
        index: int = 1,
        underlay_cidr: str = "10.99.0.1/24",
        mode: str = "dove",
        uplink: str | None = None,
        **params: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.index = index
        self.underlay_cidr = underlay_cidr
        self.underlay_ip = underlay_cidr.split("/")[0]
        self.mode = mode
        self.uplink = uplink or f"{name}-eth0"
        self.rundir: Path | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self._agent_out: IO[bytes] | None = None
        super().__init__(name, **params)

    # --- paths and environment --------------------------------------------------------------

    @property
    def db_sock(self) -> str:
        """The private ovsdb-server socket (``unix:`` prefix not included)."""
        return str(self._dir() / "db.sock")

    @property
    def dpid(self) -> str:
        """Datapath id of br-dove, as the agent sees it."""
        return dpid_for(self.index, BR_DOVE)

    @property
    def underlay_dev(self) -> str:
        """The interface that owns the underlay address (br-phy, or the uplink in kernel mode)."""
        return self.uplink if self.mode == "kernel" else BR_PHY

    def _dir(self) -> Path:
        if self.rundir is None:
            raise RuntimeError(f"{self.name}: OVS not started")
        return self.rundir

    def in_rundir(self, name: str) -> Path:
        """A file of this node's run directory (raises if OVS has not been started)."""
        return self._dir() / name

    def ovs_env(self) -> dict[str, str]:
        """Environment that points every OVS tool (and the agent) at the private OVS.

        NOTE (OVS 3.1.0): OVS_RUNDIR is needed by ovs-vswitchd itself, not only by the tools:
        it creates ``<bridge>.mgmt``/``<bridge>.snoop`` sockets there, which would clash between
        hypervisors (and with the host's own OVS) in the shared /var/run/openvswitch. Explicit
        --pidfile paths are not enough on their own. The unixctl sockets are left at their
        default, <rundir>/<daemon>.<pid>.ctl, so a plain `ovs-appctl -t ovs-vswitchd` typed in
        the Mininet CLI finds them through OVS_RUNDIR too.
        """
        d = str(self._dir())
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}

    # --- running commands in the namespace ----------------------------------------------------

    def run(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None) -> str:
        """Run argv in this namespace with the private OVS environment (if any); return stdout."""
        cmd = [str(a) for a in args]
        if env is None:
            env = self.ovs_env() if self.rundir is not None else os.environ
        out, err, rc = self.pexec(cmd, env=dict(env))
        if check and rc != 0:
            raise OvsCommandError(self.name, cmd, rc, err or out)
        return out

    def vsctl(self, *args: str, check: bool = True) -> str:
        """ovs-vsctl against this hypervisor's ovsdb-server."""
        return self.run(
            "ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=20", *args, check=check
        )

    def ofctl(self, *args: str, check: bool = True) -> str:
        """ovs-ofctl -O OpenFlow13; bridge names resolve to <rundir>/<bridge>.mgmt."""
        return self.run("ovs-ofctl", "-O", "OpenFlow13", *args, check=check)

    def appctl(self, *args: str, check: bool = True) -> str:
        """ovs-appctl against this hypervisor's ovs-vswitchd (found via OVS_RUNDIR)."""
        return self.run("ovs-appctl", "-t", "ovs-vswitchd", *args, check=check)

    def make_port_only(self, intf: str) -> None:
        """Prepare a kernel interface to be an OVS port: no addresses, tx off, up.

        IPv6 is disabled on it so the kernel does not send its own ND/MLD past OVS.
        NOTE: the kernel still sees every frame an OVS port receives (netdev reads it
        with a packet socket beside the stack). With the weak host model it would take
        a datagram for the underlay address a second time from the uplink, and answer
        ARP there; ``arp off`` and strict reverse-path filtering stop both.
        """
        self.run("sysctl", "-qw", f"net.ipv6.conf.{intf}.disable_ipv6=1")
        self.run("sysctl", "-qw", f"net.ipv4.conf.{intf}.rp_filter=1")
        self.run("ip", "link", "set", intf, "arp", "off")
        self.run("ip", "addr", "flush", "dev", intf)
        self.ethtool_tx_off(intf)
        self.run("ip", "link", "set", intf, "up")

    def ethtool_tx_off(self, intf: str) -> None:
        """Disable TX checksum offload on a kernel-side interface feeding userspace OVS.

        NOTE (OVS 3.1.0, netdev datapath): without this, TCP segments from a veth/tap arrive
        in OVS with partial checksums and are dropped or forwarded broken (ping works, TCP
        hangs); tunnelled packets carrying offload flags are dropped.
        """
        self.run("ethtool", "-K", intf, "tx", "off")

    # --- lifecycle ----------------------------------------------------------------------------

    def config(self, **params: Any) -> dict[str, Any]:
        """Mininet hook (after links exist): configure the host, then bring up OVS."""
        result = super().config(**params)
        if self.mode == "kernel":
            self.setup_kernel_underlay()
        else:
            self.start_ovs()
        return result

    def setup_kernel_underlay(self) -> None:
        """Kernel mode: no OVS; the underlay address goes straight onto the uplink."""
        self.run("ip", "addr", "flush", "dev", self.uplink)
        self.run("ip", "addr", "add", self.underlay_cidr, "dev", self.uplink)
        self.run("ip", "link", "set", self.uplink, "up")

    def start_ovs(self) -> None:
        """Start the private ovsdb-server and ovs-vswitchd, then build br-phy and br-dove."""
        base = os.environ.get("DOVE_RUNDIR_BASE") or None
        self.rundir = Path(tempfile.mkdtemp(prefix=f"dove-{self.name}-", dir=base))
        d = self.rundir
        # Interactive CLI commands (`hv1 ovs-vsctl show`) then reach the private OVS too.
        self.cmd(f"export OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d}")
        self.run("ovsdb-tool", "create", str(d / "conf.db"), VSWITCH_SCHEMA)
        self.start_ovsdb()
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()
        self.setup_br_phy()
        {
            "dove": self.setup_dove_bridge,
            "normal": self.setup_normal_bridge,
            "learning": self.setup_learning_bridge,
            "ovn": self.setup_ovn_bridge,
        }[self.mode]()

    def start_ovsdb(self) -> None:
        """ovsdb-server on the private database and socket."""
        d = self._dir()
        self.run(
            "ovsdb-server",
            str(d / "conf.db"),
            f"--remote=punix:{self.db_sock}",
            f"--pidfile={d / 'ovsdb-server.pid'}",
            f"--log-file={d / 'ovsdb-server.log'}",
            "--detach",
            "--no-chdir",
        )

    def start_vswitchd(self) -> None:
        """ovs-vswitchd on the private database; returns once it has applied it (--detach)."""
        d = self._dir()
        self.run(
            "ovs-vswitchd",
            f"unix:{self.db_sock}",
            f"--pidfile={d / 'ovs-vswitchd.pid'}",
            f"--log-file={d / 'ovs-vswitchd.log'}",
            "--detach",
            "--no-chdir",
        )

    def setup_br_phy(
        self, bridge: str = BR_PHY, uplink: str | None = None, cidr: str | None = None
    ) -> None:
        """br-phy: standalone NORMAL bridge with the uplink; the underlay IP lives on it.

        A VAN proxy builds a second such bridge (``bridge``, ``uplink``, ``cidr``) for its
        inter-site leg."""
        uplink = uplink or self.uplink
        cidr = cidr or self.underlay_cidr
        self.make_port_only(uplink)
        mac = self.run("cat", f"/sys/class/net/{uplink}/address").strip()
        self.vsctl(
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=netdev",
            "fail_mode=standalone",
            f"other_config:datapath-id={dpid_for(self.index, bridge)}",
            f'other_config:hwaddr="{mac}"',
            "--",
            "add-port",
            bridge,
            uplink,
        )
        self.address_bridge(bridge, cidr)

    def address_bridge(self, bridge: str, cidr: str) -> None:
        """Give a bridge's local port (a tap the kernel sends from: underlay pings, agent
        UDP) its address, and wait until OVS routes tunnels from it."""
        self.ethtool_tx_off(bridge)
        self.run("ip", "addr", "replace", cidr, "dev", bridge)
        self.run("ip", "link", "set", bridge, "up")
        ip = cidr.split("/")[0]
        wait_until(
            lambda: ip in self.appctl("ovs/route/show").split(),
            5.0,
            f"{self.name}: OVS route for {cidr}",
        )

    def _add_br_dove(self, *bridge_opts: str) -> None:
        self.vsctl(
            "add-br",
            BR_DOVE,
            "--",
            "set",
            "Bridge",
            BR_DOVE,
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            f"other_config:datapath-id={self.dpid}",
            *bridge_opts,
        )

    def _secure_bridge_with_local_controller(self, *more: str) -> None:
        """br-dove secure, controlled over OpenFlow 1.3 from this namespace's loopback."""
        self._add_br_dove("fail_mode=secure", "other_config:disable-in-band=true")
        self.vsctl("set-controller", BR_DOVE, f"tcp:127.0.0.1:{AGENT_OFP_PORT}", *more)

    def setup_dove_bridge(self) -> None:
        """br-dove for the agent, with its one flow-based tunnel, ready before VMs plug in.

        The agent makes the same settings again at start (idempotent), as it does on a
        real hypervisor where nothing else prepares the bridge."""
        self._secure_bridge_with_local_controller(
            "--", "add-port", BR_DOVE, TUNNEL_PORT,
            "--", "set", "Interface", TUNNEL_PORT, "type=vxlan", "options:remote_ip=flow",
            "options:key=flow", *self.tunnel_source(),
        )  # fmt: skip

    def tunnel_source(self) -> list[str]:
        """The tunnel port's source option: the underlay address (a proxy has two legs)."""
        return [f"options:local_ip={self.underlay_ip}"]

    def setup_normal_bridge(self) -> None:
        """Baseline br-dove: standalone learning switch; tunnels come from add_mesh_tunnels()."""
        self._add_br_dove("fail_mode=standalone")
        self.ofctl("add-flow", BR_DOVE, "priority=0,actions=NORMAL")

    def setup_learning_bridge(self) -> None:
        """Learning peer: the normal mesh, but secure and driven by a MAC-learning controller.

        NOTE (OVS 3.1.0): the controller starts after the bridge, and connection attempts back
        off exponentially to 8 s; max_backoff=1000 caps it so the build waits about 1 s, not 5.
        """
        self._secure_bridge_with_local_controller(
            "--", "set", "Controller", BR_DOVE, "max_backoff=1000"
        )

    def setup_ovn_bridge(self) -> None:
        """OVN peer: an empty netdev br-int; ovn-controller (started later) fills it."""
        self.vsctl(
            "add-br",
            BR_INT,
            "--",
            "set",
            "Bridge",
            BR_INT,
            "datapath_type=netdev",
            "fail_mode=secure",
            "other_config:disable-in-band=true",
        )

    def add_mesh_tunnels(self, peers: Mapping[str, str], key: int) -> None:
        """Normal mode: one fixed VXLAN port per peer hypervisor (name -> underlay IP).

        The ports are ``protected`` so that NORMAL never floods from one tunnel into another
        (split horizon); without it a broadcast loops around a mesh of three or more.
        """
        args: list[str] = []
        for peer, ip in sorted(peers.items()):
            port = f"vx-{peer}"
            args += [
                "--",
                "add-port",
                BR_DOVE,
                port,
                "protected=true",
                "--",
                "set",
                "Interface",
                port,
                "type=vxlan",
                f"options:remote_ip={ip}",
                f"options:key={key}",
                f"options:local_ip={self.underlay_ip}",
            ]
        if args:
            self.vsctl(*args[1:])

    # --- the agent ----------------------------------------------------------------------------

    def start_agent(
        self,
        config_text: str | None,
        cmd: list[str],
        out: str = "agent.out",
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Write <rundir>/dove.ini (unless ``config_text`` is None) and start the agent here.

        The agent is whatever serves br-dove's controller port: the dove agent, or the
        learning switch of the benchmarks. Output goes to <rundir>/<out>; the private OVS
        environment (plus ``env``) is passed on so the agent's OVSDB/unixctl defaults point at
        this hypervisor's OVS.
        """
        if self.agent is not None and self.agent.poll() is None:
            raise RuntimeError(f"{self.name}: agent already running (pid {self.agent.pid})")
        d = self._dir()
        if config_text is not None:
            (d / "dove.ini").write_text(config_text)
        self._agent_out = open(d / out, "ab")  # noqa: SIM115 - closed in stop_agent
        self.agent = self.popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._agent_out,
            stderr=subprocess.STDOUT,
            env={**self.ovs_env(), **(env or {})},
            cwd=str(d),
        )
        return self.agent

    def stop_agent(self, timeout: float = 5.0) -> None:
        """Stop the agent (SIGTERM, then SIGKILL) and wait for it."""
        if self.agent is not None:
            if self.agent.poll() is None:
                self.agent.terminate()
                try:
                    self.agent.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait(timeout)
            self.agent = None
        if self._agent_out is not None:
            self._agent_out.close()
            self._agent_out = None

    # --- teardown -----------------------------------------------------------------------------

    def stop_ovs(self) -> None:
        """Kill ovn-controller, ovs-vswitchd, then ovsdb-server, by pidfile, and wait for them."""
        stop_daemons(self.rundir, DAEMONS)

    def terminate(self) -> None:
        """Stop agent and OVS, remove the rundir (kept if DOVE_KEEP_RUNDIR=1), end the shell."""
        try:
            self.stop_agent()
            self.stop_ovs()
        finally:
            remove_rundir(self.rundir)
            super().terminate()
