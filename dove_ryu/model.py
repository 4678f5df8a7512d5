"""The objects the core reasons about: VM ports, endpoints, members."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address

IpAddress = IPv4Address | IPv6Address

# An instance id is the VXLAN VNI of its traffic and fills the DOVE header's 24-bit
# instance field.  0 is never an instance: cookies, the pipeline's metadata and a header
# with the I flag clear use 0 for "no instance" (a flow or message of no instance).
# The last VNI is not an instance either: it is the BFD tunnels' (BFD_VNI), which
# carry the liveness checks between the datapaths of a site's proxies (and between
# the gateways), so no instance's traffic may ever travel under it.
BFD_VNI = (1 << 24) - 1
MAX_INSTANCE = BFD_VNI - 1
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


def endpoint_mac(text: object) -> str:
    """``text`` as a VM's MAC (`normalize_mac`), never one of the routers' gateway MACs
    (`ROUTER_MAC_PREFIX`): a VM marked with one, or an endpoint announced with one, could
    send as its subnet's router.  The check for every MAC that names an endpoint: port
    marks, directory rows, LEARN answers, ENDPOINT and requesters."""
    mac = normalize_mac(text)
    if mac.startswith(ROUTER_MAC_PREFIX + ":"):
        raise ValueError(f"{text!r} is in the routers' range {ROUTER_MAC_PREFIX}, not a VM's")
    return mac


def link_local(mac: str) -> IPv6Address:
    """The IPv6 link-local address a VM derives from its MAC (RFC 4291 modified EUI-64):
    the one fe80:: source port security lets a port with addresses use besides its
    marked ones (README, "Port security")."""
    octets = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


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
    # The prefix written with the first address in its ``dove-ips`` mark ("10.0.1.5/24"),
    # told to the VM by DHCP when its instance is on no router; None: none written.
    prefixlen: int | None = None
    ips6: tuple[IPv6Address, ...] = ()  # its IPv6 addresses, from the same mark
    # ``dove-ipv6-router=true``: the VM is a router and may send Router Advertisements
    # and Redirects (every other VM's are dropped: the classic rogue-RA attack).
    ipv6_router: bool = False

    @property
    def addressed(self) -> bool:
        """Whether port security checks its IP sources (it has addresses of either family)."""
        return bool(self.ips or self.ips6)

    @property
    def addresses(self) -> tuple[IpAddress, ...]:
        """Its addresses of both families."""
        return (*self.ips, *self.ips6)

    @property
    def sources6(self) -> tuple[IPv6Address, ...]:
        """The IPv6 sources it may use: its addresses and its MAC's link-local one."""
        ll = link_local(self.mac)
        return (*self.ips6, ll) if ll not in self.ips6 else self.ips6


@dataclass(frozen=True)
class Endpoint:
    """Where a VM lives: the answer to a LEARN request."""

    instance: int
    mac: str
    ips: tuple[IPv4Address, ...]
    host: IPv4Address
    seq: int
    ips6: tuple[IPv6Address, ...] = ()

    @property
    def addresses(self) -> tuple[IpAddress, ...]:
        """Its addresses of both families."""
        return (*self.ips, *self.ips6)

    def at(self, host: IPv4Address) -> Endpoint:
        """The same endpoint, reached through ``host``."""
        return Endpoint(self.instance, self.mac, self.ips, host, self.seq, self.ips6)

    def without_ips(self, ips: Iterable[IpAddress]) -> Endpoint:
        gone = set(ips)
        kept = tuple(i for i in self.ips if i not in gone)
        kept6 = tuple(i for i in self.ips6 if i not in gone)
        return Endpoint(self.instance, self.mac, kept, self.host, self.seq, kept6)


@dataclass
class LearnedEndpoint:
    endpoint: Endpoint
    learned_at: float
    answered_by: IPv4Address
    reinstalled_at: float = float("-inf")  # last time a miss put its forwarding flow back
    # Read back from the switch by a restarted agent, and not confirmed since by an
    # announcement or an answer (`dove_ryu.agent.takeover`).
    adopted: bool = False


