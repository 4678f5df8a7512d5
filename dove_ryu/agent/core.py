"""The DOVE switch core: events in, OpenFlow messages and datagrams out.

Nothing here talks to a switch or a socket.  Each handler takes the facts and
the time (``now``) and returns a `CoreOutput`; `dove_ryu.adapters.shell` feeds it from
os-ken, OVSDB and the control socket and sends what comes back.

Address resolution is the RESERVOIR VAN protocol (paper section IV-C): a miss
sends a LEARN request to the hosts that serve the instance, the host of the
endpoint answers, the answer becomes flows and the held packets are
re-injected through the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.agent.learning import (
    LearnedTable,
    NegativeCache,
    Pending,
    PendingTable,
    Target,
    TokenBucket,
)
from dove_ryu.agent.mobility import SEQ_MAX, Mobility, next_seq
from dove_ryu.agent.stats import LatencyHistogram, packet_in_reason
from dove_ryu.config import DoveConfig
from dove_ryu.model import Endpoint, LearnedEndpoint, VmPort
from dove_ryu.openflow import cookies, flows
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import (
    OFPP_CONTROLLER,
    CoreOutput,
    Datagram,
    GroupCommand,
    OfMsg,
    Output,
    PacketOut,
)
from dove_ryu.openflow.packet import ARP_REPLY, ARP_REQUEST, BadPacket, build_arp, parse
from dove_ryu.openflow.pipeline import INSTANCE_MASK
from dove_ryu.protocol.auth import AuthError, CounterSource, ReplayGuard
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import (
    Announce,
    EndpointHere,
    Envelope,
    FrameFragment,
    LearnReply,
    LearnRequest,
    Message,
    ProxyRole,
    Requester,
    Unlearn,
    decode,
    encode,
)

LOG = logging.getLogger("dove_ryu.agent.core")

REINSTALL_HOLDOFF = 0.5  # seconds a reinstalled forwarding flow is trusted to be there
FLOW_AGE_SLACK = 0.5  # seconds; the switch's and the agent's clocks are read apart
MEMBER_LIFETIME_INTERVALS = 3.5  # a member that missed 3 announcements is gone
NEGATIVE_TTL = 2.0
RECENTLY_UNLEARNED = 10.0  # seconds an un-learned endpoint is followed to its next host
NEGATIVE_SIZE = 4096
ANNOUNCE_MAX_INSTANCES = 300
MAX_PEERS_TRACKED = 4096  # keeps an announcement within one frame


class LogLimiter:
    """At most ``burst`` lines per reason per ``period`` seconds; the rest are counted."""

    def __init__(self, burst: int = 5, period: float = 10.0) -> None:
        self.burst, self.period = burst, period
        self.windows: dict[str, tuple[float, int]] = {}

    def allow(self, reason: str, now: float) -> bool:
        start, n = self.windows.get(reason, (now, 0))
        if now - start >= self.period:
            start, n = now, 0
        self.windows[reason] = (start, n + 1)
        return n < self.burst


@dataclass
class Member:
    expires: float


@dataclass
class KnownProxy:
    role: ProxyRole
    expires: float


class DoveCore:
    """State and decisions of one DOVE switch (one hypervisor)."""

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        self.cfg = cfg
        self.me = cfg.host.underlay_ip
        self.tunnel_ofport: int | None = None
        self.ports: dict[str, VmPort] = {}
        self.local: dict[tuple[int, str], VmPort] = {}
        self.local_ip: dict[tuple[int, IPv4Address], VmPort] = {}
        self.by_instance: dict[int, dict[str, VmPort]] = {}  # instance -> mac -> port
        self.members: dict[int, dict[IPv4Address, Member]] = {}
        self.learned = LearnedTable(cfg.learning.max_learned_per_instance)
        self.pending = PendingTable(cfg.learning.max_pending_per_instance)
        self.negative = NegativeCache(NEGATIVE_SIZE, NEGATIVE_TTL)
        self.buckets: dict[int, TokenBucket] = {}
        self.seqs: dict[tuple[int, str], int] = {}  # location sequence of each local VM
        self.mobility = Mobility(ttl=cfg.learning.departure_memory)
        # Instances this host stopped serving while a VM of theirs had just left:
        # members' traffic is still taken in, until then, for the reactive path.
        self.lingering: dict[int, float] = {}
        self.counters: Counter[str] = Counter()
        self.packet_ins: Counter[str] = Counter()  # by `packet_in_reason`, for the metrics
        self.learn_latency = LatencyHistogram()  # seconds from first LEARN to its answer
        self.counter_source = CounterSource()
        self.replay = ReplayGuard()
        # Anti-replay counters are wall-clock microseconds shared with peers, so
        # they cannot use the monotonic `now`; tests may replace this clock.
        self.wall_clock = time.time
        self.last_request_id = 0
        self.last_announce: OrderedDict[IPv4Address, int] = OrderedDict()
        self.proxies: dict[IPv4Address, KnownProxy] = {}  # VAN proxies heard, by address
        # (instance, MAC) -> (sequence, until): endpoints just un-learned by their host
        self.unlearned: OrderedDict[tuple[int, str], tuple[int, float]] = OrderedDict()
        self.next_announce = now
        self.log_limit = LogLimiter()
        self.started = now

    # ------------------------------------------------------------------ state

    @property
    def instances(self) -> set[int]:
        """The instances this host serves: those with a local VM port."""
        return set(self.by_instance)

    def _ports_of(self, instance: int) -> list[int]:
        return [p.ofport for p in self.by_instance.get(instance, {}).values()]

    def _members_of(self, instance: int) -> list[IPv4Address]:
        return list(self.members.get(instance, {}))

    def _group(self, instance: int, command: GroupCommand) -> OfMsg:
        assert self.tunnel_ofport is not None
        return flows.flood_group(
            instance,
            self._ports_of(instance),
            self._members_of(instance),
            self.tunnel_ofport,
            command,
        )

    def _drop(self, reason: str, now: float, detail: str = "") -> None:
        self.counters[f"drop_{reason}"] += 1
        if self.log_limit.allow(reason, now):
            LOG.warning("%s: dropped (%s) %s", self.cfg.name, reason, detail)

    # ------------------------------------------------------------ the switch

    def switch_connected(self, now: float, tunnel_ofport: int) -> CoreOutput:
        """Resync: delete all our flows and groups, then install the whole state."""
        self.tunnel_ofport = tunnel_ofport
        out = CoreOutput(ofmsgs=[*flows.delete_all_ours(), *flows.pipeline_defaults(tunnel_ofport)])
        for port in self.local.values():
            out.ofmsgs += flows.local_port_flows(port)
        for instance in self.instances:
            out.ofmsgs += self._instance_up(instance)
        for instance in self.lingering:
            out.ofmsgs += [
                flows.member_flow(instance, h, tunnel_ofport, lingering=True)
                for h in self._members_of(instance)
            ]
        for entry in self.learned.entries():
            out.ofmsgs += self._endpoint_flows(entry.endpoint)
        self.counters["switch_connected"] += 1
        LOG.info(
            "%s: switch connected, tunnel port %d, %d ports, %d learned",
            self.cfg.name,
            tunnel_ofport,
            len(self.local),
            len(self.learned),
        )
        return out

    def switch_disconnected(self) -> None:
        self.tunnel_ofport = None

    def _instance_up(self, instance: int) -> list[OfMsg]:
        assert self.tunnel_ofport is not None
        msgs: list[OfMsg] = [
            self._group(instance, GroupCommand.ADD),
            *flows.instance_flows(instance),
        ]
        msgs += [
            flows.member_flow(instance, h, self.tunnel_ofport) for h in self._members_of(instance)
        ]
        return msgs

    # ------------------------------------------------------------- VM ports

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        """Take the full set of marked VM ports from OVSDB and apply the difference."""
        wanted = {p.name: p for p in ports}
        out = CoreOutput()
        before = self.instances
        changed_instances: set[int] = set()
        for name, old in list(self.ports.items()):
            if wanted.get(name) != old:
                self._remove_port(now, old, out)
                changed_instances.add(old.instance)
        for name, port in wanted.items():
            if self.ports.get(name) != port:
                if (port.instance, port.mac) in self.local:
                    self._drop("duplicate_mac", now, f"port {name} mac {port.mac}")
                    continue
                self._add_port(now, port, out)
                changed_instances.add(port.instance)
        after = self.instances
        if self.tunnel_ofport is not None:
            for instance in sorted(after - before):
                self.lingering.pop(instance, None)
                out.ofmsgs += self._instance_up(instance)
            for instance in sorted(before - after):
                out.ofmsgs += flows.delete_instance(instance)
                out.ofmsgs += self._linger(now, instance)
            for instance in sorted(changed_instances & before & after):
                out.ofmsgs.append(self._group(instance, GroupCommand.MODIFY))
        for instance in before - after:
            self.learned.drop_instance(instance)
            self.pending.drop_instance(instance)
        if before != after:
            out.datagrams += self._announce(now)
        return out

    def _add_port(self, now: float, port: VmPort, out: CoreOutput) -> None:
        key = (port.instance, port.mac)
        # Where it was before, if we knew: that host hears of the move at once.
        before = self.learned.get(port.instance, port.mac)
        departed = self.mobility.lookup(key, now)
        known_seq = max(before.endpoint.seq if before else 0, departed.seq if departed else 0)
        # A VM that arrives here replaces whatever was learned about its addresses.
        stale = {port.mac} | {
            e.endpoint.mac
            for ip in port.ips
            if (e := self.learned.get_by_ip(port.instance, ip)) is not None
        }
        for mac in stale:
            out.extend(self._forget(port.instance, mac))
        self.ports[port.name] = port
        self.local[(port.instance, port.mac)] = port
        self.by_instance.setdefault(port.instance, {})[port.mac] = port
        for ip in port.ips:
            self.local_ip[(port.instance, ip)] = port
        self.seqs[key] = seq = next_seq(known_seq, self.wall_clock())
        self.mobility.arrived(key)
        if self.tunnel_ofport is not None:
            out.ofmsgs += flows.local_port_flows(port)
        self.counters["ports_added"] += 1
        # The hosts serving the instance (and the VM's previous host) learn the new
        # location now, with a sequence number above the old one.
        here = EndpointHere(port.instance, port.mac, port.ips, self.me, seq)
        targets = set(self._members_of(port.instance))
        if before is not None:
            targets.add(before.endpoint.host)
        out.datagrams += [self._datagram(now, host, here) for host in sorted(targets)]
        self.counters["endpoint_announced"] += len(targets)
        LOG.info(
            "%s: port %s up: instance %d mac %s ips %s ofport %d",
            self.cfg.name,
            port.name,
            port.instance,
            port.mac,
            ",".join(map(str, port.ips)),
            port.ofport,
        )

    def _remove_port(self, now: float, port: VmPort, out: CoreOutput) -> None:
        del self.ports[port.name]
        key = (port.instance, port.mac)
        seq = self.seqs.pop(key, 0)
        # Un-learned everywhere it was learned, and by every host serving the instance
        # (a VM that stops is gone for all of them; one that moves is re-learned).
        learners = self.mobility.depart(key, seq, now)
        unlearn = Unlearn(port.instance, port.mac, self.me, seq)
        targets = learners | set(self._members_of(port.instance))
        out.datagrams += [self._datagram(now, host, unlearn) for host in sorted(targets)]
        self.counters["unlearn_sent"] += len(targets)
        if self.local.get((port.instance, port.mac)) == port:
            del self.local[(port.instance, port.mac)]
            same_instance = self.by_instance[port.instance]
            del same_instance[port.mac]
            if not same_instance:
                del self.by_instance[port.instance]
        for ip in port.ips:
            if self.local_ip.get((port.instance, ip)) == port:
                del self.local_ip[(port.instance, ip)]
        if self.tunnel_ofport is not None:
            out.ofmsgs += flows.delete_local_port(port)
        self.counters["ports_removed"] += 1
        LOG.info(
            "%s: port %s down: instance %d mac %s",
            self.cfg.name,
            port.name,
            port.instance,
            port.mac,
        )

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
        """A miss punted by the pipeline: resolve its target, holding the packet; or an
        overlay packet for a VM that is not here (``metadata``/``tunnel_src`` given)."""
        self.counters["packet_in"] += 1
        decoded = cookies.decode(cookie)
        self.packet_ins[packet_in_reason(decoded)] += 1
        if decoded is not None and decoded.purpose is Purpose.EGRESS_MISS:
            return self._not_here(now, data, metadata, tunnel_src)
        if decoded is None or decoded.purpose is not Purpose.INSTANCE:
            self._drop("packet_in_unexpected", now, f"cookie {cookie:#x}")
            return CoreOutput()
        instance = decoded.instance
        try:
            frame = parse(data)
        except BadPacket as e:
            self._drop("packet_in_malformed", now, str(e))
            return CoreOutput()
        source = self.local.get((instance, frame.src))
        if source is None or source.ofport != in_port:
            self._drop("packet_in_foreign", now, f"in_port {in_port} src {frame.src}")
            return CoreOutput()
        target: Target
        if decoded.tag == flows.TAG_ARP_MISS and frame.arp is not None:
            self.counters["packet_in_arp_miss"] += 1
            target = frame.arp.tpa
            known = self.learned.get_by_ip(instance, target)
        elif decoded.tag == flows.TAG_L2_MISS:
            self.counters["packet_in_l2_miss"] += 1
            target = frame.dst
            known = self.learned.get(instance, target)
        else:
            self._drop("packet_in_unexpected", now, f"tag {decoded.tag}")
            return CoreOutput()
        if known is not None:
            # Learned but this flow is missing (a race with an idle timeout): put back
            # just the flow that missed, then the packet.
            self.counters["packet_in_known"] += 1
            ep = known.endpoint
            if isinstance(target, IPv4Address):
                missing = flows.learned_arp_flows(ep, [target])
            else:
                assert self.tunnel_ofport is not None
                if now - known.reinstalled_at < REINSTALL_HOLDOFF:
                    # Packets already on their way when the flow went back in: send
                    # each straight into the tunnel, without a flow-mod per packet.
                    self.counters["packet_in_known_in_flight"] += 1
                    actions = flows.tunnel_actions(self.tunnel_ofport, ep.instance, ep.host)
                    return CoreOutput(ofmsgs=[PacketOut(in_port, data, actions)])
                known.reinstalled_at = now
                missing = [
                    flows.learned_l2_flow(
                        ep, self.tunnel_ofport, self.cfg.learning.learn_idle_timeout
                    )
                ]
            out = self._install(ep, [(in_port, data)], flows_too=False)
            out.ofmsgs[:0] = missing
            return out
        return self._resolve(now, source, target, in_port, data)

    def _not_here(
        self, now: float, data: bytes, metadata: int | None, tunnel_src: IPv4Address | None
    ) -> CoreOutput:
        """Traffic from the overlay for a VM that is not (or no longer) here.

        The sender is told to un-learn it (the paper's reactive un-learn), at most a few
        times a second; if the VM left for a known host, the packet goes on there."""
        if metadata is None or tunnel_src is None:
            self._drop("egress_without_tunnel", now)
            return CoreOutput()
        instance = metadata & INSTANCE_MASK
        try:
            frame = parse(data)
        except BadPacket as e:
            self._drop("packet_in_malformed", now, str(e))
            return CoreOutput()
        self.counters["packet_in_not_here"] += 1
        if frame.is_multicast:
            return CoreOutput()  # flooded to a lingering instance: nothing to correct
        key = (instance, frame.dst)
        local = self.local.get(key)
        if local is not None:
            # It is here: the packet raced the flows of a port that just came up.
            self.counters["not_here_but_local"] += 1
            return CoreOutput(ofmsgs=[PacketOut(OFPP_CONTROLLER, data, (Output(local.ofport),))])
        out = CoreOutput()
        departed = self.mobility.lookup(key, now)
        if departed is not None and departed.new_host is not None and self.tunnel_ofport:
            actions = flows.tunnel_actions(self.tunnel_ofport, instance, departed.new_host)
            out.ofmsgs.append(PacketOut(OFPP_CONTROLLER, data, actions, after_flows=False))
            self.counters["forwarded_to_new_host"] += 1
        if departed is None:
            # Never here, or long gone: whatever the sender holds for it is wrong.
            unlearn = Unlearn(instance, frame.dst, self.me, SEQ_MAX)
            tell = self.log_limit.allow(f"unlearn {tunnel_src}", now)
        else:
            unlearn = Unlearn(instance, frame.dst, self.me, departed.seq)
            tell = self.mobility.should_tell(departed, tunnel_src, now)
        if tell:
            out.datagrams.append(self._datagram(now, tunnel_src, unlearn))
            self.counters["unlearn_sent_reactive"] += 1
        return out

    def _resolve(
        self, now: float, source: VmPort, target: Target, in_port: int, data: bytes
    ) -> CoreOutput:
        instance = source.instance
        pending = self.pending.get(instance, target)
        if pending is not None:
            if len(pending.held) < PendingTable.MAX_HELD:
                pending.held.append((in_port, data))
            else:
                self.counters["held_overflow"] += 1
            return CoreOutput()
        if not self._may_ask(now, instance, target):
            return CoreOutput()
        members = self._members_of(instance)
        if not members:
            # Nobody else serves the instance yet (this VM, or its peers, just came up):
            # hold the packet; the request goes out as soon as a member announces.
            self.counters["learn_no_members"] += 1
        pending = Pending(
            instance,
            target,
            self._next_request_id(),
            now,
            now + self.cfg.learning.learn_timeout,
            held=[(in_port, data)],
            requester=Requester(source.mac, source.ips, self.seqs.get((instance, source.mac), 1)),
        )
        self.pending.add(pending)
        return CoreOutput(datagrams=self._learn_requests(now, pending, members))

    def _may_ask(self, now: float, instance: int, target: Target, toward_wan: bool = False) -> bool:
        """A new LEARN is allowed: not just unanswered, within the bounds and the rate."""
        if self.negative.active(instance, target, now, toward_wan):
            self.counters["drop_negative_cached"] += 1
            return False
        if self.pending.full(instance):
            self._drop("pending_full", now, f"instance {instance}")
            return False
        rate = self.cfg.learning.learn_rate_per_instance
        if not self.buckets.setdefault(instance, TokenBucket(rate, rate)).take(now):
            self._drop("learn_rate_limited", now, f"instance {instance}")
            return False
        return True

    def _next_request_id(self) -> int:
        """32-bit request ids, wrapping, never one still in flight."""
        while True:
            self.last_request_id = self.last_request_id % 0xFFFFFFFF + 1
            if self.last_request_id not in self.pending.by_id:
                return self.last_request_id

    def _learn_targets(self, pending: Pending) -> list[IPv4Address]:
        """Where a LEARN for ``pending`` goes: every host serving the instance."""
        return self._members_of(pending.instance)

    def _learn_requests(
        self, now: float, pending: Pending, members: list[IPv4Address]
    ) -> list[Datagram]:
        mac = pending.target if isinstance(pending.target, str) else None
        ip = pending.target if isinstance(pending.target, IPv4Address) else None
        msg = LearnRequest(
            instance=pending.instance,
            request_id=pending.request_id,
            mac=mac,
            ip=ip,
            requester=pending.requester,
        )
        self.counters["learn_requests_sent"] += len(members)
        return [self._datagram(now, host, msg) for host in members]

    # -------------------------------------------------------------- control

    def control_message(self, now: float, data: bytes, src: IPv4Address) -> CoreOutput:
        """A datagram from the underlay; anything wrong with it is counted and dropped."""
        self.counters["control_received"] += 1
        try:
            env = decode(data, key=self.cfg.host.auth_key)
            if env.sender != src:
                raise AuthError("sender_mismatch")
            if env.receiver is None or not self._is_me(env.receiver):
                raise AuthError("wrong_receiver")
            self.replay.check(env.sender, env.counter, self.wall_clock())
        except MalformedMessage as e:
            self._drop(f"control_{e.reason}", now, f"from {src}")
            return CoreOutput()
        except AuthError as e:
            self._drop(f"control_{e.reason}", now, f"from {src}")
            return CoreOutput()
        return self._dispatch(now, env)

    def _is_me(self, address: IPv4Address) -> bool:
        return address == self.me

    def _dispatch(self, now: float, env: Envelope) -> CoreOutput:
        msg = env.message
        if isinstance(msg, FrameFragment):
            self._drop("frame_not_a_proxy", now, f"from {env.sender}")
            return CoreOutput()
        if isinstance(msg, Announce):
            return self._on_announce(now, env, msg)
        if isinstance(msg, LearnRequest):
            return self._on_learn_request(now, env.sender, msg)
        if isinstance(msg, LearnReply):
            return self._on_learn_reply(now, env.sender, msg)
        if isinstance(msg, EndpointHere):
            return self._on_endpoint_here(now, env.sender, msg)
        if isinstance(msg, Unlearn):
            self.counters["unlearn_received"] += 1
            entry = self.learned.get(msg.instance, msg.mac)
            if msg.host != env.sender:
                self._drop("unlearn_for_other_host", now, f"from {env.sender} for {msg.host}")
            elif entry and entry.endpoint.host == msg.host and entry.endpoint.seq <= msg.seq:
                # Kept for a moment: the VM's new host may announce it right after.
                self.unlearned[(msg.instance, msg.mac)] = (msg.seq, now + RECENTLY_UNLEARNED)
                self.unlearned.move_to_end((msg.instance, msg.mac))
                while len(self.unlearned) > NEGATIVE_SIZE:
                    self.unlearned.popitem(last=False)
                return self._forget(msg.instance, msg.mac)
        return CoreOutput()

    def _on_announce(self, now: float, env: Envelope, msg: Announce) -> CoreOutput:
        self.counters["announce_received"] += 1
        sender = env.sender
        if not self._fresh_announce(env):
            return CoreOutput()
        out = CoreOutput()
        if msg.proxy is not None:
            out.extend(self._proxy_heard(now, sender, msg.proxy))
        return out.extend(self._membership(now, sender, msg.instances))

    def _fresh_announce(self, env: Envelope) -> bool:
        """Reordered on the way, an older membership must not undo a newer one."""
        if env.counter <= self.last_announce.get(env.sender, -1):
            self.counters["announce_stale"] += 1
            return False
        self.last_announce[env.sender] = env.counter
        self.last_announce.move_to_end(env.sender)
        if len(self.last_announce) > MAX_PEERS_TRACKED:
            self.last_announce.popitem(last=False)
        return True

    def _membership(self, now: float, sender: IPv4Address, instances: frozenset[int]) -> CoreOutput:
        """``sender`` serves exactly ``instances`` now."""
        expires = now + self.cfg.learning.announce_interval * MEMBER_LIFETIME_INTERVALS
        out = CoreOutput()
        new_peer = not any(sender in hosts for hosts in self.members.values())
        for instance in instances:
            hosts = self.members.setdefault(instance, {})
            joined = sender not in hosts
            hosts[sender] = Member(expires)
            if joined:
                out.ofmsgs += self._member_changed(instance, sender, joined=True)
                out.datagrams += self._ask_new_member(now, instance, sender)
        for instance, hosts in list(self.members.items()):
            if sender in hosts and instance not in instances:
                del hosts[sender]
                out.ofmsgs += self._member_changed(instance, sender, joined=False)
        if new_peer and instances:
            # A host we did not know (new or restarted): tell it at once what we serve.
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _proxy_heard(self, now: float, sender: IPv4Address, role: ProxyRole) -> CoreOutput:
        """A VAN proxy announced itself.  When a site's standby proxy becomes active
        (its active one stopped), what was learned behind the old one moves to it at
        once: the new one resolves what it does not know yet on the first packet."""
        expires = now + self.cfg.learning.announce_interval * MEMBER_LIFETIME_INTERVALS
        self.proxies[sender] = KnownProxy(role, expires)
        out = CoreOutput()
        if not role.active:
            return out
        for other, known in list(self.proxies.items()):
            if other == sender or known.role.site != role.site or not known.role.active:
                continue
            self.proxies[other] = KnownProxy(
                ProxyRole(known.role.site, False, known.role.priority), known.expires
            )
            self.counters["proxy_failover"] += 1
            LOG.warning(
                "%s: site %s now through proxy %s (was %s)", self.cfg.name, role.site, sender, other
            )
            for entry in [e for e in self.learned.entries() if e.endpoint.host == other]:
                ep = entry.endpoint
                moved = Endpoint(ep.instance, ep.mac, ep.ips, sender, ep.seq)
                out.extend(self._remember(now, moved, sender))
            for instance, hosts in list(self.members.items()):
                if hosts.pop(other, None) is not None:
                    out.ofmsgs += self._member_changed(instance, other, joined=False)
        return out

    def _ask_new_member(self, now: float, instance: int, host: IPv4Address) -> list[Datagram]:
        """LEARNs in flight for the instance go to a member that just joined, at once."""
        return [
            dgram
            for pending in list(self.pending.by_key.values())
            if pending.instance == instance
            for dgram in self._learn_requests(now, pending, [host])
        ]

    def _member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        LOG.info(
            "%s: member %s %s instance %d",
            self.cfg.name,
            host,
            "joined" if joined else "left",
            instance,
        )
        self.counters["member_joined" if joined else "member_left"] += 1
        msgs = [] if joined else self._forget_behind(instance, host)
        if self.tunnel_ofport is None:
            return msgs
        if instance in self.lingering:
            if joined:
                return [*msgs, flows.member_flow(instance, host, self.tunnel_ofport, True)]
            return [*msgs, flows.delete_member_flow(instance, host, self.tunnel_ofport)]
        if instance not in self.by_instance:
            return msgs
        flow = (flows.member_flow if joined else flows.delete_member_flow)(
            instance, host, self.tunnel_ofport
        )
        return [*msgs, flow, self._group(instance, GroupCommand.MODIFY)]

    def _forget_behind(self, instance: int, host: IPv4Address) -> list[OfMsg]:
        """What lived on a host that no longer serves the instance is gone with it."""
        msgs: list[OfMsg] = []
        for entry in list(self.learned.by_instance.get(instance, {}).values()):
            if entry.endpoint.host == host:
                msgs += self._forget(instance, entry.endpoint.mac).ofmsgs
        return msgs

    def _linger(self, now: float, instance: int) -> list[OfMsg]:
        """The last VM of the instance left: keep taking members' traffic for it to
        egress_check while the departure is remembered (see `_not_here`)."""
        if self.tunnel_ofport is None:
            return []
        self.lingering[instance] = now + self.mobility.ttl
        return [
            flows.member_flow(instance, h, self.tunnel_ofport, lingering=True)
            for h in self._members_of(instance)
        ]

    def _on_learn_request(self, now: float, sender: IPv4Address, msg: LearnRequest) -> CoreOutput:
        self.counters["learn_requests_received"] += 1
        if msg.mac is not None:
            port = self.local.get((msg.instance, msg.mac))
        else:
            assert msg.ip is not None
            port = self.local_ip.get((msg.instance, msg.ip))
        if port is None:
            return CoreOutput()
        out = self._glean(now, sender, msg)
        self.mobility.note_learner((port.instance, port.mac), sender)
        reply = LearnReply(
            instance=msg.instance,
            request_id=msg.request_id,
            mac=port.mac,
            ips=port.ips,
            host=self.me,
            seq=self.seqs.get((port.instance, port.mac), 1),
        )
        self.counters["learn_replies_sent"] += 1
        out.datagrams.append(self._datagram(now, sender, reply))
        return out

    def _glean(self, now: float, sender: IPv4Address, msg: LearnRequest) -> CoreOutput:
        """Learn who asked, as we answer: the reply traffic then needs no LEARN of its own.

        Only requests we answer are gleaned, so a VM spraying random targets elsewhere
        costs this host nothing."""
        who = msg.requester
        if who is None or (msg.instance, who.mac) in self.local:
            return CoreOutput()
        if sender not in self.members.get(msg.instance, {}):
            # A location is taken only from a host serving the instance, the same
            # rule classify applies to tunnelled packets.
            self._drop("glean_nonmember", now, f"from {sender} instance {msg.instance}")
            return CoreOutput()
        current = self.learned.get(msg.instance, who.mac)
        if current is not None and (
            current.endpoint.seq > who.seq
            or (current.endpoint.host == sender and current.endpoint.ips == who.ips)
        ):
            return CoreOutput()
        self.counters["learned_from_request"] += 1
        ep = Endpoint(msg.instance, who.mac, who.ips, sender, who.seq)
        return self._remember(now, ep, sender)

    def _on_learn_reply(self, now: float, sender: IPv4Address, msg: LearnReply) -> CoreOutput:
        self.counters["learn_replies_received"] += 1
        pending = self.pending.by_id.get(msg.request_id)
        if pending is None or pending.instance != msg.instance:
            self.counters["learn_reply_unsolicited"] += 1
            return CoreOutput()
        if msg.host != sender or not self._answers(pending, msg):
            self._drop("learn_reply_mismatch", now, f"from {sender}")
            return CoreOutput()
        if not self._reply_from_right_side(now, pending, sender):
            return CoreOutput()
        if sender not in self.members.get(msg.instance, {}):
            self._drop("learn_reply_nonmember", now, f"from {sender} instance {msg.instance}")
            return CoreOutput()
        self.pending.remove(pending)
        if pending.requester is not None and (msg.instance, pending.requester.mac) in self.local:
            # The host that answered learned our VM from the request (see _glean).
            self.mobility.note_learner((msg.instance, pending.requester.mac), sender)
        return self._resolved(
            now, pending, Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq), sender
        )

    def _reply_from_right_side(self, now: float, pending: Pending, sender: IPv4Address) -> bool:
        """A host asks on one side only; a proxy checks the answer came from where it asked."""
        return True

    def _resolved(
        self, now: float, pending: Pending, ep: Endpoint, sender: IPv4Address
    ) -> CoreOutput:
        """A LEARN in flight has its answer: remember it and deliver what was held."""
        ep = self._answered(now, pending, ep)
        out = self._remember(now, ep, sender)
        held = pending.held
        if isinstance(pending.target, IPv4Address):
            # The held ARP requests are answered at once by the agent, without waiting
            # for the responder flow it has just installed: the first packet's latency.
            answers = [self._arp_answer(port, data, ep) for port, data in held]
            out.ofmsgs += [a for a in answers if a is not None]
            held = [h for h, a in zip(held, answers, strict=True) if a is None]
        return out.extend(self._install(ep, held, flows_too=False))

    def _answered(self, now: float, pending: Pending, ep: Endpoint) -> Endpoint:
        """Count and log an answer; what we hold already wins if it is newer."""
        current = self.learned.get(ep.instance, ep.mac)
        if current and current.endpoint.seq > ep.seq:
            self.counters["learn_reply_stale"] += 1
            ep = current.endpoint
        took = now - pending.first_sent
        self.counters["learned"] += 1
        self.counters["learn_latency_ms_total"] += int(took * 1000)
        self.learn_latency.observe(took)
        LOG.info(
            "%s: learned instance %d %s ips %s at %s (seq %d) in %.1f ms",
            self.cfg.name,
            ep.instance,
            ep.mac,
            ",".join(map(str, ep.ips)),
            ep.host,
            ep.seq,
            took * 1000,
        )
        return ep

    def _on_endpoint_here(self, now: float, sender: IPv4Address, msg: EndpointHere) -> CoreOutput:
        """A VM arrived on ``sender`` (moved there, or started): follow it if we knew it
        elsewhere, forward to it if it left us, answer LEARNs waiting for it."""
        self.counters["endpoint_received"] += 1
        if msg.host != sender:
            self._drop("endpoint_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        out = CoreOutput()
        # Announcing a VM of the instance is serving the instance.
        if sender not in self.members.get(msg.instance, {}):
            expires = now + self.cfg.learning.announce_interval * MEMBER_LIFETIME_INTERVALS
            self.members.setdefault(msg.instance, {})[sender] = Member(expires)
            out.ofmsgs += self._member_changed(msg.instance, sender, joined=True)
        key = (msg.instance, msg.mac)
        ep = Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq)
        if key in self.local:
            # OVSDB says it is here; the port will go when the move completes.
            self.counters["endpoint_still_local"] += 1
            return out
        if self.mobility.went_to(key, sender, msg.seq, now):
            self.counters["departed_now_at_known_host"] += 1
        current = self.learned.get(msg.instance, msg.mac)
        gone_seq, gone_until = self.unlearned.pop(key, (0, 0.0))
        if current is None and gone_until > now and msg.seq > gone_seq:
            # Un-learned a moment ago by its old host (a move unplugs first): follow it.
            self.counters["endpoint_moved"] += 1
            out.extend(self._remember(now, ep, sender))
        elif current is not None:
            if msg.seq <= current.endpoint.seq:
                self.counters["endpoint_stale"] += 1
                return out
            LOG.info(
                "%s: instance %d %s moved %s -> %s (seq %d -> %d)",
                self.cfg.name,
                msg.instance,
                msg.mac,
                current.endpoint.host,
                sender,
                current.endpoint.seq,
                msg.seq,
            )
            self.counters["endpoint_moved"] += 1
            out.extend(self._remember(now, ep, sender))
        targets: list[Target] = [msg.mac, *msg.ips]
        for target in targets:
            pending = self.pending.get(msg.instance, target)
            if pending is not None:
                self.pending.remove(pending)
                out.extend(self._resolved(now, pending, ep, sender))
        return out

    def _arp_answer(self, in_port: int, data: bytes, ep: Endpoint) -> PacketOut | None:
        """The ARP reply to a held request for one of ``ep``'s addresses, or None."""
        try:
            arp = parse(data).arp
        except BadPacket:
            return None
        if arp is None or arp.op != ARP_REQUEST or arp.tpa not in ep.ips:
            return None
        reply = build_arp(ARP_REPLY, ep.mac, arp.sha, ep.mac, arp.tpa, arp.sha, arp.spa)
        self.counters["arp_answered_by_agent"] += 1
        return PacketOut(OFPP_CONTROLLER, reply, (Output(in_port),), after_flows=False)

    @staticmethod
    def _answers(pending: Pending, msg: LearnReply) -> bool:
        if isinstance(pending.target, str):
            return pending.target == msg.mac
        return pending.target in msg.ips

    def _remember(self, now: float, ep: Endpoint, answered_by: IPv4Address) -> CoreOutput:
        """Store a remote endpoint and install its flows.

        A local VM always wins: a claim on a local MAC is refused and local IPs are
        left out, so a learned flow never shadows a local one (same match, same
        priority).  Multicast MACs are never endpoints."""
        if (ep.instance, ep.mac) in self.local or int(ep.mac[:2], 16) & 1:
            self._drop("learn_claims_local_mac", now, f"{ep.mac} from {answered_by}")
            return CoreOutput()
        local_ips = [ip for ip in ep.ips if (ep.instance, ip) in self.local_ip]
        if local_ips:
            self.counters["learn_local_ips_ignored"] += len(local_ips)
            ep = Endpoint(
                ep.instance, ep.mac, tuple(i for i in ep.ips if i not in local_ips), ep.host, ep.seq
            )
        replaced, evicted = self.learned.put(LearnedEndpoint(ep, now, answered_by))
        out = CoreOutput()
        if self.tunnel_ofport is None:
            return out
        for victim in evicted:
            self.counters["learned_evicted"] += 1
            out.ofmsgs += self._endpoint_deletes(victim.endpoint)
        if replaced:
            out.ofmsgs += self._endpoint_deletes(replaced.endpoint, keep_l2=True)
        out.ofmsgs += self._endpoint_flows(ep)
        return out

    def _endpoint_flows(self, ep: Endpoint) -> list[OfMsg]:
        """The flows that forward to a learned endpoint (and answer ARP for it)."""
        assert self.tunnel_ofport is not None
        return list(
            flows.learned_flows(ep, self.tunnel_ofport, self.cfg.learning.learn_idle_timeout)
        )

    def _endpoint_deletes(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        return list(flows.delete_learned(ep, keep_l2=keep_l2))

    def _install(
        self, ep: Endpoint, held: list[tuple[int, bytes]], flows_too: bool = True
    ) -> CoreOutput:
        """(Re)install an endpoint's flows and re-inject the held packets through them."""
        out = CoreOutput()
        if self.tunnel_ofport is None:
            return out
        if flows_too:
            out.ofmsgs += self._endpoint_flows(ep)
        out.ofmsgs += [PacketOut(in_port=port, data=data) for port, data in held]
        self.counters["packets_released"] += len(held)
        return out

    def _forget(self, instance: int, mac: str) -> CoreOutput:
        entry = self.learned.remove(instance, mac)
        if entry is None or self.tunnel_ofport is None:
            return CoreOutput()
        self.counters["unlearned"] += 1
        return CoreOutput(ofmsgs=self._endpoint_deletes(entry.endpoint))

    def flow_removed(
        self,
        now: float,
        cookie: int,
        match: dict[str, object],
        idle_timeout: bool,
        age: float,
    ) -> CoreOutput:
        """A learned flow idled out: forget the endpoint and its ARP answers.

        Removals by our own deletes (a resync, an eviction) are echoes, not news; and
        an echo of a flow older than the entry we hold now says nothing about it."""
        decoded = cookies.decode(cookie)
        if not idle_timeout or decoded is None or decoded.purpose is not Purpose.LEARNED:
            return CoreOutput()
        mac = match.get("eth_dst")
        if not isinstance(mac, str):
            return CoreOutput()
        entry = self.learned.get(decoded.instance, mac)
        if entry is None or entry.learned_at > now - age + FLOW_AGE_SLACK:
            return CoreOutput()
        self.counters["learned_aged"] += 1
        self.learned.remove(decoded.instance, mac)
        if self.tunnel_ofport is None:
            return CoreOutput()
        return CoreOutput(ofmsgs=self._endpoint_deletes(entry.endpoint, keep_l2=True))

    # ----------------------------------------------------------------- time

    def tick(self, now: float) -> CoreOutput:
        """Retransmit or give up on LEARNs, expire members and lingering, announce."""
        out = CoreOutput()
        for instance, until in list(self.lingering.items()):
            if until <= now:
                del self.lingering[instance]
                out.ofmsgs += flows.delete_instance(instance)
                out.datagrams += self._announce(now)
        for pending in list(self.pending.by_key.values()):
            if pending.next_retry > now:
                continue
            if pending.attempts > self.cfg.learning.learn_retries:
                self.pending.remove(pending)
                self.negative.add(pending.instance, pending.target, now, pending.toward_wan)
                self.counters["learn_timeouts"] += 1
                self.counters["held_dropped"] += len(pending.held)
                continue
            pending.attempts += 1
            pending.next_retry = now + self.cfg.learning.learn_timeout * pending.attempts
            self.counters["learn_retransmits"] += 1
            out.datagrams += self._learn_requests(now, pending, self._learn_targets(pending))
        for instance, hosts in list(self.members.items()):
            for host, member in list(hosts.items()):
                if member.expires <= now:
                    del hosts[host]
                    out.ofmsgs += self._member_changed(instance, host, joined=False)
            if not hosts:
                del self.members[instance]
        for host, known in list(self.proxies.items()):
            if known.expires <= now:
                del self.proxies[host]
        if now >= self.next_announce:
            out.datagrams += self._announce(now)
        return out

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        if only is None:
            self.next_announce = now + self.cfg.learning.announce_interval
        # A lingering instance is still announced: the VM's new host must go on taking
        # the packets this host forwards to it, and senders go on reaching this host.
        instances = sorted(self.instances | set(self.lingering))
        if len(instances) > ANNOUNCE_MAX_INSTANCES:
            # NOTE: one frame holds this many; splitting announcements is not done yet.
            self._drop("announce_truncated", now, f"{len(instances)} instances served")
            instances = instances[:ANNOUNCE_MAX_INSTANCES]
        msg = Announce(instances=frozenset(instances))
        targets = only if only is not None else list(self.cfg.host.peers)
        self.counters["announce_sent"] += len(targets)
        return [self._datagram(now, host, msg) for host in targets]

    def _datagram(self, now: float, host: IPv4Address, msg: Message) -> Datagram:
        payload = encode(
            msg,
            receiver=host,
            sender=self.me,
            counter=self.counter_source.next(self.wall_clock()),
            key=self.cfg.host.auth_key,
        )
        return Datagram(str(host), payload)

    # --------------------------------------------------------------- status

    def _learned_rows(self, now: float, instance: int) -> list[dict[str, object]]:
        return [
            {
                "mac": e.endpoint.mac,
                "ips": [str(i) for i in e.endpoint.ips],
                "host": str(e.endpoint.host),
                "seq": e.endpoint.seq,
                "age": round(now - e.learned_at, 1),
                "answered_by": str(e.answered_by),
            }
            for e in self.learned.by_instance.get(instance, {}).values()
        ]

    def status(self, now: float) -> dict[str, object]:
        """Everything an operator asks about, as plain data (for the admin socket)."""
        return {
            "host": self.cfg.name,
            "role": "host",
            "underlay_ip": str(self.me),
            "connected": self.tunnel_ofport is not None,
            "proxies": {
                str(h): {"site": k.role.site, "active": k.role.active}
                for h, k in sorted(self.proxies.items())
            },
            "instances": {
                str(instance): {
                    "local": [
                        {
                            "port": p.name,
                            "ofport": p.ofport,
                            "mac": p.mac,
                            "ips": [str(i) for i in p.ips],
                            "seq": self.seqs.get((instance, p.mac), 1),
                            "learned_by": sorted(
                                str(h) for h in self.mobility.learners.get((instance, p.mac), ())
                            ),
                        }
                        for _, p in sorted(self.by_instance.get(instance, {}).items())
                    ],
                    "members": sorted(str(h) for h in self._members_of(instance)),
                    "learned": self._learned_rows(now, instance),
                }
                for instance in sorted(self.instances | set(self.learned.by_instance))
            },
            "pending": len(self.pending),
            "counters": dict(sorted(self.counters.items())),
        }
