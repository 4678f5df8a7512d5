"""The VAN proxy: carries instances between sites (paper IV-C), wired from parts.

A site's hosts cannot reach another site's hosts.  Each site has proxies with one
leg in the site underlay (``underlay_ip``) and one in the inter-site network
(``wan_ip``).  To its site's hosts the active proxy is one more member of every
instance another site serves; to the other sites' proxies it is the member that
stands for its whole site.  It keeps, per instance, which endpoints are in its
site (at which host) and which are behind which remote proxy, with a flow for
each, so traffic crosses hypervisor -> proxy -> proxy -> hypervisor, decapsulated
and re-encapsulated in the datapath.  The agent relays what the hosts would have
said to each other: LEARN requests and replies, ENDPOINT, UN-LEARN, with the VM's
sequence number unchanged.

It is made of the parts `dove_ryu.agent.parts.ProxyParts` lists; `ProxyRelay` relays
between the sides; `ProxyDirectory` takes the site's hosts from the directory
(``discovery = directory``).  This file adds membership on both sides, the election
between the site's proxies, and what the proxy announces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import IPv4Address

from dove_ryu.agent.announcer import Announcer
from dove_ryu.agent.directory import DirectoryView, EndpointRow
from dove_ryu.agent.election import Outcome
from dove_ryu.agent.parts import proxy_parts
from dove_ryu.agent.proxy_directory import ProxyDirectory
from dove_ryu.agent.proxy_relay import ProxyRelay
from dove_ryu.agent.stats import InstanceCounts, StatsView
from dove_ryu.agent.takeover import SwitchState, groups_in
from dove_ryu.config import DoveConfig
from dove_ryu.model import VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram, OfMsg, PacketIn
from dove_ryu.protocol import messages as msgs

LOG = logging.getLogger("dove_ryu.proxy")


class ProxyCore:
    """State and decisions of one VAN proxy."""

    role = "proxy"

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        self.p = proxy_parts(cfg, LOG, now)  # what a proxy is made of (`dove_ryu.agent.parts`)
        self.relay = ProxyRelay(self.p)
        directory = self.p.directory
        self.sync = ProxyDirectory(self.p, self.relay, directory) if directory else None
        self.wan_ip = self.p.sides.wan_leg
        self.next_announce = now
        self.announcers = {
            w: Announcer(self.p.incarnation, self.p.link.tunnels.bits) for w in (False, True)
        }  # site, WAN

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
        the members of both sides and the endpoints learned, under a new generation."""
        legs = [self.p.me, self.wan_ip]
        adopted = self.p.takeover.begin(now, found or SwitchState(), legs)
        self.p.adopt(now, adopted)
        self.p.election.switch_read(found is not None and (bool(found.flows) or not found.complete))
        self.p.link.tunnel_ofport = tunnel_ofport
        out = CoreOutput(ofmsgs=self.p.takeover.install(self._state()))
        self.next_announce = now
        self.p.stats.count("switch_connected")
        LOG.info("%s: switch connected, tunnel port %d (proxy)", self.p.cfg.name, tunnel_ofport)
        return out

    def _state(self) -> list[OfMsg]:
        """Every flow and group of the state we hold, for the switch."""
        return [
            *flows.proxy_defaults(self.p.link.tunnel),
            *self.p.instances.resync(),
            *self.p.learned.resync(),
        ]

    def switch_disconnected(self) -> None:
        self.p.link.tunnel_ofport = None

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        if ports:
            self.p.stats.drop("proxy_vm_ports", now, f"{len(ports)} VM ports on a proxy ignored")
        return CoreOutput()

    def packet_in(self, now: float, punted: PacketIn) -> CoreOutput:
        return self.relay.packet_in(now, punted)

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
        wan = self.p.sides.wan(sender)
        if wan != (env.receiver == self.wan_ip):
            # A site host must not reach us on the WAN leg, nor a remote proxy on the site's.
            self.p.stats.drop("control_wrong_leg", now, f"from {sender} to {env.receiver}")
            return CoreOutput()
        if isinstance(msg, msgs.Announce):
            return self._on_announce(now, env, msg)
        if isinstance(msg, msgs.Listening):
            return self._partner_listening(now, sender, msg.role, wan)
        if isinstance(msg, msgs.FrameFragment):
            return self.relay.on_fragment(now, sender, msg)
        if isinstance(msg, msgs.LearnRequest):
            return self.relay.on_learn_request(now, sender, msg)
        if isinstance(msg, msgs.LearnReply):
            return self.relay.on_learn_reply(now, sender, msg)
        if isinstance(msg, msgs.EndpointHere):
            return self.relay.on_endpoint_here(now, sender, msg)
        if isinstance(msg, msgs.Endpoints):
            return self.relay.on_endpoints(now, sender, msg)
        if isinstance(msg, msgs.Unlearn):
            return self.relay.on_unlearn(now, sender, msg)
        return CoreOutput()

    def _on_announce(self, now: float, env: msgs.Envelope, msg: msgs.Announce) -> CoreOutput:
        self.p.stats.count("announce_received")
        sender, role = env.sender, msg.proxy
        if not self.p.members.fresh(sender, env.counter):
            self.p.stats.count("announce_stale")
            return CoreOutput()
        self.p.takeover.heard(sender)
        restarted = self.p.members.restarted(now, sender, msg.incarnation)
        wan = self.p.sides.wan(sender)
        if not wan and role is not None:
            out = self._partner_heard(now, sender, role)
            if restarted:
                out.datagrams += self._announce(now, only=[sender])
            return out
        if wan and role is None:
            self.p.stats.drop("wan_announce_without_role", now, f"from {sender}")
            return CoreOutput()
        if not wan and self.sync is not None:
            # In directory mode the site's members are the directory's live rows only.
            self.p.stats.drop("site_announce_in_directory_mode", now, f"from {sender}")
            return CoreOutput()
        before = (self.p.instances.served(False), self.p.instances.served(True))
        out = CoreOutput()
        if role is not None:
            for old in self.p.members.proxy_heard(now, sender, role):
                out.ofmsgs += self.p.failover(now, role.site, old, sender, self.relay.member_left)
        changed, new_peer = self.relay.serves(now, sender, msg.instances, covers=msg.covers)
        out.extend(changed)
        if (new_peer and msg.instances) or restarted:
            out.datagrams += self._announce(now, only=[sender])
        return self._site_changed(now, before, out)

    def _site_changed(
        self, now: float, before: tuple[list[int], list[int]], out: CoreOutput
    ) -> CoreOutput:
        """What either side serves changed: the active proxy tells the other side (in
        directory mode its site hears it from its row, `served`)."""
        if self.active and self.p.instances.served(False) != before[0]:
            out.datagrams += self._announce(now, only=sorted(self.p.sides.wan_peers))
        if self.active and self.p.instances.served(True) != before[1]:
            out.datagrams += self._announce(now, only=list(self.p.cfg.host.peers))
        return out

    # ------------------------------------------------------------ directory

    def served(self) -> frozenset[int]:
        """What the proxy's Host row lists: the instances it stands for in its site
        while it is the active proxy, none while standby."""
        return self.sync.served(self.active) if self.sync else frozenset()

    def local_endpoints(self) -> list[EndpointRow]:
        return []

    def directory_rows(self, now: float, view: DirectoryView) -> CoreOutput:
        """The site's Host rows: its hosts are the site-side members; its other proxies
        are told we are here (hellos then go both ways)."""
        if self.sync is None:
            return CoreOutput()
        before = (self.p.instances.served(False), self.p.instances.served(True))
        known = self.sync.partners | set(self.p.election.partners)
        out = self.sync.rows(now, view)
        new = sorted(self.sync.partners - known)
        if new:
            out.datagrams += self._announce(now, only=new)
        return self._site_changed(now, before, out)

    def directory_unreachable(self, now: float) -> None:
        if self.sync is not None:
            self.sync.unreachable(now)

    def _partner_heard(self, now: float, sender: IPv4Address, role: msgs.ProxyRole) -> CoreOutput:
        if role.site != self.p.cfg.proxy.site:
            self.p.stats.drop("proxy_of_other_site", now, f"{sender} says site {role.site}")
            return CoreOutput()
        new = self.p.election.heard(now, sender, role)
        self.p.election.claim_early(now)
        out = self._elect(now)
        if new and self.active:
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _partner_listening(
        self, now: float, sender: IPv4Address, role: msgs.ProxyRole | msgs.GatewayRole, wan: bool
    ) -> CoreOutput:
        """A partner that has just started and not decided (`Election.heard_listening`);
        told at once where we stand if it is new to us."""
        site = self.p.cfg.proxy.site
        if wan or not isinstance(role, msgs.ProxyRole) or role.site != site:
            self.p.stats.drop("listening_not_a_partner", now, f"from {sender}")
            return CoreOutput()
        new = self.p.election.heard_listening(now, sender, role)
        self.p.election.claim_early(now)
        out = self._elect(now)
        if new:
            out.datagrams += self._announce(now, only=[sender])
        return out

    def _listening_hello(self, now: float) -> list[Datagram]:
        """While listening: `Listening` to whoever may be a partner (the site's peers:
        its hosts ignore it; the directory's proxies; those heard)."""
        known = self.sync.partners if self.sync else set()
        targets = {*self.p.cfg.host.peers, *known, *self.p.election.partners} - {self.p.me}
        role = msgs.ProxyRole(self.p.cfg.proxy.site, False, self.p.cfg.proxy.proxy_priority)
        return self.p.channel.to_each(sorted(targets), msgs.Listening(role))

    # ---------------------------------------------------------- redundancy

    def _elect(self, now: float) -> CoreOutput:
        outcome = self.p.election.decide(now)
        site = self.p.cfg.proxy.site
        if outcome is Outcome.UNCHANGED:
            return CoreOutput()
        if outcome is Outcome.BECAME_ACTIVE:
            self.p.stats.count("proxy_became_active")
            LOG.warning("%s: now the active proxy of site %s", self.p.name, site)
        else:
            self.p.stats.count("proxy_stepped_down")
            LOG.warning("%s: stepping down, another proxy of site %s is active", self.p.name, site)
        return CoreOutput(datagrams=self._announce(now))

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        """To site peers: the instances other sites serve; to remote proxies: those our
        site serves.  A standby proxy announces itself with none.  Nothing while
        listening (`Election.listening`): a restarted active proxy saying "standby, no
        instances" would make its partner take over and the hosts and remote proxies
        drop it, though its datapath still carries their traffic."""
        if self.p.election.listening(now):
            return []
        if not self.active and not any(p.role.active for p in self.p.election.partners.values()):
            # Not yet decided (no active partner: the next tick makes us active): "none"
            # now would make hosts and remote proxies drop us for a moment.
            return []
        targets = only
        if targets is None:
            self.next_announce = now + self.p.cfg.learning.announce_interval
            peers = self.p.cfg.host.peers
            found = sorted(self.sync.partners - set(peers)) if self.sync else []
            targets = [*peers, *found, *sorted(self.p.sides.wan_peers)]
        role = msgs.ProxyRole(self.p.cfg.proxy.site, self.active, self.p.cfg.proxy.proxy_priority)
        served = {
            wan: self.p.instances.served(not wan) if self.active else [] for wan in (False, True)
        }
        out = []
        for wan in (False, True):
            hosts = [h for h in targets if self.p.sides.wan(h) == wan]
            if hosts:
                parts = self.announcers[wan].parts(served[wan], proxy=role)
                out += self.p.channel.announce(hosts, parts)
        self.p.stats.count("announce_sent", len(targets))
        return out

    def bfd_changed(self, now: float, states: Mapping[IPv4Address, bool]) -> CoreOutput:
        """The BFD sessions to the partners' datapaths (`Election`): up or not."""
        self.p.election.bfd_changed(states)
        return self._elect(now)

    def ha_partners(self, now: float) -> frozenset[IPv4Address] | None:
        """The partners that get a BFD tunnel port (None: leave the ports as they are)."""
        return self.p.election.ha_partners(now, self.sync.partners if self.sync else ())

    def tick(self, now: float) -> CoreOutput:
        out = self._elect(now)
        # Both ways: the standby watches the active one, and the active one knows
        # whether it still has a standby.
        if self.p.election.hello_due(now):
            if self.p.election.listening(now):
                out.datagrams += self._listening_hello(now)
            else:
                out.datagrams += self._announce(now, only=sorted(self.p.election.partners))
        dropped = self.p.reassembly.expire(now)
        if dropped:
            self.p.stats.count("drop_reassembly_timeout", dropped)
        out.datagrams += self.relay.retransmit(now)
        for instance, host in self.p.members.expired(now):
            self.p.members.leave(instance, host)
            out.ofmsgs += self.relay.member_changed(instance, host, joined=False)
        self.p.members.expire_proxies(now)
        if self.p.takeover.settling and self.p.link.connected:
            wanted = groups_in(self.p.instances.resync())
            out.ofmsgs += self.p.takeover.sweep(now, wanted)
        if now >= self.next_announce:
            out.datagrams += self._announce(now)
        return out

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, object]:
        def side(row: dict[str, object]) -> str:
            return "remote" if self.p.sides.wan(IPv4Address(str(row["host"]))) else "site"

        return {
            "host": self.p.cfg.name,
            "role": "proxy",
            "site": self.p.cfg.proxy.site,
            "active": self.active,
            "state": self._state_name(now),
            "underlay_ip": str(self.p.me),
            "wan_ip": str(self.wan_ip),
            "connected": self.p.link.connected,
            "partners": self.p.election.partner_status(),
            "remote_proxies": {
                str(h): {"site": k.role.site, "active": k.role.active}
                for h, k in sorted(self.p.members.proxies.items())
            },
            "instances": {
                str(instance): {
                    "local": [],
                    "members": sorted(str(h) for h in self.p.instances.side(instance, False)),
                    "remote_proxies": sorted(str(h) for h in self.p.instances.side(instance, True)),
                    "learned": [{**r, "side": side(r)} for r in self.p.learned.rows(now, instance)],
                }
                for instance in self._carried()
            },
            "pending": len(self.p.resolver),
            "takeover": self.p.takeover.status(),
            "counters": dict(sorted(self.p.stats.counters.items())),
            "keys": self.p.channel.key_status(),
            **(self.sync.status(now) if self.sync else {}),
        }

    def _state_name(self, now: float) -> str:
        if self.active:
            return "active"
        return "listening" if self.p.election.listening(now) else "standby"

    def _carried(self) -> list[int]:
        """Every instance the proxy carries: with a member, or with something learned."""
        return sorted(set(self.p.members.instances()) | self.p.learned.instances())

    def stats_view(self) -> StatsView:
        return StatsView(
            host=self.p.cfg.name,
            role=self.role,
            site=self.p.cfg.proxy.site,
            underlay_ip=str(self.p.me),
            wan_ip=str(self.wan_ip),
            connected=self.p.link.connected,
            proxy_active=self.active,
            directory_reachable=self.p.directory.reachable if self.p.directory else None,
            pending=len(self.p.resolver),
            counters=dict(self.p.stats.counters),
            packet_ins=dict(self.p.stats.packet_ins),
            instances={
                i: InstanceCounts(
                    local=0,
                    learned=len(self.p.learned.of_instance(i)),
                    members=self.p.members.count(i),
                )
                for i in self._carried()
            },
            latency=self.p.stats.learn_latency.copy(),
        )