# ------------------------------------------------------------------ routers (issue 12)

MAX_ROUTER = 4095  # a router's id: its cookie tag and, on a gateway, its conntrack zone
ROUTER_MAC_PREFIX = "0a:d0:00"


def router_mac(instance: int) -> str:
    """The gateway MAC of the subnet that is ``instance``: derived, so that every host
    and gateway agrees on it without a mark (docs/routing.md).  Locally administered
    and unicast, so it never clashes with a vendor's MAC."""
    check_instance(instance)
    low = f"{instance:06x}"
    return f"{ROUTER_MAC_PREFIX}:{low[0:2]}:{low[2:4]}:{low[4:6]}"


@dataclass(frozen=True)
class Subnet:
    """One of a router's subnets: an instance and its gateway address on it."""

    instance: int
    gateway: IPv4Interface  # the router's address in the subnet, with its prefix

    @property
    def network(self) -> IPv4Network:
        return self.gateway.network

    @property
    def mac(self) -> str:
        return router_mac(self.instance)


@dataclass(frozen=True)
class FloatingIp:
    """A one-to-one mapping from an external address to a VM's inside address."""

    external: IPv4Address
    inside: IPv4Address


@dataclass(frozen=True)
class Router:
    """A tenant router (docs/routing.md): its subnets, routed on every host, and its way
    out through the gateways (source NAT to ``snat``, and floating IPs)."""

    router_id: int
    subnets: tuple[Subnet, ...]
    snat: IPv4Address | None = None
    floating_ips: tuple[FloatingIp, ...] = ()

    @property
    def instances(self) -> tuple[int, ...]:
        return tuple(s.instance for s in self.subnets)

    @property
    def has_way_out(self) -> bool:
        return self.snat is not None or bool(self.floating_ips)

    def subnet_of(self, instance: int) -> Subnet | None:
        return next((s for s in self.subnets if s.instance == instance), None)

    def subnet_for(self, ip: IPv4Address) -> Subnet | None:
        """The subnet ``ip`` is in, or None: off the router's subnets."""
        return next((s for s in self.subnets if ip in s.network), None)


# --- external VTEPs (issue 14, docs/interop.md section 2) ----------------------------

VTEP_ENCAPSULATIONS = ("vxlan", "geneve")


@dataclass(frozen=True)
class VtepMac:
    """A MAC an operator declares behind an external VTEP (``vtep``: its name), in one
    of its instances, with the IPv4 address it answers ARP for (None: no ARP answer)."""

    instance: int
    mac: str
    vtep: str
    ip: IPv4Address | None = None


@dataclass(frozen=True)
class ExternalVtep:
    """A VTEP that runs no agent (a kernel VXLAN device, a bare-metal NIC, a switch):
    its tunnel traffic for ``instances`` is accepted, it is in their flood groups and
    the MACs behind it are learned in the datapath.  From the configuration
    (`external_vteps`) or, in directory mode, a Host row of role ``vtep``."""

    name: str
    address: IPv4Address
    instances: frozenset[int]
    encapsulation: str = "vxlan"
    macs: tuple[VtepMac, ...] = ()  # declared statically

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError(f"external VTEP {self.name}: no instance")
        for instance in self.instances:
            check_instance(instance)
        if self.encapsulation not in VTEP_ENCAPSULATIONS:
            raise ValueError(
                f"external VTEP {self.name}: encapsulation {self.encapsulation!r} is not "
                f"one of {', '.join(VTEP_ENCAPSULATIONS)}"
            )
        for m in self.macs:
            if m.vtep != self.name or m.instance not in self.instances:
                raise ValueError(f"external VTEP {self.name}: MAC {m.mac} is not in its instances")

    def macs_of(self, instance: int) -> tuple[VtepMac, ...]:
        return tuple(m for m in self.macs if m.instance == instance)
