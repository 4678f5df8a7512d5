"""Resolution: the LEARNs in flight, their retries, and the bounds around them.

A miss starts a LEARN (paper IV-C): the request goes to the hosts that serve the
instance, the packets that missed wait here, and the request is sent again until
an answer comes or the retries run out.  Everything is bounded, so a VM spraying
random addresses costs a bounded amount of memory and control traffic: in-flight
LEARNs per instance, held packets per target, a token bucket per instance, and a
negative cache of targets nobody answered.

A LEARN has a ``scope``: where its question goes.  A host asks its peers only
(scope None); a VAN proxy asks into its site or towards the other sites, and the
same target may be in flight both ways.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from dove_ryu.agent.stats import Stats
from dove_ryu.config import LearningConfig
from dove_ryu.protocol.messages import LearnReply, LearnRequest, Requester

Target = str | IPv4Address | IPv6Address  # a MAC (str) or an address
Held = tuple[int, bytes]  # (in_port, frame) of a packet waiting for an answer

MAX_HELD = 4  # packets kept per target; the rest are counted and dropped
NEGATIVE_SIZE = 4096
NEGATIVE_TTL = 2.0  # seconds a target nobody answered is not asked for again


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Pending:
    """A LEARN in flight, with the packets waiting for its answer."""

    instance: int
    target: Target
    request_id: int
    first_sent: float
    next_retry: float
    attempts: int = 1
    held: list[Held] = field(default_factory=list)
    requester: Requester | None = None  # the endpoint whose packet (or request) missed
    scope: Hashable = None

    @property
    def key(self) -> tuple[int, Target, Hashable]:
        return (self.instance, self.target, self.scope)

    def answered_by(self, reply: LearnReply) -> bool:
        if isinstance(self.target, str):
            return self.target == reply.mac
        return self.target in (*reply.ips, *reply.ips6)

    def request(self) -> LearnRequest:
        return LearnRequest(
            instance=self.instance,
            request_id=self.request_id,
            mac=self.target if isinstance(self.target, str) else None,
            ip=self.target if isinstance(self.target, IPv4Address) else None,
            requester=self.requester,
            ip6=self.target if isinstance(self.target, IPv6Address) else None,
        )


class NegativeCache:
    """Targets that nobody answered for, not asked again for a while."""

    def __init__(self, size: int = NEGATIVE_SIZE, ttl: float = NEGATIVE_TTL) -> None:
        self.size, self.ttl = size, ttl
        self.entries: OrderedDict[tuple[int, Target, Hashable], float] = OrderedDict()

    def add(self, key: tuple[int, Target, Hashable], now: float) -> None:
        self.entries[key] = now + self.ttl
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def active(self, key: tuple[int, Target, Hashable], now: float) -> bool:
        expiry = self.entries.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self.entries[key]
            return False
        return True


class Resolver:
    def __init__(self, stats: Stats, settings: LearningConfig) -> None:
        self.stats = stats
        self.timeout = settings.learn_timeout
        self.retries = settings.learn_retries
        self.max_pending_per_instance = settings.max_pending_per_instance
        self.rate = settings.learn_rate_per_instance
        self._by_key: dict[tuple[int, Target, Hashable], Pending] = {}
        self._by_id: dict[int, Pending] = {}
        self._per_instance: dict[int, int] = {}
        self._buckets: dict[int, TokenBucket] = {}
        self.negative = NegativeCache()
        self._last_request_id = 0
        # LEARNs given up since the last `take_given_up`, kept when `keep_given_up` (a
        # host, which drains them every tick): their held packets may still go to the
        # instance's external VTEPs (`dove_ryu.agent.vteps`).
        self.keep_given_up = False
        self.given_up: list[Pending] = []

    def __len__(self) -> int:
        return len(self._by_key)

    def in_flight(self, instance: int, target: Target, scope: Hashable = None) -> Pending | None:
        return self._by_key.get((instance, target, scope))

    def by_request(self, request_id: int) -> Pending | None:
        return self._by_id.get(request_id)

    def of_instance(self, instance: int) -> list[Pending]:
        return [p for p in self._by_key.values() if p.instance == instance]

    def hold(self, pending: Pending, held: Held) -> None:
        if len(pending.held) < MAX_HELD:
            pending.held.append(held)
        else:
            self.stats.count("held_overflow")

    def may_ask(self, now: float, instance: int, target: Target, scope: Hashable = None) -> bool:
        """A new LEARN is allowed: not just unanswered, within the bounds and the rate."""
        if self.negative.active((instance, target, scope), now):
            self.stats.count("drop_negative_cached")
            return False
        if self._per_instance.get(instance, 0) >= self.max_pending_per_instance:
            self.stats.drop("pending_full", now, f"instance {instance}")
            return False
        bucket = self._buckets.setdefault(instance, TokenBucket(self.rate, self.rate))
        if not bucket.take(now):
            self.stats.drop("learn_rate_limited", now, f"instance {instance}")
            return False
        return True

    def start(
        self,
        now: float,
        instance: int,
        target: Target,
        held: list[Held],
        requester: Requester | None = None,
        scope: Hashable = None,
    ) -> Pending:
        pending = Pending(
            instance,
            target,
            self._next_request_id(),
            now,
            now + self.timeout,
            held=held,
            requester=requester,
            scope=scope,
        )
        self._by_key[pending.key] = pending
        self._by_id[pending.request_id] = pending
        self._per_instance[instance] = self._per_instance.get(instance, 0) + 1
        return pending

    def done(self, pending: Pending) -> None:
        if self._by_key.get(pending.key) is not pending:
            return
        del self._by_key[pending.key]
        self._by_id.pop(pending.request_id, None)
        left = self._per_instance.get(pending.instance, 1) - 1
        if left:
            self._per_instance[pending.instance] = left
        else:
            self._per_instance.pop(pending.instance, None)

    def drop_instance(self, instance: int) -> None:
        for pending in self.of_instance(instance):
            self.done(pending)

    def due(self, now: float) -> list[Pending]:
        """The LEARNs to send again now; those out of retries are given up (their
        held packets dropped, the target negatively cached)."""
        resend = []
        for pending in list(self._by_key.values()):
            if pending.next_retry > now:
                continue
            if pending.attempts > self.retries:
                self.done(pending)
                self.negative.add(pending.key, now)
                self.stats.count("learn_timeouts")
                self.stats.count("held_dropped", len(pending.held))
                if self.keep_given_up:
                    self.given_up.append(pending)
                continue
            pending.attempts += 1
            pending.next_retry = now + self.timeout * pending.attempts
            self.stats.count("learn_retransmits")
            resend.append(pending)
        return resend

    def take_given_up(self) -> list[Pending]:
        """The LEARNs given up since the last call (their held packets are counted as
        dropped: no DOVE host took them)."""
        given_up, self.given_up = self.given_up, []
        return given_up

    def take_reply(
        self,
        now: float,
        sender: IPv4Address,
        msg: LearnReply,
        member: bool,
        scope: Hashable = None,
    ) -> Pending | None:
        """The LEARN a reply answers, if it is a well-formed answer to one in flight,
        from where that LEARN was asked (``scope`` of the sender) and from a ``member``
        of the instance; else None, counted."""
        self.stats.count("learn_replies_received")
        pending = self._by_id.get(msg.request_id)
        if pending is None or pending.instance != msg.instance:
            self.stats.count("learn_reply_unsolicited")
            return None
        if msg.host != sender or not pending.answered_by(msg):
            self.stats.drop("learn_reply_mismatch", now, f"from {sender}")
            return None
        if pending.scope != scope:
            self.stats.drop("learn_reply_wrong_side", now, f"from {sender}")
            return None
        if not member:
            detail = f"from {sender} instance {msg.instance}"
            self.stats.drop("learn_reply_nonmember", now, detail)
            return None
        return pending

    def answered(self, now: float, pending: Pending) -> float:
        """A LEARN has its answer: it is done; returns (and records) how long it took."""
        self.done(pending)
        took = now - pending.first_sent
        self.stats.count("learned")
        self.stats.count("learn_latency_ms_total", int(took * 1000))
        self.stats.learn_latency.observe(took)
        return took

    def _next_request_id(self) -> int:
        """32-bit request ids, wrapping, never one still in flight."""
        while True:
            self._last_request_id = self._last_request_id % 0xFFFFFFFF + 1
            if self._last_request_id not in self._by_id:
                return self._last_request_id
