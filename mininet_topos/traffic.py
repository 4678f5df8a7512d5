"""Traffic between emulated VMs for tests and benchmarks: iperf3, and a 5 ms ``ping -D``
stream whose longest silence is the gap an event caused."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from mininet_topos.emulation import VmRecord
from mininet_topos.hypervisor import wait_until

IPERF_PORT = 5201
PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)")
PING_SENT = re.compile(r"(\d+) packets transmitted, (\d+) received")
STREAM_INTERVAL = 0.005  # seconds between echo requests of a stream


class TrafficError(RuntimeError):
    pass


def iperf3(
    client: VmRecord,
    server: VmRecord,
    seconds: int,
    port: int = IPERF_PORT,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """TCP from ``client`` to ``server`` for ``seconds``; iperf3's JSON result.

    ``extra`` goes to the client (e.g. ``-R``, ``-i 0.1``). The server is started for one
    test and waited for (polled, not slept on)."""
    proc = server.host.popen(
        ["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: f":{port} " in server.host.cmd("ss -Hltn"), 5.0, "iperf3 server to listen"
        )
        out, err, rc = client.host.pexec(
            [
                "timeout",
                str(seconds + 25),
                "iperf3",
                "-J",
                "-c",
                server.ip,
                "-p",
                str(port),
                "-t",
                str(seconds),
                *extra,
            ]
        )
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise TrafficError(f"iperf3 {client.name} -> {server.name} failed ({rc}): {out}{err}")
    result: dict[str, Any] = json.loads(out)
    return result


def mbits(result: dict[str, Any]) -> float:
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6


# ------------------------------------------------------------------ ping streams


def gap_ms(replies: Sequence[float], stopped_at: float) -> float | None:
    """The longest silence (ms) between replies, from the last reply before ``stopped_at``
    on; None without a reply after it (the stream never came back)."""
    before = [t for t in replies if t < stopped_at]
    after = sorted(t for t in replies if t >= stopped_at)
    if not after:
        return None
    points = ([max(before)] if before else []) + after
    gap = max((y - x for x, y in zip(points, points[1:], strict=False)), default=0.0)
    return gap * 1000


def parse_stream(output: str) -> tuple[list[float], int | None, int | None]:
    """A ``ping -D`` stream's reply times, and packets sent and received."""
    replies = [float(m.group(1)) for m in map(PING_LINE.match, output.splitlines()) if m]
    sent = PING_SENT.search(output)
    if not sent:
        return replies, None, None
    return replies, int(sent.group(1)), int(sent.group(2))


def came_back(replies: Sequence[float], stopped_at: float, silence: float = 0.05) -> bool:
    """A reply after ``stopped_at`` that follows a silence longer than ``silence`` s."""
    return any(
        y >= stopped_at and y - x > silence for x, y in zip(replies, replies[1:], strict=False)
    )


def read_so_far(log: Any) -> str:
    log.seek(0)
    text = str(log.read())
    log.seek(0, 2)
    return text


def ping_stream(src: VmRecord, dst_ip: str) -> tuple[Any, Any]:
    """Start a 5 ms ``ping -D`` stream to a file (a pipe nobody reads would stall it)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = src.host.popen(
        ["ping", "-D", "-i", str(STREAM_INTERVAL), "-W", "1", dst_ip],
        stdout=log,
        stderr=subprocess.DEVNULL,
    )
    return proc, log


def stop_stream(proc: Any, log: Any) -> str:
    proc.send_signal(2)
    proc.wait(timeout=10)
    log.seek(0)
    return str(log.read())
