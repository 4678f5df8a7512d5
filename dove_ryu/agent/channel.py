"""The control channel: authenticated DOVE messages to and from other agents.

Every message names its sender and receiver, carries a strictly increasing
counter and an HMAC with the deployment key (`dove_ryu.protocol`); what fails
any check is counted and dropped here, so the roles only see messages that are
meant for them, from who they say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import IPv4Address

from dove_ryu.agent.stats import Stats
from dove_ryu.openflow.ofmsg import Datagram
from dove_ryu.protocol.auth import AuthError, CounterSource, ReplayGuard
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import Envelope, Message, decode, encode


class ControlChannel:
    """Encodes what this agent says and checks what it hears, on one or more legs.

    A host has one leg (its underlay address).  A VAN proxy has two, and each peer
    must hear it from the leg it reaches: ``leg_for`` picks it, and datagrams then
    name their source address so the shell sends them from that leg's socket."""

    def __init__(
        self,
        key: bytes,
        legs: tuple[IPv4Address, ...],
        stats: Stats,
        leg_for: Callable[[IPv4Address], IPv4Address] | None = None,
    ) -> None:
        self.key = key
        self.legs = legs
        self.stats = stats
        self.leg_for = leg_for
        self.counter_source = CounterSource()
        self.replay = ReplayGuard()
        # Anti-replay counters are wall-clock microseconds shared with peers, so they
        # cannot use the monotonic `now`; tests may replace this clock.
        self.wall_clock: Callable[[], float] = time.time

    def datagram(self, host: IPv4Address, msg: Message) -> Datagram:
        leg = self.leg_for(host) if self.leg_for else self.legs[0]
        payload = encode(
            msg,
            receiver=host,
            sender=leg,
            counter=self.counter_source.next(self.wall_clock()),
            key=self.key,
        )
        return Datagram(str(host), payload, src=str(leg) if self.leg_for else "")

    def to_each(self, hosts: list[IPv4Address], msg: Message) -> list[Datagram]:
        return [self.datagram(host, msg) for host in hosts]

    def receive(self, now: float, data: bytes, src: IPv4Address) -> Envelope | None:
        """The checked envelope of a datagram from the underlay, or None (counted)."""
        self.stats.count("control_received")
        try:
            env = decode(data, key=self.key)
            if env.sender != src:
                raise AuthError("sender_mismatch")
            if env.receiver is None or env.receiver not in self.legs:
                raise AuthError("wrong_receiver")
            self.replay.check(env.sender, env.counter, self.wall_clock())
        except (MalformedMessage, AuthError) as e:
            self.stats.drop(f"control_{e.reason}", now, f"from {src}")
            return None
        return env
