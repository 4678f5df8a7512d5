"""tcpdump in a Mininet namespace, read line by line while it runs."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from mininet_topos.hypervisor import wait_until


class Capture:
    """``tcpdump -n -e -l`` on one interface of a node, inbound only by default.

    Lines are collected by a reader thread; ``wait_for`` polls them with a deadline.
    Use as a context manager, or call ``stop()``; ``lines`` holds what was captured.
    """

    def __init__(
        self, node: Any, intf: str, bpf: str, inbound_only: bool = True, label: str = ""
    ) -> None:
        self.node, self.intf, self.bpf = node, intf, bpf
        self.label = label or f"{node.name}:{intf}"
        self.lines: list[str] = []
        self.errors: list[str] = []
        cmd = ["tcpdump", "-i", intf, "-n", "-e", "-l", "-vv"]
        if inbound_only:
            cmd += ["-Q", "in"]
        cmd += [bpf]
        self.proc = node.popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            wait_until(self._listening, 5.0, f"tcpdump listening on {self.label}")
        except TimeoutError:
            self.stop()
            raise

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            into.append(raw.decode(errors="replace").rstrip("\n"))

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"tcpdump on {self.label} exited: {' / '.join(self.errors)}")
        return any("listening on" in line for line in self.errors)

    def packets(self) -> list[str]:
        """One string per captured packet (-vv continuation lines joined to their packet)."""
        found: list[str] = []
        for line in list(self.lines):
            if not line:
                continue
            if line[0].isspace() and found:
                found[-1] += " " + line.strip()
            else:
                found.append(line)
        return found

    def matching(self, pred: Callable[[str], bool]) -> list[str]:
        return [line for line in self.packets() if pred(line)]

    def wait_for(self, pred: Callable[[str], bool], timeout: float, what: str) -> list[str]:
        return wait_until(lambda: self.matching(pred), timeout, f"{what} on {self.label}")  # type: ignore[no-any-return]

    def stop(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(2)
        return self.packets()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __str__(self) -> str:
        return f"capture {self.label} [{self.bpf}]: " + "\n  ".join(["", *self.packets()])


def settle(seconds: float = 0.5) -> None:
    """Give in-flight packets time to land before asserting that nothing arrived.

    NOTE: absence cannot be polled; every negative capture is paired with a positive one
    that is polled first, so this only covers the last hop's scheduling jitter.
    """
    time.sleep(seconds)
