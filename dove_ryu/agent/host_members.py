"""A host's members: who serves which of its instances, and what that changes here.

Whoever says so (an announcement, an ENDPOINT, the directory), a host joining or
leaving an instance changes the datapath the same way: the classify flow that accepts
its tunnel, the flood group's buckets, and what was learned behind it.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from dove_ryu.openflow.ofmsg import CoreOutput, OfMsg
from dove_ryu.openflow.tunnels import encapsulations_of

if TYPE_CHECKING:
    from dove_ryu.agent.parts import HostParts


class HostMembers:
    def __init__(self, p: HostParts) -> None:
        self.p = p

    def changed(
        self,
        now: float,
        host: IPv4Address,
        instances: frozenset[int],
        covers: tuple[int, int] | None = None,
    ) -> tuple[CoreOutput, bool]:
        """``host`` serves exactly ``instances`` now (it announced so, or the directory
        shows so), of those in ``covers`` when it is a part of a split announcement;
        and whether we had not known it at all."""
        change = self.p.members.served_by(now, host, instances, covers=covers)
        out = CoreOutput()
        for instance in change.joined:
            out.ofmsgs += self.member_changed(instance, host, joined=True)
            # LEARNs in flight for the instance go to the new member at once.
            for pending in self.p.resolver.of_instance(instance):
                out.datagrams += self.p.ask(pending, [host])
        for instance in change.left:
            out.ofmsgs += self.member_changed(instance, host, joined=False)
        return out, change.new_peer

    def encapsulations(self, host: IPv4Address, bits: int | None) -> list[OfMsg]:
        """``host`` announced what it accepts (None: an older agent, VXLAN only).  When
        that changes how it is reached, what tunnels to it is built again: the
        forwarding flows of what was learned behind it, the flood groups of its
        instances, and the routes (it may be a gateway)."""
        accepted = encapsulations_of(bits)
        self.p.members.accepts(host, accepted)
        if not self.p.link.tunnels.peer_accepts(host, accepted) or not self.p.link.connected:
            return []
        encap = self.p.link.tunnels.path(host).encapsulation
        self.p.stats.log.info("%s: peer %s now reached by %s", self.p.cfg.name, host, encap)
        self.p.stats.count("peer_encapsulation_changed")
        msgs = [
            self.p.tunnel_flows.forwarding(e.endpoint)
            for e in self.p.learned.entries()
            if e.endpoint.host == host
        ]
        msgs += self.p.instances.groups_of(self.p.members.served(host))
        return msgs + self.p.routers.resync()

    def member_left(self, instance: int, host: IPv4Address) -> list[OfMsg]:
        return self.member_changed(instance, host, joined=False)

    def member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        verb = "joined" if joined else "left"
        self.p.stats.log.info("%s: member %s %s instance %d", self.p.cfg.name, host, verb, instance)
        self.p.stats.count("member_joined" if joined else "member_left")
        msgs = [] if joined else self.p.learned.forget_behind(instance, host)
        return msgs + self.p.instances.member_changed(instance, host, joined)
