"""Reading a hypervisor's OpenFlow state: flows by cookie purpose, their counters."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from mininet_topos.hypervisor import BR_DOVE, Hypervisor

_COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")
_PACKETS = re.compile(r"n_packets=(\d+)")

PURPOSE_MASK = cookies.OURS_MASK | (0xFF << cookies.PURPOSE_SHIFT)


@dataclass(frozen=True)
class FlowLine:
    cookie: int
    n_packets: int
    text: str


def flows(hv: Hypervisor, purpose: Purpose | None = None) -> list[FlowLine]:
    """br-dove's flows (all, or those of one cookie purpose) with their packet counters."""
    args = ["dump-flows", BR_DOVE]
    if purpose is not None:
        value = cookies.Cookie(purpose).value
        args.append(f"cookie={value:#x}/{PURPOSE_MASK:#x}")
    out = hv.ofctl(*args, "--names")
    found = []
    for line in out.splitlines():
        c, n = _COOKIE.search(line), _PACKETS.search(line)
        if c and n:
            found.append(FlowLine(int(c.group(1), 16), int(n.group(1)), line.strip()))
    return found


def packets(hv: Hypervisor, purpose: Purpose, controller_only: bool = False) -> int:
    """Sum of n_packets over the flows of one purpose (optionally only CONTROLLER ones)."""
    return sum(
        f.n_packets for f in flows(hv, purpose) if not controller_only or "CONTROLLER" in f.text
    )


def flow_count(hv: Hypervisor) -> int:
    """Every flow on br-dove, ours or not (a dump line count)."""
    return len(flows(hv))
