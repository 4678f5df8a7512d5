"""The VM ports on this host's bridge, indexed every way the core looks them up.

One place keeps the indexes in step: by OVSDB name, by (instance, MAC), by
(instance, IP), per instance; and each VM's location sequence number (the one it
was given when it arrived here, see `dove_ryu.agent.mobility.next_seq`).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType

from dove_ryu.model import IpAddress, VmPort


class LocalPorts:
    def __init__(self) -> None:
        self._by_name: dict[str, VmPort] = {}
        self._by_mac: dict[tuple[int, str], VmPort] = {}
        self._by_ip: dict[tuple[int, IpAddress], VmPort] = {}
        self._by_instance: dict[int, dict[str, VmPort]] = {}
        self._seq: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------- reading

    @property
    def by_name(self) -> Mapping[str, VmPort]:
        return MappingProxyType(self._by_name)

    def get(self, instance: int, mac: str) -> VmPort | None:
        return self._by_mac.get((instance, mac))

    def get_by_ip(self, instance: int, ip: IPv4Address | IPv6Address) -> VmPort | None:
        return self._by_ip.get((instance, ip))

    def __contains__(self, key: tuple[int, str]) -> bool:
        return key in self._by_mac

    def __len__(self) -> int:
        return len(self._by_mac)

    @property
    def instances(self) -> set[int]:
        """The instances this host serves: those with a local VM port."""
        return set(self._by_instance)

    def of_instance(self, instance: int) -> list[VmPort]:
        """The instance's ports here, by MAC."""
        return [p for _, p in sorted(self._by_instance.get(instance, {}).items())]

    def ofports(self, instance: int) -> list[int]:
        return [p.ofport for p in self._by_instance.get(instance, {}).values()]

    def all(self) -> list[VmPort]:
        return list(self._by_mac.values())

    def seq(self, instance: int, mac: str) -> int:
        """The location sequence number of a local VM (1 if it has none)."""
        return self._seq.get((instance, mac), 1)

    # ------------------------------------------------------------- changes

    def differences(self, wanted: list[VmPort]) -> tuple[list[VmPort], list[VmPort]]:
        """(ports to remove, ports to add) to go from what we hold to ``wanted``:
        a port whose marks changed is removed and added again."""
        by_name = {p.name: p for p in wanted}
        gone = [old for name, old in self._by_name.items() if by_name.get(name) != old]
        new = [p for name, p in by_name.items() if self._by_name.get(name) != p]
        return gone, new

    def add(self, port: VmPort, seq: int) -> None:
        key = (port.instance, port.mac)
        self._by_name[port.name] = port
        self._by_mac[key] = port
        self._by_instance.setdefault(port.instance, {})[port.mac] = port
        for ip in _indexed(port):
            self._by_ip[(port.instance, ip)] = port
        self._seq[key] = seq

    def remove(self, port: VmPort) -> int:
        """Forget a port; returns its sequence number (0 if it had none)."""
        del self._by_name[port.name]
        key = (port.instance, port.mac)
        seq = self._seq.pop(key, 0)
        if self._by_mac.get(key) == port:
            del self._by_mac[key]
            same_instance = self._by_instance[port.instance]
            del same_instance[port.mac]
            if not same_instance:
                del self._by_instance[port.instance]
        for ip in _indexed(port):
            if self._by_ip.get((port.instance, ip)) == port:
                del self._by_ip[(port.instance, ip)]
        return seq


def _indexed(port: VmPort) -> tuple[IpAddress, ...]:
    """The addresses a port answers for: its marks and its MAC's IPv6 link-local one."""
    return (*port.ips, *port.sources6)
