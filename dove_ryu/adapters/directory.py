"""The directory client: this agent's row in the DOVE directory, and the rows it needs.

The directory is a clustered (Raft) OVSDB served by several ovsdb-servers
(`dove-directory.ovsschema`); the ``ovs`` IDL finds the leader among the remotes
of the ``directory`` setting and follows it when it changes.  The client

- registers the agent: one Host row named after it (address, role, site, the
  instances it serves) whose ``heartbeat`` it raises every ``announce_interval``,
  and one Endpoint row per VM here (a host writes only its own rows);
- monitors only the Host rows of hosts that serve an instance this agent serves,
  its own, and those instances' Instance and Endpoint rows (conditional monitoring:
  never the whole directory); a VAN proxy, which stands for its whole site, monitors
  every Host row of its site's directory and no endpoint;
- hands every change to the core (``directory_rows`` of `HostCore` or `ProxyCore`),
  and says when the directory cannot be reached (``directory_unreachable``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import ovs.db.idl
import ovs.poller
import ovs.stream

from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow
from dove_ryu.config import DoveConfig
from dove_ryu.model import check_instance, normalize_mac
from dove_ryu.protocol.messages import ProxyRole

LOG = logging.getLogger("dove_ryu.adapters.directory")

SCHEMA = Path(__file__).with_name("dove-directory.ovsschema")
DATABASE = "DOVE_Directory"
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 250, 1000  # between attempts to reach a member


def host_row(row: Any) -> HostRow:
    """A Host row as the agent needs it (ValueError: it does not parse)."""
    role, site = str(row.role), str(row.site)
    if role == "proxy":
        ProxyRole(site, active=False, priority=0)  # a proxy's row names a valid site
    return HostRow(
        name=row.name,
        underlay_ip=IPv4Address(row.underlay_ip),
        instances=frozenset(int(i) for i in row.instances),
        heartbeat=int(row.heartbeat),
        heartbeat_interval=float(row.heartbeat_interval),
        role=role,
        site=site,
    )


def endpoint_row(row: Any) -> EndpointRow:
    return EndpointRow(
        instance=check_instance(int(row.instance)),
        mac=normalize_mac(row.mac),
        ips=tuple(IPv4Address(i) for i in sorted(row.ips)),
        host=row.host,
        seq=int(row.seq),
    )


class ParsedTable:
    """A table's rows parsed once each: a row is parsed again only when the IDL says
    it changed (``touched``), and the list stays the same object while nothing in the
    table changed, so the core can tell (a heartbeat must not cost a pass over every
    endpoint)."""

    def __init__(self, table: str, parse: Callable[[Any], Any]) -> None:
        self.table = table
        self.parse = parse
        self.parsed: dict[Any, Any] = {}  # row uuid -> parsed row, None if it did not parse
        self.touched: set[Any] = set()
        self.listed: list[Any] = []

    def rows(self, idl: Any) -> list[Any]:
        current = idl.tables[self.table].rows
        if not self.touched and current.keys() == self.parsed.keys():
            return self.listed
        for uuid in [u for u in self.parsed if u not in current]:
            del self.parsed[uuid]
        for uuid, row in current.items():
            if uuid in self.touched or uuid not in self.parsed:
                try:
                    self.parsed[uuid] = self.parse(row)
                except ValueError as e:
                    LOG.warning("directory: %s row %s skipped: %s", self.table, uuid, e)
                    self.parsed[uuid] = None
        self.touched.clear()
        self.listed = [r for r in self.parsed.values() if r is not None]
        return self.listed


class TrackingIdl(ovs.db.idl.Idl):  # type: ignore[misc]
    """An IDL that notes which rows changed, for `ParsedTable`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.parsed = {
            "Host": ParsedTable("Host", host_row),
            "Endpoint": ParsedTable("Endpoint", endpoint_row),
        }
        super().__init__(*args, **kwargs)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        table = self.parsed.get(row._table.name)
        if table is not None:
            table.touched.add(row.uuid)


