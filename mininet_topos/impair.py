"""A userspace impairment relay: netem's loss, delay and reordering without sch_netem.

    python -m mininet_topos.impair IFACE_A IFACE_B --control /path/relay.sock [--seed N]

Run in a namespace of its own that holds two interfaces and nothing else (no addresses):
every Ethernet frame arriving on one is sent out of the other (AF_PACKET raw sockets,
promiscuous), so the two links behave as one wire. Each direction has an ``Impairment``:
a loss probability, a fixed delay with uniform jitter (frames still leave in order), and
reordering (a fraction of frames held back ``reorder_ms`` more, so later frames overtake
them). Frames due later wait in a heap; one poll loop serves both sockets, the heap and
the control socket.

The control socket (UNIX stream, a JSON object per line, one reply line) changes the
impairments at run time and reads the counts:

    {"cmd": "set", "dir": "both" | "ab" | "ba", "loss": 0.02, "delay_ms": 40, ...}
    {"cmd": "counts"}          -> {"ok": true, "ab": {...}, "ba": {...}, "impairments": ...}

``ab`` is IFACE_A -> IFACE_B. A "set" replaces the direction's whole impairment (missing
fields are 0: {"cmd": "set", "dir": "both"} clears it). Counts per direction: frames
offered (arrived), forwarded, dropped (loss), delayed (waited in the heap), reordered (sent
after a frame that arrived later than it). The randomness is seeded (``--seed``; each
direction draws from its own generator), so a run can be repeated as far as the arrival
times allow.
Standard library only.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4  # pkttype of a frame this host sent (seen on the sending socket)
MAX_FRAME = 65536
DRAIN = 64  # frames read from one socket per readiness, at most
DIRECTIONS = ("ab", "ba")
POLL_MS = 500


@dataclass(frozen=True)
class Impairment:
    """What one direction does to frames: lose ``loss`` of them (0..1), delay each by
    ``delay_ms`` +- ``jitter_ms`` (uniform; order kept), and hold ``reorder`` of them
    (0..1) back ``reorder_ms`` more so that later frames overtake them."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be 0..1")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Impairment:
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in names})

    @property
    def none(self) -> bool:
        return self == Impairment()


@dataclass
class Counts:
    offered: int = 0  # frames that arrived
    forwarded: int = 0
    dropped: int = 0
    delayed: int = 0
    reordered: int = 0
    send_errors: int = 0


class Direction:
    """The pure scheduling of one direction: frames offered with their arrival time come
    out (``offer``'s return value, or ``due`` later) as the impairment says. No I/O."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.impairment = Impairment()
        self.counts = Counts()
        self.heap: list[tuple[float, int, bytes]] = []
        self.arrived = 0  # sequence numbers of arrivals
        self.sent_max = -1  # the highest arrival sequence sent so far
        self.fifo_due = 0.0  # when the last in-order (not held back) frame is due

    def offer(self, frame: bytes, now: float) -> bytes | None:
        """A frame arrived at ``now``: returned if it leaves at once, else None (dropped,
        or queued until ``due``)."""
        seq = self.arrived
        self.arrived += 1
        self.counts.offered += 1
        imp = self.impairment
        if imp.loss and self.rng.random() < imp.loss:
            self.counts.dropped += 1
            return None
        wait = imp.delay_ms
        if imp.jitter_ms:
            wait += self.rng.uniform(-imp.jitter_ms, imp.jitter_ms)
        wait = max(wait, 0.0) / 1000.0
        if imp.reorder and self.rng.random() < imp.reorder:
            at = now + wait + imp.reorder_ms / 1000.0  # held back: not bound by the order
        else:
            at = max(now + wait, self.fifo_due)  # jitter never reorders in-order frames
            self.fifo_due = at
        if at <= now:
            self._out(seq)
            return frame
        self.counts.delayed += 1
        heapq.heappush(self.heap, (at, seq, frame))
        return None

    def due(self, now: float) -> list[bytes]:
        """The queued frames whose time has come, in the order they leave."""
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, seq, frame = heapq.heappop(self.heap)
            self._out(seq)
            out.append(frame)
        return out

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def _out(self, seq: int) -> None:
        self.counts.forwarded += 1
        if seq < self.sent_max:
            self.counts.reordered += 1
        self.sent_max = max(self.sent_max, seq)


def packet_socket(intf: str) -> socket.socket:
    """A raw socket that sees every frame arriving on ``intf`` (promiscuous) and sends."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((intf, 0))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(intf), PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernel: the pkttype check in Relay drops them
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setblocking(False)
    return sock


class Relay:
    """The I/O around two Directions: the packet sockets, the control socket, the loop."""

    def __init__(self, intf_a: str, intf_b: str, control: str, seed: int) -> None:
        self.socks = {"a": packet_socket(intf_a), "b": packet_socket(intf_b)}
        self.dirs = {"ab": Direction(seed * 2 + 1), "ba": Direction(seed * 2 + 2)}
        if os.path.exists(control):
            os.unlink(control)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(control)
        self.control.listen(8)
        self.control_path = control
        self.quit = False

    def run(self) -> None:
        poller = select.poll()
        by_fd = {s.fileno(): name for name, s in self.socks.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        poller.register(self.control.fileno(), select.POLLIN)
        try:
            while not self.quit:
                pending = [d for d in (x.next_due() for x in self.dirs.values()) if d is not None]
                timeout = POLL_MS  # a signal's quit is seen within this
                if pending:
                    due_ms = int((min(pending) - time.monotonic()) * 1000) + 1
                    timeout = min(max(0, due_ms), POLL_MS)
                try:
                    ready = poller.poll(timeout)
                except InterruptedError:
                    continue
                for fd, _ in ready:
                    if fd == self.control.fileno():
                        self.serve_control()
                    else:
                        self.receive(by_fd[fd])
                now = time.monotonic()
                for name, d in self.dirs.items():
                    for frame in d.due(now):
                        self.send(name, frame)
        finally:
            self.control.close()
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)

    def receive(self, side: str) -> None:
        name = "ab" if side == "a" else "ba"
        for _ in range(DRAIN):
            try:
                frame, addr = self.socks[side].recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            out = self.dirs[name].offer(frame, time.monotonic())
            if out is not None:
                self.send(name, out)

    def send(self, name: str, frame: bytes) -> None:
        try:
            self.socks[name[1]].send(frame)
        except OSError:
            self.dirs[name].counts.send_errors += 1

    def serve_control(self) -> None:
        conn, _ = self.control.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                reply = self.handle(json.loads(data or b"{}"))
            except (OSError, ValueError, TypeError) as e:
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "set":
            which = req.get("dir", "both")
            names = DIRECTIONS if which == "both" else (which,)
            if any(n not in DIRECTIONS for n in names):
                raise ValueError(f"dir must be both, ab or ba, not {which!r}")
            imp = Impairment.from_dict(req)
            for n in names:
                self.dirs[n].impairment = imp
        elif cmd != "counts":
            raise ValueError(f"unknown cmd {cmd!r}")
        return {
            "ok": True,
            **{n: asdict(d.counts) for n, d in self.dirs.items()},
            "impairments": {n: asdict(d.impairment) for n, d in self.dirs.items()},
        }


def control(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a relay's control socket; its reply (raises if not ok)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    if not reply.get("ok"):
        raise RuntimeError(f"relay {path}: {reply.get('error')}")
    return reply


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("intf_a")
    p.add_argument("intf_b")
    p.add_argument("--control", required=True, help="the control socket's path")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    relay = Relay(args.intf_a, args.intf_b, args.control, args.seed)

    def stop(_sig: int, _frame: Any) -> None:
        relay.quit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
