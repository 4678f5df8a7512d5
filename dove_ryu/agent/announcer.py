"""What an agent announces, split into parts that fit a frame (docs/control-plane.md §4).

The parts are made once per change of what is announced, not once per peer and round:
a host serving 2,000 instances announces them every interval to each of its peers, and
only each message's envelope (receiver, counter, MAC) differs between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dove_ryu.protocol.messages import Announce, GatewayRole, ProxyRole, split_announce


class Announcer:
    """The parts of the last announcement made, kept while it stays the same."""

    def __init__(
        self,
        incarnation: int | None = None,
        encapsulations: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.incarnation = incarnation  # the agent's (INCARNATION), in every part
        self.encapsulations = encapsulations  # what it accepts now (ENCAPSULATIONS)
        self._key: tuple[object, ...] | None = None
        self._parts: list[Announce] = []

    def parts(
        self,
        instances: Sequence[int],
        proxy: ProxyRole | None = None,
        gateway: GatewayRole | None = None,
    ) -> list[Announce]:
        """The announcement of ``instances`` (sorted), in one part or split by range."""
        encapsulations = self.encapsulations()
        key = (tuple(instances), proxy, gateway, encapsulations)
        if key != self._key:
            self._key = key
            self._parts = split_announce(
                instances,
                proxy,
                gateway,
                incarnation=self.incarnation,
                encapsulations=encapsulations,
            )
        return self._parts
