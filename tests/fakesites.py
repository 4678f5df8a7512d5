"""Sites of hypervisors and VAN proxies on fake switches, for unit tests.

Every node is a core (from `make_core`, the public entry point) with its own
`FakeSwitch`. Each site has its own underlay (the same addresses in every site, as in
mininet_topos.sites); the proxies' second legs share one WAN. Datagrams wait in a queue
until `settle`; tunnelled packets move at once, from the leg their destination is
reached on. VMs answer ARP and ping as Linux does: a neighbour is learned from an ARP
reply or from an ARP request for the VM's own address, and an echo reply waits for the
asker's MAC. The test drives time (`advance`).

``python -m tests.fakesites --out DIR`` writes the reference flow tables of flows/
(the canonical scenario of mininet_topos.flows_reference, run here).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dove_ryu.agent import make_core
from dove_ryu.config import from_mapping
from dove_ryu.ctl.common import Node as CtlNode
from dove_ryu.ctl.common import Snapshot
from dove_ryu.ctl.flowdump import parse_flows, parse_groups
from dove_ryu.ctl.flowstate import AgentView
from dove_ryu.model import VmPort
from dove_ryu.openflow.ofmsg import CoreOutput, Datagram, PacketIn, order_messages
from dove_ryu.openflow.packet import ARP_REPLY, ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4
from dove_ryu.protocol.messages import Message, decode
from mininet_topos import flows_reference
from tests.fakeswitch import Delivery, FakeSwitch, Packet, dump_flows, dump_groups

if TYPE_CHECKING:
    from dove_ryu.agent import AgentCore

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)
SITE_NET = "10.99.0"
WAN_NET = "172.31.0"
TUN = 1  # vxlan0 is the bridge's first port, as in the emulation
TUNNEL_NAME = "vxlan0"
T0 = 1000.0
BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
PROXY_PRIORITY = {1: 200, 2: 100}  # as mininet_topos.sites: px1 starts active
ICMP, ECHO_REQUEST, ECHO_REPLY = 1, 8, 0


def hv_ip(n: int) -> IPv4Address:
    return IPv4Address(f"{SITE_NET}.{n}")


def proxy_ip(k: int) -> IPv4Address:
    return IPv4Address(f"{SITE_NET}.{200 + k}")


def proxy_wan_ip(site: int, k: int) -> IPv4Address:
    return IPv4Address(f"{WAN_NET}.{10 * site + k}")


def on_wan(addr: IPv4Address | str) -> bool:
    return str(addr).startswith(f"{WAN_NET}.")


def ipv4(src: str, dst: str, data: bytes, proto: int = ICMP, df: bool = False) -> bytes:
    """An IPv4 packet (checksum left zero: nothing here checks it)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(data),
        1,
        0x4000 if df else 0,
        64,
        proto,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    return header + data


def echo(src: Vm, dst_mac: str, dst_ip: str, kind: int, size: int = 64, df: bool = False) -> Packet:
    """An ICMP echo request or reply from ``src``, ``size`` bytes of IP."""
    icmp = bytes([kind, 0, 0, 0]) + bytes(i & 0xFF for i in range(size - 24))
    return {
        "eth_src": src.mac,
        "eth_dst": dst_mac,
        "eth_type": ETH_TYPE_IPV4,
        "payload": ipv4(src.ip, dst_ip, icmp, df=df),
    }


def arp(op: int, src_mac: str, dst_mac: str, spa: str, tha: str, tpa: str) -> Packet:
    return {
        "eth_src": src_mac,
        "eth_dst": dst_mac,
        "eth_type": ETH_TYPE_ARP,
        "arp_op": op,
        "arp_sha": src_mac,
        "arp_spa": spa,
        "arp_tha": tha,
        "arp_tpa": tpa,
    }


@dataclass
class Node:
    name: str
    site: int
    ip: IPv4Address
    core: AgentCore
    switch: FakeSwitch
    wan_ip: IPv4Address | None = None
    ports: dict[int, str] = field(default_factory=lambda: {TUN: TUNNEL_NAME})

    @property
    def is_proxy(self) -> bool:
        return self.wan_ip is not None

    def leg_to(self, dst: IPv4Address | str) -> IPv4Address:
        """The address this node sends from to reach ``dst``."""
        return self.wan_ip if self.wan_ip is not None and on_wan(dst) else self.ip


