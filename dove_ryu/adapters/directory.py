"""The directory client: this agent's row in the DOVE directory, and the rows it needs.

The directory is a clustered (Raft) OVSDB served by several ovsdb-servers
(`dove-directory.ovsschema`); the ``ovs`` IDL finds the leader among the remotes
of the ``directory`` setting and follows it when it changes.  The client

- registers the agent: one Host row named after it (address, role, site, the
  instances it serves) whose ``heartbeat`` it raises every ``announce_interval``;
- monitors only the Host rows of hosts that serve an instance this agent serves,
  and its own (conditional monitoring: never the whole directory);
- hands every change to the core (`HostCore.directory_rows`), and says when the
  directory cannot be reached (`HostCore.directory_unreachable`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import ovs.db.idl
import ovs.poller

from dove_ryu.agent.directory import HostRow
from dove_ryu.config import DoveConfig

LOG = logging.getLogger("dove_ryu.adapters.directory")

SCHEMA = Path(__file__).with_name("dove-directory.ovsschema")
DATABASE = "DOVE_Directory"


def host_rows(idl: Any) -> list[HostRow]:
    """The Host rows the IDL holds now, those that parse (a bad row is skipped)."""
    rows = []
    for row in idl.tables["Host"].rows.values():
        try:
            rows.append(
                HostRow(
                    name=row.name,
                    underlay_ip=IPv4Address(row.underlay_ip),
                    instances=frozenset(int(i) for i in row.instances),
                    heartbeat=int(row.heartbeat),
                    heartbeat_interval=float(row.heartbeat_interval),
                )
            )
        except ValueError as e:
            LOG.warning("directory: Host row %r skipped: %s", row.name, e)
    return rows


def conditions(name: str, served: frozenset[int]) -> list[list[Any]]:
    """The Host rows to monitor: ours, and those serving any instance we serve (the
    clauses of a monitor condition are alternatives)."""
    return [["name", "==", name]] + [
        ["instances", "includes", ["set", [instance]]] for instance in sorted(served)
    ]


class DirectoryClient:
    """Runs the IDL loop in a thread; calls back the shell with what changed."""

    def __init__(
        self,
        cfg: DoveConfig,
        served: Callable[[], frozenset[int]],
        on_rows: Callable[[list[HostRow]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.served = served
        self.on_rows = on_rows
        self.on_lost = on_lost
        self.interval = cfg.learning.announce_interval
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
        helper.register_table("Host")
        self.idl = ovs.db.idl.Idl(",".join(cfg.host.directory), helper, leader_only=True)
        self.idl.cond_change("Host", conditions(cfg.name, frozenset()))
        self.watching: frozenset[int] = frozenset()
        self.heartbeat = 0
        self.next_beat = 0.0
        self.txn: Any = None
        self.connected = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="directory", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        seen_seqno = -1
        while not self.stopping.is_set():
            try:
                seen_seqno = self._step(seen_seqno)
            except Exception:  # the directory must never take the agent down
                LOG.exception("%s: directory client", self.cfg.name)
                self.errors += 1
                self.stopping.wait(0.5)

    def _step(self, seen_seqno: int) -> int:
        self.idl.run()
        connected = self._connected()
        if connected != self.connected:
            self.connected = connected
            LOG.warning(
                "%s: directory %s", self.cfg.name, "connected" if connected else "unreachable"
            )
            if not connected:
                self.txn = None
                self.on_lost()
        if connected and self.idl.change_seqno != seen_seqno:
            seen_seqno = self.idl.change_seqno
            self.on_rows(host_rows(self.idl))
        if connected:
            self._keep_registered()
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        poller.timer_wait(max(1, int((self.next_beat - time.monotonic()) * 1000)))
        poller.timer_wait(500)  # to notice stop()
        poller.block()
        return seen_seqno

    def _connected(self) -> bool:
        """Connected to a server that serves us (the leader, with ``leader_only``)."""
        # NOTE (ovs 4.0.0): the Python Idl has no is_connected() (the C IDL has
        # ovsdb_idl_is_connected); its jsonrpc Session, a public class, says so.
        session = self.idl._session
        return bool(session.is_connected()) and self.idl.state == self.idl.IDL_S_MONITORING

    def _keep_registered(self) -> None:
        """Our row, with what we serve, and its heartbeat raised every interval."""
        if self.txn is not None:
            status = self.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                return
            if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                LOG.warning("%s: directory write: %s %s", self.cfg.name, status,
                            self.txn.get_error())  # fmt: skip
                self.next_beat = 0.0  # try again at once
            self.txn = None
        served = self.served()
        if served != self.watching:
            self.watching = served
            self.idl.cond_change("Host", conditions(self.cfg.name, served))
        now = time.monotonic()
        if now < self.next_beat and self._ours_is(served):
            return
        self.next_beat = now + self.interval
        ours = self._ours()
        # A restarted agent goes on from its row's heartbeat: others see it move.
        self.heartbeat = max(self.heartbeat, int(ours.heartbeat) if ours else 0) + 1
        self.txn = ovs.db.idl.Transaction(self.idl)
        row = ours or self.txn.insert(self.idl.tables["Host"])
        host = self.cfg.host
        row.name = self.cfg.name
        row.underlay_ip = str(host.underlay_ip)
        row.role = self.cfg.role
        row.site = self.cfg.proxy.site
        row.instances = sorted(served)
        row.heartbeat = self.heartbeat
        row.heartbeat_interval = self.interval
        self.txn.commit()

    def _ours(self) -> Any:
        for row in self.idl.tables["Host"].rows.values():
            if row.name == self.cfg.name:
                return row
        return None

    def _ours_is(self, served: frozenset[int]) -> bool:
        row = self._ours()
        return row is not None and frozenset(row.instances) == served
