"""The VTEP controller's core (``role = vtep-controller``, docs/interop.md section 3).

A switch that terminates VXLAN is driven through the standard ``hardware_vtep`` OVSDB
schema.  From the directory's view (the hosts serving each bound instance and the
endpoints of those instances) and the switch's current rows, this module computes
what the switch must be told (`Changes`): a ``Logical_Switch`` ``dove-<instance>`` per
bound instance (``tunnel_key`` = the instance), the ``vlan_bindings`` of the bound
``Physical_Port`` rows, one ``Ucast_Macs_Remote`` per endpoint (its MAC, IPv4 and a
``Physical_Locator`` at its host) and one ``Mcast_Macs_Remote`` ``unknown-dst`` whose
locator set holds every host serving the instance.  From the switch's
``Ucast_Macs_Local`` it computes the ``Endpoint`` rows the controller writes to the
directory (`LocalMacs`): the switch's MACs at its tunnel IP, so hosts in ``lookup`` and
``push`` find them.

Nothing here does I/O: `dove_ryu.adapters.hw_vtep` reads and writes the switch,
`dove_ryu.adapters.directory` the directory.  Only logical switches named ``dove-*``
and their rows are the controller's: an operator's other logical switches, bindings
and MACs are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow
from dove_ryu.agent.mobility import next_seq
from dove_ryu.config import VtepBinding

PREFIX = "dove-"
UNKNOWN_DST = "unknown-dst"
# The switch sends broadcast and unknown unicast to every host serving the instance itself
# (the default, service_node, sends it to one of them, to replicate: hosts do not).
REPLICATION = "source_node"


def switch_name(instance: int) -> str:
    """The Logical_Switch of an instance."""
    return f"{PREFIX}{instance}"


def switch_instance(name: str) -> int | None:
    """The instance of one of our logical switches (None: not ours)."""
    if not name.startswith(PREFIX):
        return None
    tail = name[len(PREFIX) :]
    return int(tail) if tail.isdigit() and 1 <= int(tail) <= 0xFFFFFF else None


MacKey = tuple[str, str]  # (logical switch name, MAC)


@dataclass(frozen=True)
class RemoteMac:
    """A Ucast_Macs_Remote row as the controller sees it: where a MAC is."""

    ipaddr: str  # "" when unknown
    locator: IPv4Address


@dataclass(frozen=True)
class SwitchState:
    """What the switch's hardware_vtep database holds now, as far as the controller cares
    (``dst_ip`` of locators, names of logical switches)."""

    tunnel_ips: tuple[IPv4Address, ...] = ()
    ports: frozenset[str] = frozenset()  # this Physical_Switch's Physical_Port names
    switches: Mapping[str, int | None] = field(default_factory=dict)  # LS -> tunnel_key
    replication: Mapping[str, str] = field(default_factory=dict)  # LS -> replication_mode
    bindings: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # port->VLAN->LS
    ucast_remote: Mapping[MacKey, RemoteMac] = field(default_factory=dict)
    mcast_remote: Mapping[MacKey, frozenset[IPv4Address]] = field(default_factory=dict)
    ucast_local: Mapping[MacKey, str] = field(default_factory=dict)  # -> ipaddr ("")
    present: bool = False  # the Physical_Switch row exists

    @property
    def tunnel_ip(self) -> IPv4Address | None:
        return self.tunnel_ips[0] if self.tunnel_ips else None


@dataclass
class Changes:
    """What to write to the switch, in one transaction; ``empty()`` when nothing."""

    switches: dict[str, int] = field(default_factory=dict)  # create, or set key and mode
    bindings: dict[str, dict[int, str]] = field(default_factory=dict)  # port -> all its VLANs
    ucast_set: dict[MacKey, RemoteMac] = field(default_factory=dict)
    ucast_delete: list[MacKey] = field(default_factory=list)
    mcast_set: dict[str, frozenset[IPv4Address]] = field(default_factory=dict)  # LS -> set
    mcast_delete: list[str] = field(default_factory=list)  # LS

    def empty(self) -> bool:
        return not (
            self.switches
            or self.bindings
            or self.ucast_set
            or self.ucast_delete
            or self.mcast_set
            or self.mcast_delete
        )

    def locators(self) -> set[IPv4Address]:
        """Every Physical_Locator the changes refer to."""
        found = {m.locator for m in self.ucast_set.values()}
        for ips in self.mcast_set.values():
            found |= ips
        return found


@dataclass(frozen=True)
class Wanted:
    """The controller's rows as they should be."""

    switches: dict[str, int]
    bindings: dict[tuple[str, int], str]  # (port, VLAN) -> LS
    ucast: dict[MacKey, RemoteMac]
    mcast: dict[str, frozenset[IPv4Address]]  # LS -> locators of unknown-dst


