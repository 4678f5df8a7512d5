"""The objects the core reasons about: VM ports, endpoints, members."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

MAX_INSTANCE = (1 << 24) - 1
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalize_mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"{text!r} is not a MAC address")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{text!r} is a multicast MAC, not a VM address")
    return mac


def check_instance(value: int) -> int:
    if not 1 <= value <= MAX_INSTANCE:
        raise ValueError(f"instance id {value} is not in 1..{MAX_INSTANCE}")
    return value


@dataclass(frozen=True)
class VmPort:
    """A VM's port on the local bridge, as marked in OVSDB (design.md section 2)."""

    name: str
    ofport: int
    instance: int
    mac: str
    ips: tuple[IPv4Address, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """Where a VM lives: the answer to a LEARN request."""

    instance: int
    mac: str
    ips: tuple[IPv4Address, ...]
    host: IPv4Address
    seq: int

    def at(self, host: IPv4Address) -> Endpoint:
        """The same endpoint, reached through ``host``."""
        return Endpoint(self.instance, self.mac, self.ips, host, self.seq)

    def without_ips(self, ips: Iterable[IPv4Address]) -> Endpoint:
        gone = set(ips)
        kept = tuple(i for i in self.ips if i not in gone)
        return Endpoint(self.instance, self.mac, kept, self.host, self.seq)


@dataclass
class LearnedEndpoint:
    endpoint: Endpoint
    learned_at: float
    answered_by: IPv4Address
    reinstalled_at: float = float("-inf")  # last time a miss put its forwarding flow back
