"""``dovectl trace``: a packet's way through this host's pipeline and, with ``--follow``,
on through every host it is tunnelled to, each rule explained by the state that made it
(dove_ryu.ctl.flowtrace), and a miss checked against the members that would answer it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any, TextIO

from dove_ryu.ctl.common import (
    Ask,
    FlowsError,
    Node,
    Run,
    Snapshot,
    bridge_of,
    check_ip,
    check_mac,
    is_ip,
    looks_like_mac,
    read_view,
    snapshot,
    socket_of,
)
from dove_ryu.ctl.flowdump import DumpError, parse_match
from dove_ryu.ctl.flowstate import AgentView, ExternalLeg, LearnedEndpoint, LocalEndpoint
from dove_ryu.ctl.flowtrace import Hop, HopInput, Outcome, Packet, RawTrace, explain, parse_trace
from dove_ryu.model import is_multicast
from dove_ryu.openflow.cookies import Purpose, decode
from dove_ryu.openflow.flows import TAG_ARP_MISS, TAG_L2_MISS

MAX_HOPS = 16  # a flood followed through every member stays bounded
BROADCAST = "ff:ff:ff:ff:ff:ff"
# Fields of a traced flow that belong to the hop, not to the packet.
HOP_FIELDS = frozenset({"in_port", "metadata", "tun_id", "tunnel_id", "tun_src", "tun_dst"})


@dataclass(frozen=True)
class Peer:
    """Another host a trace may follow into: ``[SITE/]IP=ADMIN_SOCKET:OVS_RUNDIR``.

    Sites may reuse underlay addresses; a SITE prefix tells such hosts apart, and a
    hop stays in its site unless it crosses the WAN to a remote proxy."""

    address: str
    admin_socket: str
    rundir: str
    site: str = ""

    @classmethod
    def parse(cls, text: str) -> Peer:
        where, sep, rest = text.partition("=")
        socket, colon, rundir = rest.rpartition(":")
        if not sep or not colon or not socket or not rundir:
            raise FlowsError(f"--peer {text!r}: expected [SITE/]IP=ADMIN_SOCKET:OVS_RUNDIR")
        site, _, address = where.rpartition("/")
        return cls(str(check_ip(address)), socket, rundir, site)

    def node(self, bridge: str) -> Node:
        return Node(self.admin_socket, bridge, {**os.environ, "OVS_RUNDIR": self.rundir})


@dataclass(frozen=True)
class Peers:
    """The hosts ``--peer`` named, looked up by address within a site."""

    peers: tuple[Peer, ...] = ()

    def find(self, address: str, site: str) -> Peer | None:
        """The peer with ``address`` in ``site``; None when unknown or ambiguous."""
        found = [p for p in self.peers if p.address == address]
        if site:
            exact = [p for p in found if p.site == site]
            found = exact or [p for p in found if not p.site]
        return found[0] if len(found) == 1 else None

    def site_of(self, admin_socket: str) -> str:
        return next((p.site for p in self.peers if p.admin_socket == admin_socket), "")


@dataclass(frozen=True)
class TraceRequest:
    """The flow to trace on the first host and what it means."""

    spec: str
    summary: str
    instance: int | None = None


def _endpoint_text(ep: LocalEndpoint | LearnedEndpoint) -> str:
    if isinstance(ep, LocalEndpoint):
        return f"{ep.mac}, local port {ep.port}"
    return f"{ep.mac}, learned at {ep.host}"


def build_request(
    view: AgentView,
    source: str,
    target: str,
    instance: int | None,
) -> TraceRequest:
    """The packet a VM sends to ``target``: from its port with its MAC; to a MAC,
    or to an IP whose MAC the agent knows (else the ARP request for it)."""
    if not view.known:
        raise FlowsError("--from and --to need the agent's state; use --flow without it")
    if view.external is not None:
        return _from_outside(view.external, source, target)
    src = _source(view, source, instance)
    instance = src.instance
    src_ip = src.ips[0] if src.ips else None
    head = f"in_port={src.port},dl_src={src.mac}"
    what = f"{src.port} ({src.mac}"
    what += f", {src_ip})" if src_ip else ")"
    if is_ip(target):
        dst_ip = str(check_ip(target))
        routed = view.subnet_of(instance)
        if routed is not None and src_ip and IPv4Address(dst_ip) not in routed[1].network:
            router, gateway, mac = routed
            return TraceRequest(
                f"{head},dl_dst={mac},icmp,nw_src={src_ip},nw_dst={dst_ip},nw_ttl=64",
                f"{what} to {dst_ip}: off its subnet {gateway.network}, to router {router}'s "
                f"gateway {gateway.ip} ({mac})",
                instance,
            )
        ep = view.endpoint(instance, ip=dst_ip)
        if ep is None:
            spa = src_ip or "0.0.0.0"
            return TraceRequest(
                f"{head},dl_dst={BROADCAST},arp,arp_op=1,arp_spa={spa},arp_tpa={dst_ip},"
                f"arp_sha={src.mac}",
                f"{what} asks for {dst_ip} (ARP request: its MAC is not known here)",
                instance,
            )
        l3 = f",icmp,nw_src={src_ip},nw_dst={dst_ip}" if src_ip else ""
        return TraceRequest(
            f"{head},dl_dst={ep.mac}{l3}",
            f"{what} to {dst_ip} ({_endpoint_text(ep)})",
            instance,
        )
    mac = check_mac(target, multicast=True)
    ep = view.endpoint(instance, mac=mac)
    dst_ips = ep.ips if ep else ()
    l3 = f",icmp,nw_src={src_ip},nw_dst={dst_ips[0]}" if src_ip and dst_ips else ""
    known = _endpoint_text(ep) if ep else "not known here"
    if is_multicast(mac):
        known = "broadcast" if mac == BROADCAST else "multicast"
    return TraceRequest(f"{head},dl_dst={mac}{l3}", f"{what} to {mac} ({known})", instance)


def _from_outside(ext: ExternalLeg, source: str, target: str) -> TraceRequest:
    """On a gateway: a packet from the external network (its next hop, as the internet
    would send it) into the external port, to ``target`` (a floating IP, a router's
    source-NAT address)."""
    if source not in (ext.port, "external") or not ext.port:
        raise FlowsError(
            f"--from {source}: on a gateway, give its external port ({ext.port or '?'})"
        )
    if not is_ip(target):
        raise FlowsError(f"--to {target}: on a gateway, give an external IPv4 address")
    dst = str(check_ip(target))
    src_mac = ext.next_hop_mac or "02:00:00:00:00:fe"
    whose = ext.address_text(dst) or "no address of a router here"
    return TraceRequest(
        f"in_port={ext.port},dl_src={src_mac},dl_dst={ext.mac or BROADCAST},icmp,"
        f"nw_src={ext.next_hop},nw_dst={dst},nw_ttl=64",
        f"from the external network ({ext.next_hop}) into {ext.port} to {dst} ({whose})",
    )


def _source(view: AgentView, text: str, instance: int | None) -> LocalEndpoint:
    """The sending VM, named by its port, MAC or IP."""
    if is_ip(text):
        found = [ep for ep in view.local if text in ep.ips]
    elif looks_like_mac(text):
        found = [ep for ep in view.local if ep.mac == check_mac(text)]
    else:
        found = [ep for ep in view.local if ep.port == text]
    if not found:
        raise FlowsError(f"--from {text}: no local VM has that port, MAC or IP")
    if instance is not None:
        mine = [ep for ep in found if ep.instance == instance]
        if not mine:
            raise FlowsError(
                f"--from {text}: it is in instance {found[0].instance}, not {instance}"
            )
        found = mine
    if len(found) > 1:
        instances = ", ".join(str(ep.instance) for ep in found)
        raise FlowsError(f"--from {text}: local in instances {instances}; give --instance")
    return found[0]


@dataclass
class HopRecord:
    """One host's part of a trace, and how the packet got there."""

    hop: Hop
    parent: int | None = None
    via: str | None = None  # the next-hop address that led here
    followed: set[int] = field(default_factory=set)  # indexes of outcomes followed


