"""What a VAN proxy relays between its site and the other sites.

- A LEARN from one side for an endpoint the proxy does not know goes to the other
  side (a site host's to the remote proxies of the sites serving the instance; a
  remote proxy's into the site); the answer comes back hop by hop, each proxy
  answering with its own address on the asker's side.
- ENDPOINT and UN-LEARN cross the same way, with the VM's sequence number
  unchanged, so a VM that moved to another site is followed by every host.
- A frame the datapath could not forward (a miss, or too big for the WAN) is
  resolved, forwarded, or carried in DOVE fragments.
Only the active proxy relays; a standby keeps quiet.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from dove_ryu.agent.parts import ProxyParts
from dove_ryu.agent.resolver import Pending, Target
from dove_ryu.model import Endpoint
from dove_ryu.openflow import flows
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    CoreOutput,
    Datagram,
    OfMsg,
    PacketIn,
    PacketOut,
)
from dove_ryu.openflow.packet import frag_needed
from dove_ryu.openflow.pipeline import FROM_WAN, INSTANCE_MASK
from dove_ryu.openflow.tunnels import FLAG_RELAYED, beyond_vxlan
from dove_ryu.protocol.messages import (
    EndpointHere,
    Endpoints,
    FrameFragment,
    LearnReply,
    LearnRequest,
    Message,
    Unlearn,
)

LOG = logging.getLogger("dove_ryu.proxy")

ICMP_MTU_MARGIN = 50  # the inner MTU a VM is told: wan_mtu less the VXLAN overhead

Waiter = tuple[IPv4Address, int]  # (who asked us, their request id)
MAX_WAITERS = 16  # askers answered per question in flight; more are dropped and counted


class ProxyRelay:
    def __init__(self, p: ProxyParts) -> None:
        self.p = p
        # Who asked us what we are resolving (by our request id): they get the answer.
        self.waiters: dict[int, list[Waiter]] = {}

    # ------------------------------------------------------------ telling

    def _tell(self, hosts: list[IPv4Address], make: type, *args: object, **kw: object) -> list:
        """One message per host, each naming us by the leg that host reaches."""
        return [
            self.p.channel.datagram(h, make(*args, host=self.p.sides.leg(h), **kw))
            for h in sorted(hosts)
        ]

    def _reply(self, host: IPv4Address, request_id: int, ep: Endpoint) -> Datagram:
        """Where ``ep`` is, as ``host`` sees it: behind us."""
        self.p.stats.count("learn_replies_sent")
        leg = self.p.sides.leg(host)
        msg = LearnReply(ep.instance, request_id, ep.mac, ep.ips, leg, ep.seq, ep.ips6)
        return self.p.channel.datagram(host, msg)

    def _say(self, hosts: list[IPv4Address], msg: Message) -> list[Datagram]:
        return self.p.channel.to_each(hosts, msg)

    # ------------------------------------------------------------ members

    def member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        side = "remote proxy" if self.p.sides.wan(host) else "member"
        verb = "joined" if joined else "left"
        LOG.info("%s: %s %s %s instance %d", self.p.cfg.name, side, host, verb, instance)
        self.p.stats.count("member_joined" if joined else "member_left")
        msgs = [] if joined else self.p.learned.forget_behind(instance, host)
        if not self.p.members.count(instance):
            self.p.learned.drop_instance(instance)
        return msgs + self.p.instances.member_changed(instance, host, joined)

    def serves(
        self,
        now: float,
        host: IPv4Address,
        instances: frozenset[int],
        lifetime: float | None = None,
        covers: tuple[int, int] | None = None,
    ) -> tuple[CoreOutput, bool]:
        """``host`` serves exactly ``instances`` now (it announced so, or the directory
        shows so; of those in ``covers``, a part of a split announcement): the datapath
        follows, and LEARNs in flight towards its side go to it.  Also whether we had
        not known it at all."""
        change = self.p.members.served_by(now, host, instances, lifetime, covers)
        out = CoreOutput()
        for instance in change.joined:
            out.ofmsgs += self.member_changed(instance, host, joined=True)
            out.datagrams += self.ask_new_member(instance, host)
        for instance in change.left:
            out.ofmsgs += self.member_changed(instance, host, joined=False)
        return out, change.new_peer

    def member_left(self, instance: int, host: IPv4Address) -> list[OfMsg]:
        return self.member_changed(instance, host, joined=False)

    def ask_new_member(self, instance: int, host: IPv4Address) -> list[Datagram]:
        """LEARNs in flight towards ``host``'s side go to it at once."""
        wan = self.p.sides.wan(host)
        return [
            dgram
            for pending in self.p.resolver.of_instance(instance)
            if pending.scope == wan
            for dgram in self.p.ask(pending, [host])
        ]

    def _join(self, now: float, instance: int, host: IPv4Address) -> list[OfMsg]:
        """``host`` spoke for an endpoint of the instance: it serves the instance."""
        if self.p.members.serves(instance, host):
            return []
        self.p.members.join(now, instance, host)
        return self.member_changed(instance, host, joined=True)

    # ---------------------------------------------------------- resolving

    def retransmit(self, now: float) -> list[Datagram]:
        out = []
        for pending in self.p.resolver.due(now):
            toward_wan = pending.scope is True  # a proxy asks into its site or towards the WAN
            hosts = self.p.instances.side(pending.instance, toward_wan)
            out += self.p.ask(pending, hosts)
        # Questions given up are not waited on any more.
        for request_id in [r for r in self.waiters if self.p.resolver.by_request(r) is None]:
            del self.waiters[request_id]
        return out

    def _resolve_for(
        self,
        now: float,
        instance: int,
        target: Target,
        toward_wan: bool,
        held: bytes | None = None,
        waiter: Waiter | None = None,
        request: LearnRequest | None = None,
    ) -> CoreOutput:
        """Ask the other side for ``target``, holding a frame or a host's question."""
        pending = self.p.resolver.in_flight(instance, target, toward_wan)
        if pending is not None:
            if held is not None:
                self.p.resolver.hold(pending, (0, held))
            waiting = self.waiters.setdefault(pending.request_id, [])
            if waiter is not None and waiter not in waiting:
                if len(waiting) < MAX_WAITERS:
                    waiting.append(waiter)
                else:
                    self.p.stats.drop("relay_waiters_full", now, f"instance {instance}")
            return CoreOutput()
        if not self.p.resolver.may_ask(now, instance, target, toward_wan):
            return CoreOutput()
        requester = request.requester if request else None
        if requester is not None and requester.instance is not None:
            requester = None  # routed: not passed on (see on_learn_request)
        holding = [(0, held)] if held is not None else []
        pending = self.p.resolver.start(now, instance, target, holding, requester, toward_wan)
        if waiter:
            self.waiters[pending.request_id] = [waiter]
        self.p.stats.count("learn_relayed" if waiter else "learn_for_miss")
        hosts = self.p.instances.side(instance, toward_wan)
        return CoreOutput(datagrams=self.p.ask(pending, hosts))

    def _resolved(
        self, now: float, pending: Pending, ep: Endpoint, sender: IPv4Address
    ) -> CoreOutput:
        """Answer who asked us and send on the frames we held."""
        took = self.p.resolver.answered(now, pending)
        ep, msgs = self.p.learned.answered(now, ep, sender, took)
        out = CoreOutput(ofmsgs=msgs)
        for host, request_id in self.waiters.pop(pending.request_id, []):
            out.datagrams.append(self._reply(host, request_id, ep))
        if self.p.link.connected:
            for _, data in pending.held:
                out.extend(self._forward(ep, data, now))
        return out

    def on_learn_request(self, now: float, sender: IPv4Address, msg: LearnRequest) -> CoreOutput:
        self.p.stats.count("learn_requests_received")
        if not self.p.election.active:
            return CoreOutput()
        if not self.p.members.serves(msg.instance, sender):
            self.p.stats.drop(
                "learn_request_nonmember", now, f"from {sender} instance {msg.instance}"
            )
            return CoreOutput()
        # A routed miss's requester (another instance) is not ours to glean or pass
        # on: a proxy skips it, as an agent without ROUTED_REQUESTER does.
        who = msg.requester if msg.requester and msg.requester.instance is None else None
        out = CoreOutput()
        if who is not None:
            out.ofmsgs += self.p.learned.glean(now, sender, msg.instance, who)
        target: Target
        if msg.mac is not None:
            target = msg.mac
            known = self.p.learned.get(msg.instance, msg.mac)
        else:
            address = msg.ip if msg.ip is not None else msg.ip6
            assert address is not None
            target = address
            known = self.p.learned.get_by_ip(msg.instance, address)
        wan = self.p.sides.wan(sender)
        if known is not None:
            if self.p.sides.wan(known.endpoint.host) != wan:
                # On the other side: we are where it is, as the asker sees it.
                out.datagrams.append(self._reply(sender, msg.request_id, known.endpoint))
            return out  # on the asker's side, it answers for itself
        waiter = (sender, msg.request_id)
        return out.extend(
            self._resolve_for(now, msg.instance, target, not wan, waiter=waiter, request=msg)
        )

    def on_learn_reply(self, now: float, sender: IPv4Address, msg: LearnReply) -> CoreOutput:
        member = self.p.members.serves(msg.instance, sender)
        scope = self.p.sides.wan(sender)
        pending = self.p.resolver.take_reply(now, sender, msg, member, scope)
        if pending is None:
            return CoreOutput()
        ep = Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq, msg.ips6)
        return self._resolved(now, pending, ep, sender)

    def on_endpoints(self, now: float, sender: IPv4Address, msg: Endpoints) -> CoreOutput:
        """A batch of ENDPOINT: each entry taken as one; what goes on to the other side
        goes batched too."""
        told: dict[IPv4Address, list[EndpointHere]] = {}

        def take(now: float, sender: IPv4Address, entry: EndpointHere) -> CoreOutput:
            return self.on_endpoint_here(now, sender, entry, told)

        out = self.p.channel.each_entry(now, msg, sender, take)
        out.datagrams += self.p.channel.endpoints(told)
        return out

    def on_endpoint_here(
        self,
        now: float,
        sender: IPv4Address,
        msg: EndpointHere,
        told: dict[IPv4Address, list[EndpointHere]] | None = None,
    ) -> CoreOutput:
        """A VM arrived (in our site, or behind a remote proxy): follow it, tell the
        other side (into ``told`` when given: sent batched by the caller), answer
        LEARNs waiting for it."""
        self.p.stats.count("endpoint_received")
        if msg.host != sender:
            self.p.stats.drop("endpoint_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        out = CoreOutput(ofmsgs=self._join(now, msg.instance, sender))
        current = self.p.learned.get(msg.instance, msg.mac)
        if current is not None and current.endpoint.seq >= msg.seq:
            self.p.stats.count("endpoint_stale")
            return out
        ep = Endpoint(msg.instance, msg.mac, msg.ips, sender, msg.seq, msg.ips6)
        out.ofmsgs += self.p.learned.remember(now, ep, sender)
        self.p.stats.count("endpoint_moved" if current else "endpoint_learned")
        if self.p.election.active:
            other_side = self.p.instances.side(msg.instance, not self.p.sides.wan(sender))
            batch: dict[IPv4Address, list[EndpointHere]] = {} if told is None else told
            for h in other_side:
                here = EndpointHere(
                    msg.instance, msg.mac, msg.ips, self.p.sides.leg(h), msg.seq, msg.ips6
                )
                batch.setdefault(h, []).append(here)
            if told is None:
                out.datagrams += self.p.channel.endpoints(batch)
            self.p.stats.count("endpoint_relayed", len(other_side))
        targets: list[Target] = [msg.mac, *msg.ips, *msg.ips6]
        for toward_wan in (False, True):
            for target in targets:
                pending = self.p.resolver.in_flight(msg.instance, target, toward_wan)
                if pending is not None:
                    out.extend(self._resolved(now, pending, ep, sender))
        return out

    def on_unlearn(self, now: float, sender: IPv4Address, msg: Unlearn) -> CoreOutput:
        """An endpoint left (its host says so, or a remote proxy passes it on).

        From the site it always goes on to the remote proxies: they may have learned
        it through us after our own entry aged out."""
        self.p.stats.count("unlearn_received")
        if msg.host != sender:
            self.p.stats.drop("unlearn_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        held = self.p.learned.held_at(msg)
        out = CoreOutput(ofmsgs=self.p.learned.forget(msg.instance, msg.mac) if held else [])
        wan = self.p.sides.wan(sender)
        if self.p.election.active and (held or not wan):
            other_side = self.p.instances.side(msg.instance, not wan)
            out.datagrams += self._tell(other_side, Unlearn, msg.instance, msg.mac, seq=msg.seq)
            self.p.stats.count("unlearn_relayed", len(other_side))
        return out

    # ---------------------------------------------------------- datapath

    def packet_in(self, now: float, punted: PacketIn) -> CoreOutput:
        decoded = self.p.stats.punted(punted.cookie)
        metadata, data, tunnel_src = punted.metadata, punted.data, punted.tunnel_src
        if decoded is None or not metadata or not metadata & INSTANCE_MASK:
            self.p.stats.drop("packet_in_unexpected", now, f"cookie {punted.cookie:#x}")
            return CoreOutput()
        if not self.p.link.connected:
            self.p.stats.drop("packet_in_unexpected", now, "switch not connected")
            return CoreOutput()
        instance = metadata & INSTANCE_MASK
        from_wan = bool(metadata & FROM_WAN)
        frame = self.p.stats.parsed(now, data)
        if frame is None:
            return CoreOutput()
        known = self.p.learned.get(instance, frame.dst)
        if decoded.purpose is Purpose.WAN_OVERSIZE:
            return self._oversize(now, instance, frame.dst, frame.is_multicast, data, tunnel_src)
        if decoded.purpose is not Purpose.INSTANCE or decoded.tag != flows.TAG_L2_MISS:
            self.p.stats.drop("packet_in_unexpected", now, f"cookie {punted.cookie:#x}")
            return CoreOutput()
        self.p.stats.count("packet_in_l2_miss")
        if known is None:
            return self._resolve_for(now, instance, frame.dst, not from_wan, held=data)
        if self.p.sides.wan(known.endpoint.host) == from_wan:
            # It would go back where it came from: two sites disagree for a moment.
            self.p.stats.drop("proxy_wrong_side", now, f"instance {instance} {frame.dst}")
            return CoreOutput()
        # The flow was just (re)installed or idled out: put it back, send this one.
        out = CoreOutput(ofmsgs=self.p.learned.flows.install(known.endpoint))
        return out.extend(self._forward(known.endpoint, data, now))

    def _oversize(
        self,
        now: float,
        instance: int,
        dst: str,
        multicast: bool,
        data: bytes,
        tunnel_src: IPv4Address | None,
    ) -> CoreOutput:
        """A frame too big for the WAN: in fragments to each remote proxy it goes to,
        or, if the operator chose so, ICMP "fragmentation needed" to its sender."""
        if multicast:
            out = CoreOutput()
            for proxy in self.p.instances.side(instance, True):
                out.extend(self._fragment(now, instance, proxy, data))
            return out
        known = self.p.learned.get(instance, dst)
        if known is None or not self.p.sides.wan(known.endpoint.host):
            self.p.stats.drop("oversize_unknown", now, dst)
            return CoreOutput()
        if self.p.cfg.proxy.wan_oversize == "icmp" and tunnel_src is not None:
            icmp = frag_needed(
                data,
                self.p.cfg.proxy.wan_mtu - ICMP_MTU_MARGIN - beyond_vxlan(self.p.link.tunnels.own),
            )
            if icmp is not None:
                self.p.stats.count("wan_icmp_frag_needed_sent")
                actions = flows.tunnel_actions(self.p.link.tunnel, instance, tunnel_src)
                return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, icmp, actions)])
        return self._fragment(now, instance, known.endpoint.host, data)

    def _forward(self, ep: Endpoint, data: bytes, now: float) -> CoreOutput:
        """Send one frame the agent holds on to ``ep``'s next hop."""
        if self.p.sides.wan(ep.host) and len(data) > flows.wan_frame_limit(
            self.p.cfg.proxy.wan_mtu - beyond_vxlan(self.p.link.tunnels.own)
        ):
            return self._fragment(now, ep.instance, ep.host, data)
        actions = flows.tunnel_actions(self.p.link.tunnel, ep.instance, ep.host, FLAG_RELAYED)
        self.p.stats.count("packets_released")
        return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, data, actions)])

    def _fragment(self, now: float, instance: int, proxy: IPv4Address, data: bytes) -> CoreOutput:
        """Carry a frame too big for the inter-site path in DOVE-layer pieces."""
        pieces = self.p.fragmenter.split(instance, data)
        if pieces is None:
            self.p.stats.drop("frame_too_long", now, f"{len(data)} bytes")
            return CoreOutput()
        self.p.stats.count("wan_frames_fragmented")
        self.p.stats.count("wan_fragments_sent", len(pieces))
        return CoreOutput(datagrams=[self.p.channel.datagram(proxy, p) for p in pieces])

    def on_fragment(self, now: float, sender: IPv4Address, msg: FrameFragment) -> CoreOutput:
        if not self.p.link.connected:  # nowhere to send the frame on
            self.p.stats.drop("fragment_switch_down", now, f"from {sender}")
            return CoreOutput()
        if not self.p.sides.wan(sender):
            self.p.stats.drop("fragment_from_site", now, f"from {sender}")
            return CoreOutput()
        if not self.p.members.serves(msg.instance, sender):
            self.p.stats.drop("fragment_nonmember", now, f"from {sender} instance {msg.instance}")
            return CoreOutput()
        self.p.stats.count("wan_fragments_received")
        result = self.p.reassembly.add(now, sender, msg)
        if isinstance(result, str):
            if result != "pending":
                self.p.stats.drop(result, now, f"from {sender}")
            return CoreOutput()
        self.p.stats.count("wan_frames_reassembled")
        frame = self.p.stats.parsed(now, result, "reassembled_malformed")
        if frame is None:
            return CoreOutput()
        if frame.is_multicast:
            out = CoreOutput()
            for host in self.p.instances.side(msg.instance, False):
                out.extend(self._forward(Endpoint(msg.instance, "", (), host, 0), result, now))
            return out
        known = self.p.learned.get(msg.instance, frame.dst)
        if known is not None and not self.p.sides.wan(known.endpoint.host):
            return self._forward(known.endpoint, result, now)
        return self._resolve_for(now, msg.instance, frame.dst, False, held=result)
