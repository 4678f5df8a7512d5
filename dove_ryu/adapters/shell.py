"""The os-ken application: turns switch, OVSDB and network events into core calls
and sends what the core returns.  No decisions are made here.

All core calls hold one lock: os-ken's event thread, the OVSDB watcher, the
control socket and the timer each call in from their own thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from ipaddress import IPv4Address
from typing import Any

from os_ken import cfg as osken_cfg
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from dove_ryu.adapters import metrics, options
from dove_ryu.adapters.admin import AdminServer
from dove_ryu.adapters.bfd import BfdPorts
from dove_ryu.adapters.directory import DirectoryClient
from dove_ryu.adapters.metrics_http import MetricsServer
from dove_ryu.adapters.of_osken import (
    flow_mod_bytes,
    found_flow,
    found_group,
    match_fields,
    next_xid,
    packet_out_bytes,
    to_osken,
)
from dove_ryu.adapters.ovsdb import BridgeView, PortWatcher, vsctl
from dove_ryu.agent import make_core
from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.gateway import GatewayCore
from dove_ryu.agent.takeover import FoundFlow, FoundGroup, SwitchState
from dove_ryu.config import ConfigError
from dove_ryu.openflow import cookies
from dove_ryu.openflow.ofmsg import (
    CoreOutput,
    FlowMod,
    OfMsg,
    PacketIn,
    PacketOut,
    order_messages,
)
from dove_ryu.openflow.pipeline import BY_NAME, tables_of

LOG = logging.getLogger("dove_ryu.adapters.shell")

TICK_SECONDS = 0.05
MAX_DATAGRAM = 2048
TABLE_FLOWS_MAX_AGE = 5.0  # seconds a scrape may show the same per-table flow counts
TABLE_FLOWS_WAIT = 1.0  # seconds a scrape waits for fresh ones (else shows the last)
READ_TIMEOUT = 3.0  # seconds the take-over waits for the switch's flows and groups

# The [dove] options, declared when os-ken loads this module, as any os-ken app does.
options.register(osken_cfg.CONF)


class DoveApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cfg = options.dove_config(self.CONF)
        self.lock = threading.RLock()
        self.core = make_core(self.cfg, time.monotonic())
        self.datapaths: dict[int, Any] = {}  # connected switches by datapath id
        self.synced = False
        self.stopping = threading.Event()
        # One control socket per leg: a proxy talks to its site and to other sites'
        # proxies from different addresses, and each peer checks who sent.
        legs = [
            self.cfg.host.underlay_ip,
            *([self.cfg.proxy.wan_ip] if self.cfg.proxy.wan_ip else []),
        ]
        self.socks: dict[str, socket.socket] = {}
        for leg in legs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((str(leg), self.cfg.host.control_port))
            self.socks[str(leg)] = sock
        self.sock = self.socks[str(self.cfg.host.underlay_ip)]
        self.watcher = PortWatcher(self.cfg, self._on_bridge_view)
        self.bfd = BfdPorts(self.cfg, vsctl)  # a proxy's or gateway's, to its HA partners
        self.directory: DirectoryClient | None = None
        if self.cfg.host.discovery == "directory":
            self.directory = DirectoryClient(
                self.cfg,
                self._local,
                self._on_directory_view,
                self._on_directory_lost,
                routed=self._routed_into,
            )
        self.admin = AdminServer(self.cfg.host.admin_socket, self._admin)
        self.table_flows = metrics.TableFlows(TABLE_FLOWS_MAX_AGE)
        self.table_flows_fresh = threading.Event()
        self.metrics_server: MetricsServer | None = None
        if self.cfg.metrics.metrics_port:
            host, port = str(self.cfg.metrics.metrics_host), self.cfg.metrics.metrics_port
            try:
                self.metrics_server = MetricsServer(host, port, metrics.registry(self._metrics))
            except OSError as e:  # forwarding matters more than metrics
                LOG.error(
                    "%s: no metrics: cannot listen on %s:%d: %s", self.cfg.name, host, port, e
                )
        LOG.info(
            "%s: dove agent on %s, control port %d, peers %s",
            self.cfg.name,
            self.cfg.host.underlay_ip,
            self.cfg.host.control_port,
            ",".join(map(str, self.cfg.host.peers)) or "none",
        )

    def start(self) -> Any:
        thread = super().start()
        for leg, sock in self.socks.items():
            threading.Thread(
                target=self._receive_loop, args=(sock,), name=f"control-rx-{leg}", daemon=True
            ).start()
        threading.Thread(target=self._tick_loop, name="tick", daemon=True).start()
        self.watcher.start()
        if self.directory is not None:
            self.directory.start()
        self.admin.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        return thread

    def close(self) -> None:
        """Stop our threads and remove the admin socket (the process is exiting)."""
        self.stopping.set()
        self.watcher.stop()
        if self.directory is not None:
            self.directory.stop()
        self.admin.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        for sock in self.socks.values():
            sock.close()

    def stop(self) -> None:
        self.close()
        super().stop()

    # ------------------------------------------------------------ send path

    @property
    def dp(self) -> Any:
        """Our bridge's switch: the connected datapath whose id OVSDB gives the bridge."""
        view = self.watcher_view
        if view is None or view.datapath_id is None:
            return None
        return self.datapaths.get(view.datapath_id)

    def _send(self, out: CoreOutput) -> bool:
        """The one send path: switch messages in safe order, then datagrams.

        The switch messages go out as one write, in order: os-ken hands each send to
        its own sender thread, and one hand-off per batch instead of one per message
        is what the first packet waits for (a thread wake-up and the GIL each).
        Flows before datagrams: the flows gleaned from a LEARN request are on their
        way to the switch before the reply leaves, so the answer's traffic (the
        requester's echo, and the ARP our VM sends to answer it) finds them.  With
        the flows packed by hand this costs the reply tens of microseconds; the other
        order let the VM's ARP race the flows now and then (a packet-in and ~2 ms).
        Returns False if a switch message could not be sent (the caller resyncs)."""
        dp = self.dp
        sent = True
        if dp is not None and out.ofmsgs:
            wire: list[bytes] = []
            for msg in order_messages(out.ofmsgs, self.core.p.takeover.generation):
                try:
                    wire.append(self._wire(dp, msg))
                except Exception:  # one bad message must not lose the rest
                    sent = False
                    self.core.counters["openflow_send_errors"] += 1
                    LOG.exception("%s: cannot send %r", self.cfg.name, msg)
            if wire:
                dp.send(b"".join(wire))  # False only while the switch is going: it resyncs
        self._send_datagrams(out)
        return sent

    @staticmethod
    def _wire(dp: Any, msg: OfMsg) -> bytes:
        """One message's bytes, with the datapath's next transaction id: packed by
        hand for the shapes the first packet waits for, else built by os-ken."""
        xid = next_xid(dp)
        wire = None
        if isinstance(msg, PacketOut):
            wire = packet_out_bytes(msg, xid)
        elif isinstance(msg, FlowMod):
            wire = flow_mod_bytes(msg, xid)
        if wire is not None:
            return wire
        osken_msg = to_osken(dp, msg)
        osken_msg.set_xid(xid)
        osken_msg.serialize()
        return bytes(osken_msg.buf)

    def _send_datagrams(self, out: CoreOutput) -> None:
        for dgram in out.datagrams:
            try:
                sock = self.socks.get(dgram.src, self.sock)
                sock.sendto(dgram.payload, (dgram.dst, self.cfg.host.control_port))
            except OSError as e:
                with self.lock:
                    self.core.counters["control_send_errors"] += 1
                LOG.warning("%s: send to %s failed: %s", self.cfg.name, dgram.dst, e)

    def _call(self, handler: Any, *args: Any) -> None:
        with self.lock:
            out = handler(time.monotonic(), *args)
            self._send(out)

    # ------------------------------------------------------- switch events

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[misc]
    def _switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        with self.lock:
            view = self.watcher_view
            if view is not None and view.datapath_id not in (None, dp.id):
                # Only our bridge may be programmed; anything else is told nothing.
                self.core.counters["switch_foreign"] += 1
                LOG.warning(
                    "%s: switch %016x is not %s; ignored",
                    self.cfg.name,
                    dp.id,
                    self.cfg.host.bridge,
                )
                return
            self.datapaths[dp.id] = dp
            if dp is self.dp:
                self.synced = False
            LOG.info("%s: switch %016x connected", self.cfg.name, dp.id)
            self._read_switch(dp)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)  # type: ignore[misc]
    def _switch_gone(self, ev: Any) -> None:
        with self.lock:
            gone: Any = ev.datapath
            dpid = getattr(gone, "id", None)
            if dpid is None or self.datapaths.get(dpid) is not gone:
                return
            ours = gone is self.dp
            del self.datapaths[dpid]
            if ours:
                LOG.warning("%s: switch disconnected", self.cfg.name)
                self.synced = False
                self.core.switch_disconnected()
                self.table_flows.forget()

    # What the switch holds, read before the core takes it over (`dove_ryu.agent.takeover`):
    # our flows (the cookie marker) and the groups, each over one or more replies.
    reading: Any = None  # the datapath being read
    read_flows: list[FoundFlow] | None = None
    read_groups: list[FoundGroup] | None = None

    def _read_switch(self, dp: Any) -> None:
        """Ask ``dp`` for our flows and its groups (call with the lock); the take-over
        waits for both answers."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.reading, self.read_flows, self.read_groups = dp, None, None
        self.reading_since = time.monotonic()
        self.found = None
        self._flows_part, self._groups_part = [], []
        dp.send_msg(
            parser.OFPFlowStatsRequest(
                dp,
                0,
                ofp.OFPTT_ALL,
                ofp.OFPP_ANY,
                ofp.OFPG_ANY,
                cookies.MARKER << cookies.MARKER_SHIFT,
                cookies.MASK_OURS,
                parser.OFPMatch(),
            )
        )
        dp.send_msg(parser.OFPGroupDescStatsRequest(dp, 0))

    found: SwitchState | None = None
    reading_since = 0.0
    _flows_part: list[FoundFlow] = []
    _groups_part: list[FoundGroup] = []

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            if msg.datapath is not self.reading:
                return
            self._flows_part += [found_flow(s) for s in msg.body]
            if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                self.read_flows = self._flows_part
                self._switch_read()

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _group_desc(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            if msg.datapath is not self.reading:
                return
            self._groups_part += [found_group(g) for g in msg.body]
            if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                self.read_groups = self._groups_part
                self._switch_read()

    def _read_overdue(self, now: float) -> None:
        """The switch has not answered the reads in READ_TIMEOUT (call with the lock):
        program it from our own state with what did come (groups unread are added, so
        one that exists answers an error), and flush nothing: stale flows of another
        generation may stay until the next take-over."""
        if self.reading is None or now - self.reading_since < READ_TIMEOUT:
            return
        if self.reading is not self.dp:
            self.reading = None
            return
        self.core.counters["takeover_read_timeouts"] += 1
        LOG.error(
            "%s: the switch did not answer the take-over's reads in %.0f s (flows %s, "
            "groups %s): programming it from our own state, no flush",
            self.cfg.name,
            READ_TIMEOUT,
            "read" if self.read_flows is not None else "unanswered",
            "read" if self.read_groups is not None else "unanswered",
        )
        self.read_flows = self.read_flows if self.read_flows is not None else []
        self.read_groups = self.read_groups if self.read_groups is not None else []
        self._switch_read()

    def _switch_read(self) -> None:
        if self.read_flows is None or self.read_groups is None:
            return
        self.found = SwitchState(tuple(self.read_flows), tuple(self.read_groups))
        self.reading = None
        LOG.info(
            "%s: the switch holds %d of our flows and %d groups",
            self.cfg.name,
            len(self.found.flows),
            len(self.found.groups),
        )
        self._sync_if_ready()

    def _sync_if_ready(self) -> None:
        tunnel = self.watcher_view.tunnel_ofport if self.watcher_view else None
        dp = self.dp
        if dp is None or self.synced or tunnel is None:
            return
        if self.found is None:
            if self.reading is not dp:
                self._read_switch(dp)  # a resync (the tunnel port changed): read it again
            return
        now = time.monotonic()
        found, self.found = self.found, None
        self.synced = self._send(self.core.switch_connected(now, tunnel, found))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[misc]
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        if msg.datapath is self.dp:
            fields = match_fields(msg.match)
            tun_src = fields.get("tun_ipv4_src")
            punted = PacketIn(
                msg.cookie,
                fields["in_port"],
                bytes(msg.data),
                fields.get("metadata"),
                IPv4Address(tun_src) if tun_src else None,
            )
            self._call(self.core.packet_in, punted)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)  # type: ignore[misc]
    def _flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        if msg.datapath is not self.dp:
            return
        idle = msg.reason == ofproto_v1_3.OFPRR_IDLE_TIMEOUT
        age = msg.duration_sec + msg.duration_nsec / 1e9
        self._call(self.core.flow_removed, msg.cookie, match_fields(msg.match), idle, age)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)  # type: ignore[misc]
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            self.core.counters["openflow_errors"] += 1
        LOG.error("%s: OpenFlow error type=%d code=%d", self.cfg.name, msg.type, msg.code)

    # --------------------------------------------------------------- OVSDB

    watcher_view: BridgeView | None = None

    def _on_bridge_view(self, view: BridgeView) -> None:
        with self.lock:
            last, self.watcher_view = self.watcher_view, view
            if self.synced and view.tunnel_ofport != self.core.p.link.tunnel_ofport:
                self.synced = False  # the tunnel port was re-created: resync
            if view.datapath_id is not None:
                for dpid in [d for d in self.datapaths if d != view.datapath_id]:
                    LOG.warning(
                        "%s: switch %016x is not %s; ignored",
                        self.cfg.name,
                        dpid,
                        self.cfg.host.bridge,
                    )
                    del self.datapaths[dpid]
            self._routers(view)
            if hasattr(self.core, "bfd_changed") and view.bfd != getattr(last, "bfd", None):
                self._send(self.core.bfd_changed(time.monotonic(), view.bfd_states()))
            if isinstance(self.core, GatewayCore):
                port = view.external or (None, None)
                self._send(self.core.external_port(time.monotonic(), *port))
            self._send(self.core.ports_changed(time.monotonic(), list(view.vm_ports)))
            self.core.counters["ports_rejected"] = len(view.rejected)
            self._sync_if_ready()
        if self.directory is not None:
            self.directory.poke()  # VMs came or went: their Endpoint rows, now

    routers_seen: tuple[object, ...] | None = None

    def _routers(self, view: BridgeView) -> None:
        """The router marks of the bridge, to a core that routes (call with the lock)."""
        routers_changed = getattr(self.core, "routers_changed", None)
        if routers_changed is None:
            return
        seen = (view.routers, view.gateways, view.routers_rejected)
        if seen == self.routers_seen:
            return
        self.routers_seen = seen
        self.core.counters["router_rejected"] = len(view.routers_rejected)
        self._send(
            routers_changed(
                time.monotonic(),
                list(view.routers),
                list(view.gateways),
                rejected=list(view.routers_rejected),
            )
        )

    # ------------------------------------------------------ control socket

    def _receive_loop(self, sock: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                data, (addr, _) = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            try:
                src = IPv4Address(addr)
                self._call(self.core.control_message, data, src)
            except Exception:  # a bug must not kill the receive loop
                LOG.exception("%s: control message from %s", self.cfg.name, addr)
                with self.lock:
                    self.core.counters["control_handler_errors"] += 1

    def _tick_loop(self) -> None:
        while not self.stopping.wait(TICK_SECONDS):
            try:
                with self.lock:
                    self._read_overdue(time.monotonic())
                self._call(self.core.tick)
                self._bfd_ports()
            except Exception:
                LOG.exception("%s: tick", self.cfg.name)

    def _bfd_ports(self) -> None:
        """A proxy's or gateway's BFD ports follow its HA partners (adapters/bfd.py)."""
        ha_partners = getattr(self.core, "ha_partners", None)
        with self.lock:
            view = self.watcher_view
            if ha_partners is None or view is None:
                return
            self.bfd.reconcile(ha_partners(time.monotonic()), view.bfd_ports())

    # --------------------------------------------------------------- admin

    # ----------------------------------------------------------- directory

    # A host and a proxy both register a row; a proxy's lists what it stands for.

    def _local(self) -> tuple[frozenset[int], list[EndpointRow]]:
        with self.lock:
            return self.core.served(), self.core.local_endpoints()

    def _routed_into(self) -> frozenset[int]:
        """The instances a host routes into besides those it serves (the other subnets
        of its routers): the directory client monitors their hosts too."""
        with self.lock:
            routed = getattr(self.core, "routed", None)
            return routed() if routed is not None else frozenset()

    def _on_directory_view(self, view: DirectoryView) -> None:
        self._call(self.core.directory_rows, view)

    def _on_directory_lost(self) -> None:
        with self.lock:
            self.core.directory_unreachable(time.monotonic())

    def _admin(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "reload_keys":
            return self.reload_keys()
        with self.lock:
            if cmd == "status":
                return self.core.status(time.monotonic())
            if cmd == "counters":
                counts = dict(self.directory.counts) if self.directory is not None else {}
                return {**self.core.counters, **counts}
            if cmd == "peers":
                channel = self.core.p.channel
                return {
                    "keys": channel.key_status(),
                    "peers": channel.peers_status(time.monotonic()),
                }
        return {"error": f"unknown command {cmd!r}"}

    # ---------------------------------------------------------------- keys

    def reload_keys(self) -> dict[str, Any]:
        """Read the key settings again from the configuration files and take them
        (``dovectl keys reload``, SIGHUP); a bad key set is refused and the agent keeps
        the keys it has.  The other settings are not re-read: they need a restart."""
        try:
            ring = options.reload_keyring(self.CONF)  # file I/O: outside the lock
        except ConfigError as e:
            with self.lock:
                self.core.counters["keys_reload_failed"] += 1
            LOG.error("%s: keys not reloaded (the old ones stay): %s", self.cfg.name, e)
            return {"error": f"keys not reloaded (the old ones stay): {e}"}
        with self.lock:
            return self.core.p.channel.rekey(time.monotonic(), ring)

    def reload_keys_later(self) -> None:
        """A reload from a signal handler: on a thread of its own, as the handler may
        run while this thread holds the lock."""
        threading.Thread(target=self.reload_keys, name="reload-keys", daemon=True).start()

    # ------------------------------------------------------------- metrics

    def _metrics(self) -> metrics.Snapshot:
        """One scrape (on the metrics server's thread): fresh flow counts when due, the
        core's numbers copied under the lock (the collector builds the families outside it)."""
        with self.lock:
            asked = self._ask_table_flows(time.monotonic())
        if asked:
            self.table_flows_fresh.wait(TABLE_FLOWS_WAIT)
        with self.lock:
            return metrics.snapshot(self.core, self.table_flows.counts, self.table_flows.packets)

    def _ask_table_flows(self, now: float) -> bool:
        """Ask the switch how many of our flows each table of the role holds, and how many
        packets the flows of each datapath count handled (call with the lock)."""
        dp = self.dp
        if dp is None or not self.table_flows.due(now):
            return False
        ofp, parser = dp.ofproto, dp.ofproto_parser
        questions: list[tuple[metrics.Question, int, int, int]] = [
            (t.name, t.table_id, cookies.OURS << cookies.OURS_SHIFT, cookies.MASK_OURS)
            for t in tables_of(self.core.role)
        ]
        for counted in metrics.counted_for(self.core.role):
            purpose = cookies.Cookie(counted.purpose).value
            mask = cookies.MASK_OURS | cookies.MASK_PURPOSE
            questions.append((counted, BY_NAME[counted.table].table_id, purpose, mask))
        xids: dict[int, metrics.Question] = {}
        for question, table_id, cookie, mask in questions:
            request = parser.OFPAggregateStatsRequest(
                dp,
                flags=0,
                table_id=table_id,
                out_port=ofp.OFPP_ANY,
                out_group=ofp.OFPG_ANY,
                cookie=cookie,
                cookie_mask=mask,
                match=parser.OFPMatch(),
            )
            dp.send_msg(request)  # sets request.xid
            xids[request.xid] = question
        self.table_flows_fresh.clear()
        self.table_flows.asked(now, xids)
        return True

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _aggregate_stats(self, ev: Any) -> None:
        msg = ev.msg
        if msg.datapath is not self.dp:
            return
        with self.lock:
            last = self.table_flows.answered(msg.xid, msg.body.flow_count, msg.body.packet_count)
        if last:
            self.table_flows_fresh.set()
