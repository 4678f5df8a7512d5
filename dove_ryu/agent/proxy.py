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

Made of:
  `Sides`, `ProxyInstances`, `ProxyFlows`   the two legs and the datapath for them
  `Membership`        site members and remote proxies per instance
  `Resolver`          LEARNs in flight, scoped by side (True: towards the WAN)
  `LearnedEndpoints`  endpoints on either side, with their forwarding flows
  `Election`          active/standby between the site's proxies
  `Fragmenter`, `Reassembly`   frames too big for the WAN, in DOVE fragments
  `ControlChannel`    messages on two legs
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from dove_ryu.agent.channel import ControlChannel
from dove_ryu.agent.election import Election, Outcome
from dove_ryu.agent.endpoints import LearnedEndpoints
from dove_ryu.agent.fragments import Fragmenter, Reassembly
from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.agent.proxy_relay import ProxyRelay
from dove_ryu.agent.resolver import Resolver
from dove_ryu.agent.sides import ProxyFlows, ProxyInstances, Sides
from dove_ryu.agent.stats import InstanceCounts, Stats, StatsView
from dove_ryu.config import DoveConfig
from dove_ryu.model import VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram
from dove_ryu.protocol.messages import (
    Announce,
    EndpointHere,
    Envelope,
    FrameFragment,
    LearnReply,
    LearnRequest,
    ProxyRole,
    Unlearn,
)

LOG = logging.getLogger("dove_ryu.proxy")

ANNOUNCE_MAX_INSTANCES = 300


