"""Active and standby between the VAN proxies of one site (and between the external
gateways, which use the same rules).

The site's proxies exchange hellos (their announcements to each other).  Without
preemption: the standby takes over when the active one's hellos stop for 3.5
intervals; of two active ones (started together, or a partition healed) the lower
(priority, address) steps down.  A proxy listens before it claims the site, the
lower priority longer, so of two started together the higher one becomes active.
While it listens it says nothing (a restarted active one saying "standby" would hand
its place to its partner), and it claims at once when every partner it heard is a
standby it would have beaten: a restarted active one takes its place back before its
standby misses it, and the datapath's traffic stays where it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address

from dove_ryu.agent.membership import LIFETIME_INTERVALS
from dove_ryu.config import ProxyConfig
from dove_ryu.protocol.messages import GatewayRole, ProxyRole

LOG = logging.getLogger("dove_ryu.proxy")


@dataclass
class Partner:
    """Another proxy of this site, as last heard."""

    role: ProxyRole | GatewayRole
    expires: float


class Outcome(Enum):
    UNCHANGED = "unchanged"
    BECAME_ACTIVE = "became_active"
    STEPPED_DOWN = "stepped_down"


class Election:
    def __init__(self, name: str, me: IPv4Address, settings: ProxyConfig, now: float) -> None:
        self.name = name
        self.me = me
        self.priority = priority = settings.proxy_priority
        self.hello_interval = settings.proxy_hello_interval
        self.active = False
        self.partners: dict[IPv4Address, Partner] = {}
        self.dead_interval = self.hello_interval * LIFETIME_INTERVALS
        self.listen_until = now + self.dead_interval * (2 - priority / 255)
        self.next_hello = now

    def heard(self, now: float, sender: IPv4Address, role: ProxyRole | GatewayRole) -> bool:
        """A partner's hello; True if we had not heard it before (or it had gone)."""
        new = sender not in self.partners
        self.partners[sender] = Partner(role, now + self.dead_interval)
        return new

    def hello_due(self, now: float) -> bool:
        if now < self.next_hello:
            return False
        self.next_hello = now + self.hello_interval
        return True

    def listening(self, now: float) -> bool:
        """Just (re)started and not yet decided: says nothing until it has heard."""
        return not self.active and now < self.listen_until

    def claim_early(self, now: float) -> None:
        """While listening, partners that all say standby, of lower preference than us:
        we would have won had we started together, so we claim at once."""
        if not self.listening(now) or not self.partners:
            return
        me = (self.priority, int(self.me))
        partners = self.partners.items()
        if all(not p.role.active and (p.role.priority, int(h)) < me for h, p in partners):
            self.listen_until = now

    def decide(self, now: float) -> Outcome:
        for host, partner in list(self.partners.items()):
            if partner.expires <= now:
                del self.partners[host]
                LOG.warning("%s: partner proxy %s silent", self.name, host)
        active = [h for h, p in self.partners.items() if p.role.active]
        me = (self.priority, int(self.me))
        if self.active:
            if any((self.partners[h].role.priority, int(h)) > me for h in active):
                self.active = False
                return Outcome.STEPPED_DOWN
            return Outcome.UNCHANGED
        if now >= self.listen_until and not active:
            self.active = True
            return Outcome.BECAME_ACTIVE
        return Outcome.UNCHANGED