def live_hosts(view: DirectoryView, me: str) -> dict[str, HostRow]:
    """The hosts (and other VTEPs) the directory says alive, but for this switch."""
    return {h.name: h for h in view.hosts if h.alive and h.name != me}


def wanted(view: DirectoryView, me: str, bindings: Iterable[VtepBinding]) -> Wanted:
    """The rows the switch should hold for ``bindings`` given the directory's ``view``."""
    bound = list(bindings)
    instances = {b.instance for b in bound}
    hosts = live_hosts(view, me)
    switches = {switch_name(i): i for i in sorted(instances)}
    mcast: dict[str, frozenset[IPv4Address]] = {}
    for i in sorted(instances):
        serving = frozenset(h.underlay_ip for h in hosts.values() if i in h.instances)
        if serving:
            mcast[switch_name(i)] = serving
    best: dict[MacKey, tuple[int, RemoteMac]] = {}
    for row in view.endpoints:
        host = hosts.get(row.host)
        if row.instance not in instances or host is None:
            continue
        key = (switch_name(row.instance), row.mac)
        ipv4 = next((str(ip) for ip in row.ips if isinstance(ip, IPv4Address)), "")
        if key not in best or best[key][0] < row.seq:
            best[key] = (row.seq, RemoteMac(ipv4, host.underlay_ip))
    ucast = {k: v for k, (_seq, v) in best.items()}
    return Wanted(
        switches=switches,
        bindings={(b.port, b.vlan): switch_name(b.instance) for b in bound},
        ucast=ucast,
        mcast=mcast,
    )


def changes(want: Wanted, state: SwitchState) -> Changes:
    """What turns the switch's rows into ``want`` (only ``dove-*`` rows are touched)."""
    out = Changes()
    for name, tunnel_key in want.switches.items():
        stale = state.replication.get(name, REPLICATION) != REPLICATION
        if state.switches.get(name, -1) != tunnel_key or stale:
            out.switches[name] = tunnel_key
    by_port: dict[str, dict[int, str]] = {}
    for (port, vlan), ls in want.bindings.items():
        by_port.setdefault(port, {})[vlan] = ls
    for port in sorted(set(by_port) | set(state.bindings)):
        if port not in state.ports:
            continue  # the switch has no such port (yet): `missing_ports` says so
        current = dict(state.bindings.get(port, {}))
        new = {v: ls for v, ls in current.items() if switch_instance(ls) is None}
        new.update(by_port.get(port, {}))
        if new != current:
            out.bindings[port] = new
    for mac_key, where in want.ucast.items():
        if state.ucast_remote.get(mac_key) != where:
            out.ucast_set[mac_key] = where
    out.ucast_delete = sorted(
        k for k in state.ucast_remote if switch_instance(k[0]) is not None and k not in want.ucast
    )
    for ls, ips in want.mcast.items():
        if state.mcast_remote.get((ls, UNKNOWN_DST)) != ips:
            out.mcast_set[ls] = ips
    out.mcast_delete = sorted(
        ls
        for (ls, mac) in state.mcast_remote
        if mac == UNKNOWN_DST and switch_instance(ls) is not None and ls not in want.mcast
    )
    return out


