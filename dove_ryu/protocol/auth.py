"""Authentication of control messages: deployment key, MAC, counters and anti-replay.

Every control message carries the sender's underlay address, a counter and an HMAC-SHA256
(truncated to 16 bytes) keyed with the deployment key. The counter is a timestamp in
microseconds since the epoch, made strictly increasing per sender by ``CounterSource``, so a
restarted sender never reuses a counter and receivers need no handshake. ``ReplayGuard``
drops a message whose counter was already seen, is older than the sender's window, or (for
a sender it does not know) is too far from the local clock.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import string
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

MAC_LEN = 16
MIN_KEY_LEN = 16
MAX_KEY_ID = 255  # key ids travel in one byte (the KEY_ID TLV)


class AuthError(Exception):
    """A message that fails authentication or anti-replay.

    ``reason`` is a short slug usable as a counter label: "no_auth", "bad_mac", "replay",
    "stale_counter", "unknown_key" (a key id the receiver does not hold), "retired_key"
    (one it held and has since dropped).
    """

    def __init__(self, reason: str, detail: str = "", key_id: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.key_id = key_id  # the key id the message named, for unknown_key


def load_key(text: str) -> bytes:
    """Parse the deployment key: a hex string of at least 32 hex digits (16 bytes)."""
    cleaned = text.strip()
    if len(cleaned) < 2 * MIN_KEY_LEN:
        raise ValueError(
            f"deployment key must be at least {2 * MIN_KEY_LEN} hex digits "
            f"({MIN_KEY_LEN} bytes); got {len(cleaned)} characters"
        )
    # NOTE: the error messages never echo the key itself; it may end up in logs.
    if len(cleaned) % 2 or any(c not in string.hexdigits for c in cleaned):
        raise ValueError("deployment key must be an even number of hex digits [0-9a-fA-F]")
    return bytes.fromhex(cleaned)


def compute_mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` truncated to ``MAC_LEN`` bytes."""
    if len(key) < MIN_KEY_LEN:
        raise ValueError(f"key must be at least {MIN_KEY_LEN} bytes")
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


def verify_mac(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time check of ``tag`` against the MAC of ``data``."""
    return hmac.compare_digest(compute_mac(key, data), tag)


@dataclass(frozen=True)
class KeyRing:
    """The deployment keys an agent holds, by id (0-255), and the one it signs with.

    A message names the key that signed it (the KEY_ID TLV, absent for key 0); the
    receiver verifies it with its key of that id, and refuses an id it does not hold.
    Rotation (docs/control-plane.md section 5): add the new key everywhere, switch the
    signing id host by host, then drop the old key."""

    keys: tuple[tuple[int, bytes], ...]  # (id, key), ids increasing
    signing: int = 0
    _by_id: dict[int, bytes] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        ids = [key_id for key_id, _ in self.keys]
        for key_id, key in self.keys:
            if isinstance(key_id, bool) or not isinstance(key_id, int):
                raise ValueError(f"key id {key_id!r} is not an integer")
            if not 0 <= key_id <= MAX_KEY_ID:
                raise ValueError(f"key id {key_id} is not in 0-{MAX_KEY_ID}")
            if not isinstance(key, bytes) or len(key) < MIN_KEY_LEN:
                raise ValueError(f"key {key_id} must be at least {MIN_KEY_LEN} bytes")
        if len(set(ids)) != len(ids):
            dup = min(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"key id {dup} is given twice")
        if not ids:
            raise ValueError("no deployment key")
        if self.signing not in ids:
            held = ", ".join(map(str, sorted(ids)))
            raise ValueError(f"signing key id {self.signing} is not among the keys ({held})")
        object.__setattr__(self, "keys", tuple(sorted(self.keys)))
        self._by_id.update(self.keys)

    @classmethod
    def of(
        cls, keys: Mapping[int, bytes] | Iterable[tuple[int, bytes]], signing: int = 0
    ) -> KeyRing:
        pairs = keys.items() if isinstance(keys, Mapping) else keys
        return cls(tuple(pairs), signing)

    @classmethod
    def single(cls, key: bytes) -> KeyRing:
        """One key, id 0: a deployment that never rotated (no KEY_ID on the wire)."""
        return cls(((0, key),), 0)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(key_id for key_id, _ in self.keys)

    @property
    def signing_key(self) -> bytes:
        return self._by_id[self.signing]

    def get(self, key_id: int) -> bytes | None:
        """The key of ``key_id``, or None when this ring does not hold it."""
        return self._by_id.get(key_id)

    def __repr__(self) -> str:  # never the keys themselves: reprs end up in logs
        return f"KeyRing(ids={list(self.ids)}, signing={self.signing})"


class CounterSource:
    """Per-sender counters: microseconds since the epoch, strictly increasing.

    If the clock steps back, the counter keeps counting up from the last value.
    """

    def __init__(self, last: int = 0) -> None:
        self._last = last

    def next(self, now: float) -> int:
        self._last = max(self._last + 1, int(now * 1_000_000))
        return self._last


class ReplayGuard:
    """Anti-replay check for authenticated messages, keyed by sender.

    Per sender it keeps the ``window`` highest counters accepted so far (sorted). A counter is
    a replay if it is among them, or if the window is full and the counter is below all of
    them. Messages reordered by fewer than ``window`` messages are accepted.

    NOTE: this is the IPsec sliding window counted in messages rather than counter values: the
    counters are microsecond timestamps, so a bitmap over counter values would cover only
    ``window`` microseconds and reject almost any reordering.

    A counter more than ``max_skew`` seconds ahead of the local clock is "stale_counter"
    always; one more than ``max_skew`` behind is "stale_counter" while the sender has no full
    window yet (first contact, or after eviction or a restart of this guard). So a captured
    message can be replayed to a guard that forgot its sender only within ``max_skew`` seconds
    of being sent. At most ``max_senders`` senders are tracked; the least recently accepted
    is forgotten first.
    """

    def __init__(self, window: int = 64, max_skew: float = 30.0, max_senders: int = 4096) -> None:
        if window < 1 or max_senders < 1 or max_skew <= 0:
            raise ValueError("window and max_senders must be >= 1 and max_skew > 0")
        self.window = window
        self.max_skew = max_skew
        self.max_senders = max_senders
        self._seen: OrderedDict[IPv4Address, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, sender: object) -> bool:
        return sender in self._seen

    def check(self, sender: IPv4Address, counter: int, now: float) -> None:
        """Accept and record ``counter`` from ``sender``, or raise AuthError."""
        now_us = int(now * 1_000_000)
        skew_us = int(self.max_skew * 1_000_000)
        if counter > now_us + skew_us:
            raise AuthError("stale_counter", f"{sender} counter {counter} is in the future")
        seen = self._seen.get(sender)
        if seen is None:
            seen = []
        full = len(seen) >= self.window
        if seen and counter <= seen[-1]:
            i = bisect.bisect_left(seen, counter)
            if i < len(seen) and seen[i] == counter:
                raise AuthError("replay", f"{sender} counter {counter} already seen")
            if full and i == 0:
                raise AuthError("replay", f"{sender} counter {counter} older than window")
        if not full and counter < now_us - skew_us and (not seen or counter < seen[0]):
            raise AuthError("stale_counter", f"{sender} counter {counter} is too old")
        self._record(sender, seen, counter)

    def _record(self, sender: IPv4Address, seen: list[int], counter: int) -> None:
        bisect.insort(seen, counter)
        if len(seen) > self.window:
            del seen[0]
        self._seen[sender] = seen
        self._seen.move_to_end(sender)
        while len(self._seen) > self.max_senders:
            self._seen.popitem(last=False)