def view(idl: TrackingIdl) -> DirectoryView:
    hosts, endpoints = idl.parsed["Host"].rows(idl), idl.parsed["Endpoint"].rows(idl)
    resolution = {int(r.id): str(r.resolution) for r in idl.tables["Instance"].rows.values()}
    return DirectoryView(hosts, endpoints, resolution)


def conditions(
    name: str, served: frozenset[int], proxy: bool = False, resolved: frozenset[int] = frozenset()
) -> dict[str, list[Any]]:
    """What to monitor, per table (the clauses of a condition are alternatives): our
    Host row and those of hosts serving an instance we serve; those instances' rows;
    the endpoints of those of them the directory resolves (``resolved``: in ``lookup``
    or ``push``; a ``learn`` instance's are not needed here), and ours.  A proxy: every
    Host row (its site's hosts and proxies: one directory per site), and only its own
    (no) endpoints."""
    if proxy:
        return {"Host": [True], "Instance": [], "Endpoint": [["host", "==", name]]}
    ours = sorted(served)
    return {
        "Host": [["name", "==", name]] + [["instances", "includes", ["set", [i]]] for i in ours],
        "Instance": [["id", "==", i] for i in ours],
        # Ours too, whatever they serve: a restarted agent updates the rows it left.
        "Endpoint": [["host", "==", name]]
        + [["instance", "==", i] for i in sorted(resolved & served)],
    }


