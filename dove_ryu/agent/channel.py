"""The control channel: authenticated DOVE messages to and from other agents.

Every message names its sender and receiver, carries a strictly increasing
counter and an HMAC with one of the deployment keys (`dove_ryu.protocol`); what
fails any check is counted and dropped here, so the roles only see messages that
are meant for them, from who they say.  The keys can change while the agent runs
(`rekey`: key rotation, docs/control-plane.md section 5); the anti-replay state
is the senders', not the keys', so it carries over.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.agent.stats import Stats
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram
from dove_ryu.protocol.auth import AuthError, CounterSource, KeyRing, ReplayGuard
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

MAX_PEERS_SEEN = 4096  # as many senders as the replay guard tracks


@dataclass
class PeerSeen:
    """What this agent last heard from one peer: which key signed it, when, and the
    role its announcements claim."""

    key_id: int
    last_heard: float  # the core's monotonic clock
    role: str = "unknown"  # host, proxy or gateway, from its last announcement
    messages: int = 0


class ControlChannel:
    """Encodes what this agent says and checks what it hears, on one or more legs.

    A host has one leg (its underlay address).  A VAN proxy has two, and each peer
    must hear it from the leg it reaches: ``leg_for`` picks it, and datagrams then
    name their source address so the shell sends them from that leg's socket."""

    def __init__(
        self,
        keys: KeyRing | bytes,
        legs: tuple[IPv4Address, ...],
        stats: Stats,
        leg_for: Callable[[IPv4Address], IPv4Address] | None = None,
    ) -> None:
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing.single(keys)
        self.retired: set[int] = set()  # ids this agent held and dropped
        self.legs = legs
        self.stats = stats
        self.leg_for = leg_for
        self.counter_source = CounterSource()
        self.replay = ReplayGuard()
        self.accepted_by_key: Counter[int] = Counter()
        self.peers: OrderedDict[IPv4Address, PeerSeen] = OrderedDict()
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
            key=self.keys.signing_key,
            key_id=self.keys.signing,
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
            env = decode(data, key=self.keys)
            if env.sender != src:
                raise AuthError("sender_mismatch")
            if env.receiver is None or env.receiver not in self.legs:
                raise AuthError("wrong_receiver")
            self.replay.check(env.sender, env.counter, self.wall_clock())
        except (MalformedMessage, AuthError) as e:
            reason = e.reason
            if isinstance(e, AuthError) and e.key_id in self.retired:
                reason = "retired_key"  # a peer still signs with a key we dropped
            detail = f": {e.detail}" if e.detail else ""
            self.stats.drop(f"control_{reason}", now, f"from {src}{detail}")
            return None
        self._heard(now, env)
        return env

    def _heard(self, now: float, env: Envelope) -> None:
        self.accepted_by_key[env.key_id] += 1
        seen = self.peers.pop(env.sender, None) or PeerSeen(env.key_id, now)
        seen.key_id, seen.last_heard = env.key_id, now
        seen.messages += 1
        msg = env.message
        if isinstance(msg, Announce):
            seen.role = "proxy" if msg.proxy else "gateway" if msg.gateway else "host"
        self.peers[env.sender] = seen  # most recently heard last
        while len(self.peers) > MAX_PEERS_SEEN:
            self.peers.popitem(last=False)

    # ------------------------------------------------------------------ keys

    def rekey(self, now: float, keys: KeyRing) -> dict[str, object]:
        """Take a new key ring (a reload); returns what changed, for the operator."""
        old = self.keys
        added = sorted(set(keys.ids) - set(old.ids))
        removed = sorted(set(old.ids) - set(keys.ids))
        self.retired = (self.retired | set(removed)) - set(keys.ids)
        self.keys = keys
        self.stats.count("keys_reloaded")
        self.stats.log.warning(
            "%s: keys reloaded: signing with key %d (was %d), accepting %s; added %s, retired %s",
            self.stats.name,
            keys.signing,
            old.signing,
            ",".join(map(str, keys.ids)),
            ",".join(map(str, added)) or "none",
            ",".join(map(str, removed)) or "none",
        )
        return {**self.key_status(), "added": added, "removed": removed}

    def key_status(self) -> dict[str, object]:
        """The key ids (never the keys) this agent signs with, accepts and has retired."""
        return {
            "signing": self.keys.signing,
            "accepted": list(self.keys.ids),
            "retired": sorted(self.retired),
            "accepted_messages": {str(k): n for k, n in sorted(self.accepted_by_key.items())},
        }

    def peers_status(self, now: float) -> list[dict[str, object]]:
        """Each peer heard from: the key id it last signed with, when, its role."""
        return [
            {
                "address": str(addr),
                "key_id": seen.key_id,
                "last_heard": round(now - seen.last_heard, 3),
                "role": seen.role,
                "messages": seen.messages,
            }
            for addr, seen in sorted(self.peers.items())
        ]
