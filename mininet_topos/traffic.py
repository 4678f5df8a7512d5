"""Traffic between emulated VMs: one way to run iperf3 for tests and benchmarks."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from mininet_topos.emulation import VmRecord
from mininet_topos.hypervisor import wait_until

IPERF_PORT = 5201


class TrafficError(RuntimeError):
    pass


def iperf3(
    client: VmRecord, server: VmRecord, seconds: int, port: int = IPERF_PORT
) -> dict[str, Any]:
    """TCP from ``client`` to ``server`` for ``seconds``; iperf3's JSON result.

    The server is started for one test and waited for (polled, not slept on)."""
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
