"""VMs arriving on this host and leaving it (paper IV-C, with MAC mobility).

A VM that arrives (started, or migrated in) gets a location sequence number above
any this host has seen for it, replaces whatever was learned about its addresses,
and is announced (ENDPOINT) to the hosts serving its instance and to its previous
host.  A VM that leaves is un-learned (UN-LEARN) by every host that had learned it
and every host serving the instance; its departure is remembered for a while (see
`dove_ryu.agent.mobility`).
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from dove_ryu.agent.mobility import next_seq
from dove_ryu.agent.parts import HostParts
from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import CoreOutput, OfMsg
from dove_ryu.protocol.messages import EndpointHere, Unlearn

LOG = logging.getLogger("dove_ryu.core")


class Arrivals:
    def __init__(self, p: HostParts) -> None:
        self.p = p

    def arrive(
        self, now: float, port: VmPort, told: dict[IPv4Address, list[EndpointHere]]
    ) -> CoreOutput:
        """A VM's port appeared here (started, or migrated in).  Its ENDPOINT is added
        to ``told`` (per host), sent with the others due at once."""
        out = CoreOutput()
        key = (port.instance, port.mac)
        # Where it was before, if we knew: that host hears of the move at once.
        before = self.p.learned.get(port.instance, port.mac)
        departed = self.p.mobility.lookup(key, now)
        known_seq = max(before.endpoint.seq if before else 0, departed.seq if departed else 0)
        # A VM that arrives here replaces whatever was learned about its addresses.
        stale = {port.mac} | {
            e.endpoint.mac
            for ip in port.addresses
            if (e := self.p.learned.get_by_ip(port.instance, ip)) is not None
        }
        for mac in sorted(stale):
            out.ofmsgs += self.p.learned.forget(port.instance, mac)
        seq = next_seq(known_seq, self.p.channel.wall_clock())
        self.p.ports.add(port, seq)
        self.p.mobility.arrived(key)
        if self.p.link.connected:
            out.ofmsgs += flows.local_port_flows(port)
        self.p.stats.count("ports_added")
        # The hosts serving the instance (and the VM's previous host) learn the new
        # location now, with a sequence number above the old one.
        here = EndpointHere(port.instance, port.mac, port.ips, self.p.me, seq, port.sources6)
        targets = set(self.p.members.hosts(port.instance))
        if before is not None:
            targets.add(before.endpoint.host)
        for host in sorted(targets):
            told.setdefault(host, []).append(here)
        self.p.stats.count("endpoint_announced", len(targets))
        LOG.info(
            "%s: port %s up: instance %d mac %s ips %s ofport %d",
            self.p.name,
            port.name,
            port.instance,
            port.mac,
            ",".join(map(str, port.addresses)),
            port.ofport,
        )
        return out

    def depart(self, now: float, port: VmPort) -> CoreOutput:
        """A VM's port went (stopped, detached, or migrated away)."""
        out = CoreOutput()
        key = (port.instance, port.mac)
        seq = self.p.ports.remove(port)
        # Un-learned everywhere it was learned, and by every host serving the instance
        # (a VM that stops is gone for all of them; one that moves is re-learned).
        learners = self.p.mobility.depart(key, seq, now)
        unlearn = Unlearn(port.instance, port.mac, self.p.me, seq)
        targets = learners | set(self.p.members.hosts(port.instance))
        out.datagrams += self.p.channel.to_each(sorted(targets), unlearn)
        self.p.stats.count("unlearn_sent", len(targets))
        if self.p.link.connected:
            out.ofmsgs += flows.delete_local_port(port)
        self.p.stats.count("ports_removed")
        LOG.info(
            "%s: port %s down: instance %d mac %s",
            self.p.name,
            port.name,
            port.instance,
            port.mac,
        )
        return out

    def elsewhere(self, now: float, ep: Endpoint) -> list[OfMsg] | None:
        """A VM was announced on another host (ENDPOINT): follow it if we knew it
        there or had just been told it left; forward to it if it left us.  None when
        the announcement changes nothing here (the VM is still local, or it is stale)."""
        key = (ep.instance, ep.mac)
        if key in self.p.ports:
            # OVSDB says it is here; the port will go when the move completes.
            self.p.stats.count("endpoint_still_local")
            return None
        if self.p.mobility.went_to(key, ep.host, ep.seq, now):
            self.p.stats.count("departed_now_at_known_host")
        current = self.p.learned.get(ep.instance, ep.mac)
        just_unlearned = self.p.learned.just_unlearned(now, ep.instance, ep.mac, ep.seq)
        if current is None:
            if not just_unlearned:
                return []
            # Un-learned a moment ago by its old host (a move unplugs first): follow it.
            self.p.stats.count("endpoint_moved")
            return self.p.learned.remember(now, ep, ep.host)
        if ep.seq <= current.endpoint.seq:
            self.p.stats.count("endpoint_stale")
            return None
        LOG.info(
            "%s: instance %d %s moved %s -> %s (seq %d -> %d)",
            self.p.name,
            ep.instance,
            ep.mac,
            current.endpoint.host,
            ep.host,
            current.endpoint.seq,
            ep.seq,
        )
        self.p.stats.count("endpoint_moved")
        return self.p.learned.remember(now, ep, ep.host)