@dataclass(frozen=True)
class _Pending:
    """A host still to trace on: reached from ``parent`` through ``via``."""

    node: Node
    site: str
    parent: int | None = None
    via: Outcome | None = None
    packet: str | None = None  # the packet's own fields as it left the previous hop


def _leaving(raw: RawTrace, arrived: str | None) -> str | None:
    """The packet's own fields as it leaves this hop: those it arrived with, each with
    the value the trace's final flow gives it (a routed packet's MACs and TTL)."""
    final = raw.leaving_flow.strip()
    if arrived is None or not final or final == "unchanged":
        return arrived
    now = dict(item.partition("=")[::2] for item in final.split(","))
    fields = []
    for item in arrived.split(","):
        key, eq, value = item.partition("=")
        fields.append(f"{key}={now.get(key, value)}" if eq else item)
    return ",".join(fields)


def trace_path(
    start: Node,
    spec: str,
    peers: Peers,
    run: Run,
    ask: Ask,
    follow: bool,
) -> list[HopRecord]:
    """Trace on ``start``; with ``follow``, again on every next hop a peer reaches,
    with the tunnel's metadata, until the packet is delivered, punted or dropped."""
    packet_part = _packet_fields(spec)
    records: list[HopRecord] = []
    start_view, _ = read_view(start.admin_socket, ask)
    queue = [_Pending(start, start_view.site or peers.site_of(start.admin_socket))]
    seen: set[tuple[str, str]] = set()
    while queue and len(records) < MAX_HOPS:
        item = queue.pop(0)
        snap = snapshot(item.node, run, ask, groups=False)
        arrived = packet_part if item.via is None else item.packet
        hop_spec = spec if item.via is None else _tunnel_spec(snap, item.via, arrived)
        if (item.node.admin_socket, hop_spec) in seen:
            continue
        seen.add((item.node.admin_socket, hop_spec))
        out = run(["ovs-appctl", "ofproto/trace", item.node.bridge, hop_spec], item.node.env)
        raw = parse_trace(out, item.node.bridge)
        packet = Packet.from_spec(hop_spec, snap.ports)
        hop = explain(raw, HopInput(snap.view, snap.ports, snap.tunnel, packet, hop_spec))
        _resolve_misses(hop, _cookies(raw), snap.view, packet, peers, item.site, ask)
        records.append(HopRecord(hop, item.parent, item.via.next_hop if item.via else None))
        index = len(records) - 1
        if not follow or packet_part is None:
            continue
        for n, outcome in enumerate(hop.outcomes):
            if outcome.kind != "tunnel" or outcome.branch or outcome.next_hop is None:
                continue
            site = item.site
            if snap.view.role == "proxy" and outcome.next_hop in snap.view.proxies:
                site = snap.view.proxies[outcome.next_hop] or site
            peer = peers.find(outcome.next_hop, site)
            if peer is None:
                continue
            records[index].followed.add(n)
            leaving = _leaving(raw, arrived)
            queue.append(_Pending(peer.node(item.node.bridge), site, index, outcome, leaving))
    return records