class ProxyCore:
    """State and decisions of one VAN proxy."""

    role = "proxy"

    def __init__(self, cfg: DoveConfig, now: float) -> None:
        if cfg.role != "proxy" or cfg.wan_ip is None:
            raise ValueError("ProxyCore needs role = proxy and a wan_ip")
        self.cfg = cfg
        self.me = cfg.underlay_ip
        self.wan_ip: IPv4Address = cfg.wan_ip
        self.stats = Stats(cfg.name, LOG)
        self.link = SwitchLink()
        self.sides = Sides(self.me, self.wan_ip, frozenset(cfg.wan_peers))
        self.channel = ControlChannel(
            cfg.auth_key, (self.me, self.wan_ip), self.stats, leg_for=self.sides.leg
        )
        self.members = Membership(cfg.announce_interval)
        self.instances = ProxyInstances(self.sides, self.members, self.link, cfg.wan_mtu)
        self.resolver = Resolver(
            self.stats,
            timeout=cfg.learn_timeout,
            retries=cfg.learn_retries,
            max_pending_per_instance=cfg.max_pending_per_instance,
            rate_per_instance=cfg.learn_rate_per_instance,
        )
        proxy_flows = ProxyFlows(self.sides, cfg.learn_idle_timeout, cfg.wan_mtu)
        self.learned = LearnedEndpoints(
            self.stats, self.link, proxy_flows, cfg.max_learned_per_instance
        )
        self.election = Election(
            cfg.name, self.me, cfg.proxy_priority, cfg.proxy_hello_interval, now
        )
        self.reassembly = Reassembly()
        self.relay = ProxyRelay(
            cfg, self.stats, self.link, self.sides, self.channel, self.members,
            self.instances, self.resolver, self.learned, self.election,
            Fragmenter(cfg.wan_mtu), self.reassembly,
        )  # fmt: skip
        self.next_announce = now

    @property
    def counters(self) -> dict[str, int]:
        return self.stats.counters

    @property
    def tunnel_ofport(self) -> int | None:
        return self.link.tunnel_ofport

    @property
    def active(self) -> bool:
        return self.election.active

    # ------------------------------------------------------------- switch

    def switch_connected(self, now: float, tunnel_ofport: int) -> CoreOutput:
        self.link.tunnel_ofport = tunnel_ofport
        out = CoreOutput(ofmsgs=[*flows.delete_all_ours(), *flows.proxy_defaults(tunnel_ofport)])
        out.ofmsgs += self.instances.resync()
        out.ofmsgs += self.learned.resync()
        self.stats.count("switch_connected")
        LOG.info("%s: switch connected, tunnel port %d (proxy)", self.cfg.name, tunnel_ofport)
        return out

    def switch_disconnected(self) -> None:
        self.link.tunnel_ofport = None

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput:
        if ports:
            self.stats.drop("proxy_vm_ports", now, f"{len(ports)} VM ports on a proxy ignored")
        return CoreOutput()

    def packet_in(
        self,
        now: float,
        cookie: int,
        in_port: int,
        data: bytes,
        metadata: int | None = None,
        tunnel_src: IPv4Address | None = None,
    ) -> CoreOutput:
        return self.relay.packet_in(now, cookie, data, metadata, tunnel_src)

    def flow_removed(
        self, now: float, cookie: int, match: dict[str, object], idle_timeout: bool, age: float
    ) -> CoreOutput:
        return self.relay.flow_removed(now, cookie, match, idle_timeout, age)

    # -------------------------------------------------------------- control

    def control_message(self, now: float, data: bytes, src: IPv4Address) -> CoreOutput:
        env = self.channel.receive(now, data, src)
        if env is None:
            return CoreOutput()
        msg, sender = env.message, env.sender
        wan = self.sides.wan(sender)
        if wan != (env.receiver == self.wan_ip):
            # A site host must not reach us on the WAN leg, nor a remote proxy on the site's.
            self.stats.drop("control_wrong_leg", now, f"from {sender} to {env.receiver}")
            return CoreOutput()
        if isinstance(msg, Announce):
            return self._on_announce(now, env, msg)
        if isinstance(msg, FrameFragment):
            return self.relay.on_fragment(now, sender, msg)
        if isinstance(msg, LearnRequest):
            return self.relay.on_learn_request(now, sender, msg)
        if isinstance(msg, LearnReply):
            return self.relay.on_learn_reply(now, sender, msg)
        if isinstance(msg, EndpointHere):
            return self.relay.on_endpoint_here(now, sender, msg)
        if isinstance(msg, Unlearn):
            return self.relay.on_unlearn(now, sender, msg)
        return CoreOutput()

    def _on_announce(self, now: float, env: Envelope, msg: Announce) -> CoreOutput:
        self.stats.count("announce_received")
        sender, role = env.sender, msg.proxy
        if not self.members.fresh(sender, env.counter):
            self.stats.count("announce_stale")
            return CoreOutput()
        wan = self.sides.wan(sender)
        if not wan and role is not None:
            return self._partner_heard(now, sender, role)
        if wan and role is None:
            self.stats.drop("wan_announce_without_role", now, f"from {sender}")
            return CoreOutput()
        before = (self.instances.served(False), self.instances.served(True))
        out = CoreOutput()
        if role is not None:
            for old in self.members.proxy_heard(now, sender, role):
                out.ofmsgs += self.relay.failover(now, role.site, old, sender)
        change = self.members.served_by(now, sender, msg.instances)
        for instance in change.joined:
            out.ofmsgs += self.relay.member_changed(instance, sender, joined=True)
            out.datagrams += self.relay.ask_new_member(instance, sender)
        for instance in change.left:
            out.ofmsgs += self.relay.member_changed(instance, sender, joined=False)
        if change.new_peer and msg.instances:
            out.datagrams += self._announce(now, only=[sender])
        if self.active and self.instances.served(False) != before[0]:
            out.datagrams += self._announce(now, only=sorted(self.sides.wan_peers))
        if self.active and self.instances.served(True) != before[1]:
            out.datagrams += self._announce(now, only=list(self.cfg.peers))
        return out

    def _partner_heard(self, now: float, sender: IPv4Address, role: ProxyRole) -> CoreOutput:
        if role.site != self.cfg.site:
            self.stats.drop("proxy_of_other_site", now, f"{sender} says site {role.site}")
            return CoreOutput()
        new = self.election.heard(now, sender, role)
        out = self._elect(now)
        if new and self.active:
            out.datagrams += self._announce(now, only=[sender])
        return out

    # ---------------------------------------------------------- redundancy

    def _elect(self, now: float) -> CoreOutput:
        outcome = self.election.decide(now)
        if outcome is Outcome.UNCHANGED:
            return CoreOutput()
        self.stats.count(f"proxy_{outcome.value}")
        if outcome is Outcome.BECAME_ACTIVE:
            LOG.warning("%s: now the active proxy of site %s", self.cfg.name, self.cfg.site)
        else:
            LOG.warning(
                "%s: stepping down, another proxy of site %s is active",
                self.cfg.name,
                self.cfg.site,
            )
        return CoreOutput(datagrams=self._announce(now))

    def _announce(self, now: float, only: list[IPv4Address] | None = None) -> list[Datagram]:
        """To site peers: the instances other sites serve; to remote proxies: those our
        site serves.  A standby proxy announces itself with none."""
        if only is None:
            self.next_announce = now + self.cfg.announce_interval
        targets = only if only is not None else [*self.cfg.peers, *sorted(self.sides.wan_peers)]
        role = ProxyRole(self.cfg.site, self.active, self.cfg.proxy_priority)
        served = {wan: self.instances.served(not wan) if self.active else [] for wan in (0, 1)}
        out = []
        for host in targets:
            instances = served[self.sides.wan(host)]
            if len(instances) > ANNOUNCE_MAX_INSTANCES:
                self.stats.drop("announce_truncated", now, f"{len(instances)} instances")
                instances = instances[:ANNOUNCE_MAX_INSTANCES]
            out.append(self.channel.datagram(host, Announce(frozenset(instances), role)))
        self.stats.count("announce_sent", len(out))
        return out

    def tick(self, now: float) -> CoreOutput:
        out = self._elect(now)
        # Both ways: the standby watches the active one, and the active one knows
        # whether it still has a standby.
        if self.election.hello_due(now):
            out.datagrams += self._announce(now, only=sorted(self.election.partners))
        dropped = self.reassembly.expire(now)
        if dropped:
            self.stats.count("drop_reassembly_timeout", dropped)
        out.datagrams += self.relay.retransmit(now)
        for instance, host in self.members.expire(now):
            out.ofmsgs += self.relay.member_changed(instance, host, joined=False)
        if now >= self.next_announce:
            out.datagrams += self._announce(now)
        return out

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, object]:
        def side(row: dict[str, object]) -> str:
            return "remote" if self.sides.wan(IPv4Address(str(row["host"]))) else "site"

        return {
            "host": self.cfg.name,
            "role": "proxy",
            "site": self.cfg.site,
            "active": self.active,
            "underlay_ip": str(self.me),
            "wan_ip": str(self.wan_ip),
            "connected": self.link.connected,
            "partners": {
                str(h): {"active": p.role.active, "priority": p.role.priority}
                for h, p in sorted(self.election.partners.items())
            },
            "remote_proxies": {
                str(h): {"site": k.role.site, "active": k.role.active}
                for h, k in sorted(self.members.proxies.items())
            },
            "instances": {
                str(instance): {
                    "local": [],
                    "members": sorted(str(h) for h in self.instances.side(instance, False)),
                    "remote_proxies": sorted(str(h) for h in self.instances.side(instance, True)),
                    "learned": [{**r, "side": side(r)} for r in self.learned.rows(now, instance)],
                }
                for instance in self._carried()
            },
            "pending": len(self.resolver),
            "counters": dict(sorted(self.stats.counters.items())),
        }

    def _carried(self) -> list[int]:
        """Every instance the proxy carries: with a member, or with something learned."""
        return sorted(set(self.members.instances()) | self.learned.instances())

    def stats_view(self) -> StatsView:
        return StatsView(
            host=self.cfg.name,
            role=self.role,
            site=self.cfg.site,
            underlay_ip=str(self.me),
            wan_ip=str(self.wan_ip),
            connected=self.link.connected,
            proxy_active=self.active,
            pending=len(self.resolver),
            counters=dict(self.stats.counters),
            packet_ins=dict(self.stats.packet_ins),
            instances={
                i: InstanceCounts(
                    local=0,
                    learned=len(self.learned.of_instance(i)),
                    members=self.members.count(i),
                )
                for i in self._carried()
            },
            latency=self.stats.learn_latency.copy(),
        )
