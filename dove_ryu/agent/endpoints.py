"""Remote endpoints this agent learned, and the flows that forward to them.

Bounded per instance (the oldest is evicted), indexed by MAC and by IP, aged out
by the switch (idle timeout).  The flows differ by role (a host tunnels to the
endpoint's host; a proxy re-encapsulates towards the next hop), so the role gives
the builder (`EndpointFlows`); this part decides when they are installed,
replaced and removed.  A location carries a sequence number: an older one never
overrides a newer one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.agent.stats import Stats
from dove_ryu.model import Endpoint, IpAddress, LearnedEndpoint, is_multicast
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import OfMsg
from dove_ryu.protocol.messages import Requester, Unlearn

FLOW_AGE_SLACK = 0.5  # seconds; the switch's and the agent's clocks are read apart
RECENTLY_UNLEARNED = 10.0  # seconds an un-learned endpoint is followed to its next host
MAX_UNLEARNED = 4096


class EndpointFlows(Protocol):
    """How a role forwards to a learned endpoint."""

    def install(self, ep: Endpoint) -> list[OfMsg]: ...

    def remove(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        """The endpoint's flows; with ``keep_l2`` only what answers for its IPs (its
        forwarding flow is being replaced, or has just gone by itself)."""
        ...


class LearnedTable:
    """Remote endpoints learned per instance, oldest first, bounded per instance."""

    def __init__(self, max_per_instance: int) -> None:
        self.max_per_instance = max_per_instance
        self.by_instance: dict[int, OrderedDict[str, LearnedEndpoint]] = {}
        self.by_ip: dict[tuple[int, IpAddress], str] = {}

    def get(self, instance: int, mac: str) -> LearnedEndpoint | None:
        table = self.by_instance.get(instance)
        return table.get(mac) if table else None

    def get_by_ip(self, instance: int, ip: IPv4Address | IPv6Address) -> LearnedEndpoint | None:
        mac = self.by_ip.get((instance, ip))
        return self.get(instance, mac) if mac else None

    def put(self, entry: LearnedEndpoint) -> tuple[LearnedEndpoint | None, list[LearnedEndpoint]]:
        """Store an entry; returns (the entry it replaced, entries evicted to make room)."""
        ep = entry.endpoint
        table = self.by_instance.setdefault(ep.instance, OrderedDict())
        old = table.pop(ep.mac, None)
        if old:
            self._unindex(old.endpoint)
        evicted = []
        while len(table) >= self.max_per_instance:
            _, victim = table.popitem(last=False)
            self._unindex(victim.endpoint)
            evicted.append(victim)
        table[ep.mac] = entry
        for ip in ep.addresses:
            stale_mac = self.by_ip.get((ep.instance, ip))
            if stale_mac and stale_mac != ep.mac:
                # The address moved to another MAC: the older claim loses it.
                stale = table.get(stale_mac)
                if stale:
                    stale.endpoint = stale.endpoint.without_ips([ip])
            self.by_ip[(ep.instance, ip)] = ep.mac
        return old, evicted

    def remove(self, instance: int, mac: str) -> LearnedEndpoint | None:
        table = self.by_instance.get(instance)
        if not table or mac not in table:
            return None
        entry = table.pop(mac)
        self._unindex(entry.endpoint)
        if not table:
            del self.by_instance[instance]
        return entry

    def _unindex(self, ep: Endpoint) -> None:
        for ip in ep.addresses:
            if self.by_ip.get((ep.instance, ip)) == ep.mac:
                del self.by_ip[(ep.instance, ip)]

    def entries(self) -> list[LearnedEndpoint]:
        return [e for t in self.by_instance.values() for e in t.values()]

    def __len__(self) -> int:
        return sum(len(t) for t in self.by_instance.values())


class LearnedEndpoints:
    def __init__(
        self,
        stats: Stats,
        link: SwitchLink,
        flows: EndpointFlows,
        max_per_instance: int,
        local: LocalPorts | None = None,
    ) -> None:
        self.stats = stats
        self.link = link
        self.flows = flows
        self.local = local  # a host's VM ports, which always win over what is learned
        self.table = LearnedTable(max_per_instance)
        # (instance, MAC) -> (sequence, until): endpoints just un-learned by their host
        self._unlearned: OrderedDict[tuple[int, str], tuple[int, float]] = OrderedDict()

    # ------------------------------------------------------------- reading

    def get(self, instance: int, mac: str) -> LearnedEndpoint | None:
        return self.table.get(instance, mac)

    def get_by_ip(self, instance: int, ip: IPv4Address | IPv6Address) -> LearnedEndpoint | None:
        return self.table.get_by_ip(instance, ip)

    def __len__(self) -> int:
        return len(self.table)

    def entries(self) -> list[LearnedEndpoint]:
        return self.table.entries()

    def of_instance(self, instance: int) -> Mapping[str, LearnedEndpoint]:
        return self.table.by_instance.get(instance, {})

    def instances(self) -> set[int]:
        return set(self.table.by_instance)

    def answered(
        self, now: float, ep: Endpoint, answered_by: IPv4Address, took: float
    ) -> tuple[Endpoint, list[OfMsg]]:
        """A LEARN's answer (after ``took`` seconds): the endpoint as we now hold it
        (what we held wins if it is newer: a stale answer) and the flows to it."""
        current = self.get(ep.instance, ep.mac)
        if current and current.endpoint.seq > ep.seq:
            self.stats.count("learn_reply_stale")
            ep = current.endpoint
        # DEBUG: this is the first packet's path (the line costs ~0.1 ms written to the
        # log file and stderr); the `learned` counter and the latency histogram count it.
        self.stats.log.debug(
            "%s: learned instance %d %s ips %s at %s (seq %d) in %.1f ms",
            self.stats.name,
            ep.instance,
            ep.mac,
            ",".join(map(str, ep.addresses)),
            ep.host,
            ep.seq,
            took * 1000,
        )
        return ep, self.remember(now, ep, answered_by)

    def rows(self, now: float, instance: int) -> list[dict[str, object]]:
        """The instance's learned endpoints, for status."""
        return [
            {
                "mac": e.endpoint.mac,
                "ips": [str(i) for i in e.endpoint.addresses],
                "host": str(e.endpoint.host),
                "seq": e.endpoint.seq,
                "age": round(now - e.learned_at, 1),
                "answered_by": str(e.answered_by),
            }
            for e in self.of_instance(instance).values()
        ]

    # ------------------------------------------------------------- changes

    def remember(self, now: float, ep: Endpoint, answered_by: IPv4Address) -> list[OfMsg]:
        """Store a remote endpoint and install its flows (replacing older ones).

        A local VM always wins: a claim on a local MAC is refused and local IPs are
        left out, so a learned flow never shadows a local one (same match, same
        priority).  Multicast MACs are never endpoints."""
        local = self.local
        if (local is not None and (ep.instance, ep.mac) in local) or is_multicast(ep.mac):
            self.stats.drop("learn_claims_local_mac", now, f"{ep.mac} from {answered_by}")
            return []
        if local is not None:
            local_ips = [ip for ip in ep.addresses if local.get_by_ip(ep.instance, ip) is not None]
            if local_ips:
                self.stats.count("learn_local_ips_ignored", len(local_ips))
                ep = ep.without_ips(local_ips)
        replaced, evicted = self.table.put(LearnedEndpoint(ep, now, answered_by))
        if not self.link.connected:
            return []
        msgs: list[OfMsg] = []
        for victim in evicted:
            self.stats.count("learned_evicted")
            msgs += self.flows.remove(victim.endpoint)
        if replaced:
            msgs += self.flows.remove(replaced.endpoint, keep_l2=True)
        return msgs + self.flows.install(ep)

    def adopt(self, now: float, ep: Endpoint) -> bool:
        """Hold an endpoint a predecessor had learned (read from the switch's flows);
        its flows come with the state the role installs.  What we hold, a local VM and
        a multicast MAC win; True if taken."""
        key = (ep.instance, ep.mac)
        if self.get(*key) is not None or is_multicast(ep.mac):
            return False
        local = self.local
        if local is not None:
            if key in local:
                return False
            ep = ep.without_ips([a for a in ep.addresses if local.get_by_ip(ep.instance, a)])
        self.table.put(LearnedEndpoint(ep, now, ep.host))
        return True

    def glean(self, now: float, sender: IPv4Address, instance: int, who: Requester) -> list[OfMsg]:
        """Learn the endpoint that asked (through ``sender``, a member of the instance)
        as we answer: the reply traffic then needs no LEARN of its own.  What we hold
        already wins if it is newer, or the same."""
        current = self.get(instance, who.mac)
        if current is not None and (
            current.endpoint.seq > who.seq
            or (
                current.endpoint.host == sender
                and current.endpoint.ips == who.ips
                and current.endpoint.ips6 == who.ips6
            )
        ):
            return []
        self.stats.count("learned_from_request")
        ep = Endpoint(instance, who.mac, who.ips, sender, who.seq, who.ips6)
        return self.remember(now, ep, sender)

    def forget(self, instance: int, mac: str) -> list[OfMsg]:
        entry = self.table.remove(instance, mac)
        if entry is None or not self.link.connected:
            return []
        self.stats.count("unlearned")
        return self.flows.remove(entry.endpoint)

    def forget_behind(self, instance: int, host: IPv4Address) -> list[OfMsg]:
        """What lived on a host that no longer serves the instance is gone with it."""
        msgs: list[OfMsg] = []
        for entry in list(self.of_instance(instance).values()):
            if entry.endpoint.host == host:
                msgs += self.forget(instance, entry.endpoint.mac)
        return msgs

    def drop_instance(self, instance: int) -> None:
        """Forget the instance's endpoints without touching flows (they go with it)."""
        for mac in list(self.of_instance(instance)):
            self.table.remove(instance, mac)

    def move_host(self, now: float, old: IPv4Address, new: IPv4Address) -> list[OfMsg]:
        """Everything learned behind ``old`` is behind ``new`` now (a proxy failover)."""
        msgs: list[OfMsg] = []
        for entry in [e for e in self.entries() if e.endpoint.host == old]:
            msgs += self.remember(now, entry.endpoint.at(new), new)
        return msgs

    def held_at(self, msg: Unlearn) -> bool:
        """Whether an UN-LEARN concerns what we hold: the endpoint at its sender, at
        that sequence number or older."""
        entry = self.get(msg.instance, msg.mac)
        return (
            entry is not None and entry.endpoint.host == msg.host and entry.endpoint.seq <= msg.seq
        )

    def note_unlearned(self, now: float, msg: Unlearn) -> None:
        """Remember for a moment that the endpoint left its host, so that its next
        host's announcement is followed at once (a move unplugs first)."""
        key = (msg.instance, msg.mac)
        self._unlearned[key] = (msg.seq, now + RECENTLY_UNLEARNED)
        self._unlearned.move_to_end(key)
        while len(self._unlearned) > MAX_UNLEARNED:
            self._unlearned.popitem(last=False)

    def just_unlearned(self, now: float, instance: int, mac: str, seq: int) -> bool:
        """Whether the endpoint was un-learned a moment ago at a sequence number below
        ``seq`` (the memory of it is used up either way)."""
        gone_seq, until = self._unlearned.pop((instance, mac), (0, 0.0))
        return until > now and seq > gone_seq

    def flow_removed(
        self, now: float, cookie: int, match: Mapping[str, object], idle: bool, age: float
    ) -> list[OfMsg]:
        """The switch removed a flow ``age`` seconds after it was installed: if it was a
        learned endpoint's forwarding flow that idled out, the endpoint is forgotten
        (resolved again on the next miss).  Removals by our own deletes (a resync, an
        eviction) are echoes, not news; nor is the echo of a flow older than the
        entry we hold."""
        decoded = cookies.decode(cookie)
        mac = match.get("eth_dst")
        if not idle or decoded is None or decoded.purpose is not Purpose.LEARNED:
            return []
        if not isinstance(mac, str):
            return []
        instance = decoded.instance
        entry = self.get(instance, mac)
        if entry is None or entry.learned_at > now - age + FLOW_AGE_SLACK:
            return []
        self.stats.count("learned_aged")
        self.table.remove(instance, mac)
        if not self.link.connected:
            return []
        return self.flows.remove(entry.endpoint, keep_l2=True)

    def resync(self) -> list[OfMsg]:
        """Every learned endpoint's flows, for a switch that (re)connected."""
        return [msg for e in self.entries() for msg in self.flows.install(e.endpoint)]
