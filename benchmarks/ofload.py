"""An OpenFlow 1.3 load generator for controllers, working as cbench does.

    python -m benchmarks.ofload --port 6653 --switches 4 --mode latency --seconds 5 \\
        --dpid-base 0x100 --cookie 0 --in-port 2 --src 02:00:00:00:00:01 \\
        --dst 02:00:00:01:00:01 02:00:00:01:00:02 [--teach-port 3 | --prime]

Each emulated switch is one TCP connection to the controller.  It says HELLO,
answers FEATURES_REQUEST (datapath id ``dpid_base + i``), ECHO, BARRIER,
GET_CONFIG, ROLE, GET_ASYNC and MULTIPART requests (port-desc with two ports, desc,
empty bodies for the rest), and counts what else comes (flow-mods, group-mods,
packet-outs, set-config, errors).  Then it sends packet-ins: OFPT_PACKET_IN,
buffer_id NO_BUFFER, reason ACTION, the given table id and cookie, a match with
OXM in_port, and an Ethernet frame from ``--src`` to one of the ``--dst`` MACs
(round robin), IPv4/UDP, or an ARP request with ``--arp-targets``.  The frame's
payload carries a magic, the switch index and a sequence number, so a packet-out
that re-injects it is matched to its packet-in exactly.

For one packet-in:

* ``reply``: the first flow-mod or packet-out that follows it (a packet-out
  carrying its data, else FIFO per switch).  Exact in latency mode, where a
  switch has one packet-in outstanding; not reported in throughput mode, where
  FIFO would credit a controller's second flow-mod to the next packet-in.
* ``done``: the packet-out carrying its data: the controller has handled it
  completely.  With ``--reply first`` (controllers that send only flow-mods, as
  cbench assumes) the first reply completes a packet-in instead.

Modes: ``latency`` keeps one packet-in outstanding per switch and sends the next
when the previous is done; ``throughput`` keeps ``--window`` outstanding per
switch.  A packet-in not done within ``--timeout`` is counted lost.  Phases:
connect and handshake, quiet (the controller's own start-up messages), optional
teaching (``--teach-port``: one packet-in *from* each destination MAC, so a
learning switch knows where it is) and priming (``--prime``: each destination
once, waiting, so a resolving controller has learned it), warm-up, then the timed
phase.  The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

OFP_VERSION = 4  # OpenFlow 1.3

# Message types (OpenFlow 1.3).
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_FEATURES_REQUEST = 5
OFPT_FEATURES_REPLY = 6
OFPT_GET_CONFIG_REQUEST = 7
OFPT_GET_CONFIG_REPLY = 8
OFPT_SET_CONFIG = 9
OFPT_PACKET_IN = 10
OFPT_FLOW_REMOVED = 11
OFPT_PORT_STATUS = 12
OFPT_PACKET_OUT = 13
OFPT_FLOW_MOD = 14
OFPT_GROUP_MOD = 15
OFPT_PORT_MOD = 16
OFPT_TABLE_MOD = 17
OFPT_MULTIPART_REQUEST = 18
OFPT_MULTIPART_REPLY = 19
OFPT_BARRIER_REQUEST = 20
OFPT_BARRIER_REPLY = 21
OFPT_ROLE_REQUEST = 24
OFPT_ROLE_REPLY = 25
OFPT_GET_ASYNC_REQUEST = 26
OFPT_GET_ASYNC_REPLY = 27
OFPT_SET_ASYNC = 28
OFPT_METER_MOD = 29

TYPE_NAMES = {
    OFPT_HELLO: "hello",
    OFPT_ERROR: "error",
    OFPT_ECHO_REQUEST: "echo_request",
    OFPT_ECHO_REPLY: "echo_reply",
    OFPT_EXPERIMENTER: "experimenter",
    OFPT_FEATURES_REQUEST: "features_request",
    OFPT_GET_CONFIG_REQUEST: "get_config_request",
    OFPT_SET_CONFIG: "set_config",
    OFPT_PACKET_OUT: "packet_out",
    OFPT_FLOW_MOD: "flow_mod",
    OFPT_GROUP_MOD: "group_mod",
    OFPT_PORT_MOD: "port_mod",
    OFPT_TABLE_MOD: "table_mod",
    OFPT_MULTIPART_REQUEST: "multipart_request",
    OFPT_BARRIER_REQUEST: "barrier_request",
    OFPT_ROLE_REQUEST: "role_request",
    OFPT_GET_ASYNC_REQUEST: "get_async_request",
    OFPT_SET_ASYNC: "set_async",
    OFPT_METER_MOD: "meter_mod",
}

OFPMP_DESC = 0
OFPMP_PORT_DESC = 13
OFPMPF_REPLY_MORE = 1
OFP_NO_BUFFER = 0xFFFFFFFF
OFPR_NO_MATCH = 0
OFPR_ACTION = 1
OFPMT_OXM = 1
OXM_OF_IN_PORT = 0x80000004  # class OPENFLOW_BASIC, field IN_PORT, no mask, 4 bytes

HEADER = struct.Struct("!BBHI")
HEADER_LEN = HEADER.size
# buffer_id, total_len, reason, table_id, cookie
PACKET_IN_FIXED = struct.Struct("!IHBBQ")
# type, length, in_port OXM header, in_port, 4 bytes pad (match padded to 8), 2 bytes pad
PACKET_IN_MATCH = struct.Struct("!HHII4x2x")
PACKET_IN_DATA_OFFSET = HEADER_LEN + PACKET_IN_FIXED.size + PACKET_IN_MATCH.size  # 42
# datapath_id, n_buffers, n_tables, auxiliary_id, pad, capabilities, reserved
FEATURES_REPLY = struct.Struct("!QIBB2xII")
MULTIPART_HEADER = struct.Struct("!HH4x")  # type, flags, pad
# port_no, pad, hw_addr, pad, name, config, state, curr, advertised, supported, peer,
# curr_speed, max_speed
OFP_PORT = struct.Struct("!I4x6s2x16sIIIIIIII")
# buffer_id, in_port, actions_len, pad
PACKET_OUT_FIXED = struct.Struct("!IIH6x")

# The frame's payload: magic, switch index, sequence number.
MAGIC = b"OFLD"
TAG = struct.Struct("!4sIQ")
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
MIN_FRAME = 60  # Ethernet minimum without FCS
TAG_OFFSET = 42  # after Ethernet + IPv4 + UDP, or Ethernet + ARP: the same


# ----------------------------------------------------------------- encoding


def pack_header(msg_type: int, length: int, xid: int) -> bytes:
    return HEADER.pack(OFP_VERSION, msg_type, length, xid)


def pack_message(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return pack_header(msg_type, HEADER_LEN + len(body), xid) + body


def pack_hello(xid: int = 1) -> bytes:
    """HELLO with a version bitmap element offering OpenFlow 1.3 only."""
    bitmap = struct.pack("!HHI", 1, 8, 1 << OFP_VERSION)  # OFPHET_VERSIONBITMAP
    return pack_message(OFPT_HELLO, xid, bitmap)


def pack_features_reply(
    xid: int, dpid: int, *, n_buffers: int = 0, n_tables: int = 254, capabilities: int = 0x4F
) -> bytes:
    body = FEATURES_REPLY.pack(dpid, n_buffers, n_tables, 0, capabilities, 0)
    return pack_message(OFPT_FEATURES_REPLY, xid, body)


def mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def pack_port(port_no: int, hw_addr: str, name: str) -> bytes:
    """One ofp_port: up, 10 Gb/s copper, full duplex."""
    speed_10gb_fd = 1 << 6
    return OFP_PORT.pack(
        port_no,
        mac_bytes(hw_addr),
        name.encode()[:15],
        0,  # config
        4,  # state: OFPPS_LIVE
        speed_10gb_fd,
        speed_10gb_fd,
        speed_10gb_fd,
        0,
        10_000_000,  # curr_speed, kb/s
        10_000_000,
    )


def port_desc_body(switch: int, ports: Sequence[int] = (1, 2)) -> bytes:
    """The port description of an emulated switch: ports ``s<switch>-eth<n>``."""
    return b"".join(
        pack_port(
            p, f"02:0f:{switch >> 8 & 0xFF:02x}:{switch & 0xFF:02x}:00:{p:02x}", f"s{switch}-eth{p}"
        )
        for p in ports
    )


def pack_multipart_reply(xid: int, mp_type: int, body: bytes = b"", flags: int = 0) -> bytes:
    return pack_message(OFPT_MULTIPART_REPLY, xid, MULTIPART_HEADER.pack(mp_type, flags) + body)


def desc_body(dpid: int) -> bytes:
    def text(value: str, size: int) -> bytes:
        return value.encode()[: size - 1].ljust(size, b"\0")

    return (
        text("dove-ryu", 256)
        + text("ofload emulated switch", 256)
        + text("benchmarks.ofload", 256)
        + text(f"{dpid:016x}", 32)
        + text(f"ofload dpid {dpid:#x}", 256)
    )


def pack_packet_in(
    xid: int,
    data: bytes,
    *,
    in_port: int,
    table_id: int = 0,
    cookie: int = 0,
    reason: int = OFPR_ACTION,
    buffer_id: int = OFP_NO_BUFFER,
) -> bytes:
    """OFPT_PACKET_IN with a match of OXM in_port only and the whole frame as data."""
    length = PACKET_IN_DATA_OFFSET + len(data)
    return (
        pack_header(OFPT_PACKET_IN, length, xid)
        + PACKET_IN_FIXED.pack(buffer_id, len(data), reason, table_id, cookie)
        + PACKET_IN_MATCH.pack(OFPMT_OXM, 4 + 8, OXM_OF_IN_PORT, in_port)
        + data
    )


def build_frame(
    src: str,
    dst: str,
    *,
    switch: int = 0,
    seq: int = 0,
    src_ip: str = "10.0.0.1",
    dst_ip: str = "10.0.0.2",
    arp_target: str | None = None,
) -> tuple[bytes, int]:
    """A frame and the offset of its tag (magic, switch, seq) within it.

    IPv4/UDP to port 9 (discard) from ``src`` to ``dst``; with ``arp_target`` an ARP
    request (broadcast) for that address instead, the tag in the Ethernet padding."""
    tag = TAG.pack(MAGIC, switch, seq)
    if arp_target is not None:
        eth = b"\xff" * 6 + mac_bytes(src) + struct.pack("!H", ETH_TYPE_ARP)
        arp = (
            struct.pack("!HHBBH", 1, ETH_TYPE_IPV4, 6, 4, 1)
            + mac_bytes(src)
            + IPv4Address(src_ip).packed
            + bytes(6)
            + IPv4Address(arp_target).packed
        )
        head = eth + arp
    else:
        eth = mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ETH_TYPE_IPV4)
        udp_len = 8 + len(tag)
        ip_header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_len,
            0,
            0x4000,  # don't fragment
            64,
            17,  # UDP
            0,
            IPv4Address(src_ip).packed,
            IPv4Address(dst_ip).packed,
        )
        checksum = _ip_checksum(ip_header)
        ip_header = ip_header[:10] + struct.pack("!H", checksum) + ip_header[12:]
        head = eth + ip_header + struct.pack("!HHHH", 40000, 9, udp_len, 0)
    assert len(head) == TAG_OFFSET
    return (head + tag).ljust(MIN_FRAME, b"\0"), TAG_OFFSET


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame_tag(data: bytes | memoryview, offset: int) -> tuple[int, int] | None:
    """(switch, seq) from a frame built by `build_frame`, or None if it is not ours."""
    if len(data) < offset + TAG.size:
        return None
    magic, switch, seq = TAG.unpack_from(data, offset)
    if magic != MAGIC:
        return None
    return switch, seq


def packet_out_data(msg: bytes | memoryview) -> memoryview:
    """The data of an OFPT_PACKET_OUT message (a whole message, header included)."""
    view = memoryview(msg)
    _, _, actions_len = PACKET_OUT_FIXED.unpack_from(view, HEADER_LEN)
    start = HEADER_LEN + PACKET_OUT_FIXED.size + actions_len
    (length,) = struct.unpack_from("!H", view, 2)
    return view[start:length]


# ----------------------------------------------------------------- statistics


def summarize(values_ns: Sequence[int]) -> dict[str, float | int] | None:
    """n, p50, p99, mean, min, max in milliseconds (nearest-rank percentiles)."""
    if not values_ns:
        return None
    ordered = sorted(values_ns)
    n = len(ordered)

    def pct(p: float) -> float:
        rank = max(1, -(-int(p * n * 1000) // 100_000))  # ceil(p/100 * n), exactly
        return ordered[min(n, rank) - 1] / 1e6

    return {
        "n": n,
        "p50": round(pct(50), 4),
        "p99": round(pct(99), 4),
        "mean": round(statistics.fmean(ordered) / 1e6, 4),
        "min": round(ordered[0] / 1e6, 4),
        "max": round(ordered[-1] / 1e6, 4),
    }


# ----------------------------------------------------------------- the switches


@dataclass
class LoadConfig:
    host: str = "127.0.0.1"
    port: int = 6653
    port_per_switch: bool = False  # switch i connects to port + i
    switches: int = 1
    mode: str = "latency"  # or "throughput"
    seconds: float = 5.0
    warmup: float = 1.0
    window: int = 64
    dpid_base: int = 1
    cookie: int = 0
    table_id: int = 0
    reason: int = OFPR_ACTION
    in_port: int = 1
    src: str = "02:00:00:00:00:01"
    dsts: tuple[str, ...] = ("02:00:00:00:00:02",)
    src_ip: str = "10.0.0.1"
    arp_targets: tuple[str, ...] = ()
    teach_port: int | None = None
    prime: bool = False
    reply: str = "packet-out"  # what completes a packet-in; or "first"
    timeout: float = 1.0  # a packet-in not done by then is lost
    prime_timeout: float = 2.0
    prime_attempts: int = 3
    connect_timeout: float = 10.0
    quiet: float = 0.3  # the controller's start-up messages are over after this much silence

    def __post_init__(self) -> None:
        if self.mode not in ("latency", "throughput"):
            raise ValueError(f"mode {self.mode!r}: latency or throughput")
        if self.reply not in ("packet-out", "first"):
            raise ValueError(f"reply {self.reply!r}: packet-out or first")
        if self.switches < 1 or self.window < 1 or self.seconds <= 0 or self.warmup < 0:
            raise ValueError("switches and window must be >= 1, seconds > 0, warmup >= 0")
        if not self.dsts and not self.arp_targets:
            raise ValueError("give at least one destination MAC or ARP target")


@dataclass
class Template:
    """A packet-in ready to send: copy, then patch the xid and the sequence number."""

    message: bytes
    seq_offset: int  # of the 8-byte sequence number within the message


@dataclass
class Phase:
    """What the timed phase collects, from all switches."""

    recording: bool = False
    done_ns: list[int] = field(default_factory=list)
    reply_ns: list[int] = field(default_factory=list)
    answered: int = 0
    lost: int = 0


class Switch(asyncio.Protocol):
    """One emulated OpenFlow 1.3 switch on one TCP connection."""

    def __init__(self, index: int, cfg: LoadConfig, phase: Phase) -> None:
        self.index = index
        self.cfg = cfg
        self.dpid = cfg.dpid_base + index
        self.phase = phase
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.xid = 0
        self.seq = 0
        self.messages: Counter[str] = Counter()
        self.answered = 0
        self.lost = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.last_rx = time.perf_counter()
        # seq -> [sent_ns, first_reply_ns (0: none yet)]
        self.outstanding: dict[int, list[int]] = {}
        self.unreplied: deque[int] = deque()  # FIFO for replies that carry no data
        self.waiter: tuple[int, asyncio.Future[int]] | None = None
        self.sending = False  # throughput mode: refill the window on each answer
        self.templates = [
            self._template(i) for i in range(max(len(cfg.dsts), len(cfg.arp_targets)))
        ]
        self.next_template = 0

    # --------------------------------------------------------------- frames

    def _template(self, i: int, teach: bool = False) -> Template:
        cfg = self.cfg
        dst = cfg.dsts[i % len(cfg.dsts)] if cfg.dsts else "ff:ff:ff:ff:ff:ff"
        src, in_port = cfg.src, cfg.in_port
        arp = cfg.arp_targets[i % len(cfg.arp_targets)] if cfg.arp_targets else None
        if teach:
            assert cfg.teach_port is not None
            src, dst, in_port, arp = dst, cfg.src, cfg.teach_port, None
        frame, tag_offset = build_frame(
            src, dst, switch=self.index, src_ip=cfg.src_ip, arp_target=arp
        )
        msg = pack_packet_in(
            0, frame, in_port=in_port, table_id=cfg.table_id, cookie=cfg.cookie, reason=cfg.reason
        )
        return Template(msg, PACKET_IN_DATA_OFFSET + tag_offset + 8)

    def send_packet_in(self, template: Template | None = None) -> int:
        """Queue one packet-in (written at the end of this callback, or by flush())."""
        if template is None:
            template = self.templates[self.next_template]
            self.next_template = (self.next_template + 1) % len(self.templates)
        self.seq += 1
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        msg = bytearray(template.message)
        struct.pack_into("!I", msg, 4, self.xid)
        struct.pack_into("!Q", msg, template.seq_offset, self.seq)
        self.outstanding[self.seq] = [time.perf_counter_ns(), 0]
        self.unreplied.append(self.seq)
        self.out.append(bytes(msg))
        return self.seq

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    # --------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(pack_hello())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"switch {self.index}: connection lost"))
        if self.waiter is not None and not self.waiter[1].done():
            self.waiter[1].set_exception(ConnectionError(f"switch {self.index}: connection lost"))

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.perf_counter()
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - pos >= HEADER_LEN:
                _, msg_type, length, xid = HEADER.unpack_from(buf, pos)
                if length < HEADER_LEN:
                    raise ValueError(f"switch {self.index}: bad message length {length}")
                if end - pos < length:
                    break
                self._handle(msg_type, xid, view[pos : pos + length])
                pos += length
        finally:
            view.release()
        del buf[:pos]
        self.flush()

    def _handle(self, msg_type: int, xid: int, msg: memoryview) -> None:
        now = time.perf_counter_ns()
        if msg_type == OFPT_PACKET_OUT:
            self.messages["packet_out"] += 1
            tag = frame_tag(packet_out_data(msg), TAG_OFFSET)
            if tag is not None and tag[0] == self.index:
                self._reply(now, tag[1], packet_out=True)
            else:
                self._reply(now, None, packet_out=True)
        elif msg_type == OFPT_FLOW_MOD:
            self.messages["flow_mod"] += 1
            self._reply(now, None, packet_out=False)
        elif msg_type == OFPT_ECHO_REQUEST:
            self.messages["echo_request"] += 1
            self.out.append(pack_message(OFPT_ECHO_REPLY, xid, bytes(msg[HEADER_LEN:])))
        elif msg_type == OFPT_BARRIER_REQUEST:
            self.messages["barrier_request"] += 1
            self.out.append(pack_message(OFPT_BARRIER_REPLY, xid))
        elif msg_type == OFPT_FEATURES_REQUEST:
            self.messages["features_request"] += 1
            self.out.append(pack_features_reply(xid, self.dpid))
            # A controller that never asks for the port description is ready now.
            asyncio.get_running_loop().call_later(0.5, self._set_ready)
        elif msg_type == OFPT_MULTIPART_REQUEST:
            self.messages["multipart_request"] += 1
            (mp_type,) = struct.unpack_from("!H", msg, HEADER_LEN)
            if mp_type == OFPMP_PORT_DESC:
                self.out.append(pack_multipart_reply(xid, mp_type, port_desc_body(self.index)))
                self._set_ready()
            elif mp_type == OFPMP_DESC:
                self.out.append(pack_multipart_reply(xid, mp_type, desc_body(self.dpid)))
            else:
                self.out.append(pack_multipart_reply(xid, mp_type))
        elif msg_type == OFPT_GET_CONFIG_REQUEST:
            self.messages["get_config_request"] += 1
            self.out.append(pack_message(OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF)))
        elif msg_type == OFPT_ROLE_REQUEST:
            self.messages["role_request"] += 1
            self.out.append(pack_message(OFPT_ROLE_REPLY, xid, bytes(msg[HEADER_LEN:])))
        elif msg_type == OFPT_GET_ASYNC_REQUEST:
            self.messages["get_async_request"] += 1
            self.out.append(pack_message(OFPT_GET_ASYNC_REPLY, xid, bytes(24)))
        else:
            self.messages[TYPE_NAMES.get(msg_type, f"type_{msg_type}")] += 1

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _reply(self, now: int, seq: int | None, packet_out: bool) -> None:
        """A flow-mod or packet-out arrived: credit the packet-in it answers."""
        if seq is None:
            # No data to match: the oldest packet-in without a reply (FIFO).
            while self.unreplied:
                first = self.unreplied.popleft()
                entry = self.outstanding.get(first)
                if entry is not None and entry[1] == 0:
                    entry[1] = now
                    if self.cfg.reply == "first":
                        self._done(now, first)
                    return
            return
        entry = self.outstanding.get(seq)
        if entry is None:
            return  # already done (or lost)
        if entry[1] == 0:
            entry[1] = now
        if packet_out or self.cfg.reply == "first":
            self._done(now, seq)

    def _done(self, now: int, seq: int) -> None:
        sent, first = self.outstanding.pop(seq)
        unreplied = self.unreplied
        while unreplied and unreplied[0] not in self.outstanding:
            unreplied.popleft()  # keeps the FIFO short when packet-outs answer everything
        phase = self.phase
        if phase.recording:
            phase.answered += 1
            self.answered += 1
            phase.done_ns.append(now - sent)
            if self.cfg.mode == "latency":
                phase.reply_ns.append(first - sent)
        if self.waiter is not None and self.waiter[0] == seq and not self.waiter[1].done():
            self.waiter[1].set_result(now - sent)
        if self.sending:
            self.send_packet_in()

    # --------------------------------------------------------------- drivers

    async def request(self, template: Template | None = None, timeout: float | None = None) -> int:
        """Send one packet-in and wait until it is done; its latency in ns.

        Raises TimeoutError (the packet-in is then counted lost)."""
        seq = self.send_packet_in(template)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiter = (seq, future)
        self.flush()
        try:
            return await asyncio.wait_for(future, timeout or self.cfg.timeout)
        except TimeoutError:
            self.outstanding.pop(seq, None)
            self.lost += 1
            if self.phase.recording:
                self.phase.lost += 1
            raise
        finally:
            self.waiter = None

    async def latency_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self.closed.done():
            try:
                await self.request()
            except TimeoutError:
                continue

    def start_window(self) -> None:
        self.sending = True
        for _ in range(self.cfg.window - len(self.outstanding)):
            self.send_packet_in()
        self.flush()

    def expire(self, now: int) -> None:
        """Throughput mode: give up on packet-ins older than the timeout, refill."""
        limit = now - int(self.cfg.timeout * 1e9)
        stale = [seq for seq, (sent, _) in self.outstanding.items() if sent < limit]
        for seq in stale:
            del self.outstanding[seq]
            self.lost += 1
            if self.phase.recording:
                self.phase.lost += 1
            if self.sending:
                self.send_packet_in()
        self.flush()

    async def prime(self, teach: bool) -> tuple[list[int], int]:
        """Each destination once, waiting for the answer (retrying): latencies, failures."""
        latencies: list[int] = []
        failed = 0
        n = len(self.templates)
        for i in range(n):
            template = self._template(i, teach=teach) if teach else self.templates[i]
            for _ in range(self.cfg.prime_attempts):
                try:
                    latencies.append(await self.request(template, self.cfg.prime_timeout))
                    break
                except TimeoutError:
                    continue
            else:
                failed += 1
        return latencies, failed


async def _connect(cfg: LoadConfig, index: int, phase: Phase) -> Switch:
    loop = asyncio.get_running_loop()
    port = cfg.port + index if cfg.port_per_switch else cfg.port
    _, proto = await loop.create_connection(lambda: Switch(index, cfg, phase), cfg.host, port)
    sock = proto.transport.get_extra_info("socket") if proto.transport else None
    if sock is not None:
        import socket

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return proto


async def _quiet(switches: list[Switch], quiet: float, limit: float) -> None:
    """Wait until no switch has heard anything for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        silent = time.perf_counter() - max(s.last_rx for s in switches)
        if silent >= quiet:
            return
        await asyncio.sleep(quiet - silent)


