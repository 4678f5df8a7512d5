"""A switch's ``hardware_vtep`` OVSDB, through the ``ovs`` Python IDL.

`HwVtepClient` runs the IDL in a thread: it monitors the tables the VTEP controller
needs (its Physical_Switch and ports, logical switches, locators, remote and local MACs),
hands each change to the shell as a `SwitchState` (`read_state`), and writes the
controller's `Changes` (`write`) in one transaction at a time.  The IDL reconnects by
itself; a row that does not parse is logged (once), counted and skipped, never a crash.

NOTE: the schema is asked of the switch's server (``get_schema``), as ovsdbapp does,
rather than read from a file: the controller then needs nothing of the switch's
software on its machine, and follows the version the switch runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from dove_ryu.adapters.wakeup import WakePipe
from dove_ryu.agent.vtep_controller import (
    REPLICATION,
    UNKNOWN_DST,
    Changes,
    MacKey,
    RemoteMac,
    SwitchState,
)

LOG = logging.getLogger("dove_ryu.adapters.hw_vtep")

DATABASE = "hardware_vtep"
TABLES = (
    "Physical_Switch",
    "Physical_Port",
    "Logical_Switch",
    "Physical_Locator",
    "Physical_Locator_Set",
    "Ucast_Macs_Remote",
    "Mcast_Macs_Remote",
    "Ucast_Macs_Local",
)
ENCAPSULATION = "vxlan_over_ipv4"
NO_LOCATOR = IPv4Address(0)  # a remote MAC's locator that does not parse
RECONNECT_MIN_MS, RECONNECT_MAX_MS = 250, 2000
SCHEMA_TIMEOUT_MS = 2000


class SchemaUnavailable(RuntimeError):
    """The switch's server could not be asked for its hardware_vtep schema."""


