"""The bridge as the core knows it: connected (and its tunnel port) or not."""

from __future__ import annotations


class SwitchLink:
    """Parts that build flows ask here first: while the bridge is away nothing is
    built (the whole state is installed again when it connects)."""

    def __init__(self) -> None:
        self.tunnel_ofport: int | None = None

    @property
    def connected(self) -> bool:
        return self.tunnel_ofport is not None

    @property
    def tunnel(self) -> int:
        """The tunnel port's number; only asked while connected."""
        assert self.tunnel_ofport is not None, "the switch is not connected"
        return self.tunnel_ofport
