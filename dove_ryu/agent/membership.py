"""Which hosts serve which instance, and the VAN proxies heard (paper IV-C).

Membership comes from announcements: each one lists every instance its sender
serves (a part of a split announcement: every one within its range), and a member
that stops announcing is gone after `lifetime` seconds.  Any part is a heartbeat: it
renews all of its sender's instances, so a lost part costs only until the next round.
It decides which tunnel sources classify accepts, the flood groups' buckets, and
where LEARN requests go.  Announcements can arrive out of order; an older one never
undoes a newer one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.protocol.messages import ProxyRole

LIFETIME_INTERVALS = 3.5  # a member that missed 3 announcements is gone
# A restarted peer (a new INCARNATION) is answered at once, at most this often.
RESTART_ANSWER_INTERVAL = 1.0
MAX_PEERS_TRACKED = 4096  # senders whose last announcement counter is kept


@dataclass
class KnownProxy:
    role: ProxyRole
    expires: float


@dataclass
class Change:
    """What one announcement changed."""

    joined: list[int] = field(default_factory=list)  # instances the sender now serves
    left: list[int] = field(default_factory=list)  # instances it no longer serves
    new_peer: bool = False  # we had not heard of the sender at all


class Membership:
    def __init__(
        self, announce_interval: float, by_directory: bool = False, proxy_hold: float = 0.0
    ) -> None:
        # From the directory, a member stays until the directory says otherwise
        # (`dove_ryu.agent.directory`); from announcements, for 3.5 of their intervals.
        self.lifetime = math.inf if by_directory else announce_interval * LIFETIME_INTERVALS
        # A VAN proxy (an announcement with its role) stays as long as its site's standby
        # holds its role (``proxy_hold``: ha_agent_grace, `dove_ryu.agent.election`): its
        # agent may be restarting while its datapath forwards.  Dropped sooner, the
        # endpoints learned behind it would be forgotten and traffic through it would
        # stall until it is back; if its datapath died, its partner's claim replaces it.
        self.proxy_lifetime = max(self.lifetime, proxy_hold)
        self._hosts: dict[int, dict[IPv4Address, float]] = {}  # instance -> host -> expiry
        self._served: dict[IPv4Address, set[int]] = {}  # host -> its instances
        # No expiry is earlier than this (a lower bound): ticks skip the scan until then.
        self._earliest = math.inf
        self.version = 0  # raised by every join and leave: what depends on it can cache
        self._last_counter: OrderedDict[IPv4Address, int] = OrderedDict()
        self._proxies: dict[IPv4Address, KnownProxy] = {}
        self._incarnation: OrderedDict[IPv4Address, int] = OrderedDict()
        self._restart_answered: dict[IPv4Address, float] = {}
        # What each peer accepts (TLV ENCAPSULATIONS), kept for those that said more
        # than VXLAN (the default, an older agent's).
        self._encapsulations: dict[IPv4Address, frozenset[str]] = {}

    # ------------------------------------------------------------- reading

    def hosts(self, instance: int) -> list[IPv4Address]:
        return list(self._hosts.get(instance, {}))

    def serves(self, instance: int, host: IPv4Address) -> bool:
        return host in self._hosts.get(instance, {})

    def instances(self) -> list[int]:
        """Instances with at least one member, in order."""
        return sorted(i for i, hosts in self._hosts.items() if hosts)

    def count(self, instance: int) -> int:
        return len(self._hosts.get(instance, {}))

    def served(self, host: IPv4Address) -> list[int]:
        """The instances ``host`` serves."""
        return sorted(self._served.get(host, ()))

    def accepts(self, host: IPv4Address, encapsulations: frozenset[str]) -> None:
        if encapsulations == frozenset({"vxlan"}):
            self._encapsulations.pop(host, None)
        elif len(self._encapsulations) < MAX_PEERS_TRACKED or host in self._encapsulations:
            self._encapsulations[host] = encapsulations

    def encapsulations(self, host: IPv4Address) -> frozenset[str]:
        """What ``host`` accepts, as it last announced (VXLAN if it never said)."""
        return self._encapsulations.get(host, frozenset({"vxlan"}))

    @property
    def proxies(self) -> dict[IPv4Address, KnownProxy]:
        return dict(self._proxies)

    # ------------------------------------------------------------- changes

    def fresh(self, sender: IPv4Address, counter: int) -> bool:
        """Whether an announcement is newer than the last one taken from its sender
        (and if so, remember it)."""
        if counter <= self._last_counter.get(sender, -1):
            return False
        self._last_counter[sender] = counter
        self._last_counter.move_to_end(sender)
        if len(self._last_counter) > MAX_PEERS_TRACKED:
            self._last_counter.popitem(last=False)
        return True

    def restarted(self, now: float, sender: IPv4Address, incarnation: int | None) -> bool:
        """Whether an announcement shows a new incarnation of a peer we had heard: it
        restarted and must hear us now, not at our next round (answered at most once
        per RESTART_ANSWER_INTERVAL).  A peer we never heard is `Change.new_peer`."""
        if incarnation is None:
            return False
        before = self._incarnation.get(sender)
        if before is not None and before != incarnation:
            if now < self._restart_answered.get(sender, -math.inf) + RESTART_ANSWER_INTERVAL:
                # Not now: the new incarnation is not recorded, so a later part or
                # round of its announcement is still answered early.
                return False
            self._restart_answered[sender] = now
        self._incarnation[sender] = incarnation
        self._incarnation.move_to_end(sender)
        if len(self._incarnation) > MAX_PEERS_TRACKED:
            gone, _ = self._incarnation.popitem(last=False)
            self._restart_answered.pop(gone, None)
        return before is not None and before != incarnation

    def join(
        self, now: float, instance: int, host: IPv4Address, lifetime: float | None = None
    ) -> bool:
        """``host`` serves ``instance`` (for another lifetime); True if it is new.
        ``lifetime``: instead of the announcements' (a proxy's site members from the
        directory stay until the directory says otherwise)."""
        hosts = self._hosts.setdefault(instance, {})
        joined = host not in hosts
        expires = now + (self.lifetime if lifetime is None else lifetime)
        hosts[host] = expires
        self._earliest = min(self._earliest, expires)
        if joined:
            self._served.setdefault(host, set()).add(instance)
            self.version += 1
        return joined

    def leave(self, instance: int, host: IPv4Address) -> bool:
        hosts = self._hosts.get(instance)
        if hosts is None or hosts.pop(host, None) is None:
            return False
        if not hosts:
            del self._hosts[instance]
        self.version += 1
        served = self._served[host]
        served.discard(instance)
        if not served:
            del self._served[host]
        return True

    def served_by(
        self,
        now: float,
        sender: IPv4Address,
        instances: frozenset[int],
        lifetime: float | None = None,
        covers: tuple[int, int] | None = None,
    ) -> Change:
        """``sender`` serves exactly ``instances`` now: of all instances, or (a part of
        a split announcement) of those in ``covers`` (lo, hi).  Either way its other
        instances are renewed: the sender is alive.  A VAN proxy (`proxy_heard` first)
        stays for ``proxy_lifetime``."""
        if lifetime is None and sender in self._proxies:
            lifetime = self.proxy_lifetime
        served = self._served.get(sender, set())
        change = Change(new_peer=not served)
        lo, hi = covers if covers is not None else (0, math.inf)
        gone = [i for i in served if lo <= i <= hi and i not in instances]
        for instance in sorted(gone):
            self.leave(instance, sender)
            change.left.append(instance)
        expires = now + (self.lifetime if lifetime is None else lifetime)
        for instance in self._served.get(sender, ()):
            self._hosts[instance][sender] = max(self._hosts[instance][sender], expires)
        for instance in sorted(instances):
            if self.join(now, instance, sender, lifetime):
                change.joined.append(instance)
        return change

    def expired(self, now: float) -> list[tuple[int, IPv4Address]]:
        """The (instance, host) pairs whose member stopped announcing.  They are still
        listed: the role lets each `leave` in turn and updates the datapath after each,
        so every change sees the members that remain.  Called every tick: the pairs are
        scanned only once the earliest expiry may have passed."""
        if now < self._earliest:
            return []
        self._earliest = min(
            (e for hosts in self._hosts.values() for e in hosts.values() if e > now),
            default=math.inf,
        )
        return [
            (instance, host)
            for instance, hosts in self._hosts.items()
            for host, expires in hosts.items()
            if expires <= now
        ]

    def expire_proxies(self, now: float) -> None:
        for host in [h for h, k in self._proxies.items() if k.expires <= now]:
            del self._proxies[host]

    def forget_proxy(self, host: IPv4Address) -> None:
        """A proxy the directory no longer shows alive (directory mode)."""
        self._proxies.pop(host, None)

    def proxy_heard(self, now: float, sender: IPv4Address, role: ProxyRole) -> list[IPv4Address]:
        """A VAN proxy announced itself.  When it says it is its site's active one,
        returns the proxies of that site that were active before (now standby)."""
        self._proxies[sender] = KnownProxy(role, now + self.proxy_lifetime)
        if not role.active:
            return []
        displaced = [
            other
            for other, known in self._proxies.items()
            if other != sender and known.role.site == role.site and known.role.active
        ]
        for other in displaced:
            known = self._proxies[other]
            standby = ProxyRole(known.role.site, False, known.role.priority)
            self._proxies[other] = KnownProxy(standby, known.expires)
        return displaced
