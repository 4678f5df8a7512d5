"""The VAN proxy: a DOVE switch that carries instances between sites (paper IV-C).

A site's hosts cannot reach another site's hosts.  Each site has proxies with one
leg in the site underlay (``underlay_ip``) and one in the inter-site network
(``wan_ip``).  To its site's hosts the active proxy is one more member of every
instance another site serves; to the other sites' proxies it is the member that
stands for its whole site.  It keeps, per instance, which endpoints are in its
site (at which host) and which are behind which remote proxy, and installs a flow
for each, so traffic crosses hypervisor -> proxy -> proxy -> hypervisor, decapsulated
and re-encapsulated in the datapath.  The agent relays what the hosts would have
said to each other: LEARN requests and replies, ENDPOINT, UN-LEARN; it hands on
frames too big for the inter-site path in DOVE-layer fragments (or answers with
ICMP "fragmentation needed", as the operator chooses).

Two proxies per site: one is active; they exchange hellos, and the standby takes
over when the active one's stop.  Hosts and remote proxies then move what they
learned behind the old one to the new one (`DoveCore._proxy_heard`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dove_ryu.agent.core import ANNOUNCE_MAX_INSTANCES, MEMBER_LIFETIME_INTERVALS, DoveCore, Member
from dove_ryu.agent.learning import Pending, PendingTable, Target
from dove_ryu.agent.stats import packet_in_reason
from dove_ryu.config import DoveConfig
from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import cookies, flows
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    CoreOutput,
    Datagram,
    GroupCommand,
    GroupMod,
    OfMsg,
    PacketOut,
)
from dove_ryu.openflow.packet import BadPacket, frag_needed, parse
from dove_ryu.openflow.pipeline import FROM_WAN, INSTANCE_MASK
from dove_ryu.protocol.header import MAX_FRAG_INDEX, MAX_FRAME_LEN
from dove_ryu.protocol.messages import (
    FRAME_OVERHEAD,
    Announce,
    EndpointHere,
    Envelope,
    FrameFragment,
    LearnReply,
    LearnRequest,
    Message,
    ProxyRole,
    Unlearn,
    encode,
)

LOG = logging.getLogger("dove_ryu.agent.proxy")

UDP_IP_OVERHEAD = 28  # IPv4 + UDP headers around a fragment datagram
REASSEMBLY_TIMEOUT = 2.0  # seconds a partial frame waits for its other pieces
REASSEMBLY_MAX_FRAMES = 256  # partial frames kept at once; more are dropped and counted
MAX_FRAME_BYTES = 16384


@dataclass
class Partner:
    """Another proxy of this site, as last heard."""

    role: ProxyRole
    expires: float


@dataclass
class Partial:
    first_seen: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None  # number of pieces, known once the last one arrived


class Reassembly:
    """Frames arriving in DOVE-layer fragments, put back together; bounded in count,
    size and time."""

    def __init__(self) -> None:
        self.partial: dict[tuple[IPv4Address, int, int], Partial] = {}

    def add(self, now: float, sender: IPv4Address, frag: FrameFragment) -> bytes | str:
        """The whole frame once complete, else a reason string ("pending" while waiting)."""
        key = (sender, frag.instance, frag.frag_id)
        part = self.partial.get(key)
        if part is None:
            if len(self.partial) >= REASSEMBLY_MAX_FRAMES:
                return "reassembly_full"
            part = self.partial[key] = Partial(now)
        if frag.index in part.pieces:
            return "fragment_duplicate"
        if not frag.more:
            part.total = frag.index + 1
        if part.total is not None and len(part.pieces) >= part.total:
            del self.partial[key]
            return "fragment_inconsistent"
        part.pieces[frag.index] = frag.data
        if sum(len(p) for p in part.pieces.values()) > MAX_FRAME_BYTES:
            del self.partial[key]
            return "frame_too_long"
        if part.total is None or len(part.pieces) < part.total:
            return "pending"
        del self.partial[key]
        if set(part.pieces) != set(range(part.total)):
            return "fragment_inconsistent"
        return b"".join(part.pieces[i] for i in range(part.total))

    def expire(self, now: float) -> int:
        old = [k for k, p in self.partial.items() if now - p.first_seen > REASSEMBLY_TIMEOUT]
        for key in old:
            del self.partial[key]
        return len(old)


class ProxyCore(DoveCore):
    """State and decisions of one VAN proxy."""

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        super().__init__(cfg, now)
        if cfg.role != "proxy" or cfg.proxy.wan_ip is None:
            raise ValueError("ProxyCore needs role = proxy and a wan_ip")
        self.wan_ip: IPv4Address = cfg.proxy.wan_ip
        self.wan_peers = frozenset(cfg.proxy.wan_peers)
        self.active = False
        self.partners: dict[IPv4Address, Partner] = {}
        self.dead_interval = cfg.proxy.proxy_hello_interval * MEMBER_LIFETIME_INTERVALS
        # Listen before claiming the site; the lower priority listens longer, so of
        # two proxies started together the higher one becomes active.
        self.listen_until = now + self.dead_interval * (2 - cfg.proxy.proxy_priority / 255)
        self.next_hello = now
        self.reassembly = Reassembly()
        self.next_frag_id = 0

    # ------------------------------------------------------------ the sides

    def _is_me(self, address: IPv4Address) -> bool:
        return address in (self.me, self.wan_ip)

    def _wan(self, host: IPv4Address) -> bool:
        return host in self.wan_peers

    def _leg(self, host: IPv4Address) -> IPv4Address:
        """Our address as ``host`` sees it."""
        return self.wan_ip if self._wan(host) else self.me

    def _site_members(self, instance: int) -> list[IPv4Address]:
        return [h for h in self.members.get(instance, {}) if not self._wan(h)]

    def _remote_proxies(self, instance: int) -> list[IPv4Address]:
        return [h for h in self.members.get(instance, {}) if self._wan(h)]

    def _side(self, instance: int, wan: bool) -> list[IPv4Address]:
        return self._remote_proxies(instance) if wan else self._site_members(instance)

    def _served(self, wan: bool) -> list[int]:
        """Instances served in our site (``wan`` False) or by other sites."""
        return sorted(i for i in self.members if self._side(i, wan))

    def _datagram(self, now: float, host: IPv4Address, msg: Message) -> Datagram:
        leg = self._leg(host)
        payload = encode(
            msg,
            receiver=host,
            sender=leg,
            counter=self.counter_source.next(self.wall_clock()),
            key=self.cfg.host.auth_key,
        )
        return Datagram(str(host), payload, src=str(leg))

    def _tell(
        self, now: float, hosts: list[IPv4Address], make: type, *args: object, **kw: object
    ) -> list[Datagram]:
        """One message per host, each naming us by the leg that host reaches."""
        return [self._datagram(now, h, make(*args, host=self._leg(h), **kw)) for h in sorted(hosts)]

    # ------------------------------------------------------------- switch

    def switch_connected(self, now: float, tunnel_ofport: int) -> CoreOutput:
        self.tunnel_ofport = tunnel_ofport
        out = CoreOutput(ofmsgs=[*flows.delete_all_ours(), *flows.proxy_defaults(tunnel_ofport)])
        for instance in sorted(self.members):
            if self.members[instance]:
                out.ofmsgs += self._instance_up_proxy(instance)
        for entry in self.learned.entries():
            out.ofmsgs += self._endpoint_flows(entry.endpoint)
        self.counters["switch_connected"] += 1
        LOG.info("%s: switch connected, tunnel port %d (proxy)", self.cfg.name, tunnel_ofport)
        return out

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        if ports:
            self._drop("proxy_vm_ports", now, f"{len(ports)} VM ports on a proxy ignored")
        return CoreOutput()

    def _groups(self, instance: int, command: GroupCommand) -> list[GroupMod]:
        return flows.proxy_groups(
            instance, self._site_members(instance), self._remote_proxies(instance), command
        )

    def _member_flow(self, instance: int, host: IPv4Address) -> OfMsg:
        assert self.tunnel_ofport is not None
        wan = self._wan(host)
        return flows.proxy_member_flow(instance, host, self._leg(host), wan, self.tunnel_ofport)

    def _instance_up_proxy(self, instance: int) -> list[OfMsg]:
        """An instance has flows and groups while it has a member, on either side."""
        return [
            *self._groups(instance, GroupCommand.ADD),
            *flows.proxy_instance_flows(instance, self.cfg.proxy.wan_mtu),
            *(self._member_flow(instance, h) for h in self.members.get(instance, {})),
        ]

    def _member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        LOG.info(
            "%s: %s %s %s instance %d",
            self.cfg.name,
            "remote proxy" if self._wan(host) else "member",
            host,
            "joined" if joined else "left",
            instance,
        )
        self.counters["member_joined" if joined else "member_left"] += 1
        msgs = [] if joined else self._forget_behind(instance, host)
        hosts = self.members.get(instance, {})
        if not hosts:
            self.learned.drop_instance(instance)
        if self.tunnel_ofport is None:
            return msgs
        if not hosts:
            return [*msgs, *flows.delete_instance(instance), *flows.delete_proxy_groups(instance)]
        if joined and len(hosts) == 1:  # the first member: the instance comes up
            return msgs + self._instance_up_proxy(instance)
        if joined:
            msgs.append(self._member_flow(instance, host))
        else:
            assert self.tunnel_ofport is not None
            msgs.append(
                flows.delete_proxy_member_flow(instance, host, self._leg(host), self.tunnel_ofport)
            )
        return msgs + list(self._groups(instance, GroupCommand.MODIFY))

    def _endpoint_flows(self, ep: Endpoint) -> list[OfMsg]:
        idle = self.cfg.learning.learn_idle_timeout
        return [flows.proxied_flow(ep, self._wan(ep.host), idle, self.cfg.proxy.wan_mtu)]

    def _endpoint_deletes(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        return [] if keep_l2 else [flows.delete_proxied(ep, self._wan(ep.host))]

    def _forward(self, ep: Endpoint, data: bytes, now: float) -> CoreOutput:
        """Send one frame the agent holds on to ``ep``'s next hop."""
        assert self.tunnel_ofport is not None
        if self._wan(ep.host) and len(data) > flows.wan_frame_limit(self.cfg.proxy.wan_mtu):
            return self._fragment(now, ep, data)
        actions = flows.tunnel_actions(self.tunnel_ofport, ep.instance, ep.host)
        self.counters["packets_released"] += 1
        return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, data, actions)])

    # ------------------------------------------------------------ packet-in

    def packet_in(
        self,
        now: float,
        cookie: int,
        in_port: int,
        data: bytes,
        metadata: int | None = None,
        tunnel_src: IPv4Address | None = None,
    ) -> CoreOutput:
        self.counters["packet_in"] += 1
        decoded = cookies.decode(cookie)
        self.packet_ins[packet_in_reason(decoded)] += 1
        if decoded is None or metadata is None or self.tunnel_ofport is None:
            self._drop("packet_in_unexpected", now, f"cookie {cookie:#x}")
            return CoreOutput()
        instance = metadata & INSTANCE_MASK
        from_wan = bool(metadata & FROM_WAN)
        try:
            frame = parse(data)
        except BadPacket as e:
            self._drop("packet_in_malformed", now, str(e))
            return CoreOutput()
        known = self.learned.get(instance, frame.dst)
        if decoded.purpose is Purpose.WAN_OVERSIZE and frame.is_multicast:
            out = CoreOutput()
            for proxy in self._remote_proxies(instance):
                out.extend(self._fragment(now, Endpoint(instance, frame.dst, (), proxy, 0), data))
            return out
        if decoded.purpose is Purpose.WAN_OVERSIZE:
            if known is None or not self._wan(known.endpoint.host):
                self._drop("oversize_unknown", now, frame.dst)
                return CoreOutput()
            if self.cfg.proxy.wan_oversize == "icmp" and tunnel_src is not None:
                icmp = frag_needed(data, self.cfg.proxy.wan_mtu - 50)
                if icmp is not None:
                    self.counters["wan_icmp_frag_needed_sent"] += 1
                    actions = flows.tunnel_actions(self.tunnel_ofport, instance, tunnel_src)
                    return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, icmp, actions)])
            return self._fragment(now, known.endpoint, data)
        if decoded.purpose is not Purpose.INSTANCE or decoded.tag != flows.TAG_L2_MISS:
            self._drop("packet_in_unexpected", now, f"cookie {cookie:#x}")
            return CoreOutput()
        self.counters["packet_in_l2_miss"] += 1
        if known is not None:
            if self._wan(known.endpoint.host) == from_wan:
                # It would go back where it came from: two sites disagree for a moment.
                self._drop("proxy_wrong_side", now, f"instance {instance} {frame.dst}")
                return CoreOutput()
            # The flow was just (re)installed or idled out: put it back, send this one.
            out = CoreOutput(ofmsgs=self._endpoint_flows(known.endpoint))
            return out.extend(self._forward(known.endpoint, data, now))
        return self._resolve_for(now, instance, frame.dst, not from_wan, held=data)

    def _resolve_for(
        self,
        now: float,
        instance: int,
        target: Target,
        toward_wan: bool,
        held: bytes | None = None,
        waiter: tuple[IPv4Address, int] | None = None,
        request: LearnRequest | None = None,
    ) -> CoreOutput:
        """Ask the other side for ``target``, holding a frame or a host's question."""
        pending = self.pending.get(instance, target, toward_wan)
        if pending is not None:
            if held is not None and len(pending.held) < PendingTable.MAX_HELD:
                pending.held.append((0, held))
            if waiter is not None and waiter not in pending.waiters:
                pending.waiters.append(waiter)
            return CoreOutput()
        if not self._may_ask(now, instance, target, toward_wan):
            return CoreOutput()
        pending = Pending(
            instance,
            target,
            self._next_request_id(),
            now,
            now + self.cfg.learning.learn_timeout,
            held=[(0, held)] if held is not None else [],
            requester=request.requester if request else None,
            waiters=[waiter] if waiter else [],
            toward_wan=toward_wan,
        )
        self.pending.add(pending)
        self.counters["learn_relayed" if waiter else "learn_for_miss"] += 1
        return CoreOutput(
            datagrams=self._learn_requests(now, pending, self._learn_targets(pending))
        )

    def _learn_targets(self, pending: Pending) -> list[IPv4Address]:
        return self._side(pending.instance, pending.toward_wan)

    def _ask_new_member(self, now: float, instance: int, host: IPv4Address) -> list[Datagram]:
        return [
            dgram
            for pending in list(self.pending.by_key.values())
            if pending.instance == instance and pending.toward_wan == self._wan(host)
            for dgram in self._learn_requests(now, pending, [host])
        ]

    # ------------------------------------------------------- fragmentation

    def _fragment(self, now: float, ep: Endpoint, data: bytes) -> CoreOutput:
        """Carry a frame too big for the inter-site path in DOVE-layer pieces."""
        room = min(self.cfg.proxy.wan_mtu - UDP_IP_OVERHEAD, MAX_FRAME_LEN) - FRAME_OVERHEAD
        pieces = [data[i : i + room] for i in range(0, len(data), room)]
        if len(pieces) - 1 > MAX_FRAG_INDEX:
            self._drop("frame_too_long", now, f"{len(data)} bytes")
            return CoreOutput()
        self.next_frag_id = (self.next_frag_id + 1) & 0xFFFF
        out = CoreOutput()
        for index, piece in enumerate(pieces):
            more = index < len(pieces) - 1
            frag = FrameFragment(ep.instance, self.next_frag_id, index, more, piece)
            out.datagrams.append(self._datagram(now, ep.host, frag))
        self.counters["wan_frames_fragmented"] += 1
        self.counters["wan_fragments_sent"] += len(pieces)
        return out

    def _on_fragment(self, now: float, sender: IPv4Address, msg: FrameFragment) -> CoreOutput:
        if sender not in self.members.get(msg.instance, {}):
            self._drop("fragment_nonmember", now, f"from {sender} instance {msg.instance}")
            return CoreOutput()
        self.counters["wan_fragments_received"] += 1
        result = self.reassembly.add(now, sender, msg)
        if isinstance(result, str):
            if result != "pending":
                self._drop(result, now, f"from {sender}")
            return CoreOutput()
        self.counters["wan_frames_reassembled"] += 1
        try:
            frame = parse(result)
        except BadPacket as e:
            self._drop("reassembled_malformed", now, str(e))
            return CoreOutput()
        if frame.is_multicast:
            out = CoreOutput()
            for host in self._site_members(msg.instance):
                out.extend(self._forward(Endpoint(msg.instance, "", (), host, 0), result, now))
            return out
        known = self.learned.get(msg.instance, frame.dst)
        if known is not None and not self._wan(known.endpoint.host):
            return self._forward(known.endpoint, result, now)
        return self._resolve_for(now, msg.instance, frame.dst, False, held=result)

    # -------------------------------------------------------------- control

    def _dispatch(self, now: float, env: Envelope) -> CoreOutput:
        msg, sender = env.message, env.sender
        wan = self._wan(sender)
        if wan != (env.receiver == self.wan_ip):
            # A site host must not reach us on the WAN leg, nor a remote proxy on the site's.
            self._drop("control_wrong_leg", now, f"from {sender} to {env.receiver}")
            return CoreOutput()
        if isinstance(msg, Announce):
            return self._proxy_announce(now, env, msg)
        if isinstance(msg, FrameFragment):
            if not wan:
                self._drop("fragment_from_site", now, f"from {sender}")
                return CoreOutput()
            return self._on_fragment(now, sender, msg)
        if isinstance(msg, LearnRequest):
            return self._relay_request(now, sender, msg)
        if isinstance(msg, LearnReply):
            return self._on_learn_reply(now, sender, msg)
        if isinstance(msg, EndpointHere):
            return self._relay_endpoint(now, sender, msg)
        if isinstance(msg, Unlearn):
            return self._relay_unlearn(now, sender, msg)
        return CoreOutput()

    def _proxy_announce(self, now: float, env: Envelope, msg: Announce) -> CoreOutput:
        self.counters["announce_received"] += 1
        sender, role = env.sender, msg.proxy
        if not self._fresh_announce(env):
            return CoreOutput()
        if not self._wan(sender) and role is not None:
            if role.site != self.cfg.proxy.site:
                self._drop("proxy_of_other_site", now, f"{sender} says site {role.site}")
                return CoreOutput()
            new = sender not in self.partners
            self.partners[sender] = Partner(role, now + self.dead_interval)
            out = self._elect(now)
            if new and self.active:
                out.datagrams += self._announce(now, only=[sender])
            return out
        if self._wan(sender) and role is None:
            self._drop("wan_announce_without_role", now, f"from {sender}")
            return CoreOutput()
        before = (self._served(False), self._served(True))
        out = CoreOutput()
        if role is not None:
            out.extend(self._proxy_heard(now, sender, role))
        out.extend(self._membership(now, sender, msg.instances))
        site_now, remote_now = self._served(False), self._served(True)
        if self.active and site_now != before[0]:
            out.datagrams += self._announce(now, only=list(self.wan_peers))
        if self.active and remote_now != before[1]:
            out.datagrams += self._announce(now, only=list(self.cfg.host.peers))
        return out

    def _join(self, now: float, instance: int, host: IPv4Address) -> list[OfMsg]:
        """``host`` spoke for an endpoint of the instance: it serves the instance."""
        if host in self.members.get(instance, {}):
            return []
        expires = now + self.cfg.learning.announce_interval * MEMBER_LIFETIME_INTERVALS
        self.members.setdefault(instance, {})[host] = Member(expires)
        return self._member_changed(instance, host, joined=True)

    def _relay_request(self, now: float, sender: IPv4Address, msg: LearnRequest) -> CoreOutput:
        self.counters["learn_requests_received"] += 1
        if not self.active:
            return CoreOutput()
        if sender not in self.members.get(msg.instance, {}):
            self._drop("learn_request_nonmember", now, f"from {sender} instance {msg.instance}")
            return CoreOutput()
        out = self._glean(now, sender, msg)
        target: Target
        if msg.mac is not None:
            target = msg.mac
            known = self.learned.get(msg.instance, msg.mac)
        else:
            assert msg.ip is not None
            target = msg.ip
            known = self.learned.get_by_ip(msg.instance, msg.ip)
        wan = self._wan(sender)
        if known is not None:
            ep = known.endpoint
            if self._wan(ep.host) != wan:
                # On the other side: we are where it is, as the asker sees it.
                reply = LearnReply(
                    msg.instance, msg.request_id, ep.mac, ep.ips, self._leg(sender), ep.seq
                )
                out.datagrams.append(self._datagram(now, sender, reply))
                self.counters["learn_replies_sent"] += 1
            return out  # on the asker's side, it answers for itself
        return out.extend(
            self._resolve_for(
                now, msg.instance, target, not wan, waiter=(sender, msg.request_id), request=msg
            )
        )

    def _reply_from_right_side(self, now: float, pending: Pending, sender: IPv4Address) -> bool:
        if pending.toward_wan != self._wan(sender):
            self._drop("learn_reply_wrong_side", now, f"from {sender}")
            return False
        return True

    def _resolved(
        self, now: float, pending: Pending, ep: Endpoint, sender: IPv4Address
    ) -> CoreOutput:
        """Answer who asked us and send on the frames we held."""
        ep = self._answered(now, pending, ep)
        out = self._remember(now, ep, sender)
        for host, request_id in pending.waiters:
            reply = LearnReply(ep.instance, request_id, ep.mac, ep.ips, self._leg(host), ep.seq)
            out.datagrams.append(self._datagram(now, host, reply))
            self.counters["learn_replies_sent"] += 1
        if self.tunnel_ofport is not None:
            for _, data in pending.held:
                out.extend(self._forward(ep, data, now))
        return out

    def _relay_endpoint(self, now: float, sender: IPv4Address, msg: EndpointHere) -> CoreOutput:
        """A VM arrived (in our site, or behind a remote proxy): follow it, tell the
        other side, answer LEARNs waiting for it."""
        self.counters["endpoint_received"] += 1
        if msg.host != sender:
            self._drop("endpoint_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        out = CoreOutput(ofmsgs=self._join(now, msg.instance, sender))
        current = self.learned.get(msg.instance, msg.mac)
        if current is not None and current.endpoint.seq >= msg.seq:
            self.counters["endpoint_stale"] += 1
            return out
        ep = Endpoint(msg.instance, msg.mac, msg.ips, sender, msg.seq)
        out.extend(self._remember(now, ep, sender))
        self.counters["endpoint_moved" if current else "endpoint_learned"] += 1
        if self.active:
            other_side = self._side(msg.instance, not self._wan(sender))
            out.datagrams += self._tell(
                now, other_side, EndpointHere, msg.instance, msg.mac, msg.ips, seq=msg.seq
            )
            self.counters["endpoint_relayed"] += len(other_side)
        targets: list[Target] = [msg.mac, *msg.ips]
        for toward_wan in (False, True):
            for target in targets:
                pending = self.pending.get(msg.instance, target, toward_wan)
                if pending is not None:
                    self.pending.remove(pending)
                    out.extend(self._resolved(now, pending, ep, sender))
        return out

    def _relay_unlearn(self, now: float, sender: IPv4Address, msg: Unlearn) -> CoreOutput:
        """An endpoint left (its host says so, or a remote proxy passes it on).

        From the site it always goes on to the remote proxies: they may have learned
        it through us after our own entry aged out."""
        self.counters["unlearn_received"] += 1
        if msg.host != sender:
            self._drop("unlearn_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        entry = self.learned.get(msg.instance, msg.mac)
        removed = (
            entry is not None and entry.endpoint.host == sender and entry.endpoint.seq <= msg.seq
        )
        out = self._forget(msg.instance, msg.mac) if removed else CoreOutput()
        wan = self._wan(sender)
        if self.active and (removed or not wan):
            other_side = self._side(msg.instance, not wan)
            out.datagrams += self._tell(
                now, other_side, Unlearn, msg.instance, msg.mac, seq=msg.seq
            )
            self.counters["unlearn_relayed"] += len(other_side)
        return out

    # ---------------------------------------------------------- redundancy

    def _elect(self, now: float) -> CoreOutput:
        """Active/standby between the site's proxies, without preemption: the standby
        takes over when the active one's hellos stop; of two active ones (started
        together, or a partition healed) the lower (priority, address) steps down."""
        for host, partner in list(self.partners.items()):
            if partner.expires <= now:
                del self.partners[host]
                LOG.warning("%s: partner proxy %s silent", self.cfg.name, host)
        active = [h for h, p in self.partners.items() if p.role.active]
        me = (self.cfg.proxy.proxy_priority, int(self.me))
        if self.active:
            if any((self.partners[h].role.priority, int(h)) > me for h in active):
                self.active = False
                self.counters["proxy_stepped_down"] += 1
                LOG.warning(
                    "%s: stepping down, another proxy of site %s is active",
                    self.cfg.name,
                    self.cfg.proxy.site,
                )
                return CoreOutput(datagrams=self._announce(now))
            return CoreOutput()
        if now >= self.listen_until and not active:
            self.active = True
            self.counters["proxy_became_active"] += 1
            LOG.warning("%s: now the active proxy of site %s", self.cfg.name, self.cfg.proxy.site)
            return CoreOutput(datagrams=self._announce(now))
        return CoreOutput()

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        """To site peers: the instances other sites serve; to remote proxies: those our
        site serves.  A standby proxy announces itself with none."""
        if only is None:
            self.next_announce = now + self.cfg.learning.announce_interval
        targets = only if only is not None else [*self.cfg.host.peers, *sorted(self.wan_peers)]
        role = ProxyRole(self.cfg.proxy.site, self.active, self.cfg.proxy.proxy_priority)
        served = {wan: self._served(not wan) if self.active else [] for wan in (False, True)}
        out = []
        for host in targets:
            instances = served[self._wan(host)]
            if len(instances) > ANNOUNCE_MAX_INSTANCES:
                self._drop("announce_truncated", now, f"{len(instances)} instances")
                instances = instances[:ANNOUNCE_MAX_INSTANCES]
            out.append(self._datagram(now, host, Announce(frozenset(instances), role)))
        self.counters["announce_sent"] += len(out)
        return out

    def tick(self, now: float) -> CoreOutput:
        out = self._elect(now)
        # Both ways: the standby watches the active one, and the active one knows
        # whether it still has a standby.
        if now >= self.next_hello:
            self.next_hello = now + self.cfg.proxy.proxy_hello_interval
            out.datagrams += self._announce(now, only=sorted(self.partners))
        dropped = self.reassembly.expire(now)
        if dropped:
            self.counters["drop_reassembly_timeout"] += dropped
        return out.extend(super().tick(now))

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, object]:
        def side(row: dict[str, object]) -> str:
            return "remote" if IPv4Address(str(row["host"])) in self.wan_peers else "site"

        return {
            "host": self.cfg.name,
            "role": "proxy",
            "site": self.cfg.proxy.site,
            "active": self.active,
            "underlay_ip": str(self.me),
            "wan_ip": str(self.wan_ip),
            "connected": self.tunnel_ofport is not None,
            "partners": {
                str(h): {"active": p.role.active, "priority": p.role.priority}
                for h, p in sorted(self.partners.items())
            },
            "remote_proxies": {
                str(h): {"site": k.role.site, "active": k.role.active}
                for h, k in sorted(self.proxies.items())
            },
            "instances": {
                str(instance): {
                    "local": [],
                    "members": sorted(str(h) for h in self._site_members(instance)),
                    "remote_proxies": sorted(str(h) for h in self._remote_proxies(instance)),
                    "learned": [
                        {**row, "side": side(row)} for row in self._learned_rows(now, instance)
                    ],
                }
                for instance in sorted(set(self.members) | set(self.learned.by_instance))
            },
            "pending": len(self.pending),
            "counters": dict(sorted(self.counters.items())),
        }


def make_core(cfg: DoveConfig, now: float) -> DoveCore:
    """The core for the configured role."""
    return ProxyCore(cfg, now) if cfg.role == "proxy" else DoveCore(cfg, now)