def _cookies(raw: RawTrace) -> list[int]:
    return [rule.cookie for rule in raw.rules]


def _packet_fields(spec: str) -> str | None:
    """The packet's own fields of a flow spec (what crosses a tunnel unchanged)."""
    try:
        fields = parse_match(spec)
    except DumpError:
        return None
    return ",".join(f.text for f in fields if f.key not in HOP_FIELDS)


def _tunnel_spec(snap: Snapshot, via: Outcome, packet: str | None) -> str:
    """The packet as the next hop's tunnel port receives it."""
    tunnel = snap.tunnel
    if tunnel is None:
        raise FlowsError(f"{snap.name}: no tunnel port found in its flows (agent not connected?)")
    port = snap.ports.get(tunnel, str(tunnel))
    src = via.tun_src or "0.0.0.0"
    return f"in_port={port},tun_id={via.vni},tun_src={src},tun_dst={via.next_hop},{packet}"


def _resolve_misses(
    hop: Hop,
    rule_cookies: Sequence[int],
    view: AgentView,
    packet: Packet,
    peers: Peers,
    site: str,
    ask: Ask,
) -> None:
    """A miss goes to the agent, which asks the instance's members: say who has the
    target, reading the members' own state where a peer reaches them (through the
    proxies into the other sites); when none has it, the packet is dropped, and we
    say where else the target lives."""
    miss = next(
        (
            d
            for d in map(decode, rule_cookies)
            if d and d.purpose is Purpose.INSTANCE and d.tag in (TAG_ARP_MISS, TAG_L2_MISS)
        ),
        None,
    )
    if miss is None or not view.known:
        return
    key = "ip" if miss.tag == TAG_ARP_MISS else "mac"
    target = str(packet.get("arp_tpa" if key == "ip" else "dl_dst"))
    search = _Search(miss.instance, key, target, peers, ask)
    search.elsewhere_in(view)
    members = view.members.get(miss.instance, ())
    search.members(members, site, hops=0)
    search.everywhere()
    if search.holders:
        hop.notes.append(f"the LEARN will be answered: {'; '.join(search.holders)}")
        hop.outcomes = [
            replace(o, reason=f"{o.reason}; answered by {search.holders[0]}")
            if o.kind == "agent" and not o.branch
            else o
            for o in hop.outcomes
        ]
    elif search.unknown:
        hop.notes.append(f"not checked: {'; '.join(search.unknown)}")
    if search.elsewhere:
        where = "; ".join(sorted(search.elsewhere))
        also = "also " if search.holders else ""
        hop.notes.append(
            f"{target} is {also}{where}: another instance, never reached from {miss.instance}"
        )
    if search.holders or search.unknown or not members:
        return
    reason = (
        f"no member of instance {miss.instance} ({', '.join(members)}) has {target}: the "
        f"agent's LEARN goes unanswered and the held packet is dropped"
    )
    if search.elsewhere:
        reason += f"; {target} belongs to another instance, and instances never meet"
    hop.outcomes = [
        Outcome("dropped", reason) if o.kind == "agent" and not o.branch else o
        for o in hop.outcomes
    ]