@dataclass
class Vm:
    name: str
    node: Node
    ofport: int
    instance: int
    mac: str
    ip: str
    neigh: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, list[Packet]] = field(default_factory=dict)  # IP -> queued packets
    received: list[Packet] = field(default_factory=list)

    @property
    def port(self) -> VmPort:
        return VmPort(
            f"{self.name}-p", self.ofport, self.instance, self.mac, (IPv4Address(self.ip),)
        )

    def arp_request(self, target: str) -> Packet:
        return arp(ARP_REQUEST, self.mac, BROADCAST, self.ip, ZERO_MAC, target)

    def answer(self, pkt: Packet) -> list[Packet]:
        """What the VM sends back for a packet it received."""
        self.received.append(pkt)
        if pkt.get("eth_type") == ETH_TYPE_ARP:
            if pkt["arp_tpa"] != self.ip:
                return []
            self.neigh[pkt["arp_spa"]] = pkt["arp_sha"]
            queued = self.waiting.pop(pkt["arp_spa"], [])
            out = [{**p, "eth_dst": pkt["arp_sha"]} for p in queued]
            if pkt["arp_op"] == ARP_REQUEST:
                reply = arp(
                    ARP_REPLY, self.mac, pkt["arp_sha"], self.ip, pkt["arp_sha"], pkt["arp_spa"]
                )
                out.insert(0, reply)
            return out
        payload = pkt.get("payload", b"")
        if pkt.get("eth_type") != ETH_TYPE_IPV4 or len(payload) < 21 or payload[9] != ICMP:
            return []
        src, dst = str(IPv4Address(payload[12:16])), str(IPv4Address(payload[16:20]))
        if dst != self.ip or payload[20] != ECHO_REQUEST:
            return []
        reply = echo(self, self.neigh.get(src, BROADCAST), src, ECHO_REPLY, len(payload))
        if src in self.neigh:
            return [reply]
        self.waiting.setdefault(src, []).append(reply)
        return [self.arp_request(src)]

    def echo_replies(self) -> int:
        return sum(1 for p in self.received if _icmp_type(p) == ECHO_REPLY)


def _icmp_type(pkt: Packet) -> int | None:
    payload = pkt.get("payload", b"")
    if pkt.get("eth_type") == ETH_TYPE_IPV4 and len(payload) > 20 and payload[9] == ICMP:
        return payload[20]
    return None


@dataclass(frozen=True)
class Sent:
    src: IPv4Address
    dst: IPv4Address
    message: Message
    site: int


@dataclass(frozen=True)
class Spec:
    """The emulation's shape, as mininet_topos.sites.SitesSpec (counts per site)."""

    sites: int = 2
    hypervisors: int = 2
    proxies: int = 2
    tenants: int = 2
    vms_per_tenant: int = 2


