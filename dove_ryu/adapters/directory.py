"""The directory client: this agent's row in the DOVE directory, and the rows it needs.

The directory is a clustered (Raft) OVSDB served by several ovsdb-servers
(`dove-directory.ovsschema`); the ``ovs`` IDL finds the leader among the remotes
of the ``directory`` setting and follows it when it changes.  The client

- registers the agent: one Host row named after it (address, role, site, the
  instances it serves, ``alive``), one Host_Liveness row whose ``heartbeat`` it raises
  every ``directory_heartbeat_interval``, and one Endpoint row per VM here (a host
  writes only its own rows);
- monitors only the Host rows of hosts that serve an instance this agent serves or
  routes into (the other instances of its instances' routers), its own, and those
  instances' Instance rows and, where the directory resolves them, Endpoint rows
  (conditional monitoring: never the whole directory); a VAN proxy, which stands for
  its whole site, monitors every Host row of its site's directory and no endpoint.
  Of Host_Liveness it monitors its own row only (to update it), so no agent is sent
  another's heartbeat: each would be a monitor update to every host sharing an
  instance with the sender;
- hands every change to the core (``directory_rows`` of `HostCore` or `ProxyCore`),
  and says when the directory cannot be reached (``directory_unreachable``).

`Reaper` (``dovectl directory reap``) runs beside the cluster: it alone monitors
every Host_Liveness row, and marks dead (``alive = false``) the Host row of a host
whose heartbeat stood still (`dove_ryu.agent.directory.Liveness`).
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
import ovs.stream

from dove_ryu.adapters.wakeup import WakePipe
from dove_ryu.agent.directory import (
    DirectoryView,
    EndpointRow,
    HostRow,
    Liveness,
    LivenessRow,
    proxy_claim,
)
from dove_ryu.config import DoveConfig
from dove_ryu.model import check_instance, endpoint_mac
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
        alive=bool(row.alive),
        role=role,
        site=site,
        claim=int(row.claim),
    )


def host_rows(idl: Any) -> list[HostRow]:
    """The Host rows the IDL holds now, those that parse (a bad row is skipped)."""
    return ParsedTable("Host", host_row).rows(idl)


def liveness_rows(idl: Any) -> list[LivenessRow]:
    return [
        LivenessRow(str(r.name), int(r.heartbeat), float(r.heartbeat_interval))
        for r in idl.tables["Host_Liveness"].rows.values()
    ]


def endpoint_row(row: Any) -> EndpointRow:
    return EndpointRow(
        instance=check_instance(int(row.instance)),
        mac=endpoint_mac(row.mac),
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
    """An IDL that notes which rows changed, for `ParsedTable`, and counts the changes
    to our own Host_Liveness row (``own_beats``): our heartbeat coming back is no
    change to hand the core, nor to count.

    NOTE (ovs 4.0.0): the Python IDL's way for a column a client writes but does not
    read, ``column.alert = False``, holds for ``update`` (monitor v1) only; a
    modification in ``update2``/``update3`` (monitor_cond, which the client uses)
    raises ``change_seqno`` whatever the column.  ``notify``, which the IDL calls once
    per changed row as it raises ``change_seqno``, is its hook for subclasses."""

    own_beats = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.parsed = {
            "Host": ParsedTable("Host", host_row),
            "Endpoint": ParsedTable("Endpoint", endpoint_row),
        }
        super().__init__(*args, **kwargs)

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        # NOTE (ovs 4.0.0): a Row names its table only as ``_table``; notify() gives
        # nothing else to tell the tables apart.
        if row._table.name == "Host_Liveness":
            self.own_beats += 1
        table = self.parsed.get(row._table.name)
        if table is not None:
            table.touched.add(row.uuid)


def view(idl: TrackingIdl) -> DirectoryView:
    hosts, endpoints = idl.parsed["Host"].rows(idl), idl.parsed["Endpoint"].rows(idl)
    resolution = {int(r.id): str(r.resolution) for r in idl.tables["Instance"].rows.values()}
    return DirectoryView(hosts, endpoints, resolution)


def conditions(
    name: str,
    served: frozenset[int],
    proxy: bool = False,
    resolved: frozenset[int] = frozenset(),
    routed: frozenset[int] = frozenset(),
) -> dict[str, list[Any]]:
    """What to monitor, per table (the clauses of a condition are alternatives): our
    Host row and those of hosts serving an instance we serve or route into
    (``routed``: the other instances of the routers of those we serve, whose members
    send us routed packets and take ours, docs/routing.md); those instances' rows;
    the endpoints of those of them the directory resolves (``resolved``: in ``lookup``
    or ``push``; a ``learn`` instance's are not needed here), and ours.  A proxy: every
    Host row (its site's hosts and proxies: one directory per site), and only its own
    (no) endpoints."""
    own = [["name", "==", name]]
    if proxy:
        return {
            "Host": [True],
            "Host_Liveness": own,
            "Instance": [],
            "Endpoint": [["host", "==", name]],
        }
    watched = served | routed
    ours = sorted(watched)
    return {
        "Host": own + [["instances", "includes", ["set", [i]]] for i in ours],
        "Host_Liveness": own,  # only ours, to raise it: nobody else's heartbeat
        "Instance": [["id", "==", i] for i in ours],
        # Ours too, whatever they serve: a restarted agent updates the rows it left.
        "Endpoint": [["host", "==", name]]
        + [["instance", "==", i] for i in sorted(resolved & watched)],
    }


def _differs(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):  # a set column: the IDL gives a list, in its own order
        return sorted(current) != wanted
    return bool(current != wanted)


class DirectoryClient:
    """Runs the IDL loop in a thread; calls back the shell with what changed.

    ``local()`` tells what this agent serves and its VMs (read under the shell's lock);
    ``routed()`` the instances it routes into without serving them (the other subnets
    of its routers), whose hosts and endpoints it monitors but does not register."""

    def __init__(
        self,
        cfg: DoveConfig,
        local: Callable[[], tuple[frozenset[int], list[EndpointRow]]],
        on_view: Callable[[DirectoryView], None],
        on_lost: Callable[[], None],
        routed: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.cfg = cfg
        self.local = local
        self.routed = routed
        self.on_view = on_view
        self.on_lost = on_lost
        self.interval = cfg.heartbeat_interval
        if cfg.host.directory_private_key:
            # The host's identity for the cluster's RBAC: its certificate's CN is its name.
            ovs.stream.Stream.ssl_set_private_key_file(cfg.host.directory_private_key)
            ovs.stream.Stream.ssl_set_certificate_file(cfg.host.directory_certificate)
            ovs.stream.Stream.ssl_set_ca_cert_file(cfg.host.directory_ca_cert)
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
        for table in ("Host", "Host_Liveness", "Instance", "Endpoint"):
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
        self.was_settled = False
        self._watch(frozenset(), frozenset(), frozenset())
        none: frozenset[int] = frozenset()
        self.watching: tuple[frozenset[int], ...] = (none, none, none)
        self.published: list[EndpointRow] = []
        self.heartbeat = 0
        self.next_beat = 0.0
        self.txn: Any = None
        self.connected = False
        self.stopping = threading.Event()
        # poke() wakes the loop at once (a VM came or went) rather than at its next poll.
        self.wake = WakePipe()
        self.thread = threading.Thread(target=self._run, name="directory", daemon=True)
        self.errors = 0
        # What the directory costs this agent, for dovectl counters and the benchmark:
        # rows its monitors brought (each changed row once), transactions sent.
        self.counts = {"directory_updates": 0, "directory_transactions": 0}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.poke()

    def poke(self) -> None:
        """What ``local()`` gives may have changed: publish it now."""
        self.wake.poke()

    def _watch(
        self, served: frozenset[int], resolved: frozenset[int], routed: frozenset[int]
    ) -> None:
        proxy = self.cfg.role == "proxy"
        wanted = conditions(self.cfg.name, served, proxy, resolved, routed)
        for table, clauses in wanted.items():
            self.idl.cond_change(table, clauses)

    @property
    def settled(self) -> bool:
        """The rows monitored are those of the conditions last asked (the server acked
        them): a view now is complete for what ``watching`` says."""
        # NOTE (ovs 4.0.0): the Python IDL's cond_seqno is not raised by the first
        # monitor reply (the C IDL's is), so the seqno cond_change returns may never
        # come; each table's condition state (new, requested, acked) says it directly.
        return all(
            t.condition_state.new is None and t.condition_state.requested is None
            for t in self.idl.tables.values()
        )

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
        seqno = self.idl.change_seqno - self.idl.own_beats
        # A view is also given when the server acks our conditions (`settled`), which
        # may come after the rows they brought.
        settled = self.settled
        if connected and (seqno != seen_seqno or settled != self.was_settled):
            # The IDL raises change_seqno once per row an update changed.
            self.counts["directory_updates"] += seqno - max(seen_seqno, 0)
            seen_seqno = seqno
            self.was_settled = settled
            self.on_view(view(self.idl))
        if connected:
            self._keep_published()
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        poller.timer_wait(max(1, int((self.next_beat - time.monotonic()) * 1000)))
        self.wake.wait(poller)
        poller.timer_wait(200)  # what changes without a poke (a proxy's instances)
        poller.block()
        self.wake.drain()
        return seen_seqno

    def _connected(self) -> bool:
        """Connected to a member that is in the cluster (the IDL checks ``_Server``)."""
        # NOTE (ovs 4.0.0): the Python Idl has no is_connected() (the C IDL has
        # ovsdb_idl_is_connected); its jsonrpc Session, a public class, says so.
        session = self.idl._session
        return bool(session.is_connected()) and self.idl.state == self.idl.IDL_S_MONITORING

    def _keep_published(self) -> None:
        """Our Host row (what we serve, alive), our Host_Liveness row (a heartbeat raised
        every interval) and one Endpoint row per VM here, in one transaction at a time."""
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
        routed = self.routed() - served
        resolved = self._resolved() & (served | routed)
        if self.cfg.role == "vtep-controller":
            resolved = served  # a switch is told every endpoint, whatever the resolution
        if (served, resolved, routed) != self.watching:
            self.watching = (served, resolved, routed)
            self._watch(served, resolved, routed)
        now = time.monotonic()
        ours, beating = self._own("Host"), self._own("Host_Liveness")
        wanted = self._host_wanted(served)
        host_due = ours is None or any(_differs(getattr(ours, k), v) for k, v in wanted.items())
        # A row written (marked alive again, say) comes with a beat: the reapers then
        # give it a fresh lifetime.
        beat_due = now >= self.next_beat or beating is None or host_due
        if not beat_due and endpoints == self.published:
            return
        self.txn = ovs.db.idl.Transaction(self.idl)
        if host_due:
            self._write_host(ours, wanted)
        if beat_due:
            self.next_beat = now + self.interval
            # A restarted agent goes on from its row's heartbeat: the reapers see it move.
            self.heartbeat = max(self.heartbeat, int(beating.heartbeat) if beating else 0) + 1
            self._beat(beating)
        if endpoints != self.published:
            self._write_endpoints(endpoints)
            self.published = endpoints
        self.counts["directory_transactions"] += 1
        self.txn.commit()

    def _host_wanted(self, served: frozenset[int]) -> dict[str, Any]:
        """Our Host row's columns as they should be (as the IDL reads them back)."""
        proxy = self.cfg.proxy
        claim = 0
        if self.cfg.role == "proxy":
            claim = proxy_claim(self.cfg.name, proxy.site, served, host_rows(self.idl))
        return {
            "underlay_ip": str(self.cfg.host.underlay_ip),
            "role": "vtep" if self.cfg.role == "vtep-controller" else self.cfg.role,
            "site": proxy.site,
            "wan_ip": [str(proxy.wan_ip)] if proxy.wan_ip else [],
            "instances": sorted(served),
            "alive": True,  # a host that comes back says so itself
            "claim": claim,
        }

    def _write_host(self, ours: Any, wanted: dict[str, Any]) -> None:
        # The key columns are set once, at insert: the cluster's RBAC lets a host
        # update its row's other columns, not what identifies the row.
        row = ours
        if row is None:
            row = self.txn.insert(self.idl.tables["Host"])
            row.name = self.cfg.name
        for column, value in wanted.items():
            setattr(row, column, value)

    def _beat(self, row: Any) -> None:
        if row is None:
            row = self.txn.insert(self.idl.tables["Host_Liveness"])
            row.name = self.cfg.name
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

    def _own(self, table: str) -> Any:
        """Our row of ``table`` (Host or Host_Liveness), None before it is made."""
        for row in self.idl.tables[table].rows.values():
            if row.name == self.cfg.name:
                return row
        return None


JUDGE_EVERY = 0.1  # seconds between a reaper's scans for stopped heartbeats


class _ReaperIdl(ovs.db.idl.Idl):  # type: ignore[misc]
    """The IDL, keeping the Host_Liveness rows changed since the reaper last looked
    (``notify``, the IDL's hook for subclasses; None: the row went)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed: dict[str, LivenessRow | None] = {}

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if row._table.name != "Host_Liveness":
            return
        if event == ovs.db.idl.ROW_DELETE:
            self.changed[str(row.name)] = None
        else:
            beat = LivenessRow(str(row.name), int(row.heartbeat), float(row.heartbeat_interval))
            self.changed[beat.name] = beat


class Reaper:
    """Judges the hosts' heartbeats beside the cluster and marks the stopped ones dead.

    It monitors every Host_Liveness row and the Host rows' names and ``alive``; when a
    host's heartbeat stood still for 3.5 of its intervals on this reaper's clock
    (`Liveness`), it sets its Host row's ``alive`` to false, in a transaction that
    also checks the heartbeat is still the one judged (a host that beat meanwhile is
    not marked).  Only the host marks its row alive again.  Reapers are idempotent:
    one runs beside each member, each marking what it judged; a Host row with no
    Host_Liveness row (never written by an agent of this schema) is not judged.
    ``on_dead(name)`` is called for each host it marked."""

    def __init__(self, db: str, on_dead: Callable[[str], None] | None = None) -> None:
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
        helper.register_columns("Host", ["name", "alive"])
        helper.register_table("Host_Liveness")
        self.idl = _ReaperIdl(db, helper, leader_only=False)
        self.idl._session.reconnect.set_backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS)
        self.judge = Liveness()
        self.next_judgement = 0.0
        self.on_dead = on_dead or (lambda name: None)
        self.txn: Any = None
        self.marking: list[str] = []
        self.connected = False
        self.stopping = threading.Event()

    def run(self) -> None:
        """Until `stop`."""
        while not self.stopping.is_set():
            try:
                self.step(time.monotonic())
            except Exception:  # a reaper stays up: the next step judges again
                LOG.exception("reaper")
                self.stopping.wait(0.5)

    def stop(self) -> None:
        self.stopping.set()

    def step(self, now: float) -> None:
        self.idl.run()
        session = self.idl._session  # NOTE (ovs 4.0.0): see DirectoryClient._connected
        connected = bool(session.is_connected()) and self.idl.state == self.idl.IDL_S_MONITORING
        if connected != self.connected:
            self.connected = connected
            LOG.warning("reaper: directory %s", "connected" if connected else "unreachable")
        changed, self.idl.changed = self.idl.changed, {}
        if connected and not self.judge.reachable:  # (again): every row, fresh lifetimes
            self.judge.rows(now, liveness_rows(self.idl))
        elif connected:  # only the rows that changed: a heartbeat costs O(1)
            for name, row in changed.items():
                if row is None:
                    self.judge.forget(name)
                else:
                    self.judge.beat(now, row)
        else:
            self.judge.unreachable()
            self.txn = None
        if connected and (self.txn is not None or now >= self.next_judgement):
            # Judged at most every JUDGE_EVERY: a scan of every row, late by that at most.
            self.next_judgement = now + JUDGE_EVERY
            self._mark(now)
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        wait = JUDGE_EVERY if self.txn is None else 0.05
        poller.timer_wait(max(1, int(wait * 1000)))
        poller.block()

    def _mark(self, now: float) -> None:
        if self.txn is not None:
            status = self.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                return
            if status == ovs.db.idl.Transaction.SUCCESS:
                for name in self.marking:
                    LOG.warning("reaper: %s marked dead: its heartbeat stood still", name)
                    self.on_dead(name)
            elif status != ovs.db.idl.Transaction.UNCHANGED:  # a host beat meanwhile: again
                LOG.info("reaper: marking %s: %s", self.marking, status)
            self.txn = None
        dead = self.judge.dead(now)
        if not dead:
            return
        beats = {r.name: r for r in self.idl.tables["Host_Liveness"].rows.values()}
        rows = [
            r for r in self.idl.tables["Host"].rows.values()
            if r.alive and r.name in dead and r.name in beats
        ]  # fmt: skip
        if not rows:
            return
        self.txn = ovs.db.idl.Transaction(self.idl)
        self.marking = sorted(r.name for r in rows)
        for row in rows:
            beats[row.name].verify("heartbeat")  # still the heartbeat judged stopped
            row.alive = False
        self.txn.commit()
