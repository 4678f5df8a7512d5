"""A pipe that wakes an OVSDB IDL thread's poll loop from another thread."""

from __future__ import annotations

import os
from typing import Any

import ovs.poller


class WakePipe:
    """`poke` (any thread) makes the loop's next `Poller.block` return at once, so what
    it writes goes out now rather than at its next timeout; `drain` after the block."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(self.write_end, False)

    def poke(self) -> None:
        try:
            os.write(self.write_end, b"!")
        except BlockingIOError:  # a wake-up is pending already
            pass

    def wait(self, poller: Any) -> None:
        poller.fd_wait(self.read_end, ovs.poller.POLLIN)

    def drain(self) -> None:
        try:
            os.read(self.read_end, 512)
        except BlockingIOError:
            pass
