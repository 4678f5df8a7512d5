"""The external gateway (docs/routing.md, "The gateway role"), wired from parts.

A gateway has ``br-dove``, the tunnel port and an external port; no VM ports.  Hosts
tunnel to the active gateway what their routers send off their subnets; it routes it
out with source NAT (or a floating IP) in the datapath's conntrack, and routes replies
and traffic to floating IPs back in, to the inside endpoint's host.  It learns where an
inside address is as a host does, with a LEARN to the members of its instance (known
from their announcements); it resolves the external next hop with ARP.

It is made of the parts `dove_ryu.agent.parts.GatewayParts` lists.  This file adds the
election between the two gateways (the proxies' rules: hellos, no preemption), what the
gateway announces (its role, no instances: hosts send it traffic only while it is
active), and the packet-ins of its tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.election import Outcome
from dove_ryu.agent.gateway_parts import GatewayReport
from dove_ryu.agent.parts import gateway_parts
from dove_ryu.agent.stats import StatsView
from dove_ryu.agent.takeover import SwitchState
from dove_ryu.config import DoveConfig
from dove_ryu.model import Endpoint, Router, VmPort
from dove_ryu.openflow import gateway_flows as gw
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram, OfMsg, PacketIn
from dove_ryu.openflow.packet import BadPacket, parse
from dove_ryu.protocol import messages as msgs

LOG = logging.getLogger("dove_ryu.gateway")


def ipv4_dst(data: bytes) -> IPv4Address | None:
    """The destination of an untagged IPv4 frame, else None."""
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return None
    return IPv4Address(data[30:34])


class GatewayCore:
    """State and decisions of one external gateway."""

    role = "gateway"

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        self.p = gateway_parts(cfg, LOG, now)  # what a gateway is made of
        self.next_announce = now
        self.gateways: tuple[IPv4Address, ...] = ()  # the dove-gateways mark
        self.report = GatewayReport(self.p)  # status and statistics

    @property
    def counters(self) -> dict[str, int]:
        return self.p.stats.counters

    @property
    def active(self) -> bool:
        return self.p.election.active

    # ------------------------------------------------------------- switch

    def switch_connected(
        self, now: float, tunnel_ofport: int, found: SwitchState | None = None
    ) -> CoreOutput:
        """Take over what the switch holds (as a host does: `dove_ryu.agent.takeover`):
        the members and endpoints learned, the whole state under a new generation.
        The connections stay in the datapath's conntrack: nothing flushes a zone."""
        adopted = self.p.takeover.begin(now, found or SwitchState(), [self.p.me], member_flows=True)
        self.p.adopt(now, adopted)
        macs = self.p.external.adopt(adopted.external)
        if macs:
            self.p.stats.count("takeover_external_macs_adopted", macs)
        self.p.election.switch_read(found is not None and (bool(found.flows) or not found.complete))
        self.p.link.tunnel_ofport = tunnel_ofport
        self.p.stats.count("switch_connected")
        self.next_announce = now
        LOG.info("%s: switch connected, tunnel port %d (gateway)", self.p.name, tunnel_ofport)
        return CoreOutput(ofmsgs=self.p.takeover.install(self._state()))

    def _resync(self, now: float) -> list[OfMsg]:
        """Everything again after the external port changed (its flows are not the
        same), under a new generation: the old one's leftovers go on the next tick."""
        state = self._state()
        if state:
            self.p.takeover.renew(now)
        return state

    def _state(self) -> list[OfMsg]:
        """Every flow of the state we hold, for the switch (none without the external
        port)."""
        ext = self.p.external.side
        if not self.p.link.connected or ext is None:
            return []
        out: list[OfMsg] = [
            *gw.gateway_defaults(self.p.link.tunnel, ext),
            *self.p.external.flows(),
            *self.p.routers.resync(ext, self.active),
            *self._member_flows(self.p.routers.instances()),
        ]
        return out + self.p.learned.resync()

    def switch_disconnected(self) -> None:
        self.p.link.tunnel_ofport = None

    def external_port(self, now: float, ofport: int | None, mac: str | None) -> CoreOutput:
        """The external port as OVSDB shows it (its OpenFlow number and MAC)."""
        if not self.p.external.port(ofport, mac):
            return CoreOutput()
        if ofport is None:
            self.p.stats.drop("external_port_missing", now, self.p.cfg.gateway.external_port)
        return CoreOutput(ofmsgs=self._resync(now))

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        if ports:
            self.p.stats.drop("gateway_vm_ports", now, f"{len(ports)} VM ports on a gateway")
        return CoreOutput()

    def routers_changed(
        self,
        now: float,
        routers: Iterable[Router],
        gateways: Iterable[IPv4Address] = (),
        rejected: Iterable[tuple[str, str]] = (),
    ) -> CoreOutput:
        """The router marks (those the parser refused are counted by the shell): their
        flows, and the members they make us accept."""
        before = self.p.routers.instances()
        self.gateways = tuple(gateways)
        out = CoreOutput(ofmsgs=self.p.routers.replace(routers, self.p.external.side, self.active))
        after = self.p.routers.instances()
        if self.p.link.connected:
            for instance in sorted(before - after):
                out.ofmsgs += self._delete_members(instance)
                self.p.learned.drop_instance(instance)
                self.p.resolver.drop_instance(instance)
            out.ofmsgs += self._member_flows(after - before)
        partners = [g for g in self.gateways if g != self.p.me]
        new = [g for g in partners if g not in self.p.election.partners]
        if new:
            out.datagrams += self._announce(now, only=new)
        return out

    # ---------------------------------------------------------- membership

    def _member_flows(self, instances: Iterable[int]) -> list[OfMsg]:
        if not self.p.link.connected:
            return []
        tunnel = self.p.link.tunnel
        return [
            gw.member_flow(i, host, tunnel)
            for i in sorted(instances)
            for host in self.p.members.hosts(i)
        ]

    def _delete_members(self, instance: int) -> list[OfMsg]:
        tunnel = self.p.link.tunnel
        return [gw.delete_member_flow(instance, h, tunnel) for h in self.p.members.hosts(instance)]

    def _member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        routed = instance in self.p.routers.instances()
        if not routed or not self.p.link.connected:
            return []
        if joined:
            return [gw.member_flow(instance, host, self.p.link.tunnel)]
        return [
            gw.delete_member_flow(instance, host, self.p.link.tunnel),
            *self.p.learned.forget_behind(instance, host),
        ]

    # ------------------------------------------------------------ packet-in

    def packet_in(self, now: float, punted: PacketIn) -> CoreOutput:
        cookie = self.p.stats.punted(punted.cookie)
        if cookie is None:
            return CoreOutput()
        if cookie.purpose is Purpose.INSTANCE and cookie.tag == gw.TAG_GATEWAY_NEIGHBOR_MISS:
            return self._neighbor_miss(now, cookie.instance, punted)
        if cookie.purpose is Purpose.EXTERNAL:
            return CoreOutput(ofmsgs=self._external(now, punted.data))
        self.p.stats.drop("packet_in_unexpected", now, str(cookie))
        return CoreOutput()

    def _external(self, now: float, data: bytes) -> list[OfMsg]:
        """ext_in: an ARP reply to our address; ext_out: a packet with no MAC to go to."""
        try:
            frame = parse(data)
        except BadPacket:
            self.p.stats.count("packet_in_malformed")
            return []
        if frame.arp is not None:
            ignored = self.p.external.unsolicited
            msgs = self.p.external.answered(frame)
            if self.p.external.unsolicited > ignored:
                self.p.stats.drop("external_arp_unsolicited", now, f"from {frame.arp.spa}")
            return msgs
        dst = ipv4_dst(data)
        if dst is None:
            self.p.stats.drop("external_not_ipv4", now)
            return []
        self.p.stats.count("external_next_hop_miss")
        return self.p.external.missed(now, dst)

    def _neighbor_miss(self, now: float, instance: int, punted: PacketIn) -> CoreOutput:
        """A packet routed in (a reply, or to a floating IP) for an inside address not
        resolved yet: held, and asked of the instance's members."""
        dst = ipv4_dst(punted.data)
        if dst is None or instance not in self.p.routers.instances():
            self.p.stats.drop("neighbor_miss_unroutable", now, f"instance {instance}")
            return CoreOutput()
        self.p.stats.count("route_misses")
        known = self.p.learned.get_by_ip(instance, dst)
        if known is not None:  # its flows are on their way: release it after them
            tunnel = self.p.link.tunnel
            return CoreOutput(ofmsgs=[gw.release(known.endpoint, punted.data, tunnel)])
        pending = self.p.resolver.in_flight(instance, dst)
        held = (punted.in_port, punted.data)
        if pending is not None:
            self.p.resolver.hold(pending, held)
            return CoreOutput()
        if not self.p.resolver.may_ask(now, instance, dst):
            return CoreOutput()
        pending = self.p.resolver.start(now, instance, dst, [held])
        return CoreOutput(datagrams=self.p.ask(pending, self.p.members.hosts(instance)))

    def flow_removed(
        self, now: float, cookie: int, match: dict[str, object], idle_timeout: bool, age: float
    ) -> CoreOutput:
        return CoreOutput(ofmsgs=self.p.learned.flow_removed(now, cookie, match, idle_timeout, age))

    # -------------------------------------------------------------- control

    def control_message(self, now: float, data: bytes, src: IPv4Address) -> CoreOutput:
        env = self.p.channel.receive(now, data, src)
        if env is None:
            return CoreOutput()
        msg, sender = env.message, env.sender
        if isinstance(msg, msgs.Announce):
            return self._on_announce(now, env, msg)
        if isinstance(msg, msgs.Listening):
            return self._partner_listening(now, sender, msg.role)
        if isinstance(msg, msgs.LearnReply):
            return self._on_learn_reply(now, sender, msg)
        if isinstance(msg, (msgs.Unlearn, msgs.EndpointHere)):
            return self._on_moved(now, sender, msg)
        if isinstance(msg, msgs.Endpoints):
            return self.p.channel.each_entry(now, msg, sender, self._on_moved)
        return CoreOutput()  # LEARN requests: a gateway has no endpoints of its own

    def _on_announce(self, now: float, env: msgs.Envelope, msg: msgs.Announce) -> CoreOutput:
        self.p.stats.count("announce_received")
        sender = env.sender
        if not self.p.members.fresh(sender, env.counter):
            self.p.stats.count("announce_stale")
            return CoreOutput()
        self.p.takeover.heard(sender)
        restarted = self.p.members.restarted(now, sender, msg.incarnation)
        if msg.proxy is not None:
            self.p.stats.drop("gateway_proxy_announce", now, f"from {sender}")
            return CoreOutput()
        if msg.gateway is not None:
            if self.gateways and sender not in self.gateways:
                # Only a gateway the dove-gateways mark names takes part in the election:
                # any other peer saying "active" would make the active one step down.
                # (Before the marks are read, at start, a partner's hello is taken: a
                # restarted gateway must hear its partner at once to take its place back.)
                self.p.stats.drop("gateway_undeclared", now, f"from {sender}")
                return CoreOutput()
            new = self.p.election.heard(now, sender, msg.gateway)
            self.p.election.claim_early(now)
            out = self._elect(now)
            if new or restarted:
                out.datagrams += self._announce(now, only=[sender])
            return out
        change = self.p.members.served_by(now, sender, msg.instances, covers=msg.covers)
        out = CoreOutput()
        for instance in change.joined:
            out.ofmsgs += self._member_changed(instance, sender, joined=True)
            for pending in self.p.resolver.of_instance(instance):
                out.datagrams += self.p.ask(pending, [sender])
        for instance in change.left:
            out.ofmsgs += self._member_changed(instance, sender, joined=False)
        if change.new_peer or restarted:
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _partner_listening(
        self, now: float, sender: IPv4Address, role: msgs.ProxyRole | msgs.GatewayRole
    ) -> CoreOutput:
        """A gateway that has just started and not decided (`Election.heard_listening`);
        told at once where we stand if it is new to us."""
        undeclared = self.gateways and sender not in self.gateways
        if not isinstance(role, msgs.GatewayRole) or undeclared:
            self.p.stats.drop("listening_not_a_partner", now, f"from {sender}")
            return CoreOutput()
        new = self.p.election.heard_listening(now, sender, role)
        self.p.election.claim_early(now)
        out = self._elect(now)
        if new:
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _on_learn_reply(self, now: float, sender: IPv4Address, msg: msgs.LearnReply) -> CoreOutput:
        member = self.p.members.serves(msg.instance, sender)
        pending = self.p.resolver.take_reply(now, sender, msg, member)
        if pending is None:
            return CoreOutput()
        self.p.resolver.answered(now, pending)
        ep = Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq, msg.ips6)
        out = CoreOutput(ofmsgs=self.p.learned.remember(now, ep, sender))
        if self.p.link.connected:
            tunnel = self.p.link.tunnel
            out.ofmsgs += [gw.release(ep, data, tunnel) for _, data in pending.held]
        return out

    def _on_moved(
        self, now: float, sender: IPv4Address, msg: msgs.Unlearn | msgs.EndpointHere
    ) -> CoreOutput:
        """An endpoint we learned left its host (or says where it is now): forgotten,
        resolved again on the next packet."""
        entry = self.p.learned.get(msg.instance, msg.mac)
        if entry is None or entry.endpoint.seq > msg.seq:
            return CoreOutput()
        if isinstance(msg, msgs.Unlearn) and entry.endpoint.host != msg.host:
            return CoreOutput()
        return CoreOutput(ofmsgs=self.p.learned.forget(msg.instance, msg.mac))

    # ---------------------------------------------------------- redundancy

    def _elect(self, now: float) -> CoreOutput:
        outcome = self.p.election.decide(now)
        if outcome is Outcome.UNCHANGED:
            return CoreOutput()
        active = outcome is Outcome.BECAME_ACTIVE
        self.p.stats.count("gateway_became_active" if active else "gateway_stepped_down")
        LOG.warning("%s: %s", self.p.name, "now the active gateway" if active else "standby")
        out = CoreOutput(datagrams=self._announce(now))
        ext = self.p.external.side
        if ext is not None and self.p.link.connected:
            out.ofmsgs += self.p.routers.activity(ext, active)
        return out

    def _listening(self, now: float) -> bool:
        return self.p.election.listening(now)

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        """Our role (active or standby) and no instances, to the hosts and the other
        gateways (``only``: to those).  Nothing while listening: a standby's word from
        a restarted active gateway would hand its place (and its connections) to the
        other one."""
        if self._listening(now):
            return []
        targets = only
        if targets is None:
            self.next_announce = now + self.p.cfg.learning.announce_interval
            partners = sorted(set(self.p.election.partners) | set(self.gateways) - {self.p.me})
            targets = list(dict.fromkeys([*self.p.cfg.host.peers, *partners]))
        role = msgs.GatewayRole(self.active, self.p.cfg.gateway.gateway_priority)
        announce = msgs.Announce(
            frozenset(),
            gateway=role,
            incarnation=self.p.incarnation,
            encapsulations=self.p.link.tunnels.bits(),
        )
        out = self.p.channel.to_each(targets, announce)
        self.p.stats.count("announce_sent", len(out))
        return out

    def bfd_changed(self, now: float, states: Mapping[IPv4Address, bool]) -> CoreOutput:
        """The BFD sessions to the partners' datapaths (`Election`): up or not."""
        self.p.election.bfd_changed(states)
        return self._elect(now)

    def ha_partners(self, now: float) -> frozenset[IPv4Address] | None:
        """The partners that get a BFD tunnel port (None: leave the ports as they are)."""
        return self.p.election.ha_partners(now, self.gateways)

    def tick(self, now: float) -> CoreOutput:
        out = self._elect(now)
        if self.p.election.hello_due(now):
            partners = set(self.p.election.partners) | set(self.gateways)
            if self._listening(now):
                # `Listening` (hosts ignore it): the marks may not be read yet.
                partners |= set(self.p.cfg.host.peers)
                role = msgs.GatewayRole(False, self.p.cfg.gateway.gateway_priority)
                hello = msgs.Listening(role)
                out.datagrams += self.p.channel.to_each(sorted(partners - {self.p.me}), hello)
            else:
                out.datagrams += self._announce(now, only=sorted(partners - {self.p.me}))
        for pending in self.p.resolver.due(now):
            out.datagrams += self.p.ask(pending, self.p.members.hosts(pending.instance))
        for instance, host in self.p.members.expired(now):
            self.p.members.leave(instance, host)
            out.ofmsgs += self._member_changed(instance, host, joined=False)
        if self.p.link.connected:
            out.ofmsgs += self.p.external.tick(now)
            if self.p.takeover.settling and not self._listening(now):
                # Not while listening: the old generation's ARP answers stay until
                # the new one has its own (it claims, or hears the active one).
                out.ofmsgs += self.p.takeover.sweep(now, ())  # a gateway has no groups
        if now >= self.next_announce:
            out.datagrams += self._announce(now)
        return out

    # ------------------------------------------------------------ directory

    def served(self) -> frozenset[int]:
        return frozenset()

    def local_endpoints(self) -> list[EndpointRow]:
        return []

    def directory_rows(self, now: float, view: DirectoryView) -> CoreOutput:
        return CoreOutput()

    def directory_unreachable(self, now: float) -> None:
        return None

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, object]:
        return self.report.status(now)

    def stats_view(self) -> StatsView:
        return self.report.stats_view()
