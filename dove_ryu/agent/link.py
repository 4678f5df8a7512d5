"""The bridge as the core knows it: connected (and its tunnel ports) or not."""

from __future__ import annotations

from collections.abc import Mapping

from dove_ryu.openflow.tunnels import Tunnels


class SwitchLink:
    """Parts that build flows ask here first: while the bridge is away nothing is
    built (the whole state is installed again when it connects)."""

    def __init__(self, tunnels: Tunnels | None = None) -> None:
        self.tunnels = tunnels or Tunnels()

    @property
    def tunnel_ofport(self) -> int | None:
        """The port of our own tunnel_type; None while the switch is away."""
        return self.tunnels.ports.get(self.tunnels.own)

    @tunnel_ofport.setter
    def tunnel_ofport(self, port: int | None) -> None:
        if port is None:
            self.tunnels.ports.clear()
        else:
            self.tunnels.ports[self.tunnels.own] = port

    def other_ports(self, ports: Mapping[str, int]) -> None:
        """The ports of the other accepted encapsulations (OVSDB says, before connect):
        they replace those known, so a port that went away is forgotten."""
        own = self.tunnels.own
        kept = {own: self.tunnels.ports[own]} if own in self.tunnels.ports else {}
        others = {e: p for e, p in ports.items() if e in self.tunnels.accepted and e != own}
        self.tunnels.ports = {**kept, **others}

    @property
    def connected(self) -> bool:
        return self.tunnel_ofport is not None

    @property
    def tunnel(self) -> Tunnels:
        """The tunnel ports and how each peer is reached; only asked while connected."""
        assert self.tunnel_ofport is not None, "the switch is not connected"
        return self.tunnels
