"""The emulated directory (issue 11): a 3-member clustered OVSDB (Raft) on the underlay.

Each ``DirectoryMember`` is a Mininet host, like ``probe`` a plain namespace with one
leg on the underlay bridge, running one ovsdb-server from a private run directory
(``dove-dir<N>-*``): clients on TCP 6641 and Raft on TCP 6643 of its underlay address,
plus a unix socket and control socket in the rundir.  The first member's database file
is made with ``ovsdb-tool create-cluster``, the others' with ``join-cluster``; the
command lines come from dove_ryu.ctl.dircluster, the ones ``dovectl directory`` prints
for an operator.  ``DirectoryCluster`` starts the three, waits for a leader by polling
``cluster/status`` (never a fixed sleep), kills a member as a crash would and
restarts it.  Beside each member runs a reaper (``dovectl directory reap`` on the
member's unix socket, as an operator runs one), which judges the hosts' heartbeats
and marks the stopped ones dead; a member's kill leaves its reaper running, as a
crash of ovsdb-server alone would.  Nothing runs in the root namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mininet.node import Host

from dove_ryu.ctl.dircluster import (
    ClusterStatus,
    DirectoryError,
    Pki,
    ServerFiles,
    agent_remotes,
    cluster_remotes,
    cluster_status_argv,
    create_argv,
    join_argv,
    parse_cluster_status,
    server_argv,
)
from mininet_topos.hypervisor import (
    OvsCommandError,
    pid_alive,
    read_pidfile,
    reap_rundirs,
    remove_rundir,
    stop_daemons,
    wait_until,
)

MEMBERS = 3
RUNDIR_PATTERNS = ("dove-dir*-*", "dove-s*dir*-*")
REAPER = "dove-reaper"  # its pidfile, <rundir>/dove-reaper.pid, and log, dove-reaper.log
DAEMONS = (REAPER, "ovsdb-server")


def member_name(index: int) -> str:
    return f"dir{index}"


class ClusterPki:
    """One certificate authority for the emulation's directory (``ovs-pki``): a key and
    certificate per member and per agent, the CN each one's name (``-u``), which is
    what the cluster's RBAC compares a host's rows with."""

    def __init__(self) -> None:
        base = os.environ.get("DOVE_RUNDIR_BASE") or None
        self.dir = Path(tempfile.mkdtemp(prefix="dove-dirpki-", dir=base))
        self._tool("init", "--force")

    def _tool(self, *args: str) -> None:
        argv = ["ovs-pki", "-u", f"--dir={self.dir / 'pki'}", *args]
        proc = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    @property
    def ca_cert(self) -> Path:
        return self.dir / "pki" / "switchca" / "cacert.pem"

    def issue(self, name: str) -> Pki:
        """``name``'s key and certificate (made once)."""
        files = Pki(self.dir / f"{name}-privkey.pem", self.dir / f"{name}-cert.pem", self.ca_cert)
        if not files.certificate.exists():
            self._tool("req+sign", name, "switch")
        return files

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class DirectoryMember(Host):
    """One member: its underlay address (``cidr``) and, once started, its ovsdb-server.

    ``config()`` (Mininet, once the link exists) gives the address and makes the rundir;
    the database file is made by ``create_db`` or ``join_db``, the server started by
    ``start_server``; ``terminate()`` stops it and removes the rundir (kept if
    DOVE_KEEP_RUNDIR=1).
    """

    def __init__(
        self, name: str, index: int = 1, cidr: str = "10.99.0.241/24", **params: Any
    ) -> None:
        self.index = index
        self.pki: Pki | None = None  # given by its cluster: agents then speak SSL to it
        self.cidr = cidr
        self.address = cidr.split("/")[0]
        self.rundir: Path | None = None
        super().__init__(name, **params)

    # --- paths and commands -------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.rundir is None:
            raise RuntimeError(f"{self.name}: directory member not configured")
        return self.rundir

    @property
    def files(self) -> ServerFiles:
        return ServerFiles(self._dir())

    @property
    def db_file(self) -> Path:
        return self._dir() / "directory.db"

    @property
    def ctl(self) -> str:
        """The ovsdb-server control socket (``ovs-appctl -t`` it, ``dovectl --ctl`` it)."""
        return str(self.files.ctl)

    @property
    def sock(self) -> str:
        """The local unix socket (``unix:`` prefix not included)."""
        return str(self.files.sock)

    def env(self) -> dict[str, str]:
        d = str(self._dir())
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}

    def run(self, *args: str, check: bool = True) -> str:
        """Run argv in this namespace with the member's OVS environment; return stdout."""
        cmd = [str(a) for a in args]
        out, err, rc = self.pexec(cmd, env=self.env())
        if check and rc != 0:
            raise OvsCommandError(self.name, cmd, rc, err or out)
        return out

    # --- lifecycle ----------------------------------------------------------------------------

    def config(self, **params: Any) -> dict[str, Any]:
        """Mininet hook: a fresh rundir, and the underlay address on the one leg."""
        result = super().config(**params)
        base = os.environ.get("DOVE_RUNDIR_BASE") or None
        self.rundir = Path(tempfile.mkdtemp(prefix=f"dove-{self.name}-", dir=base))
        d = self.rundir
        self.cmd(f"export OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d}")  # the Mininet CLI
        intf = f"{self.name}-eth0"
        self.run("ip", "addr", "flush", "dev", intf)
        self.run("ip", "addr", "add", self.cidr, "dev", intf)
        # NOTE (OVS 3.1.0, netdev datapath): TCP from a kernel veth into a userspace OVS
        # bridge (the hypervisors' br-phy) needs tx checksum offload off; see
        # Hypervisor.ethtool_tx_off.
        self.run("ethtool", "-K", intf, "tx", "off")
        self.run("ip", "link", "set", intf, "up")
        return result

    def create_db(self) -> None:
        """The first member: a new one-server cluster."""
        self.run(*create_argv(str(self.db_file), self.address))

    def join_db(self, members: Sequence[str]) -> None:
        """Another member: a file that joins through ``members`` (addresses) when served."""
        self.run(*join_argv(str(self.db_file), self.address, members))

    @property
    def server_pid(self) -> int | None:
        pid = read_pidfile(self.files.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def start_server(self) -> None:
        """ovsdb-server on the database file (returns once it has detached, i.e. listens)."""
        if self.server_pid is not None:
            raise RuntimeError(f"{self.name}: ovsdb-server already running (pid {self.server_pid})")
        self.run(*server_argv(str(self.db_file), self.address, self.files, self.pki))

    def kill(self) -> None:
        """As a crash: SIGKILL, no goodbye to the cluster; the database file stays."""
        pid = self.server_pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5.0, f"{self.name}: ovsdb-server {pid} to die")
        # A restarted server makes its sockets again; stale ones would only confuse a client.
        for stale in (self.files.sock, self.files.ctl, self.files.pidfile):
            stale.unlink(missing_ok=True)

    @property
    def reaper_pid(self) -> int | None:
        pid = read_pidfile(self._dir() / f"{REAPER}.pid")
        return pid if pid is not None and pid_alive(pid) else None

    def start_reaper(self) -> None:
        """``dovectl directory reap`` on this member's socket, in its namespace."""
        if self.reaper_pid is not None:
            raise RuntimeError(f"{self.name}: reaper already running (pid {self.reaper_pid})")
        dovectl = str(Path(sys.executable).parent / "dovectl")
        with open(self._dir() / f"{REAPER}.log", "ab") as log:
            proc = self.popen(
                [dovectl, "directory", "reap", "--db", f"unix:{self.sock}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        (self._dir() / f"{REAPER}.pid").write_text(f"{proc.pid}\n")

    def kill_reaper(self) -> None:
        """As a crash: SIGKILL."""
        pid = self.reaper_pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5.0, f"{self.name}: reaper {pid} to die")

    def cluster_status(self) -> ClusterStatus | None:
        """This member's own view (cluster/status), None while its server does not answer."""
        if self.server_pid is None:
            return None
        out, _err, rc = self.pexec(cluster_status_argv(self.ctl), env=self.env())
        if rc != 0:
            return None
        try:
            return parse_cluster_status(out)
        except DirectoryError:
            return None

    def stop(self) -> None:
        stop_daemons(self.rundir, DAEMONS)

    def terminate(self) -> None:
        try:
            self.stop()
        finally:
            remove_rundir(self.rundir)
            super().terminate()


def cleanup_stale(base: str | None = None) -> list[Path]:
    """Kill the reapers and ovsdb-servers a crashed run left in the members' rundirs
    (dove-dir*, and the two-site emulation's dove-s<N>dir*); remove the rundirs."""
    return [d for pattern in RUNDIR_PATTERNS for d in reap_rundirs(pattern, DAEMONS, base)]


class DirectoryCluster:
    """The members of one directory, started together; who leads, kill, restart."""

    def __init__(self, members: Iterable[DirectoryMember], pki: ClusterPki | None = None) -> None:
        self.members = list(members)
        if not self.members:
            raise ValueError("a directory cluster needs at least one member")
        self.pki = pki
        for m in self.members:
            m.pki = pki.issue(m.name) if pki is not None else None

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members]

    @property
    def remotes(self) -> str:
        """What agents get as ``directory =`` (tcp:A:6641,tcp:B:6641,tcp:C:6641)."""
        return cluster_remotes(self.addresses)

    def member(self, name: str) -> DirectoryMember:
        return next(m for m in self.members if m.name == name)

    def start(self, timeout: float = 30.0) -> DirectoryMember:
        """Create on the first member, join the others through it, serve all; return the
        leader once every member is in the cluster and agrees on it."""
        first, *others = self.members
        first.create_db()
        first.start_server()
        for m in others:
            m.join_db([first.address])
            m.start_server()
        leader = self.wait_leader(timeout)
        if self.pki is not None:
            # The agents' SSL remote and their RBAC role, as an operator makes them.
            dovectl = str(Path(sys.executable).parent / "dovectl")
            leader.run(dovectl, "directory", "rbac", "--db", f"unix:{leader.sock}")
        for m in self.members:
            m.start_reaper()
        return leader

    @property
    def agent_remotes(self) -> str:
        """What agents get as ``directory =``: SSL when the cluster has a PKI."""
        return agent_remotes(self.addresses) if self.pki is not None else self.remotes

    def statuses(self) -> dict[str, ClusterStatus | None]:
        return {m.name: m.cluster_status() for m in self.members}

    def describe(self) -> str:
        """One line per member: for failure messages."""
        lines = []
        for name, s in self.statuses().items():
            if s is None:
                lines.append(f"{name}: not running or not answering")
            else:
                lines.append(f"{name}: {s.status}, {s.role}, term {s.term}, leader {s.leader}")
        return "\n".join(lines)

    def _agreed_leader(self) -> DirectoryMember | None:
        """The leader, once every running member is a cluster member that names it."""
        running = [(m, m.cluster_status()) for m in self.members if m.server_pid is not None]
        if not running or any(s is None or s.status != "cluster member" for _, s in running):
            return None
        leaders = [m for m, s in running if s is not None and s.role == "leader"]
        if len(leaders) != 1:
            return None
        leader_sid = next(s.server_id for m, s in running if m is leaders[0] and s is not None)
        if all(s is not None and s.leader == leader_sid for _, s in running):
            return leaders[0]
        return None

    def wait_leader(self, timeout: float = 10.0) -> DirectoryMember:
        """Until the running members agree on one leader; that member."""
        try:
            result: DirectoryMember = wait_until(
                self._agreed_leader, timeout, "a directory leader", step=0.05
            )
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.describe()}") from None
        return result

    def leader(self) -> DirectoryMember | None:
        return self._agreed_leader()

    def kill(self, member: DirectoryMember) -> None:
        member.kill()

    def restart(self, member: DirectoryMember, timeout: float = 15.0) -> DirectoryMember:
        """Serve a killed member's file again; return the leader once it is back in."""
        member.start_server()
        return self.wait_leader(timeout)
