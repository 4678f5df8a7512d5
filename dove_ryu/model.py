"""The objects the core reasons about: VM ports, endpoints, members."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

# An instance id is the VXLAN VNI of its traffic and fills the DOVE header's 24-bit
# instance field.  0 is never an instance: cookies, the pipeline's metadata and a header
# with the I flag clear use 0 for "no instance" (a flow or message of no instance).
MAX_INSTANCE = (1 << 24) - 1
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def normalize_mac(text: object, *, multicast: bool = False) -> str:
    """``text`` as lowercase "aa:bb:cc:dd:ee:ff"; ValueError if it is not a MAC address.

    Six pairs of hex digits in any case, split by ':' or by '-' (one kind throughout).
    The one check for every MAC the package takes in: OVSDB port marks, dovectl's
    arguments, control messages.  All of those name a VM (an endpoint), and a VM's MAC
    is unicast, so the group bit (the lowest bit of the first octet) is refused.
    ``multicast=True`` lets a group address through, for a destination an operator
    names (a trace to ff:ff:ff:ff:ff:ff); never for an endpoint."""
    if not isinstance(text, str):
        raise ValueError(f"a MAC address must be a string, got {type(text).__name__}")
    mac = text.strip().lower()
    if not _MAC.match(mac):
        raise ValueError(f"{text!r} is not a MAC address (six hex pairs split by ':' or '-')")
    mac = mac.replace("-", ":")
    if not multicast and is_multicast(mac):
        raise ValueError(f"{text!r} is a multicast MAC, not a VM's")
    return mac


def is_multicast(mac: str) -> bool:
    """A group address (multicast or broadcast): the I/G bit of a normalised MAC."""
    return bool(int(mac[:2], 16) & 1)


def check_instance(value: object) -> int:
    """``value`` if it is an instance id (an int in 1..MAX_INSTANCE); ValueError if not.

    The one check for port marks, dovectl's ``--instance`` and every instance a control
    message carries (in its header or an Announce's list): the same range everywhere,
    since an id on the wire names an instance some port is marked with."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCE:
        raise ValueError(f"instance id {value!r} is not in 1..{MAX_INSTANCE}")
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