class _Search:
    """Who, among an instance's members (and behind their proxies), has a target."""

    def __init__(self, instance: int, key: str, target: str, peers: Peers, ask: Ask) -> None:
        self.instance, self.key, self.target = instance, key, target
        self.peers, self.ask = peers, ask
        self.holders: list[str] = []
        self.unknown: list[str] = []
        self.elsewhere: set[str] = set()
        self.seen: set[tuple[str, str]] = set()
        self.views: dict[str, tuple[AgentView, str]] = {}

    def read(self, admin_socket: str) -> tuple[AgentView, str]:
        if admin_socket not in self.views:
            self.views[admin_socket] = read_view(admin_socket, self.ask)
        return self.views[admin_socket]

    def everywhere(self) -> None:
        """Every host a peer reaches, for the target in other instances."""
        for peer in self.peers.peers:
            view, error = self.read(peer.admin_socket)
            if not error:
                self.elsewhere_in(view)

    def elsewhere_in(self, view: AgentView) -> None:
        for ep in view.endpoints(**{self.key: self.target}):
            if ep.instance != self.instance and isinstance(ep, LocalEndpoint):
                self.elsewhere.add(f"instance {ep.instance}'s, on {view.host} port {ep.port}")

    def members(self, members: Iterable[str], site: str, hops: int) -> None:
        for member in members:
            if (site, member) in self.seen:
                continue
            self.seen.add((site, member))
            peer = self.peers.find(member, site)
            if peer is None:
                self.unknown.append(f"{member} (no --peer for it)")
                continue
            other, error = self.read(peer.admin_socket)
            if error:
                self.unknown.append(f"{member} ({error})")
                continue
            self.elsewhere_in(other)
            mine = other.endpoint(self.instance, **{self.key: self.target})
            if isinstance(mine, LocalEndpoint):
                self.holders.append(f"{other.host} ({member}) has it on port {mine.port}")
            elif other.role == "proxy" and mine is not None:
                self.holders.append(f"proxy {other.host} ({member}) knows it at {mine.host}")
            elif other.role == "proxy" and hops == 0:
                self._behind(other)
            elif other.role == "proxy":
                self.unknown.append(f"proxy {other.host} ({member})")

    def _behind(self, proxy: AgentView) -> None:
        """The other sites a proxy would ask: their proxies' site members."""
        for remote in proxy.remote_proxies.get(self.instance, ()):
            site = proxy.proxies.get(remote, "")
            peer = self.peers.find(remote, site)
            if peer is None:
                self.unknown.append(f"remote proxy {remote} (no --peer for it)")
                continue
            view, error = self.read(peer.admin_socket)
            if error:
                self.unknown.append(f"remote proxy {remote} ({error})")
                continue
            mine = view.endpoint(self.instance, **{self.key: self.target})
            if isinstance(mine, LearnedEndpoint):
                self.holders.append(f"proxy {view.host} ({remote}) knows it at {mine.host}")
                continue
            self.members(view.members.get(self.instance, ()), site, hops=1)


