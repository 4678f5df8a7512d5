"""The tunnel ports of a bridge and how to reach each underlay address through them.

One flow-based port per accepted encapsulation (docs/interop.md section 1).  Towards a
DOVE peer the encapsulation is our own ``tunnel_type`` when the peer accepts it, else
the first both accept (VXLAN before Geneve); a Geneve packet to a DOVE peer carries
the DOVE option (class 0xFF0D, type 1, 4 bytes: version, flags, 0, 0) in
``tun_metadata0``.  An address declared with a fixed encapsulation (an external
VTEP, which runs no agent) is reached with that one, without the option.

Pure: flow builders ask it for ports, matches and actions; the core tells it the
ports (on connect) and what peers accept (announcements).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.openflow.ofmsg import OFPP_IN_PORT, Action, MatchValue, Output, SetField

VXLAN, GENEVE = "vxlan", "geneve"
ENCAPSULATIONS = (VXLAN, GENEVE)  # the order a common one is chosen in
_BITS = {VXLAN: 0x01, GENEVE: 0x02}  # TLV ENCAPSULATIONS (protocol/messages.py)
UDP_PORTS = {VXLAN: 4789, GENEVE: 6081}
# Bytes the encapsulation adds to a frame on the underlay (outer IPv4 20, UDP 8, the
# header 8, the inner Ethernet header 14; Geneve: the DOVE option, 4 + 4 bytes).
OVERHEAD = {VXLAN: 50, GENEVE: 58}

# The DOVE Geneve option.
OPTION_CLASS = 0xFF0D  # IANA's experimental range
OPTION_TYPE = 0x01  # not critical: a receiver that does not know it ignores it
OPTION_LEN = 4
OPTION_FIELD = "tun_metadata0"  # where the datapath maps it (NXT_TLV_TABLE_MOD)
DOVE_VERSION = 1
FLAG_ROUTED = 0x01  # set by a host's distributed router on what it routed
FLAG_RELAYED = 0x02  # set by a VAN proxy on what it relays
VERSION_MATCH = (DOVE_VERSION << 24, 0xFF000000)  # classify: version 1, any flags


def option_value(flags: int = 0) -> int:
    """The option's 4 bytes as tun_metadata0's value."""
    return DOVE_VERSION << 24 | (flags & 0xFF) << 16


def encapsulation_bits(types: Iterable[str]) -> int:
    return sum(_BITS[t] for t in set(types))


def encapsulations_of(bits: int | None) -> frozenset[str]:
    """What a peer accepts, from its TLV (absent: an older agent, VXLAN only)."""
    if bits is None:
        return frozenset({VXLAN})
    return frozenset(t for t, b in _BITS.items() if bits & b)


def beyond_vxlan(encapsulation: str) -> int:
    """What ``encapsulation`` costs beyond VXLAN (the sizes the agent knows are VXLAN's)."""
    return OVERHEAD[encapsulation] - OVERHEAD[VXLAN]


def mtu(encapsulation: str, underlay_mtu: int = 1500) -> int:
    """The largest IP packet a VM may send through ``encapsulation``."""
    return underlay_mtu - OVERHEAD[encapsulation]


@dataclass(frozen=True)
class Path:
    """How one address is reached: the encapsulation, its port, and whether the DOVE
    option goes with it."""

    encapsulation: str
    port: int
    dove: bool = True


class Tunnels:
    """The tunnel ports (by encapsulation) and the encapsulation of each peer."""

    def __init__(
        self,
        own: str = VXLAN,
        accepted: Iterable[str] = (),
        count: Callable[[str], object] | None = None,
    ) -> None:
        accept = set(accepted) or {own}
        if own not in accept or not accept <= set(ENCAPSULATIONS):
            raise ValueError(f"tunnel types {sorted(accept)} must include {own}")
        self.own = own
        self.accepted = tuple(t for t in ENCAPSULATIONS if t in accept)
        self.ports: dict[str, int] = {}  # set while the switch is connected
        self._peers: dict[IPv4Address, frozenset[str]] = {}
        self._fixed: dict[IPv4Address, tuple[str, bool]] = {}
        self._announced = encapsulation_bits([own])
        self.count: Callable[[str], object] = count or (lambda _name: None)

    def bits(self) -> int:
        """What we accept, as TLV ENCAPSULATIONS says it: the types whose port the
        switch has (a port OVS has not numbered yet takes nothing: peers would send
        into a drop), kept while the switch is away."""
        receiving = [t for t, _ in self.receiving()]
        if receiving:
            self._announced = encapsulation_bits(receiving)
        return self._announced

    @classmethod
    def single(cls, port: int) -> Tunnels:
        """A VXLAN-only bridge whose tunnel port is ``port`` (as before issue 14)."""
        tunnels = cls()
        tunnels.ports = {VXLAN: port}
        return tunnels

    # ------------------------------------------------------------- the ports

    @property
    def own_port(self) -> int:
        return self.ports[self.own]

    def receiving(self) -> list[tuple[str, int]]:
        """(encapsulation, port) of each port that receives, in ENCAPSULATIONS' order."""
        return [(t, self.ports[t]) for t in self.accepted if t in self.ports]

    @property
    def mixed(self) -> bool:
        """More than one tunnel port: a packet from one must not be flooded into
        another (OpenFlow only keeps it out of the port it came in by)."""
        return len(self.receiving()) > 1

    def receive_matches(self, host: IPv4Address) -> list[dict[str, MatchValue]]:
        """What classify matches, besides tunnel_id and tun_ipv4_src, to accept
        ``host``'s packets: one match per port it may use.  A DOVE peer's Geneve
        packets must carry the DOVE option of our version."""
        fixed = self._fixed.get(host)
        if fixed is not None:
            encap, dove = fixed
            port = self.ports.get(encap)
            if port is None:
                return []
            return [
                {
                    "in_port": port,
                    **({OPTION_FIELD: VERSION_MATCH} if dove and encap == GENEVE else {}),
                }
            ]
        return [
            {"in_port": port, **({OPTION_FIELD: VERSION_MATCH} if encap == GENEVE else {})}
            for encap, port in self.receiving()
        ]

    # ------------------------------------------------------------- the peers

    def peer_accepts(self, host: IPv4Address, encapsulations: frozenset[str]) -> bool:
        """A DOVE peer said what it accepts; True when the way to reach it changed."""
        before, said = self.path_kind(host), self.peer_encapsulations(host)
        if encapsulations == frozenset({VXLAN}):
            self._peers.pop(host, None)  # the default: not kept
        else:
            self._peers[host] = encapsulations
        if encapsulations != said and not encapsulations & set(self.accepted):
            self.count("no_common_encapsulation")
        return self.path_kind(host) != before

    def peer_encapsulations(self, host: IPv4Address) -> frozenset[str]:
        return self._peers.get(host, frozenset({VXLAN}))

    def declare(self, address: IPv4Address, encapsulation: str, dove: bool = False) -> None:
        """``address`` is always reached with ``encapsulation`` (``dove``: with the DOVE
        option); an external VTEP is declared so, without it."""
        if encapsulation not in ENCAPSULATIONS:
            raise ValueError(f"unknown encapsulation {encapsulation!r}")
        self._fixed[address] = (encapsulation, dove)

    def undeclare(self, address: IPv4Address) -> None:
        self._fixed.pop(address, None)

    def path_kind(self, host: IPv4Address) -> tuple[str, bool]:
        """(encapsulation, with the DOVE option) towards ``host``."""
        fixed = self._fixed.get(host)
        if fixed is not None:
            return fixed
        theirs = self.peer_encapsulations(host)
        if self.own in theirs:
            return self.own, True
        common = [t for t in self.accepted if t in theirs]
        return (common[0] if common else self.own), True

    def path(self, host: IPv4Address) -> Path:
        encap, dove = self.path_kind(host)
        # A declared encapsulation whose port we lack falls back to our own port.
        return Path(encap, self.ports.get(encap, self.own_port), dove)

    # ------------------------------------------------------------- actions

    def actions(
        self, instance: int, host: IPv4Address, flags: int = 0, in_port: bool = False
    ) -> tuple[Action, ...]:
        """Encapsulate in ``instance``'s VNI to ``host``: out of its port, or back out of
        the port the packet came in by (``in_port``: a proxy's relays)."""
        path = self.path(host)
        sets: tuple[Action, ...] = (
            SetField("tunnel_id", instance),
            SetField("tun_ipv4_dst", str(host)),
        )
        if path.encapsulation == GENEVE and path.dove:
            sets += (SetField(OPTION_FIELD, option_value(flags)),)
        return (*sets, Output(OFPP_IN_PORT if in_port else path.port))

    def option(self, host: IPv4Address, flags: int = 0) -> tuple[Action, ...]:
        """The DOVE option's set-field towards ``host``, or nothing (VXLAN)."""
        encap, dove = self.path_kind(host)
        return (SetField(OPTION_FIELD, option_value(flags)),) if encap == GENEVE and dove else ()


def as_tunnels(tunnel: Tunnels | int) -> Tunnels:
    """A builder's tunnel argument: the bridge's Tunnels, or (as before issue 14) the
    one VXLAN port's number."""
    return tunnel if isinstance(tunnel, Tunnels) else Tunnels.single(tunnel)


def ports_of(tunnel: Tunnels | int | Mapping[str, int]) -> list[int]:
    if isinstance(tunnel, int):
        return [tunnel]
    if isinstance(tunnel, Tunnels):
        return [p for _, p in tunnel.receiving()]
    return list(tunnel.values())
