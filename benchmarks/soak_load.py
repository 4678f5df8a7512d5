"""The soak's load, held for the whole run: long-lived TCP streams (soak_stream.py at both
ends), pings between every pair of a tenant's VMs, and a capture in every VM.

Every payload carries its tenant's marker (soak_check.marker): the streams' bytes are
the marker repeated, the pings' padding is it (``ping -p``), so a frame that reaches a VM
of another tenant is recognised in that VM's capture even though the tenants share their
addresses and MACs. Processes run in the VMs' namespaces (``popen``: safe beside the
fault thread, which alone uses the nodes' shells).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from benchmarks.soak_check import (
    PingOutcome,
    Stream,
    foreign_frames,
    marker,
    pcap_frames,
    ping_outcome,
)

STREAM_TOOL = str(Path(__file__).resolve().parent / "soak_stream.py")
PING_INTERVAL = 0.5  # seconds, per pair
STREAM_RATE = 40_000  # bytes/s per stream
FIRST_PORT = 7100


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 40.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Ping:
    """One ``ping -D`` process from ``src`` to ``dst`` (VM records), logging to a file."""

    src: Any
    dst: Any
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    outcome: PingOutcome | None = None

    @property
    def name(self) -> str:
        return f"{self.src.name}->{self.dst.name}"

    def start(self) -> None:
        pattern = marker(self.src.tenant, "ping").hex()
        self.started = time.time()
        with self.log.open("wb") as out:
            self.proc = self.src.host.popen(
                ["ping", "-D", "-i", str(PING_INTERVAL), "-W", "1", "-p", pattern, self.dst.ip],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> PingOutcome:
        ended = time.time()
        if self.proc is not None:
            _stop(self.proc, timeout=5.0)
        self.outcome = ping_outcome(self.log.read_text(errors="replace"), self.started, ended)
        return self.outcome


@dataclass
class StreamRun:
    """Both ends of one soak_stream, their output read into a soak_check.Stream."""

    src: Any
    dst: Any
    port: int
    record: Stream = field(init=False)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.record = Stream(f"{self.src.name}->{self.dst.name}:{self.port}")

    def start(self) -> None:
        pattern = marker(self.src.tenant, f"s{self.port}").hex()
        recv = self.dst.host.popen(
            [sys.executable, STREAM_TOOL, "recv", "--port", str(self.port), "--marker", pattern],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert recv.stdout is not None
        first = recv.stdout.readline().strip()
        if first != "listening":
            raise RuntimeError(f"{self.record.name}: receiver said {first!r}")
        send = self.src.host.popen(
            [sys.executable, STREAM_TOOL, "send", "--dst", self.dst.ip, "--port", str(self.port),
             "--marker", pattern, "--rate", str(STREAM_RATE)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.procs = [send, recv]
        for proc, receiver in ((send, False), (recv, True)):
            t = threading.Thread(target=self._read, args=(proc, receiver), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, proc: subprocess.Popen[str], receiver: bool) -> None:
        assert proc.stdout is not None
        side = "receiver" if receiver else "sender"
        for line in proc.stdout:
            words = line.split()
            if not words:
                continue
            if words[0] == "p" and receiver:
                self.record.progress.append((float(words[1]), int(words[2])))
            elif words[0] == "done":
                if receiver:
                    self.record.received = int(words[1])
                else:
                    self.record.sent = int(words[1])
            elif words[0] in ("error", "corrupt"):
                self.record.errors.append(f"{side} {' '.join(words)}")

    def stop(self) -> Stream:
        send, recv = self.procs
        _stop(send)
        try:
            recv.wait(40)
        except subprocess.TimeoutExpired:
            _stop(recv, signal.SIGKILL)
        for t in self.threads:
            t.join(5)
        self.record.finished = send.returncode == 0 and recv.returncode == 0
        return self.record


@dataclass
class CaptureRun:
    """tcpdump of what arrives at one VM, to a pcap file (headers and marker only)."""

    vm: Any
    path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        intf = f"{self.vm.name}-eth0"
        self.proc = self.vm.host.popen(
            ["tcpdump", "-i", intf, "-Q", "in", "-s", "200", "-U", "-w", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> tuple[int, list[bytes]]:
        """All frames captured, and those of another tenant."""
        if self.proc is not None:
            _stop(self.proc, timeout=10.0)
        try:
            frames = pcap_frames(self.path.read_bytes())
        except (OSError, ValueError):
            return 0, []
        return len(frames), foreign_frames(frames, self.vm.tenant)


def stream_pairs(vms: list[Any]) -> list[tuple[Any, Any]]:
    """Per tenant: a stream inside a site across two hypervisors, and one each way
    between the first two sites (when there are two)."""
    pairs = []
    for tenant in sorted({v.tenant for v in vms}):
        mine = [v for v in vms if v.tenant == tenant]
        by_site: dict[int, list[Any]] = {}
        for v in mine:
            by_site.setdefault(v.site, []).append(v)
        sites = sorted(by_site)
        first = by_site[sites[0]]
        if len(first) > 1:
            pairs.append((first[0], first[1]))
        if len(sites) > 1:
            second = by_site[sites[1]]
            pairs.append((first[0], second[0]))
            pairs.append((second[-1], first[-1]))
    return pairs


@dataclass
class Load:
    """Everything the soak keeps running between the VMs, started and stopped together."""

    vms: list[Any]
    out: Path
    pings: list[Ping] = field(default_factory=list)
    streams: list[StreamRun] = field(default_factory=list)
    captures: list[CaptureRun] = field(default_factory=list)
    spare_pings: list[Ping] = field(default_factory=list)

    def start(self, spares: list[Any]) -> None:
        for vm in [*self.vms, *spares]:
            self.captures.append(CaptureRun(vm, self.out / f"{vm.name}.pcap"))
        for c in self.captures:
            c.start()
        for a, b in combinations(self.vms, 2):
            if a.tenant == b.tenant:
                self.pings.append(Ping(a, b, self.out / f"ping-{a.name}-{b.name}.log"))
        for p in self.pings:
            p.start()
        for n, (a, b) in enumerate(stream_pairs(self.vms)):
            run = StreamRun(a, b, FIRST_PORT + n)
            run.start()
            self.streams.append(run)

    def spare_up(self, spare: Any) -> None:
        """A started spare VM pings a VM of its tenant while it is up."""
        peer = next(v for v in self.vms if v.tenant == spare.tenant)
        n = len(self.spare_pings)
        ping = Ping(spare, peer, self.out / f"spare-{n}-{spare.name}.log")
        ping.start()
        self.spare_pings.append(ping)

    def spare_down(self, spare: Any) -> None:
        for p in self.spare_pings:
            if p.src is spare and p.outcome is None:
                p.stop()

    def stop(self) -> dict[str, Any]:
        """Stop everything; what each part saw."""
        pings = [p.stop() for p in self.pings]
        for p in self.spare_pings:
            if p.outcome is None:
                p.stop()
        streams = [s.stop() for s in self.streams]
        captured = {c.vm.name: c.stop() for c in self.captures}
        return {"pings": pings, "streams": streams, "captured": captured}