class Sites:
    """The nodes, their switches and VMs, the site underlays and the WAN."""

    def __init__(
        self,
        spec: Spec = Spec(),  # noqa: B008 - frozen dataclass
        settings: dict[str, str] | None = None,
        proxy_settings: dict[str, str] | None = None,
        start: bool = True,
    ) -> None:
        self.spec = spec
        self.now = T0
        self.nodes: dict[str, Node] = {}
        self.vms: list[Vm] = []
        self.queue: list[tuple[Node, Datagram]] = []
        self.sent: list[Sent] = []
        self.lost: list[Datagram] = []
        self.down: set[str] = set()  # nodes whose agent is stopped
        self.settings = settings or {}
        self.proxy_settings = proxy_settings or {}
        for s in range(1, spec.sites + 1):
            for n in range(1, spec.hypervisors + 1):
                self.nodes[f"s{s}hv{n}"] = self._node(f"s{s}hv{n}", s, hv_ip(n))
        for t in range(1, spec.tenants + 1):
            for s in range(1, spec.sites + 1):
                for i in range(1, spec.vms_per_tenant + 1):
                    node = self.nodes[f"s{s}hv{(i - 1 + t - 1) % spec.hypervisors + 1}"]
                    ofport = max(node.ports) + 1
                    name = f"t{t}s{s}vm{i}"
                    node.ports[ofport] = f"{name}-p"
                    mac, ip = f"02:00:00:00:{s:02x}:{i:02x}", f"10.0.0.{10 * s + i}"
                    self.vms.append(Vm(name, node, ofport, 5000 + t, mac, ip))
        if start:
            for s in range(1, spec.sites + 1):
                for k in range(1, spec.proxies + 1):
                    self.start_proxy(s, k)
            for node in list(self.nodes.values()):
                if not node.is_proxy:
                    self.connect(node)

    # ------------------------------------------------------------------ building

    def _config(
        self, name: str, site: int, ip: IPv4Address, proxy: int | None, priority: int | None
    ) -> Any:
        peers = [hv_ip(n) for n in range(1, self.spec.hypervisors + 1)]
        peers += [proxy_ip(k) for k in range(1, self.spec.proxies + 1)]
        values = {
            "host_name": name,
            "underlay_ip": str(ip),
            "peers": ", ".join(str(p) for p in peers if p != ip),
            "auth_key": KEY_HEX,
            "announce_interval": "1.0",
            **self.settings,
        }
        if proxy is not None:
            remote = [
                proxy_wan_ip(s, k)
                for s in range(1, self.spec.sites + 1)
                for k in range(1, self.spec.proxies + 1)
                if s != site
            ]
            values.update(
                role="proxy",
                site=f"s{site}",
                wan_ip=str(proxy_wan_ip(site, proxy)),
                wan_peers=", ".join(str(r) for r in remote),
                proxy_priority=str(priority or PROXY_PRIORITY[proxy]),
                **self.proxy_settings,
            )
        return from_mapping(values)

    def _node(
        self,
        name: str,
        site: int,
        ip: IPv4Address,
        proxy: int | None = None,
        priority: int | None = None,
    ) -> Node:
        cfg = self._config(name, site, ip, proxy, priority)
        switch = FakeSwitch(tunnel_port=TUN)
        wan = proxy_wan_ip(site, proxy) if proxy is not None else None
        return Node(name, site, ip, make_core(cfg, self.now), switch, wan)

    def start_proxy(self, site: int, k: int, priority: int | None = None) -> Node:
        """Start (or restart, with a fresh core) proxy k of a site."""
        name = f"s{site}px{k}"
        node = self._node(name, site, proxy_ip(k), k, priority)
        self.nodes[name] = node
        self.down.discard(name)
        self.connect(node)
        return node

    def connect(self, node: Node) -> None:
        self.apply(node, node.core.switch_connected(self.now, TUN))
        ports = [vm.port for vm in self.vms if vm.node is node]
        if ports:
            self.apply(node, node.core.ports_changed(self.now, ports))

    def stop(self, name: str) -> None:
        """The node's agent stops: it sends and answers nothing more (its flows stay)."""
        self.down.add(name)

    # ------------------------------------------------------------------ the network

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

    def at(self, site: int, addr: IPv4Address | str) -> Node | None:
        """The node reached at ``addr`` from ``site``: a WAN address anywhere, a site
        address in that site."""
        for node in self.nodes.values():
            if on_wan(addr) and node.wan_ip == IPv4Address(addr):
                return node
            if not on_wan(addr) and node.site == site and node.ip == IPv4Address(addr):
                return node
        return None

    def apply(self, node: Node, out: CoreOutput) -> None:
        """What the shell does with a core's output: datagrams out, messages to the switch."""
        for dgram in out.datagrams:
            self.queue.append((node, dgram))
            env = decode(dgram.payload, key=KEY)
            self.sent.append(Sent(env.sender, IPv4Address(dgram.dst), env.message, node.site))
        gen = node.core.p.takeover.generation
        deliveries = node.switch.apply(order_messages(out.ofmsgs, gen))
        assert not node.switch.errors, node.switch.errors
        self.handle(node, deliveries)

    def handle(self, node: Node, deliveries: Iterable[Delivery]) -> list[Delivery]:
        """Act on what a switch emitted: packet-ins to its agent, tunnelled packets on to
        the next switch, packets on VM ports to their VMs. Returns the VM-port deliveries."""
        on_ports = []
        for d in deliveries:
            if d.controller:
                if node.name in self.down:
                    continue
                assert d.cookie is not None
                tun_src = IPv4Address(d.tun_src) if d.tun_src else None
                punted = PacketIn(d.cookie, d.in_port, d.data, d.metadata, tun_src)
                out = node.core.packet_in(self.now, punted)
                self.apply(node, out)
            elif d.port == TUN:
                assert d.tun_dst is not None
                peer = self.at(node.site, d.tun_dst)
                if peer is not None:
                    tun = {
                        "tunnel_id": d.tunnel_id,
                        "tun_ipv4_src": str(node.leg_to(d.tun_dst)),
                        "tun_ipv4_dst": d.tun_dst,
                    }
                    self.handle(peer, peer.switch.process(TUN, d.pkt, tun))
            else:
                on_ports.append(d)
                vm = next((v for v in self.vms if v.node is node and v.ofport == d.port), None)
                if vm is not None:
                    for pkt in vm.answer(d.pkt):
                        self.send(vm, pkt)
        return on_ports

    def send(self, vm: Vm, pkt: Packet) -> None:
        """The VM puts a packet on its port."""
        self.handle(vm.node, vm.node.switch.process(vm.ofport, pkt))

    def inject(self, node: Node, pkt: Packet, tun: dict[str, Any]) -> list[Delivery]:
        """A tunnelled packet arrives at ``node``; returns what it delivered to VM ports."""
        return self.handle(node, node.switch.process(TUN, pkt, tun))

    def settle(self) -> None:
        """Carry queued datagrams (and whatever they cause) until the underlay is quiet."""
        while self.queue:
            src, dgram = self.queue.pop(0)
            dst = self.at(src.site, dgram.dst)
            if dst is None or dst.name in self.down or src.name in self.down:
                self.lost.append(dgram)
                continue
            sender = IPv4Address(dgram.src or str(src.ip))
            self.apply(dst, dst.core.control_message(self.now, dgram.payload, sender))

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for node in list(self.nodes.values()):
                if node.name not in self.down:
                    self.apply(node, node.core.tick(self.now))
            self.settle()

    def advance_until(self, done: Callable[[], bool], limit: float, step: float = 0.1) -> None:
        """Advance time until ``done()``; fails after ``limit`` seconds."""
        end = self.now + limit
        while not done():
            assert self.now < end, f"not done after {limit} s"
            self.advance(step, step)

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(json.dumps(self.nodes[name].core.status(self.now)))
        return status

    def counters(self, name: str) -> dict[str, int]:
        return dict(self.status(name)["counters"])

    def quiet(self) -> bool:
        return all(self.status(n)["pending"] == 0 for n in self.nodes if n not in self.down)

    # ------------------------------------------------------------------ VMs

    def ping(self, src: Vm, dst: Vm, tries: int = 3) -> bool:
        """``ping -c1`` from src to dst: ARP first if need be; a lost reply is retried
        after a second."""
        for _ in range(tries):
            before = src.echo_replies()
            if dst.ip not in src.neigh:
                self.send(src, src.arp_request(dst.ip))
                self.settle()
            if dst.ip in src.neigh:
                self.send(src, echo(src, src.neigh[dst.ip], dst.ip, ECHO_REQUEST))
                self.settle()
                if src.echo_replies() > before:
                    return True
            self.advance(1.0)
        return False

    def ping_all(self) -> None:
        """The canonical scenario: every VM pings every other VM of its tenant once, in
        plan order (mininet_topos.flows_reference.ping_all)."""
        for src in self.vms:
            for dst in self.vms:
                if dst.instance == src.instance and dst is not src:
                    assert self.ping(src, dst), f"{src.name} cannot ping {dst.name}"

    # ------------------------------------------------------------------ dumps

    def snapshot(self, name: str) -> Snapshot:
        """The node as dovectl reads a live one: the agent's status, the bridge's ports,
        flows and groups (through the same parser as ovs-ofctl's dumps)."""
        node = self.nodes[name]
        return Snapshot(
            CtlNode(f"fake:{name}", flows_reference.BRIDGE),
            AgentView.from_status(self.status(name)),
            "",
            dict(node.ports),
            tuple(parse_flows(dump_flows(node.switch))),
            tuple(parse_groups(dump_groups(node.switch))),
        )


def reference_sites() -> Sites:
    """The canonical scenario of flows/: the emulation's defaults, both proxies of each
    site started together, every VM pinging every other VM of its tenant."""
    sites = Sites()
    sites.advance(3.0)  # elections and announcements, as the emulation waits for them
    sites.ping_all()
    sites.advance_until(sites.quiet, 30.0)  # as the emulation waits for quiet agents
    return sites


def reference_tables() -> dict[str, str]:
    sites = reference_sites()
    return flows_reference.reference_texts(
        {name: sites.snapshot(name) for _, name in flows_reference.NODES}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=flows_reference.DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in flows_reference.write_tables(args.out, reference_tables()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
