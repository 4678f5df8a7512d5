"""The emulated underlay: a kernel bridge in the root namespace with no address at all.

A plain Linux bridge made with iproute2 (no bridge-utils needed, unlike
``mininet.nodelib.LinuxBridge``) forwards in the kernel, so the underlay costs no userspace
hop next to the hypervisors' userspace OVS on this 2-core machine. The machine's own network
lives in the root namespace, so neither the bridge nor its ports get any address (IPv6
included) and the bridge does not run STP.
"""

from __future__ import annotations

from typing import Any

from mininet.node import Switch
from mininet.util import quietRun


def _no_addresses(intf: str) -> None:
    """Keep a root-namespace interface address-free (no IPv6 link-local either)."""
    quietRun(f"sysctl -qw net.ipv6.conf.{intf}.disable_ipv6=1")
    quietRun(f"ip addr flush dev {intf}")


class UnderlayBridge(Switch):
    """An address-less Linux bridge (iproute2) connecting the hypervisors' uplinks.

    ``mtu`` (default: leave the veths' 1500) is set on every port, so that a frame bigger
    than it is dropped on the way, as on a real path with a smaller MTU.
    """

    def __init__(self, name: str, mtu: int | None = None, **params: Any) -> None:
        params.setdefault("dpid", "1")  # Switch wants one; a kernel bridge does not use it
        self.mtu = mtu
        super().__init__(name, **params)

    def start(self, _controllers: list[Any]) -> None:
        """Create the bridge and enslave every port Mininet gave us."""
        quietRun(f"ip link del {self.name}")  # stale bridge from a crashed run
        out = quietRun(f"ip link add name {self.name} type bridge stp_state 0 forward_delay 0")
        if out.strip():
            raise RuntimeError(f"cannot create bridge {self.name}: {out.strip()}")
        _no_addresses(self.name)
        for intf in self.intfList():
            if intf.name == "lo":
                continue
            _no_addresses(intf.name)
            # Also for the kernel-side veth ends of the underlay (design.md section 5).
            quietRun(f"ethtool -K {intf.name} tx off")
            if self.mtu is not None:
                out = quietRun(f"ip link set {intf.name} mtu {self.mtu}")
                if out.strip():
                    raise RuntimeError(f"{intf.name}: cannot set mtu {self.mtu}: {out.strip()}")
            quietRun(f"ip link set {intf.name} master {self.name} up")
        quietRun(f"ip link set {self.name} up")

    def connected(self) -> bool:
        return True

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        quietRun(f"ip link del {self.name}")
        super().stop(deleteIntfs)
