"""A host's packet-in path: what the pipeline sends to the agent, and why.

- A miss in l2_forward (unknown MAC) or arp_nd (unknown IP) from a local VM: the
  target is resolved with a LEARN (the packet waits) or, when it is learned and
  only the flow is missing (it idled out a moment ago), the flow goes back in.
- An overlay packet for a VM that is not here (egress_check): the sender is told
  to un-learn it (the paper's reactive un-learn) and, if the VM left for a known
  host, the packet goes on there.
When a LEARN is answered the held packets are released through the new flows, and
held ARP requests are answered at once by the agent: the first packet's latency.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from dove_ryu.agent.mobility import SEQ_MAX
from dove_ryu.agent.parts import HostParts
from dove_ryu.agent.resolver import Target
from dove_ryu.agent.routed_misses import RoutedMisses
from dove_ryu.model import Endpoint, is_multicast
from dove_ryu.openflow import flows, nd_flows
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    CoreOutput,
    OfMsg,
    Output,
    PacketIn,
    PacketOut,
)
from dove_ryu.openflow.packet import (
    ARP_REPLY,
    ARP_REQUEST,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    BadPacket,
    build_arp,
    build_nd,
    parse,
)
from dove_ryu.openflow.pipeline import INSTANCE_MASK
from dove_ryu.protocol.messages import Requester, Unlearn

REINSTALL_HOLDOFF = 0.5  # seconds a reinstalled forwarding flow is trusted to be there


class HostMisses:
    def __init__(self, p: HostParts) -> None:
        self.p = p
        self.routed = RoutedMisses(p)

    def packet_in(self, now: float, punted: PacketIn) -> CoreOutput:
        decoded = self.p.stats.punted(punted.cookie)
        if not self.p.link.connected:  # before its resync: the flows are not ours yet
            self.p.stats.drop("packet_in_unexpected", now, "switch not synced")
            return CoreOutput()
        if decoded is not None and decoded.purpose is Purpose.EGRESS_MISS:
            return self._not_here(now, punted.data, punted.metadata, punted.tunnel_src)
        if decoded is not None and decoded.purpose is Purpose.DHCP:
            return self._dhcp(now, decoded.instance, punted)
        if decoded is not None and decoded.purpose is Purpose.ROUTE_TTL:
            return CoreOutput(ofmsgs=self.routed.ttl_expired(now, decoded.instance, punted))
        if decoded is None or decoded.purpose is not Purpose.INSTANCE:
            self.p.stats.drop("packet_in_unexpected", now, f"cookie {punted.cookie:#x}")
            return CoreOutput()
        in_port, data = punted.in_port, punted.data
        instance = decoded.instance
        frame = self.p.stats.parsed(now, data)
        if frame is None:
            return CoreOutput()
        if decoded.tag == flows.TAG_ROUTE_MISS:
            return self._route_miss(now, instance, in_port, data)
        source = self.p.ports.get(instance, frame.src)
        if source is None or source.ofport != in_port:
            self.p.stats.drop("packet_in_foreign", now, f"in_port {in_port} src {frame.src}")
            return CoreOutput()
        target: Target
        if decoded.tag == flows.TAG_ARP_MISS and frame.arp is not None:
            self.p.stats.count("packet_in_arp_miss")
            target = frame.arp.tpa
            known = self.p.learned.get_by_ip(instance, target)
        elif decoded.tag == nd_flows.TAG_ND_MISS and frame.nd is not None:
            # A Neighbor Solicitation for an address no flow here answers: resolved
            # by LEARN like an ARP miss, never flooded (whatever group it was sent to).
            self.p.stats.count("packet_in_nd_miss")
            target = frame.nd.target
            known = self.p.learned.get_by_ip(instance, target)
        elif decoded.tag == flows.TAG_L2_MISS:
            self.p.stats.count("packet_in_l2_miss")
            target = frame.dst
            known = self.p.learned.get(instance, target)
        else:
            self.p.stats.drop("packet_in_unexpected", now, f"tag {decoded.tag}")
            return CoreOutput()
        if known is None:
            seq = self.p.ports.seq(instance, source.mac)
            requester = Requester(source.mac, source.ips, seq, ips6=source.sources6)
            return self._resolve(now, instance, target, in_port, data, requester)
        # Learned but this flow is missing (a race with an idle timeout): put back
        # just the flow that missed, then the packet.
        self.p.stats.count("packet_in_known")
        ep = known.endpoint
        missing: list[OfMsg]
        if isinstance(target, IPv4Address):
            missing = list(flows.learned_arp_flows(ep, [target]))
        elif isinstance(target, IPv6Address):
            missing = list(nd_flows.learned_nd_flows(ep, [target]))
        elif now - known.reinstalled_at < REINSTALL_HOLDOFF:
            # Packets already on their way when the flow went back in: send each
            # straight into the tunnel, without a flow-mod per packet.
            self.p.stats.count("packet_in_known_in_flight")
            actions = flows.tunnel_actions(self.p.link.tunnel, ep.instance, ep.host)
            return CoreOutput(ofmsgs=[PacketOut(in_port, data, actions)])
        else:
            known.reinstalled_at = now
            missing = [self.p.tunnel_flows.forwarding(ep)]
        return CoreOutput(ofmsgs=[*missing, *self._packet_outs([(in_port, data)])])

    def _dhcp(self, now: float, instance: int, punted: PacketIn) -> CoreOutput:
        """A VM's DHCP request: answered out of its port (`dove_ryu.agent.dhcp`)."""
        frame = self.p.stats.parsed(now, punted.data, "dhcp_malformed")
        if frame is None:
            return CoreOutput()
        port = self.p.ports.get(instance, frame.src)
        if port is None or port.ofport != punted.in_port:
            self.p.stats.drop("packet_in_foreign", now, f"dhcp in_port {punted.in_port}")
            return CoreOutput()
        return CoreOutput(ofmsgs=self.p.dhcp.packet_in(now, port, punted.data))

    def _route_miss(self, now: float, instance: int, in_port: int, data: bytes) -> CoreOutput:
        """A routed packet into ``instance`` whose destination has no neighbor flow: it
        is resolved in that instance as an ARP miss is, and delivered when known."""
        self.p.stats.count("route_misses")
        asked = self.routed.miss_target(now, instance, in_port, data)
        if asked is None:
            return CoreOutput()
        target, requester = asked
        known = self.p.learned.get_by_ip(instance, target)
        if known is not None:  # learned, but its flows are not all there: put them back
            self.p.stats.count("packet_in_known")
            ep = known.endpoint
            msgs = [*self.p.tunnel_flows.install(ep), *self.release(target, [(in_port, data)], ep)]
            return CoreOutput(ofmsgs=msgs)
        return self._resolve(now, instance, target, in_port, data, requester)

    def _resolve(
        self,
        now: float,
        instance: int,
        target: Target,
        in_port: int,
        data: bytes,
        requester: Requester,
    ) -> CoreOutput:
        """Resolve ``target`` in ``instance`` for ``requester``, the local VM whose
        packet missed (for a routed packet, in its own instance: another subnet of
        the router)."""
        if isinstance(target, str) and is_multicast(target):  # flooded, never resolved
            self.p.stats.drop("packet_in_unexpected", now, f"multicast {target}")
            return CoreOutput()
        own = requester.instance is None
        # An ARP request also goes to the external VTEPs at once: an address behind one
        # is never answered by a LEARN, and a VM must not wait the LEARN out.
        arp = self._to_vteps(now, instance, in_port, data) if own and _is_ipv4(target) else []
        pending = self.p.resolver.in_flight(instance, target)
        if pending is not None:
            self.p.resolver.hold(pending, (in_port, data))
            return CoreOutput(ofmsgs=arp)
        found = self._published(instance, target)
        if found is not None:
            # The directory has it (lookup; or push, whose flows idled out): its flows
            # go in from our copy of the directory, with no LEARN round trip.
            self.p.stats.count("resolved_from_directory")
            msgs = self.p.learned.remember(now, found, found.host)
            return CoreOutput(ofmsgs=msgs + self.release(target, [(in_port, data)], found))
        if own and self.p.resolver.negative.active((instance, target, None), now):
            # Nobody answered for it a moment ago: the instance's external VTEPs may.
            vteps = arp or self._to_vteps(now, instance, in_port, data)
            if vteps:
                return CoreOutput(ofmsgs=vteps)
        if not self.p.resolver.may_ask(now, instance, target):
            return CoreOutput(ofmsgs=arp)
        pending = self.p.resolver.start(now, instance, target, [(in_port, data)], requester)
        # To every host serving the instance; if none does yet (this VM, or its peers,
        # just came up) the LEARN waits and goes to the first member that announces.
        hosts = self.p.members.hosts(instance)
        if not hosts:
            self.p.stats.count("learn_no_members")
        return CoreOutput(ofmsgs=arp, datagrams=self.p.ask(pending, hosts))

    def _to_vteps(self, now: float, instance: int, in_port: int, data: bytes) -> list[OfMsg]:
        return self.p.vteps.unknown(now, instance, [(in_port, data)])

    def gave_up(self, now: float) -> list[OfMsg]:
        """The LEARNs given up: what they held goes to their instance's external VTEPs
        (a routed miss's packets do not: they were sent to a router)."""
        given_up = self.p.resolver.take_given_up()
        own = [p for p in given_up if p.requester is None or p.requester.instance is None]
        # A held ARP request went to the VTEPs when it was asked (`_resolve`).
        own = [p for p in own if not isinstance(p.target, IPv4Address)]
        return self.p.vteps.gave_up(now, [p for p in own if p.scope is None])

    def _published(self, instance: int, target: Target) -> Endpoint | None:
        """The directory's answer for ``target``, if its host is a member of the
        instance: a dead host's rows may stay in the directory, but it is no member
        any more and the flows to it went when it left."""
        if self.p.published is None:
            return None
        found = self.p.published.find(instance, target)
        if found is None or not self.p.members.serves(instance, found.host):
            return None
        return found

    def release(self, target: Target, held: list[tuple[int, bytes]], ep: Endpoint) -> list[OfMsg]:
        """The packets held for ``target``, now that ``ep`` answers for it."""
        msgs: list[OfMsg] = []
        routed, held = self.routed.release(held, ep)
        msgs += routed
        if isinstance(target, IPv4Address):
            # The held ARP requests are answered at once by the agent, without waiting
            # for the responder flow just installed: the first packet's latency.
            answers = [self._arp_answer(port, data, ep) for port, data in held]
            msgs += [a for a in answers if a is not None]
            held = [h for h, a in zip(held, answers, strict=True) if a is None]
        if isinstance(target, IPv6Address):
            # Held solicitations likewise: the NA goes straight back to the VM.
            answers = [self._nd_answer(port, data, ep) for port, data in held]
            msgs += [a for a in answers if a is not None]
            held = [h for h, a in zip(held, answers, strict=True) if a is None]
        return msgs + self._packet_outs(held)

    def _packet_outs(self, held: list[tuple[int, bytes]]) -> list[OfMsg]:
        """Re-inject packets through the pipeline (its flows now know the way)."""
        if not self.p.link.connected:
            return []
        self.p.stats.count("packets_released", len(held))
        return [PacketOut(in_port=port, data=data) for port, data in held]

    def _arp_answer(self, in_port: int, data: bytes, ep: Endpoint) -> PacketOut | None:
        """The ARP reply to a held request for one of ``ep``'s addresses, or None."""
        try:
            arp = parse(data).arp
        except BadPacket:
            return None
        if arp is None or arp.op != ARP_REQUEST or arp.tpa not in ep.ips:
            return None
        reply = build_arp(ARP_REPLY, ep.mac, arp.sha, ep.mac, arp.tpa, arp.sha, arp.spa)
        self.p.stats.count("arp_answered_by_agent")
        return PacketOut(OFPP_CONTROLLER, reply, (Output(in_port),), after_flows=False)

    def _nd_answer(self, in_port: int, data: bytes, ep: Endpoint) -> PacketOut | None:
        """The Neighbor Advertisement for a held solicitation of one of ``ep``'s
        IPv6 addresses, or None."""
        try:
            frame = parse(data)
        except BadPacket:
            return None
        ns = frame.nd
        if ns is None or ns.kind != ND_NEIGHBOR_SOLICIT or ns.target not in ep.ips6:
            return None
        if ns.src.is_unspecified:
            return None  # a duplicate address probe is never answered
        reply = build_nd(
            ND_NEIGHBOR_ADVERT,
            ep.mac,
            frame.src,
            ns.target,
            ns.src,
            ns.target,
            ep.mac,
            nd_flows.NA_SOLICITED_OVERRIDE,
        )
        self.p.stats.count("nd_answered_by_agent")
        return PacketOut(OFPP_CONTROLLER, reply, (Output(in_port),), after_flows=False)

    def _not_here(
        self, now: float, data: bytes, metadata: int | None, tunnel_src: IPv4Address | None
    ) -> CoreOutput:
        """Traffic from the overlay for a VM that is not (or no longer) here.

        The sender is told to un-learn it, at most a few times a second; if the VM
        left for a known host, the packet goes on there."""
        if metadata is None or tunnel_src is None:
            self.p.stats.drop("egress_without_tunnel", now)
            return CoreOutput()
        instance = metadata & INSTANCE_MASK
        if not instance:
            self.p.stats.drop("packet_in_unexpected", now, f"metadata {metadata:#x}")
            return CoreOutput()
        frame = self.p.stats.parsed(now, data)
        if frame is None:
            return CoreOutput()
        self.p.stats.count("packet_in_not_here")
        if frame.is_multicast:
            return CoreOutput()  # flooded to a lingering instance: nothing to correct
        key = (instance, frame.dst)
        local = self.p.ports.get(*key)
        if local is not None:
            # It is here: the packet raced the flows of a port that just came up.
            self.p.stats.count("not_here_but_local")
            return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, data, (Output(local.ofport),))])
        out = CoreOutput()
        departed = self.p.mobility.lookup(key, now)
        if departed is not None and departed.new_host is not None and self.p.link.connected:
            actions = flows.tunnel_actions(self.p.link.tunnel, instance, departed.new_host)
            out.ofmsgs.append(PacketOut(OFPP_CONTROLLER, data, actions, after_flows=False))
            self.p.stats.count("forwarded_to_new_host")
        if departed is None:
            # Never here, or long gone: whatever the sender holds for it is wrong.
            unlearn = Unlearn(instance, frame.dst, self.p.me, SEQ_MAX)
            tell = self.p.stats.log_limit.allow(f"unlearn {tunnel_src}", now)
        else:
            unlearn = Unlearn(instance, frame.dst, self.p.me, departed.seq)
            tell = self.p.mobility.should_tell(departed, tunnel_src, now)
        if tell:
            out.datagrams.append(self.p.channel.datagram(tunnel_src, unlearn))
            self.p.stats.count("unlearn_sent_reactive")
        return out


def _is_ipv4(target: Target) -> bool:
    return isinstance(target, IPv4Address)
