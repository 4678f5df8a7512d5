"""The VTEP controller agent (``role = vtep-controller``): wires the pure core
(`dove_ryu.agent.vtep_controller`) to the switch (`HwVtepClient`), the directory
(`DirectoryClient`, the one every agent uses) and the admin socket (``dovectl vtep``).

It opens no OpenFlow listener and imports nothing of os-ken.  The switch is read
first: its ``Physical_Switch.tunnel_ips`` is where the directory's ``Host`` row (role
``vtep``) says the switch is, so the directory client starts once it is known.  A
stopped controller leaves the switch's rows (it keeps forwarding to the last known
locations) and its directory row, which the reapers mark dead when its heartbeat stops.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from dove_ryu.adapters.admin import AdminServer
from dove_ryu.adapters.directory import DirectoryClient
from dove_ryu.adapters.hw_vtep import HwVtepClient
from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.vtep_controller import Changes, SwitchState, VtepController, missing_ports
from dove_ryu.config import UNSET_IP, DoveConfig

LOG = logging.getLogger("dove_ryu.adapters.vtep_agent")


class VtepAgent:
    def __init__(self, cfg: DoveConfig) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.core = VtepController(cfg.name, cfg.vtep.vtep_bindings)
        self.switch = HwVtepClient(
            cfg.vtep.vtep_ovsdb, cfg.vtep.vtep_switch, self._on_state, self._changes, self._written
        )
        self.directory: DirectoryClient | None = None
        self.admin = AdminServer(cfg.host.admin_socket, self._admin)
        self._missing: list[str] = []
        # The last view covers every bound instance (the directory acked our conditions):
        # before that, an empty view would remove every remote MAC the switch holds.
        self.view_complete = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        LOG.info(
            "%s: VTEP controller of %s at %s, bindings %s",
            self.cfg.name,
            self.cfg.vtep.vtep_switch,
            self.cfg.vtep.vtep_ovsdb,
            ", ".join(map(str, self.cfg.vtep.vtep_bindings)),
        )
        self.switch.start()
        self.admin.start()

    def run(self) -> None:
        """Until SIGTERM (KeyboardInterrupt, see the launcher) or `close`."""
        self.start()
        try:
            while not self.stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        self.close()

    def close(self) -> None:
        self.stopping.set()
        self.switch.stop()
        if self.directory is not None:
            self.directory.stop()
        self.admin.stop()

    # ------------------------------------------------------------ the switch

    def _on_state(self, state: SwitchState) -> None:
        with self.lock:
            self.core.switch_state(state)
            self.core.counts["vtep_malformed_rows"] = self.switch.malformed
            missing = missing_ports(state, self.core.bindings) if state.present else []
        if not state.present:
            LOG.warning("%s: no Physical_Switch %s", self.cfg.name, self.cfg.vtep.vtep_switch)
        if missing != self._missing:
            self._missing = missing
            if missing:
                LOG.warning("%s: the switch has no port %s", self.cfg.name, ", ".join(missing))
        tunnel_ip = state.tunnel_ip
        if self.directory is None and tunnel_ip is not None:
            given = self.cfg.host.underlay_ip
            if given not in (UNSET_IP, tunnel_ip):
                LOG.error(
                    "%s: underlay_ip %s is not the switch's tunnel IP %s: not registered",
                    self.cfg.name,
                    given,
                    tunnel_ip,
                )
                return
            self._start_directory(tunnel_ip)
        elif self.directory is not None:
            self.directory.poke()  # its local MACs may have changed

    def _start_directory(self, tunnel_ip: Any) -> None:
        host = dataclasses.replace(self.cfg.host, underlay_ip=tunnel_ip)
        cfg = dataclasses.replace(self.cfg, host=host)
        self.directory = DirectoryClient(cfg, self._local, self._on_view, self._on_lost)
        self.directory.start()
        LOG.info("%s: registering in the directory at %s", self.cfg.name, tunnel_ip)

    def _changes(self) -> Changes:
        with self.lock:
            if self.directory is None or not self.directory.connected or not self.view_complete:
                return Changes()  # nothing (or not all) is known of the instances yet
            return self.core.changes()

    def _written(self, rows: int) -> None:
        with self.lock:
            self.core.counts["vtep_transactions"] += 1
            self.core.counts["vtep_rows_written"] += rows

    # ------------------------------------------------------------ the directory

    def _local(self) -> tuple[frozenset[int], list[EndpointRow]]:
        with self.lock:
            return self.core.served, self.core.local_endpoints(time.time())

    def _on_view(self, view: DirectoryView) -> None:
        directory = self.directory
        complete = (
            directory is not None
            and directory.watching[0] == self.core.served
            and directory.settled
        )
        with self.lock:
            self.core.directory_view(view)
            self.view_complete = complete
        self.switch.poke()

    def _on_lost(self) -> None:
        # The switch keeps the last known locations: better than none while it is away.
        with self.lock:
            self.view_complete = False
        LOG.warning("%s: directory unreachable: the switch keeps its rows", self.cfg.name)

    # ------------------------------------------------------------ admin

    def _admin(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        with self.lock:
            status = self.core.status()
            counts = dict(self.core.counts)
        directory = self.directory
        if directory is not None:
            counts.update(directory.counts)
        if cmd in ("status", "vtep"):
            return {
                "role": "vtep-controller",
                "host": self.cfg.name,
                "switch": self.cfg.vtep.vtep_switch,
                "underlay_ip": status["tunnel_ip"],
                "connected": self.switch.connected,
                "directory_connected": bool(directory and directory.connected),
                "directory_complete": self.view_complete,
                **status,
                "counters": counts,
            }
        if cmd == "counters":
            return counts
        return {"error": f"unknown command {cmd!r}"}