def fetch_schema(remote: str, timeout_ms: int = SCHEMA_TIMEOUT_MS) -> Any:
    """The hardware_vtep schema (JSON) the switch's server has."""
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), timeout_ms)
    if error:
        raise SchemaUnavailable(f"{remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [DATABASE])
        error, reply = rpc.transact_block(request)
        if error:
            raise SchemaUnavailable(f"{remote}: {os.strerror(error)}")
        if reply.error:
            raise SchemaUnavailable(f"{remote}: no {DATABASE} database: {reply.error}")
        return reply.result
    finally:
        rpc.close()


def _locator_ip(row: Any) -> IPv4Address:
    return IPv4Address(str(row.dst_ip))


class Parser:
    """Turns the IDL's rows into a `SwitchState`; a bad row is skipped, counted and logged
    once."""

    def __init__(self, switch: str) -> None:
        self.switch = switch
        self._seen_bad: set[Any] = set()

    @property
    def malformed(self) -> int:
        """How many distinct rows did not parse (each is logged once)."""
        return len(self._seen_bad)

    def _bad(self, table: str, row: Any, e: Exception) -> None:
        if row.uuid not in self._seen_bad:
            self._seen_bad.add(row.uuid)
            LOG.warning("hardware_vtep: %s row %s skipped: %s", table, row.uuid, e)

    def _rows(self, idl: Any, table: str) -> list[Any]:
        return list(idl.tables[table].rows.values())

    def state(self, idl: Any) -> SwitchState:
        ps = next((r for r in self._rows(idl, "Physical_Switch") if r.name == self.switch), None)
        if ps is None:
            return SwitchState()
        tunnel_ips: list[IPv4Address] = []
        for text in sorted(ps.tunnel_ips):
            try:
                tunnel_ips.append(IPv4Address(text))
            except ValueError as e:
                self._bad("Physical_Switch", ps, e)
        switches: dict[str, int | None] = {}
        replication: dict[str, str] = {}
        with_mode = "replication_mode" in idl.tables["Logical_Switch"].columns
        for row in self._rows(idl, "Logical_Switch"):
            key = row.tunnel_key
            switches[str(row.name)] = int(key[0]) if key else None
            if with_mode:  # an older schema has none (and replicates at a service node)
                mode = row.replication_mode
                replication[str(row.name)] = str(mode[0]) if mode else "service_node"
        ports: set[str] = set()
        bindings: dict[str, dict[int, str]] = {}
        for row in ps.ports:
            try:
                ports.add(str(row.name))
                bindings[str(row.name)] = {
                    int(v): str(ls.name) for v, ls in row.vlan_bindings.items()
                }
            except (AttributeError, TypeError, ValueError) as e:
                self._bad("Physical_Port", row, e)
        ucast_remote: dict[MacKey, RemoteMac] = {}
        for row in self._rows(idl, "Ucast_Macs_Remote"):
            try:
                key = (str(row.logical_switch.name), str(row.MAC).lower())
            except (AttributeError, TypeError, ValueError) as e:
                self._bad("Ucast_Macs_Remote", row, e)
                continue
            try:
                ucast_remote[key] = RemoteMac(str(row.ipaddr), _locator_ip(row.locator))
            except (AttributeError, TypeError, ValueError) as e:
                # Kept with no locator (0.0.0.0): in one of our logical switches, the
                # controller then rewrites it or removes it.
                self._bad("Ucast_Macs_Remote", row, e)
                ucast_remote[key] = RemoteMac(str(row.ipaddr), NO_LOCATOR)
        mcast_remote: dict[MacKey, frozenset[IPv4Address]] = {}
        for row in self._rows(idl, "Mcast_Macs_Remote"):
            try:
                key = (str(row.logical_switch.name), str(row.MAC).lower())
                ips = frozenset(_locator_ip(loc) for loc in row.locator_set.locators)
                mcast_remote[key] = ips
            except (AttributeError, TypeError, ValueError) as e:
                self._bad("Mcast_Macs_Remote", row, e)
        ucast_local: dict[MacKey, str] = {}
        for row in self._rows(idl, "Ucast_Macs_Local"):
            try:
                key = (str(row.logical_switch.name), str(row.MAC).lower())
                ucast_local[key] = str(row.ipaddr)
            except (AttributeError, TypeError, ValueError) as e:
                self._bad("Ucast_Macs_Local", row, e)
        return SwitchState(
            tunnel_ips=tuple(tunnel_ips),
            ports=frozenset(ports),
            switches=switches,
            replication=replication,
            bindings=bindings,
            ucast_remote=ucast_remote,
            mcast_remote=mcast_remote,
            ucast_local=ucast_local,
            present=True,
        )


class Writer:
    """Writes `Changes` into one IDL transaction; locators are shared by address (the
    schema indexes them) and made once per transaction."""

    def __init__(self, idl: Any, txn: Any, switch: str) -> None:
        self.idl, self.txn, self.switch = idl, txn, switch
        self.locators: dict[IPv4Address, Any] = {}
        for row in idl.tables["Physical_Locator"].rows.values():
            if str(row.encapsulation_type) == ENCAPSULATION and not row.tunnel_key:
                try:
                    self.locators[IPv4Address(str(row.dst_ip))] = row
                except ValueError:
                    continue
        self.switches = {str(r.name): r for r in idl.tables["Logical_Switch"].rows.values()}
        self.rows = 0

    def locator(self, ip: IPv4Address) -> Any:
        row = self.locators.get(ip)
        if row is None:
            row = self.txn.insert(self.idl.tables["Physical_Locator"])
            row.encapsulation_type = ENCAPSULATION
            row.dst_ip = str(ip)
            self.locators[ip] = row
            self.rows += 1
        return row

    def apply(self, c: Changes) -> None:
        for name, key in c.switches.items():
            row = self.switches.get(name)
            if row is None:
                row = self.txn.insert(self.idl.tables["Logical_Switch"])
                row.name = name
                self.switches[name] = row
            row.tunnel_key = [key]
            if "replication_mode" in self.idl.tables["Logical_Switch"].columns:
                row.replication_mode = [REPLICATION]
            self.rows += 1
        ps = next(
            r for r in self.idl.tables["Physical_Switch"].rows.values() if r.name == self.switch
        )
        ports = {str(p.name): p for p in ps.ports}
        for port, vlans in c.bindings.items():
            ports[port].vlan_bindings = {v: self.switches[ls] for v, ls in vlans.items()}
            self.rows += 1
        self._ucast(c)
        self._mcast(c)

    def _ucast(self, c: Changes) -> None:
        existing: dict[MacKey, Any] = {}
        for row in self.idl.tables["Ucast_Macs_Remote"].rows.values():
            try:
                existing[(str(row.logical_switch.name), str(row.MAC).lower())] = row
            except AttributeError:
                continue
        for key in c.ucast_delete:
            if key in existing:
                existing[key].delete()
                self.rows += 1
        for (ls, mac), where in c.ucast_set.items():
            row = existing.get((ls, mac))
            if row is None:
                row = self.txn.insert(self.idl.tables["Ucast_Macs_Remote"])
                row.MAC = mac
                row.logical_switch = self.switches[ls]
            row.ipaddr = where.ipaddr
            row.locator = self.locator(where.locator)
            self.rows += 1

    def _mcast(self, c: Changes) -> None:
        existing: dict[str, Any] = {}
        for row in self.idl.tables["Mcast_Macs_Remote"].rows.values():
            try:
                if str(row.MAC) == UNKNOWN_DST:
                    existing[str(row.logical_switch.name)] = row
            except AttributeError:
                continue
        for ls in c.mcast_delete:
            if ls in existing:
                existing[ls].delete()
                self.rows += 1
        for ls, ips in c.mcast_set.items():
            row = existing.get(ls)
            if row is None:
                row = self.txn.insert(self.idl.tables["Mcast_Macs_Remote"])
                row.MAC = UNKNOWN_DST
                row.logical_switch = self.switches[ls]
                row.ipaddr = ""
            locator_set = self.txn.insert(self.idl.tables["Physical_Locator_Set"])
            locator_set.locators = [self.locator(ip) for ip in sorted(ips)]
            row.locator_set = locator_set
            self.rows += 2


class HwVtepClient:
    """The IDL loop in a thread.  ``on_state`` gets each new `SwitchState`; ``changes``
    is asked, after each change and each wake-up, what to write (under the shell's
    lock); ``on_written`` learns how many rows a committed transaction wrote."""

    def __init__(
        self,
        remote: str,
        switch: str,
        on_state: Callable[[SwitchState], None],
        changes: Callable[[], Changes],
        on_written: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.remote, self.switch = remote, switch
        self.on_state, self.changes, self.on_written = on_state, changes, on_written
        self.parser = Parser(switch)
        self.idl: Any = None
        self.txn: Any = None
        self.txn_rows = 0
        self.connected = False
        self.errors = 0
        self.stopping = threading.Event()
        self.wake = WakePipe()
        self.thread = threading.Thread(target=self._run, name="hw-vtep", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.poke()

    def poke(self) -> None:
        """What ``changes()`` gives may have changed (the directory moved): write it now."""
        self.wake.poke()

    def _run(self) -> None:
        seen = -1
        while not self.stopping.is_set():
            try:
                if self.idl is None:
                    self._open()
                    continue
                seen = self._step(seen)
            except SchemaUnavailable as e:
                LOG.warning("%s: hardware_vtep: %s (retrying)", self.switch, e)
                self.stopping.wait(RECONNECT_MAX_MS / 1000)
            except Exception:  # the switch must never take the controller down
                LOG.exception("%s: hardware_vtep client", self.switch)
                self.errors += 1
                self.txn = None
                self.stopping.wait(0.5)

    def _open(self) -> None:
        helper = ovs.db.idl.SchemaHelper(schema_json=fetch_schema(self.remote))
        for table in TABLES:
            helper.register_table(table)
        self.idl = ovs.db.idl.Idl(self.remote, helper)
        # NOTE (ovs 4.0.0): as in adapters/directory.py, the session's own backoff
        # (up to 8 s) is shortened through its public Reconnect.
        self.idl._session.reconnect.set_backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS)
        LOG.info("%s: hardware_vtep at %s", self.switch, self.remote)

    def _step(self, seen: int) -> int:
        self.idl.run()
        session = self.idl._session  # NOTE (ovs 4.0.0): no Idl.is_connected (directory.py)
        connected = bool(session.is_connected()) and self.idl.state == self.idl.IDL_S_MONITORING
        if connected != self.connected:
            self.connected = connected
            LOG.warning("%s: hardware_vtep %s", self.switch, "connected" if connected else "lost")
            if not connected:
                self.txn = None
        if connected and self.idl.change_seqno != seen:
            seen = self.idl.change_seqno
            self.on_state(self.parser.state(self.idl))
        if connected:
            self._write()
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        self.wake.wait(poller)
        poller.timer_wait(1000)
        poller.block()
        self.wake.drain()
        return seen

    def _write(self) -> None:
        if self.txn is not None:
            status = self.txn.commit()
            if status == ovs.db.idl.Transaction.INCOMPLETE:
                return
            if status == ovs.db.idl.Transaction.SUCCESS:
                self.on_written(self.txn_rows)
            elif status != ovs.db.idl.Transaction.UNCHANGED:
                LOG.warning(
                    "%s: hardware_vtep write: %s %s", self.switch, status, self.txn.get_error()
                )
                self.errors += 1
            self.txn = None
            return  # the next pass sees the rows it wrote before writing again
        wanted = self.changes()
        if wanted.empty():
            return
        self.txn = ovs.db.idl.Transaction(self.idl)
        writer = Writer(self.idl, self.txn, self.switch)
        writer.apply(wanted)
        self.txn_rows = writer.rows
        self.txn.commit()

    @property
    def malformed(self) -> int:
        return self.parser.malformed