async def _expiry(switches: list[Switch], stop: asyncio.Event, timeout: float) -> None:
    while not stop.is_set():
        await asyncio.sleep(min(0.25, timeout / 2))
        now = time.perf_counter_ns()
        for s in switches:
            s.expire(now)


def _message_totals(switches: list[Switch]) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in switches:
        total.update(s.messages)
    return total


async def _measure(
    switches: list[Switch], cfg: LoadConfig, phase: Phase
) -> tuple[float, Counter[str]]:
    """Run the mode: warm-up, then the timed phase without a pause between them.

    Returns the timed phase's length and the messages the switches got during it."""
    stop = asyncio.Event()
    if cfg.mode == "latency":
        tasks = [asyncio.create_task(s.latency_loop(stop)) for s in switches]
    else:
        for s in switches:
            s.start_window()
        tasks = [asyncio.create_task(_expiry(switches, stop, cfg.timeout))]
    try:
        await asyncio.sleep(cfg.warmup)
        before = _message_totals(switches)
        for s in switches:
            s.answered = 0
        phase.recording = True
        start = time.perf_counter()
        await asyncio.sleep(cfg.seconds)
        phase.recording = False
        elapsed = time.perf_counter() - start
        during = _message_totals(switches)
        during.subtract(before)
    finally:
        phase.recording = False
        stop.set()
        for s in switches:
            s.sending = False
        await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed, during


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Connect, handshake, teach/prime, warm up, measure; the result as a dict."""
    phase = Phase()
    result: dict[str, Any] = {
        "mode": cfg.mode,
        "switches": cfg.switches,
        "window": cfg.window if cfg.mode == "throughput" else 1,
        "reply": cfg.reply,
        "destinations": len(cfg.arp_targets or cfg.dsts),
    }
    t0 = time.perf_counter()
    switches: list[Switch] = []
    try:
        connecting = asyncio.gather(*(_connect(cfg, i, phase) for i in range(cfg.switches)))
        switches = list(await asyncio.wait_for(connecting, cfg.connect_timeout))
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in switches)), cfg.connect_timeout)
        result["handshake_s"] = round(time.perf_counter() - t0, 3)
        await _quiet(switches, cfg.quiet, cfg.connect_timeout)
        result["startup_messages"] = dict(_message_totals(switches))
        for teach, key in ((True, "teach"), (False, "prime")):
            if (teach and cfg.teach_port is None) or (not teach and not cfg.prime):
                continue
            outcomes = await asyncio.gather(*(s.prime(teach) for s in switches))
            latencies = [x for got, _ in outcomes for x in got]
            result[key] = {"failed": sum(f for _, f in outcomes), "ms": summarize(latencies)}
            await _quiet(switches, min(cfg.quiet, 0.1), cfg.connect_timeout)
        elapsed, during = await _measure(switches, cfg, phase)
        messages = {k: v for k, v in sorted(during.items()) if v}
        answered = phase.answered
        result.update(
            seconds=round(elapsed, 3),
            answered=answered,
            rate_per_s=round(answered / elapsed, 1),
            lost=phase.lost,
            done_ms=summarize(phase.done_ns),
            reply_ms=summarize(phase.reply_ns) if cfg.mode == "latency" else None,
            per_switch_answered=[s.answered for s in switches],
            messages=messages,
            messages_per_answer={k: round(v / answered, 2) for k, v in messages.items()}
            if answered
            else {},
        )
        if any(s.closed.done() for s in switches):
            result["error"] = "a connection was closed by the controller"
    except (OSError, TimeoutError, ConnectionError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        for s in switches:
            if s.transport is not None:
                s.transport.close()
    return result


# ----------------------------------------------------------------- CLI


def _int(text: str) -> int:
    return int(text, 0)


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    p = argparse.ArgumentParser(prog="ofload", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6653)
    p.add_argument("--port-per-switch", action="store_true", help="switch i connects to port + i")
    p.add_argument("--switches", type=int, default=1)
    p.add_argument("--mode", choices=("latency", "throughput"), default="latency")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--window", type=int, default=64, help="throughput mode: outstanding per switch")
    p.add_argument("--dpid-base", type=_int, default=1)
    p.add_argument("--cookie", type=_int, default=0)
    p.add_argument("--table-id", type=int, default=0)
    p.add_argument("--reason", choices=("action", "no_match"), default="action")
    p.add_argument("--in-port", type=int, default=1)
    p.add_argument("--src", default="02:00:00:00:00:01")
    p.add_argument("--dst", nargs="+", default=["02:00:00:00:00:02"])
    p.add_argument("--src-ip", default="10.0.0.1")
    p.add_argument("--arp-targets", nargs="*", default=[], help="send ARP requests for these")
    p.add_argument(
        "--teach-port", type=int, help="first send one packet-in from each --dst on this port"
    )
    p.add_argument(
        "--prime", action="store_true", help="first send each packet once and wait for it"
    )
    p.add_argument("--reply", choices=("packet-out", "first"), default="packet-out")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--prime-timeout", type=float, default=2.0)
    a = p.parse_args(argv)
    return LoadConfig(
        host=a.host,
        port=a.port,
        port_per_switch=a.port_per_switch,
        switches=a.switches,
        mode=a.mode,
        seconds=a.seconds,
        warmup=a.warmup,
        window=a.window,
        dpid_base=a.dpid_base,
        cookie=a.cookie,
        table_id=a.table_id,
        reason=OFPR_ACTION if a.reason == "action" else OFPR_NO_MATCH,
        in_port=a.in_port,
        src=a.src,
        dsts=tuple(a.dst),
        src_ip=a.src_ip,
        arp_targets=tuple(a.arp_targets),
        teach_port=a.teach_port,
        prime=a.prime,
        reply=a.reply,
        timeout=a.timeout,
        prime_timeout=a.prime_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = asyncio.run(run_load(cfg))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