class DirectoryClient:
    """Runs the IDL loop in a thread; calls back the shell with what changed.

    ``local()`` tells what this agent serves and its VMs (read under the shell's lock)."""

    def __init__(
        self,
        cfg: DoveConfig,
        local: Callable[[], tuple[frozenset[int], list[EndpointRow]]],
        on_view: Callable[[DirectoryView], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.local = local
        self.on_view = on_view
        self.on_lost = on_lost
        self.interval = cfg.learning.announce_interval
        if cfg.host.directory_private_key:
            # The host's identity for the cluster's RBAC: its certificate's CN is its name.
            ovs.stream.Stream.ssl_set_private_key_file(cfg.host.directory_private_key)
            ovs.stream.Stream.ssl_set_certificate_file(cfg.host.directory_certificate)
            ovs.stream.Stream.ssl_set_ca_cert_file(cfg.host.directory_ca_cert)
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
        for table in ("Host", "Instance", "Endpoint"):
            helper.register_table(table)
        # Any member that is in the cluster will do, as ovn-controller reads the
        # southbound database: monitors spread over the members (the IDL shuffles the
        # remotes), and a follower passes our transactions to the leader.
        self.idl = TrackingIdl(",".join(cfg.host.directory), helper, leader_only=False)
        # NOTE (ovs 4.0.0): the session backs off up to 8 s between attempts; with the
        # whole directory down a while, its return would go unnoticed that long.  The
        # Python Idl has no setter for it (the C IDL takes it from the remote); its
        # session's Reconnect (a public class) has.
        self.idl._session.reconnect.set_backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS)
        self._watch(frozenset(), frozenset())
        self.watching: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
        self.published: list[EndpointRow] = []
        self.heartbeat = 0
        self.next_beat = 0.0
        self.txn: Any = None
        self.connected = False
        self.stopping = threading.Event()
        # poke() wakes the loop at once (a VM came or went) rather than at its next poll.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.thread = threading.Thread(target=self._run, name="directory", daemon=True)
        self.errors = 0
        # What the directory costs this agent, for dovectl counters and the benchmark:
        # monitor updates taken in, transactions sent.
        self.counts = {"directory_updates": 0, "directory_transactions": 0}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.poke()

    def poke(self) -> None:
        """What ``local()`` gives may have changed: publish it now."""
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:  # a wake-up is pending already
            pass

    def _watch(self, served: frozenset[int], resolved: frozenset[int]) -> None:
        proxy = self.cfg.role == "proxy"
        for table, clauses in conditions(self.cfg.name, served, proxy, resolved).items():
            self.idl.cond_change(table, clauses)

    def _resolved(self) -> frozenset[int]:
        """The instances the directory resolves (``lookup``, ``push``), as far as we see."""
        rows = self.idl.tables["Instance"].rows.values()
        return frozenset(int(r.id) for r in rows if str(r.resolution) != "learn")

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
            # The IDL raises change_seqno once per update message that changed a row.
            self.counts["directory_updates"] += self.idl.change_seqno - max(seen_seqno, 0)
            seen_seqno = self.idl.change_seqno
            self.on_view(view(self.idl))
        if connected:
            self._keep_published()
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        poller.timer_wait(max(1, int((self.next_beat - time.monotonic()) * 1000)))
        poller.fd_wait(self.wake_r, ovs.poller.POLLIN)
        poller.timer_wait(200)  # what changes without a poke (a proxy's instances)
        poller.block()
        try:
            os.read(self.wake_r, 512)
        except BlockingIOError:
            pass
        return seen_seqno

    def _connected(self) -> bool:
        """Connected to a member that is in the cluster (the IDL checks ``_Server``)."""
        # NOTE (ovs 4.0.0): the Python Idl has no is_connected() (the C IDL has
        # ovsdb_idl_is_connected); its jsonrpc Session, a public class, says so.
        session = self.idl._session
        return bool(session.is_connected()) and self.idl.state == self.idl.IDL_S_MONITORING

    def _keep_published(self) -> None:
        """Our Host row (what we serve, a heartbeat raised every interval) and one
        Endpoint row per VM here, in one transaction at a time."""
        if self.txn is not None:
            status = self.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                return
            if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                LOG.warning("%s: directory write: %s %s", self.cfg.name, status,
                            self.txn.get_error())  # fmt: skip
                self.next_beat = time.monotonic() + self.interval  # again, a beat later
                self.published = []
            self.txn = None
        served, endpoints = self.local()
        resolved = self._resolved() & served
        if (served, resolved) != self.watching:
            self.watching = (served, resolved)
            self._watch(served, resolved)
        now = time.monotonic()
        ours = self._ours()
        beat_due = now >= self.next_beat or ours is None or frozenset(ours.instances) != served
        if not beat_due and endpoints == self.published:
            return
        self.txn = ovs.db.idl.Transaction(self.idl)
        if beat_due:
            self.next_beat = now + self.interval
            # A restarted agent goes on from its row's heartbeat: others see it move.
            self.heartbeat = max(self.heartbeat, int(ours.heartbeat) if ours else 0) + 1
            self._write_host(ours, served)
        if endpoints != self.published:
            self._write_endpoints(endpoints)
            self.published = endpoints
        self.counts["directory_transactions"] += 1
        self.txn.commit()

    def _write_host(self, ours: Any, served: frozenset[int]) -> None:
        # The key columns are set once, at insert: the cluster's RBAC lets a host
        # update its row's other columns, not what identifies the row.
        row = ours
        if row is None:
            row = self.txn.insert(self.idl.tables["Host"])
            row.name = self.cfg.name
        row.underlay_ip = str(self.cfg.host.underlay_ip)
        row.role = self.cfg.role
        row.site = self.cfg.proxy.site
        row.wan_ip = [str(self.cfg.proxy.wan_ip)] if self.cfg.proxy.wan_ip else []
        row.instances = sorted(served)
        row.heartbeat = self.heartbeat
        row.heartbeat_interval = self.interval

    def _write_endpoints(self, endpoints: list[EndpointRow]) -> None:
        """Our Endpoint rows become ``endpoints``: the others' rows are not touched."""
        mine = {
            (int(r.instance), r.mac): r
            for r in self.idl.tables["Endpoint"].rows.values()
            if r.host == self.cfg.name
        }
        wanted = {(e.instance, e.mac): e for e in endpoints}
        for key, row in mine.items():
            if key not in wanted:
                row.delete()
        for key, e in wanted.items():
            row = mine.get(key)
            if row is None:
                row = self.txn.insert(self.idl.tables["Endpoint"])
                row.instance, row.mac, row.host = e.instance, e.mac, self.cfg.name
            row.ips = [str(i) for i in e.ips]
            row.seq = e.seq

    def _ours(self) -> Any:
        for row in self.idl.tables["Host"].rows.values():
            if row.name == self.cfg.name:
                return row
        return None
