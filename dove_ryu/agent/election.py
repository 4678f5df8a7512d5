"""Active and standby between the VAN proxies of one site (and between the external
gateways, which use the same rules).

The site's proxies exchange hellos (their announcements to each other).  Without
preemption: the standby takes over when the active one's hellos stop for 3.5
intervals; of two active ones (started together, or a partition healed) the lower
(priority, address) steps down.  A proxy listens before it claims the site, the
lower priority longer (up to `START_SLACK` more, for a partner whose agent starts
late on a loaded machine), so of two started together the higher one becomes active.
While it listens it announces nothing (a restarted active one saying "standby" would
hand its place to its partner) but sends `Listening` hellos, which only an election
reads: two proxies started together see each other before either claims.  It claims
at once when every partner it heard is a standby or a listener it would have beaten
(a restarted active one takes its place back before its standby misses it, and the
datapath's traffic stays where it is; of two started together the better one claims
as soon as it hears the other), and it keeps listening while a better partner is
listening (for up to ``ha_agent_grace``): that one claims, once its switch is taken
over, and this one becomes its standby, with no transition between.

Hellos say the partner's agent is there; BFD says its datapath is.  Each partner has a
BFD session run by ovs-vswitchd (a tunnel port per partner, `adapters.ovsdb`), which
agents coming and going do not touch.  A partner whose hellos stop is dead after the
dead interval if its BFD session is down (or it has none): its node, its switch or the
path to it is gone, so failover stays fast.  If BFD is up its datapath still forwards,
so its agent is only restarting: it keeps its role for up to ``ha_agent_grace`` after
its last hello (an agent away longer is gone for good, and the control plane it serves
must move).  At a start the sessions are not up yet: both partners add their BFD ports
only once they have listened.  Until our port to a partner is there (and for
`BFD_SETUP` after we stopped listening at the latest) its silence is held as if BFD
were up: an agent stalled for a moment on a loaded machine at start is not failed over
(that failover, and the step-down when the stalled one spoke again, lost traffic).
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

# How much later than its partner's an agent may start on a loaded machine (a Python
# start, its switch connected and read): the lowest priority listens this much longer.
START_SLACK = 4.0
# From the end of our listening: our BFD port to a partner is added (from a worker
# thread), the partner's own port too, and the session comes up.
BFD_SETUP = 5.0


@dataclass
class Partner:
    """Another proxy of this site, as last heard."""

    role: ProxyRole | GatewayRole
    expires: float  # when its hellos are overdue
    heard_at: float  # its last hello
    held: bool = False  # overdue, but its datapath answers BFD: kept for ha_agent_grace
    listening_since: float | None = None  # it says it listens (`Listening`): since when


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
        lower = 1 - priority / 255
        self.slack = START_SLACK * lower  # taken off again on a restart (`switch_read`)
        self.listen_until = now + self.dead_interval * (1 + lower) + self.slack
        self.decided_at: float | None = None  # when we stopped listening
        self.next_hello = now
        self.grace = settings.ha_agent_grace
        self.bfd: dict[IPv4Address, bool] = {}  # partner: its BFD session is up
        self.bfd_reported = False  # the shell reports BFD ports (none yet, at start)
        # Its switch taken over (read, members adopted): until then an active claim
        # would announce no instances, and hosts and remote proxies would drop us.
        self.ready = False

    def switch_read(self, found_predecessor: bool) -> None:
        """Its switch taken over: from here we may claim (`ready`).  A switch that held a
        predecessor's flows (or that we could not read) is a restart: a partner, if any,
        runs already, and a restarted active one alone must be back before hosts drop
        it, so it listens without `START_SLACK`, as it did before the slack."""
        if found_predecessor and not self.ready:
            self.listen_until -= self.slack
        self.ready = True

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

    def heard_listening(
        self, now: float, sender: IPv4Address, role: ProxyRole | GatewayRole
    ) -> bool:
        """A partner's `Listening` hello: it has just started and not decided yet.  True
        if we had not heard it before (or it had gone).  A partner we hold as active
        keeps that role: a restarted active one listens before it claims its place back
        (its silence is held by BFD, as before)."""
        before = self.partners.get(sender)
        if before is not None and before.role.active:
            return False
        since = before.listening_since if before is not None else None
        self.partners[sender] = Partner(
            role, now + self.dead_interval, now, listening_since=now if since is None else since
        )
        return before is None

    def bfd_changed(self, states: Mapping[IPv4Address, bool]) -> None:
        """The BFD sessions to the partners, as ovs-vswitchd reports them: up or not."""
        for host, up in states.items():
            if self.bfd.get(host) != up:
                LOG.info("%s: BFD to %s %s", self.name, host, "up" if up else "down")
        self.bfd = dict(states)
        self.bfd_reported = True

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
        """Just (re)started and not yet decided: announces nothing until it has taken
        over its switch (`ready`), and then until it has heard an active partner (it is
        its standby), its listening time is over, and no better partner is listening
        (that one claims)."""
        if self.active or self.decided_at is not None:
            return False
        if not self.ready:
            return True
        if any(p.role.active for p in self.partners.values()):
            return False
        return now < self.listen_until or self._deferring(now)

    def _deferring(self, now: float) -> bool:
        """A better partner listens: it will claim once its switch is taken over; we
        wait for it (for up to the grace: one whose switch never comes is let go)."""
        me = (self.priority, int(self.me))
        return any(
            p.listening_since is not None
            and (p.role.priority, int(h)) > me
            and now < p.listening_since + self.grace
            for h, p in self.partners.items()
        )

    def claim_early(self, now: float) -> None:
        """While listening, partners that all say standby (or that they listen), of
        lower preference than us: we would have won had we started together, so we
        claim at once."""
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
        if self.decided_at is None and not self.listening(now):
            self.decided_at = now  # from here our BFD ports are added (`ha_partners`)
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
        """An overdue partner whose datapath answers BFD keeps its role for the grace;
        so does one whose BFD session cannot be up yet (`_bfd_pending`)."""
        if now >= partner.heard_at + self.grace:
            return False
        if self.bfd_up(host):
            why = "BFD up (its datapath forwards)"
        elif self._bfd_pending(now, host):
            why = "its BFD session not set up yet"
        else:
            return False
        if not partner.held:
            partner.held = True
            self.count("ha_failover_held")
            LOG.warning(
                "%s: partner %s silent but %s: failover held back for up to %.0fs",
                self.name,
                host,
                why,
                self.grace,
            )
        return True

    def _bfd_pending(self, now: float, host: IPv4Address) -> bool:
        """At start: the shell reports BFD ports, ours to this partner is not there yet,
        and we are listening (no ports added) or stopped only `BFD_SETUP` ago.  Its
        session cannot be up: its silence says nothing about its datapath.  A port that
        is there and down is down (as is a partner with no BFD at all)."""
        if not self.bfd_reported or host in self.bfd:
            return False
        return self.decided_at is None or now < self.decided_at + BFD_SETUP