def missing_ports(state: SwitchState, bindings: Iterable[VtepBinding]) -> list[str]:
    """Bound ports the switch does not list (a typo, or a port not plugged yet)."""
    return sorted({b.port for b in bindings} - set(state.ports))


class LocalMacs:
    """The switch's local MACs as directory Endpoint rows, each with a sequence number
    taken when the MAC first appears (above any the directory holds for it, as a host
    does for a VM that arrives: `next_seq`) and kept while it stays."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.seqs: dict[tuple[int, str], int] = {}

    def endpoints(
        self,
        state: SwitchState,
        bound: frozenset[int],
        view: DirectoryView,
        wall_clock: float,
    ) -> list[EndpointRow]:
        known: dict[tuple[int, str], int] = {}
        for row in view.endpoints:
            if row.host != self.me:
                key = (row.instance, row.mac)
                known[key] = max(known.get(key, 0), row.seq)
        here: dict[tuple[int, str], str] = {}
        for (ls, mac), ipaddr in state.ucast_local.items():
            instance = switch_instance(ls)
            if instance in bound:
                here[(instance, mac.lower())] = ipaddr
        self.seqs = {
            k: self.seqs.get(k) or next_seq(known.get(k, 0), wall_clock) for k in sorted(here)
        }
        rows = []
        for (instance, mac), seq in self.seqs.items():
            ips = _ipv4s(here[(instance, mac)])
            rows.append(EndpointRow(instance, mac, ips, self.me, seq))
        return rows


def _ipv4s(text: str) -> tuple[IPv4Address, ...]:
    try:
        return (IPv4Address(text),) if text else ()
    except ValueError:
        return ()


class VtepController:
    """The controller's state: the last directory view and switch rows, and what it wrote;
    the shell calls `directory_view` and `switch_state` with each change, then writes
    `changes()` to the switch and `local_endpoints()` to the directory."""

    def __init__(self, me: str, bindings: Iterable[VtepBinding]) -> None:
        self.me = me
        self.bindings = tuple(bindings)
        self.served = frozenset(b.instance for b in self.bindings)
        self.view = DirectoryView([])
        self.state = SwitchState()
        self.local = LocalMacs(me)
        self.counts = {"vtep_transactions": 0, "vtep_rows_written": 0, "vtep_malformed_rows": 0}

    def directory_view(self, view: DirectoryView) -> None:
        self.view = view

    def switch_state(self, state: SwitchState) -> None:
        self.state = state

    def wanted(self) -> Wanted:
        return wanted(self.view, self.me, self.bindings)

    def changes(self) -> Changes:
        if not self.state.present:
            return Changes()
        return changes(self.wanted(), self.state)

    def local_endpoints(self, wall_clock: float) -> list[EndpointRow]:
        return self.local.endpoints(self.state, self.served, self.view, wall_clock)

    def status(self) -> dict[str, object]:
        """For ``dovectl vtep``: bindings, remote MACs written, local MACs read."""
        state = self.state
        return {
            "tunnel_ip": str(state.tunnel_ip) if state.tunnel_ip else None,
            "switch_present": state.present,
            "bindings": [str(b) for b in self.bindings],
            "missing_ports": missing_ports(state, self.bindings) if state.present else [],
            "remote_macs": [
                {"switch": ls, "mac": mac, "ip": r.ipaddr, "locator": str(r.locator)}
                for (ls, mac), r in sorted(state.ucast_remote.items())
                if switch_instance(ls) is not None
            ],
            "flood": {
                ls: sorted(map(str, ips))
                for (ls, mac), ips in sorted(state.mcast_remote.items())
                if mac == UNKNOWN_DST and switch_instance(ls) is not None
            },
            "local_macs": [
                {"switch": ls, "mac": mac, "ip": ip}
                for (ls, mac), ip in sorted(state.ucast_local.items())
                if switch_instance(ls) is not None
            ],
            "counters": dict(self.counts),
        }
