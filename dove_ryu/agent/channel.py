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
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram
from dove_ryu.protocol.auth import AuthError, CounterSource, ReplayGuard
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import (
    Announce,
    EndpointHere,
    Endpoints,
    Envelope,
    Message,
    batch_endpoints,
    decode,
    encode,
)


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

    def announce(self, hosts: list[IPv4Address], parts: list[Announce]) -> list[Datagram]:
        """Every part of an announcement to each host, each with its own counter."""
        out = [self.datagram(host, part) for host in hosts for part in parts]
        self.stats.count("announce_parts_sent", len(out))
        return out

    def endpoints(self, told: dict[IPv4Address, list[EndpointHere]]) -> list[Datagram]:
        """Each host's ENDPOINTs due at once: one alone as ENDPOINT (older agents take
        it), more batched in as few ENDPOINTS messages as fit."""
        out = []
        for host, eps in told.items():
            if len(eps) == 1:
                out.append(self.datagram(host, eps[0]))
                continue
            batches = batch_endpoints(eps[0].host, eps)
            out += [self.datagram(host, batch) for batch in batches]
            self.stats.count("endpoints_batched", len(eps))
        return out

    def each_entry(
        self,
        now: float,
        msg: Endpoints,
        sender: IPv4Address,
        take: Callable[[float, IPv4Address, EndpointHere], CoreOutput],
    ) -> CoreOutput:
        """An ENDPOINTS batch, each entry taken as one ENDPOINT message; an entry that
        did not decode is dropped and counted, the others are kept."""
        for reason in msg.refused:
            self.stats.drop("endpoint_entry_malformed", now, f"from {sender}: {reason}")
        out = CoreOutput()
        for entry in msg.entries:
            out.extend(take(now, sender, entry))
        return out

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
