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

Hellos say the partner's agent is there; BFD says its datapath is.  Each partner has a
BFD session run by ovs-vswitchd (a tunnel port per partner, `adapters.ovsdb`), which
agents coming and going do not touch.  A partner whose hellos stop is dead after the
dead interval if its BFD session is down (or it has none): its node, its switch or the
path to it is gone, so failover stays fast.  If BFD is up its datapath still forwards,
so its agent is only restarting: it keeps its role for up to ``ha_agent_grace`` after
its last hello (an agent away longer is gone for good, and the control plane it serves
must move).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
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
    expires: float  # when its hellos are overdue
    heard_at: float  # its last hello
    held: bool = False  # overdue, but its datapath answers BFD: kept for ha_agent_grace


class Outcome(Enum):
    UNCHANGED = "unchanged"
    BECAME_ACTIVE = "became_active"
    STEPPED_DOWN = "stepped_down"


class Election:
    def __init__(
        self,
        name: str,
        me: IPv4Address,
        settings: ProxyConfig,
        now: float,
        count: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.name = name
        self.count = count  # the role's counters
        self.me = me
        self.priority = priority = settings.proxy_priority
        self.hello_interval = settings.proxy_hello_interval
        self.active = False
        self.partners: dict[IPv4Address, Partner] = {}
        self.dead_interval = self.hello_interval * LIFETIME_INTERVALS
        self.listen_until = now + self.dead_interval * (2 - priority / 255)
        self.next_hello = now
        self.grace = settings.ha_agent_grace
        self.bfd: dict[IPv4Address, bool] = {}  # partner: its BFD session is up
        # Its switch taken over (read, members adopted): until then an active claim
        # would announce no instances, and hosts and remote proxies would drop us.
        self.ready = False

    def heard(self, now: float, sender: IPv4Address, role: ProxyRole | GatewayRole) -> bool:
        """A partner's hello; True if we had not heard it before (or it had gone)."""
        before = self.partners.get(sender)
        if before is not None and before.held:
            LOG.warning(
                "%s: partner %s back after %.1fs (its datapath kept forwarding)",
                self.name,
                sender,
                now - before.heard_at,
            )
        self.partners[sender] = Partner(role, now + self.dead_interval, now)
        return before is None

    def bfd_changed(self, states: Mapping[IPv4Address, bool]) -> None:
        """The BFD sessions to the partners, as ovs-vswitchd reports them: up or not."""
        for host, up in states.items():
            if self.bfd.get(host) != up:
                LOG.info("%s: BFD to %s %s", self.name, host, "up" if up else "down")
        self.bfd = dict(states)

    def bfd_up(self, host: IPv4Address) -> bool:
        return self.bfd.get(host, False)

    def ha_partners(
        self, now: float, declared: Iterable[IPv4Address]
    ) -> frozenset[IPv4Address] | None:
        """The partners whose datapaths ours checks by BFD: those declared (the directory's
        rows, the dove-gateways mark) and those heard.  None while listening: a restarted
        agent does not know them all yet, and removing a BFD port would fail it over."""
        if self.listening(now):
            return None
        return frozenset(declared) - {self.me} | frozenset(self.partners)

    def partner_status(self) -> dict[str, dict[str, object]]:
        """The partners as status shows them: role, priority, BFD, held back."""
        return {
            str(h): {
                "active": p.role.active,
                "priority": p.role.priority,
                "bfd": self.bfd_up(h),
                "held": p.held,
            }
            for h, p in sorted(self.partners.items())
        }

    def hello_due(self, now: float) -> bool:
        if now < self.next_hello:
            return False
        self.next_hello = now + self.hello_interval
        return True

    def listening(self, now: float) -> bool:
        """Just (re)started and not yet decided: says nothing until it has heard, and
        until it has taken over its switch (`ready`)."""
        return not self.active and (now < self.listen_until or not self.ready)

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
            if partner.expires <= now and not self._held(now, host, partner):
                del self.partners[host]
                why = "its agent away too long" if self.bfd_up(host) else "BFD down or none"
                LOG.warning("%s: partner %s silent, gone (%s)", self.name, host, why)
        active = [h for h, p in self.partners.items() if p.role.active]
        me = (self.priority, int(self.me))
        if self.active:
            if any((self.partners[h].role.priority, int(h)) > me for h in active):
                self.active = False
                return Outcome.STEPPED_DOWN
            return Outcome.UNCHANGED
        if not self.listening(now) and not active:
            self.active = True
            return Outcome.BECAME_ACTIVE
        return Outcome.UNCHANGED

    def _held(self, now: float, host: IPv4Address, partner: Partner) -> bool:
        """An overdue partner whose datapath answers BFD keeps its role for the grace."""
        if not self.bfd_up(host) or now >= partner.heard_at + self.grace:
            return False
        if not partner.held:
            partner.held = True
            self.count("ha_failover_held")
            LOG.warning(
                "%s: partner %s silent but BFD up (its datapath forwards): "
                "failover held back for up to %.0fs",
                self.name,
                host,
                self.grace,
            )
        return True