def trace_report(request: TraceRequest, records: list[HopRecord]) -> dict[str, Any]:
    hops = []
    verdict = []
    for n, rec in enumerate(records):
        hops.append({**rec.hop.to_json(), "index": n, "parent": rec.parent, "via": rec.via})
        for i, outcome in enumerate(rec.hop.outcomes):
            if i in rec.followed:
                continue
            entry = {"node": rec.hop.node, **outcome.to_json()}
            if outcome.kind == "tunnel":
                entry["not_followed"] = True
            verdict.append(entry)
    return {
        "request": {"flow": request.spec, "summary": request.summary, "instance": request.instance},
        "hops": hops,
        "verdict": verdict,
    }


def print_trace(report: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    request = report["request"]
    scope = f", instance {request['instance']}" if request["instance"] else ""
    print(f"trace{scope}: {request['summary']}", file=out)
    for hop in report["hops"]:
        print(file=out)
        came = ""
        if hop["parent"] is not None:
            sender = report["hops"][hop["parent"]]["node"]
            came = f", tunnelled from {sender} to {hop['via']}"
        print(f"{hop['node']} ({hop['role']} {hop['address']}){came}", file=out)
        print(f"  flow: {hop['flow']}", file=out)
        for step in hop["steps"]:
            pad = "  " * step["depth"]
            prio = f"priority={step['priority']}" if step["priority"] is not None else ""
            match = ",".join(x for x in (prio, step["match"]) if x)
            if step.get("resumed"):
                print(f"  {pad}   {'':13} ~~ {step['resumed']}", file=out)
            print(f"  {pad}{step['table']:>2} {step['table_name']:<13} {match}", file=out)
            if step["actions"]:
                print(f"  {pad}   {'':13} actions={step['actions']}", file=out)
            if step["origin"]:
                origin = step["origin"]
                scope = f" {origin['instance']}" if origin["instance"] else ""
                decoded = f"{origin['purpose']}{scope}, tag {origin['tag']:#x}"
                print(f"  {pad}   {'':13} cookie {origin['cookie']} = {decoded}", file=out)
            print(f"  {pad}   {'':13} -> {step['says']}", file=out)
        for note in hop["notes"]:
            print(f"  note: {note}", file=out)
        for outcome in hop["outcomes"]:
            print(f"  => {_outcome_line(outcome)}", file=out)
    print(file=out)
    print("verdict:", file=out)
    for entry in report["verdict"]:
        line = _outcome_line(entry, short=True)
        if entry.get("not_followed"):
            line += " (not followed: --follow and a --peer for it)"
        print(f"  {entry['node']}: {line}", file=out)


def _outcome_line(o: Mapping[str, Any], short: bool = False) -> str:
    cond = f"{o['branch']}: " if o.get("branch") else ""
    if o["kind"] == "tunnel":
        src = f", from {o['tun_src']}" if o.get("tun_src") else ""
        return f"{cond}next hop: {o.get('next_hop')} (VNI {o.get('vni')}{src})"
    if o["kind"] == "external":
        nat = f", {o['nat']}" if o.get("nat") else ""
        via = f" (next hop {o['next_hop']})" if o.get("next_hop") else ""
        return f"{cond}out of {o['port']}{via} into the external network{nat}"
    if o["kind"] in ("delivered", "answered"):
        text = f"{cond}{o['kind']} to {o['port']}"
        return text if short else f"{text}: {o['reason']}"
    return f"{cond}{o['kind']}: {o['reason']}"


def cmd_trace(args: argparse.Namespace, run: Run, ask: Ask) -> int:
    if args.flow and (args.source or args.target):
        raise FlowsError("give either --flow or --from and --to")
    if not args.flow and not (args.source and args.target):
        raise FlowsError("give --from and --to (or --flow for a raw flow)")
    start = Node(socket_of(args), bridge_of(args))
    peers = Peers(tuple(Peer.parse(p) for p in args.peer or ()))
    if args.flow:
        request = TraceRequest(args.flow, f"the flow {args.flow}", args.instance)
    else:
        view, error = read_view(start.admin_socket, ask)
        if error:
            raise FlowsError(f"{error} (--from and --to need it; --flow does not)")
        request = build_request(view, args.source, args.target, args.instance)
    records = trace_path(start, request.spec, peers, run, ask, args.follow)
    report = trace_report(request, records)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_trace(report)
    return 0
