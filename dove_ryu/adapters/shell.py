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

from dove_ryu.adapters import metrics, options, ovsdb
from dove_ryu.adapters.admin import AdminServer
from dove_ryu.adapters.bfd import BfdPorts
from dove_ryu.adapters.directory import DirectoryClient
from dove_ryu.adapters.metrics_http import MetricsServer
from dove_ryu.adapters.of_osken import (
    flow_mod_bytes,
    match_fields,
    next_xid,
    packet_out_bytes,
    tlv_map_add,
    to_osken,
)
from dove_ryu.adapters.operations import Operations
from dove_ryu.adapters.ovsdb import BridgeView, PortWatcher, vsctl
from dove_ryu.adapters.switch_reader import SwitchReader
from dove_ryu.agent import make_core
from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.gateway import GatewayCore
from dove_ryu.openflow.ofmsg import (
    CoreOutput,
    FlowMod,
    OfMsg,
    PacketIn,
    PacketOut,
    order_messages,
)

LOG = logging.getLogger("dove_ryu.adapters.shell")

TICK_SECONDS = 0.05
MAX_DATAGRAM = 2048
# A switch not connected this long after start is still backing off: it is called.
SWITCH_PATIENCE = 0.5
# NOTE: the take-over's read replies may come before os-ken's handshake ends (os-ken
# 4.2): its ofp_handler moves a datapath to MAIN only once its own port description
# reply is in, our reads go out alongside that request, and a reply is dispatched in
# the state it arrived in, so a MAIN-only handler would drop it.
READ_STATES = [CONFIG_DISPATCHER, MAIN_DISPATCHER]

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
        self.reader = SwitchReader(self.cfg.name, self.core.counters)
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
        self.ops = Operations(
            self.CONF, self.cfg.name, self.lock, self.core, self.directory, lambda: self.dp
        )
        self.admin = AdminServer(self.cfg.host.admin_socket, self._admin)
        self.metrics_server: MetricsServer | None = None
        if self.cfg.metrics.metrics_port:
            host, port = str(self.cfg.metrics.metrics_host), self.cfg.metrics.metrics_port
            try:
                self.metrics_server = MetricsServer(host, port, metrics.registry(self.ops.metrics))
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
        threading.Thread(target=self._call_the_switch, name="reconnect", daemon=True).start()
        self.watcher.start()
        if self.directory is not None:
            self.directory.start()
        self.admin.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        return thread

    def _call_the_switch(self) -> None:
        """A switch still backing off from our predecessor is told to connect now."""
        time.sleep(SWITCH_PATIENCE)
        with self.lock:
            if self.datapaths:  # it connected by itself
                return
        try:
            ovsdb.reconnect_now(self.cfg)
            self.core.counters["switch_reconnect_asked"] += 1
        except ovsdb.OvsdbError as e:
            LOG.warning("%s: could not hurry the switch: %s", self.cfg.name, e)

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
            if "geneve" in self.cfg.host.accept_tunnel_types:
                # The DOVE option's place in the datapath, before any flow uses it.
                dp.send_msg(tlv_map_add(dp))
            LOG.info("%s: switch %016x connected", self.cfg.name, dp.id)
            self.reader.start(dp, time.monotonic())

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
                self.ops.table_flows.forget()

    # What the switch holds, read before the core takes it over (`switch_reader`).

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, READ_STATES)  # type: ignore[misc]
    def _flow_stats(self, ev: Any) -> None:
        with self.lock:
            if self.reader.flow_reply(ev.msg):
                self._sync_if_ready()

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, READ_STATES)  # type: ignore[misc]
    def _group_desc(self, ev: Any) -> None:
        with self.lock:
            if self.reader.group_reply(ev.msg):
                self._sync_if_ready()

    def _sync_if_ready(self) -> None:
        tunnel = self.watcher_view.tunnel_ofport if self.watcher_view else None
        dp = self.dp
        if dp is None or self.synced or tunnel is None:
            return
        found = self.reader.take()
        if found is None:
            if not self.reader.reading(dp):
                # A resync (the tunnel port changed): read it again.
                self.reader.start(dp, time.monotonic())
            return
        now = time.monotonic()
        if self.watcher_view is not None:
            self.core.p.link.other_ports(dict(self.watcher_view.tunnel_ofports))
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
            if self.synced and dict(view.tunnel_ofports) != self.core.p.link.tunnels.ports:
                self.synced = False  # a tunnel port was re-created: resync
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
                    if self.reader.overdue(time.monotonic(), self.dp):
                        self._sync_if_ready()
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

    # ------------------------------------------------ admin, keys, metrics

    def _admin(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.ops.admin(request)

    def reload_keys(self) -> dict[str, Any]:
        return self.ops.reload_keys()

    def reload_keys_later(self) -> None:
        """A reload from a signal handler (SIGHUP), on a thread of its own."""
        self.ops.reload_keys_later()

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _aggregate_stats(self, ev: Any) -> None:
        if ev.msg.datapath is self.dp:
            self.ops.aggregate_reply(ev.msg)
