"""The DOVE switch of a hypervisor: the host role, wired from the agent's parts.

Nothing here talks to a switch or a socket.  Each handler takes the facts and the
time (``now``) and returns a `CoreOutput`; `dove_ryu.adapters.shell` feeds it from
os-ken, OVSDB and the control socket and sends what comes back.

It is made of the parts `dove_ryu.agent.parts.HostParts` lists; `HostMisses` takes
the packet-in path, `Arrivals` VMs coming and going, `HostMembers` what a member
joining or leaving changes, `DirectorySync` the directory's rows (directory mode), and
`HostRouting` the router marks and which gateway is active (docs/routing.md).
This file adds the host's side of the protocol (paper IV-C): answering LEARNs for its
VMs, taking answers and announcements, following VMs that moved.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from dove_ryu.agent.announcer import Announcer
from dove_ryu.agent.arrivals import Arrivals
from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.host_directory import DirectorySync
from dove_ryu.agent.host_members import HostMembers
from dove_ryu.agent.host_misses import HostMisses
from dove_ryu.agent.host_routing import HostRouting
from dove_ryu.agent.parts import host_parts
from dove_ryu.agent.resolver import Pending, Target
from dove_ryu.agent.stats import InstanceCounts, StatsView
from dove_ryu.agent.takeover import SwitchState
from dove_ryu.config import DoveConfig
from dove_ryu.model import Endpoint, Router, VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram, OfMsg, PacketIn
from dove_ryu.protocol.messages import (
    Announce,
    EndpointHere,
    Endpoints,
    Envelope,
    FrameFragment,
    GatewayRole,
    LearnReply,
    LearnRequest,
    Unlearn,
)

LOG = logging.getLogger("dove_ryu.core")


class HostCore:
    """State and decisions of one DOVE switch (one hypervisor)."""

    role = "host"

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        self.p = host_parts(cfg, LOG)  # what a host is made of (`dove_ryu.agent.parts`)
        self.misses = HostMisses(self.p)
        self.arrivals = Arrivals(self.p)
        self.members = HostMembers(self.p)
        self.sync = DirectorySync(self.p, self.members)
        self.next_announce = now
        # Nothing is announced before OVSDB has told us our ports: a restarted agent that
        # announced "no instances" made its peers drop it (and its traffic) for a moment.
        self.ports_known = False
        self.routing = HostRouting(self.p)
        self.announcer = Announcer(self.p.incarnation, self.p.link.tunnels.bits)

    @property
    def counters(self) -> dict[str, int]:
        return self.p.stats.counters

    # ------------------------------------------------------------ the switch

    def switch_connected(
        self, now: float, tunnel_ofport: int, found: SwitchState | None = None
    ) -> CoreOutput:
        """Take over what the switch holds (``found``: our flows and groups; None: an
        empty switch): adopt its learned endpoints and members, install the whole
        state under a new cookie generation, and announce at once.  Nothing is
        deleted until the state settles (`tick`, `dove_ryu.agent.takeover`)."""
        adopted = self.p.takeover.begin(now, found or SwitchState(), [self.p.me])
        self.p.adopt(now, adopted, instances=self.p.ports.instances)
        self.p.link.tunnel_ofport = tunnel_ofport
        out = CoreOutput(ofmsgs=self.p.takeover.install(self._state()))
        self.next_announce = now  # the next tick tells every peer we are back
        self.p.stats.count("switch_connected")
        LOG.info(
            "%s: switch connected, tunnel port %d, %d ports, %d learned",
            self.p.cfg.name,
            tunnel_ofport,
            len(self.p.ports),
            len(self.p.learned),
        )
        return out

    def _state(self) -> list[OfMsg]:
        """Every flow and group of the state we hold, for the switch."""
        tunnel = self.p.link.tunnel
        msgs: list[OfMsg] = list(flows.pipeline_defaults(tunnel))
        for port in self.p.ports.all():
            msgs += flows.local_port_flows(port)
        msgs += self.p.instances.resync()
        msgs += self.p.routers.resync()  # before the learned: their neighbor flows
        msgs += self.p.learned.resync()
        return msgs

    def switch_disconnected(self) -> None:
        self.p.link.tunnel_ofport = None

    # ------------------------------------------------------------- VM ports

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        """Take the full set of marked VM ports from OVSDB and apply the difference."""
        self.ports_known = True
        out = CoreOutput()
        before = self.p.ports.instances
        changed: set[int] = set()
        gone, new = self.p.ports.differences(ports)
        for port in gone:
            out.extend(self.arrivals.depart(now, port))
            changed.add(port.instance)
        told: dict[IPv4Address, list[EndpointHere]] = {}  # ENDPOINTs due, batched
        for port in new:
            if (port.instance, port.mac) in self.p.ports:
                self.p.stats.drop("duplicate_mac", now, f"port {port.name} mac {port.mac}")
                continue
            out.extend(self.arrivals.arrive(now, port, told))
            changed.add(port.instance)
        out.datagrams += self.p.channel.endpoints(told)
        after = self.p.ports.instances
        for instance in sorted(after - before):
            out.ofmsgs += self.p.instances.up(instance)
        for instance in sorted(before - after):
            out.ofmsgs += self.p.instances.down(now, instance)
            for entry in self.p.learned.of_instance(instance).values():
                out.ofmsgs += self.p.routers.endpoint_gone(entry.endpoint)
            self.p.learned.drop_instance(instance)
            self.p.resolver.drop_instance(instance)
        for instance in sorted(changed & before & after):
            out.ofmsgs += self.p.instances.ports_changed(instance)
        renew = [p.ofport for p in (*gone, *new)]
        out.ofmsgs += self.p.routers.refresh(self.p.learned.of_instance, renew_ofports=renew)
        if before != after:
            out.datagrams += self._announce(now)
        return out

    # -------------------------------------------------------------- routers

    def routers_changed(
        self,
        now: float,
        routers: list[Router],
        gateways: list[IPv4Address],
        rejected: list[tuple[str, str]] | None = None,
    ) -> CoreOutput:
        """The router marks of the bridge (docs/routing.md; `HostRouting`)."""
        out = CoreOutput(ofmsgs=self.routing.routers_changed(routers, gateways, rejected or []))
        if self.p.published is not None:  # the subnets routed into take what is pushed
            out.ofmsgs += self.sync.push(now)
        return out

    # ------------------------------------------------------------ packet-in

    def packet_in(self, now: float, punted: PacketIn) -> CoreOutput:
        """A miss punted by the pipeline, or an overlay packet for a VM not here."""
        return self.misses.packet_in(now, punted)

    def flow_removed(
        self, now: float, cookie: int, match: dict[str, object], idle_timeout: bool, age: float
    ) -> CoreOutput:
        """A learned flow idled out: forget the endpoint and its ARP answers."""
        return CoreOutput(ofmsgs=self.p.learned.flow_removed(now, cookie, match, idle_timeout, age))

    # -------------------------------------------------------------- control

    def control_message(self, now: float, data: bytes, src: IPv4Address) -> CoreOutput:
        """A datagram from the underlay; anything wrong with it is counted and dropped."""
        env = self.p.channel.receive(now, data, src)
        if env is None:
            return CoreOutput()
        msg, sender = env.message, env.sender
        if isinstance(msg, Announce):
            return self._on_announce(now, env, msg)
        if isinstance(msg, LearnRequest):
            return self._on_learn_request(now, sender, msg)
        if isinstance(msg, LearnReply):
            return self._on_learn_reply(now, sender, msg)
        if isinstance(msg, EndpointHere):
            return self._on_endpoint_here(now, sender, msg)
        if isinstance(msg, Endpoints):
            return self.p.channel.each_entry(now, msg, sender, self._on_endpoint_here)
        if isinstance(msg, Unlearn):
            return self._on_unlearn(now, sender, msg)
        if isinstance(msg, FrameFragment):
            self.p.stats.drop("frame_not_a_proxy", now, f"from {sender}")
        return CoreOutput()

    # ------------------------------------------------------------ directory

    def served(self) -> frozenset[int]:
        """The instances this host serves, as it registers them in the directory."""
        return self.sync.served()

    def routed(self) -> frozenset[int]:
        """The instances this host routes into (its routers' subnets): in directory
        mode it monitors their hosts and endpoints, without registering them."""
        return self.p.routers.instances()

    def local_endpoints(self) -> list[EndpointRow]:
        """The VMs here, as this host publishes them in the directory."""
        return self.sync.local_endpoints()

    def directory_rows(self, now: float, view: DirectoryView) -> CoreOutput:
        """What the directory shows of the hosts, endpoints and instances we serve."""
        return self.sync.rows(now, view)

    def directory_unreachable(self, now: float) -> None:
        self.sync.unreachable(now)

    def _on_announce(self, now: float, env: Envelope, msg: Announce) -> CoreOutput:
        self.p.stats.count("announce_received")
        sender = env.sender
        if not self.p.members.fresh(sender, env.counter):
            self.p.stats.count("announce_stale")
            return CoreOutput()
        self.p.takeover.heard(sender)
        restarted = self.p.members.restarted(now, sender, msg.incarnation)
        out = CoreOutput(ofmsgs=self.members.encapsulations(sender, msg.encapsulations))
        if msg.gateway is not None:
            return out.extend(self._on_gateway(now, sender, msg.gateway, answer=restarted))
        if msg.proxy is not None:
            for old in self.p.members.proxy_heard(now, sender, msg.proxy):
                out.ofmsgs += self.p.failover(
                    now, msg.proxy.site, old, sender, self.members.member_left
                )
        changed, new_peer = self.members.changed(now, sender, msg.instances, msg.covers)
        out.extend(changed)
        if (new_peer and msg.instances) or restarted:
            # A host we did not know, or one that restarted: tell it at once what we serve.
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _on_gateway(
        self, now: float, sender: IPv4Address, role: GatewayRole, answer: bool = False
    ) -> CoreOutput:
        msgs, new = self.routing.gateway_heard(now, sender, role)
        out = CoreOutput(ofmsgs=msgs)
        if new or answer:
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _on_learn_request(self, now: float, sender: IPv4Address, msg: LearnRequest) -> CoreOutput:
        self.p.stats.count("learn_requests_received")
        if msg.mac is not None:
            port = self.p.ports.get(msg.instance, msg.mac)
        else:
            target = msg.ip if msg.ip is not None else msg.ip6
            assert target is not None
            port = self.p.ports.get_by_ip(msg.instance, target)
        if port is None:
            return CoreOutput()
        out = CoreOutput(ofmsgs=self._glean(now, sender, msg))
        self.p.mobility.note_learner((port.instance, port.mac), sender)
        seq = self.p.ports.seq(port.instance, port.mac)
        reply = LearnReply(
            msg.instance, msg.request_id, port.mac, port.ips, self.p.me, seq, port.sources6
        )
        self.p.stats.count("learn_replies_sent")
        out.datagrams.append(self.p.channel.datagram(sender, reply))
        return out

    def _glean(self, now: float, sender: IPv4Address, msg: LearnRequest) -> list[OfMsg]:
        """Learn who asked, as we answer: the reply traffic then needs no LEARN of its own.

        Only requests we answer are gleaned, so a VM spraying random targets elsewhere
        costs this host nothing.  A routed miss's requester lives in its own instance:
        it is gleaned there only if that is another subnet of the request's router here
        (its neighbor flow then routes the reply without a packet-in)."""
        who = msg.requester
        if who is None:
            return []
        instance = msg.instance if who.instance is None else who.instance
        if (instance, who.mac) in self.p.ports:
            return []
        if who.instance is not None and who.instance not in self.p.routers.siblings(msg.instance):
            self.p.stats.drop(
                "glean_not_routed", now, f"from {sender} instance {who.instance} for {msg.instance}"
            )
            return []
        if not self.p.members.serves(instance, sender):
            # A location is taken only from a host serving the instance, the same
            # rule classify applies to tunnelled packets.
            self.p.stats.drop("glean_nonmember", now, f"from {sender} instance {instance}")
            return []
        return self.p.learned.glean(now, sender, instance, who)

    def _on_learn_reply(self, now: float, sender: IPv4Address, msg: LearnReply) -> CoreOutput:
        member = self.p.members.serves(msg.instance, sender)
        pending = self.p.resolver.take_reply(now, sender, msg, member)
        if pending is None:
            return CoreOutput()
        who = pending.requester
        if who is not None:
            key = (msg.instance if who.instance is None else who.instance, who.mac)
            if key in self.p.ports:
                # The host that answered learned our VM from the request (see _glean).
                self.p.mobility.note_learner(key, sender)
        ep = Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq, msg.ips6)
        return self._resolved(now, pending, ep, sender)

    def _resolved(
        self, now: float, pending: Pending, ep: Endpoint, sender: IPv4Address
    ) -> CoreOutput:
        """A LEARN in flight has its answer: remember it and deliver what was held."""
        took = self.p.resolver.answered(now, pending)
        ep, msgs = self.p.learned.answered(now, ep, sender, took)
        return CoreOutput(ofmsgs=msgs + self.misses.release(pending.target, pending.held, ep))

    def _on_endpoint_here(self, now: float, sender: IPv4Address, msg: EndpointHere) -> CoreOutput:
        """A VM arrived on ``sender`` (moved there, or started): follow it if we knew it
        elsewhere, forward to it if it left us, answer LEARNs waiting for it."""
        self.p.stats.count("endpoint_received")
        if msg.host != sender:
            self.p.stats.drop("endpoint_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        out = CoreOutput()
        # Announcing a VM of the instance is serving the instance.
        if not self.p.members.serves(msg.instance, sender):
            self.p.members.join(now, msg.instance, sender)
            out.ofmsgs += self.members.member_changed(msg.instance, sender, joined=True)
        ep = Endpoint(msg.instance, msg.mac, msg.ips, msg.host, msg.seq, msg.ips6)
        followed = self.arrivals.elsewhere(now, ep)
        if followed is None:
            return out
        out.ofmsgs += followed
        targets: list[Target] = [msg.mac, *msg.ips, *msg.ips6]
        for target in targets:
            pending = self.p.resolver.in_flight(msg.instance, target)
            if pending is not None:
                out.extend(self._resolved(now, pending, ep, sender))
        return out

    def _on_unlearn(self, now: float, sender: IPv4Address, msg: Unlearn) -> CoreOutput:
        self.p.stats.count("unlearn_received")
        if msg.host != sender:
            self.p.stats.drop("unlearn_for_other_host", now, f"from {sender} for {msg.host}")
            return CoreOutput()
        if not self.p.learned.held_at(msg):
            return CoreOutput()
        # Kept for a moment: the VM's new host may announce it right after.
        self.p.learned.note_unlearned(now, msg)
        return CoreOutput(ofmsgs=self.p.learned.forget(msg.instance, msg.mac))

    # ----------------------------------------------------------------- time

    def tick(self, now: float) -> CoreOutput:
        """Retransmit or give up on LEARNs, expire members and lingering, announce."""
        out = CoreOutput()
        expired, lingering_ended = self.p.instances.expire(now)
        out.ofmsgs += expired
        for pending in self.p.resolver.due(now):
            out.datagrams += self.p.ask(pending, self.p.members.hosts(pending.instance))
        out.ofmsgs += self.misses.gave_up(now)  # unknown: to the external VTEPs
        for instance, host in self.p.members.expired(now):
            self.p.members.leave(instance, host)
            out.ofmsgs += self.members.member_changed(instance, host, joined=False)
        self.p.members.expire_proxies(now)
        if self.p.takeover.settling and self.p.link.connected:
            out.ofmsgs += self.p.takeover.sweep(now, self.p.ports.instances)  # flood groups
        if lingering_ended or now >= self.next_announce:
            out.datagrams += self._announce(now)
        return out

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        if not self.ports_known:
            return []  # the first tick after they are known announces
        if only is None:
            self.next_announce = now + self.p.cfg.learning.announce_interval
        targets = only if only is not None else list(self.p.cfg.host.peers)
        self.p.stats.count("announce_sent", len(targets))
        return self.p.channel.announce(targets, self.announcer.parts(self.p.instances.announced))

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, object]:
        """Everything an operator asks about, as plain data (for the admin socket)."""
        return {
            "host": self.p.cfg.name,
            "role": "host",
            "underlay_ip": str(self.p.me),
            "connected": self.p.link.connected,
            "proxies": {
                str(h): {"site": k.role.site, "active": k.role.active}
                for h, k in sorted(self.p.members.proxies.items())
            },
            "instances": {
                str(instance): {
                    "local": [
                        {
                            "port": p.name,
                            "ofport": p.ofport,
                            "mac": p.mac,
                            "ips": [str(i) for i in p.addresses],
                            "seq": self.p.ports.seq(instance, p.mac),
                            "learned_by": sorted(
                                str(h) for h in self.p.mobility.learners_of((instance, p.mac))
                            ),
                        }
                        for p in self.p.ports.of_instance(instance)
                    ],
                    "members": sorted(str(h) for h in self.p.members.hosts(instance)),
                    "learned": self.p.learned.rows(now, instance),
                }
                for instance in sorted(self.p.ports.instances | self.p.learned.instances())
            },
            "pending": len(self.p.resolver),
            "takeover": self.p.takeover.status(),
            "counters": dict(sorted(self.p.stats.counters.items())),
            "keys": self.p.channel.key_status(),
            "routing": self.p.routers.status(),
            **self.sync.status(now),
        }

    def stats_view(self) -> StatsView:
        """What the metrics show (call under the lock that guards the core)."""
        instances = self.p.ports.instances | self.p.learned.instances()
        return StatsView(
            host=self.p.cfg.name,
            role=self.role,
            site="",
            underlay_ip=str(self.p.me),
            wan_ip="",
            connected=self.p.link.connected,
            proxy_active=None,
            directory_reachable=self.p.directory.reachable if self.p.directory else None,
            pending=len(self.p.resolver),
            counters=dict(self.p.stats.counters),
            packet_ins=dict(self.p.stats.packet_ins),
            instances={
                i: InstanceCounts(
                    local=len(self.p.ports.of_instance(i)),
                    learned=len(self.p.learned.of_instance(i)),
                    members=self.p.members.count(i),
                )
                for i in sorted(instances)
            },
            latency=self.p.stats.learn_latency.copy(),
        )
