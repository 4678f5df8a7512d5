"""A TCP transfer between two VMs (tests/tools/stream.py at both ends) that a test
runs while it moves one of them; both ends report what they saw, block by block."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STREAM = str(Path(__file__).resolve().parent / "stream.py")


@contextmanager
def transfer(
    sender: Any, receiver: Any, port: int, total: int, rate: int = 2_000_000
) -> Iterator[list[str]]:
    """Start ``total`` bytes from ``sender`` to ``receiver`` at ``rate`` bytes/s; the
    body runs while it flows.  On exit, waits for both ends and asserts that the
    receiver got every block the sender sent, in order."""
    python = sys.executable
    recv = receiver.host.popen(
        [python, STREAM, "recv", "--port", str(port), "--bytes", str(total)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert recv.stdout is not None
    assert recv.stdout.readline().strip() == "listening"
    send = sender.host.popen(
        [python, STREAM, "send", "--dst", receiver.ip, "--port", str(port),
         "--bytes", str(total), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    outcome: list[str] = []
    try:
        yield outcome
        sent_out, _ = send.communicate(timeout=90)
        got_out, _ = recv.communicate(timeout=30)
    finally:
        for proc in (send, recv):
            if proc.poll() is None:
                proc.kill()
    outcome += [sent_out, got_out]
    assert sent_out.split()[:1] == [str(total)], sent_out
    assert got_out.split() == sent_out.split(), f"sent {sent_out!r}, received {got_out!r}"
