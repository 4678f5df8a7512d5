"""``ofproto/trace`` explained: each rule a packet hits, the table, the decoded
cookie and the agent state behind it, then where the packet ends up (a VM port, the
tunnel to a next hop, the agent, a drop) and why, as ovn-detrace does for OVN.

Pure: the trace's text, the bridge's ports and the agent's status in, a `Hop` out.
The trace's layout (OVS 3.1) is stable: a rule is ``<table>. <match>, priority
<n>, cookie <c>``, its actions follow one per line, indented; a resubmit nests
four spaces deeper; group buckets are ``bucket <n>`` lines; notes start with
``->`` or ``>>``; a tunnel output traces the underlay bridge as a nested
``bridge("...")`` section, which we skip.  A ``ct(..., table=N)`` recirculates: OVS
traces the packet again from table N after a line of ``=`` signs, a header
(``recirc(0x..) - resume conntrack with ct_state=...``, and the addresses NAT
changed), its own ``Flow:`` and a ``thaw`` into table N; each such pass is a
`Resume`, its rules follow the first pass's in `RawTrace.rules`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dove_ryu.ctl.flowdump import (
    DumpError,
    Field,
    first,
    parse_actions,
    parse_match,
    render,
    table_name,
    written,
)
from dove_ryu.ctl.flowstate import (
    PURPOSE_MEANING,
    AgentView,
    ExternalLeg,
    Origin,
    metadata_text,
    origin_of,
)
from dove_ryu.openflow.cookies import Purpose, decode
from dove_ryu.openflow.flows import TAG_ARP_MISS, TAG_FLOOD, TAG_L2_MISS, TAG_ROUTE_MISS

_RULE = re.compile(r"^( *)(\d+)\. (.*)$")
_BRIDGE = re.compile(r'^bridge\("(.*)"\)$')
_BUCKET = re.compile(r"^bucket (\d+)$")
_RECIRC = re.compile(
    r"^recirc\((0x[0-9a-f]+)\) - resume conntrack with (?:default )?ct_state=(\S+)"
)
_NAT_FLOW = re.compile(r"^(Initial|Modified) flow: (.*)$")
OUTCOME_KINDS = ("delivered", "answered", "tunnel", "external", "agent", "dropped")


# ------------------------------------------------------------------ the raw trace


@dataclass
class TraceAction:
    """One action line under a rule, with the notes OVS printed after it."""

    op: Field
    bucket: int | None = None  # the group bucket it belongs to
    notes: list[str] = field(default_factory=list)


@dataclass
class TraceRule:
    """One rule the packet hit, as the trace printed it."""

    depth: int  # 0 on the main path; deeper in a check_pkt_larger branch
    table: int
    match: tuple[Field, ...]
    priority: int | None
    cookie: int
    actions: list[TraceAction] = field(default_factory=list)
    no_match: bool = False
    notes: list[str] = field(default_factory=list)
    resumed: Resume | None = None  # the first rule of a pass after conntrack


@dataclass(frozen=True)
class Resume:
    """A pass of the packet after conntrack recirculated it (``ct(..., table=N)``)."""

    recirc_id: str
    ct_state: str  # as the trace assumes it: trk|new unless --ct-next says otherwise
    nat_before: str = ""  # 'nw_src=..,tp_src=..,nw_dst=..,tp_dst=..' when NAT changed them
    nat_after: str = ""
    flow: str = ""
    final_flow: str = ""
    datapath_actions: str = ""

    def nat_changes(self) -> list[tuple[str, str, str]]:
        """The addresses NAT rewrote: (field, before, after)."""
        before = dict(i.partition("=")[::2] for i in self.nat_before.split(",") if i)
        after = dict(i.partition("=")[::2] for i in self.nat_after.split(",") if i)
        return [(k, before[k], after[k]) for k in before if k in after and before[k] != after[k]]

    def says(self) -> str:
        zone = _ZONE_MATCH.search(self.flow)
        where = f" in zone {zone.group(1)}" if zone else ""
        text = (
            f"conntrack{where} hands the packet back (recirculation {self.recirc_id}) as "
            f"ct_state={self.ct_state}"
        )
        changes = self.nat_changes()
        if changes:
            text += ", NAT applied: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in changes)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "recirc_id": self.recirc_id,
            "ct_state": self.ct_state,
            "nat": [list(c) for c in self.nat_changes()],
            "says": self.says(),
        }


@dataclass
class RawTrace:
    """The trace of one bridge: its rules in order, and OVS's summary lines."""

    flow: str = ""
    rules: list[TraceRule] = field(default_factory=list)
    final_flow: str = ""
    megaflow: str = ""
    datapath_actions: str = ""
    notes: list[str] = field(default_factory=list)
    resumes: list[Resume] = field(default_factory=list)  # the passes after conntrack

    @property
    def leaving_flow(self) -> str:
        """The packet as the last pass leaves it (NAT applied in a resumed pass)."""
        if not self.resumes:
            return self.final_flow
        last = self.resumes[-1]
        final = last.final_flow.strip()
        return last.flow if not final or final == "unchanged" else final


# What writes a field: set_field, or a load (in a flow an external VTEP's learn wrote).
_SETS = ("set_field", "load")


def _action(text: str) -> Field:
    try:
        fields = parse_actions(text)
    except DumpError:
        fields = ()
    return fields[0] if len(fields) == 1 else Field("text", text)


def _rule(indent: int, number: str, rest: str) -> tuple[int, TraceRule]:
    """A rule line; its indentation normalised for the width of the table number."""
    norm = indent + len(number) - 2
    table = int(number)
    if rest.startswith("No match"):
        return norm, TraceRule(norm // 4, table, (), None, 0, no_match=True)
    if rest.startswith("priority "):
        match_text, tail = "", rest[len("priority ") :]
    else:
        match_text, _, tail = rest.rpartition(", priority ")
    prio_text, _, cookie_text = tail.partition(", cookie ")
    match = parse_match(match_text) if match_text else ()
    cookie = int(cookie_text.split(",")[0], 16) if cookie_text else 0
    return norm, TraceRule(norm // 4, table, match, int(prio_text), cookie)


def parse_trace(text: str, bridge: str = "br-dove") -> RawTrace:
    """The rules ``bridge`` applied, in order, with their actions, through every pass
    conntrack recirculated."""
    passes = _passes(text)
    trace = _parse_pass(passes[0][1], bridge)
    for header, body in passes[1:]:
        again = _parse_pass(body, bridge)
        resume = _resume(header, again)
        if resume is None:  # a recirculation we do not explain: its lines as notes
            trace.notes += [*header, *body]
            continue
        if again.rules:
            again.rules[0].resumed = resume
        trace.rules += again.rules
        trace.resumes.append(resume)
        trace.notes += again.notes
    return trace


def _passes(text: str) -> list[tuple[list[str], list[str]]]:
    """The trace cut at its ``=====`` fences: (header lines, body lines) for each pass;
    the first pass has no header."""
    passes: list[tuple[list[str], list[str]]] = [([], [])]
    fence = 0  # fences seen in the current header
    for line in text.splitlines():
        if line.strip() and set(line.strip()) == {"="}:
            if fence == 0:
                passes.append(([], []))
            fence = 1 - fence
            continue
        (passes[-1][0] if fence else passes[-1][1]).append(line)
    return passes


def _resume(header: list[str], again: RawTrace) -> Resume | None:
    head = _RECIRC.match(header[0].strip()) if header else None
    if head is None:
        return None
    nat = {}
    for line in header[1:]:
        found = _NAT_FLOW.match(line.strip())
        if found:
            nat[found.group(1)] = found.group(2)
    return Resume(
        head.group(1),
        head.group(2),
        nat.get("Initial", ""),
        nat.get("Modified", ""),
        again.flow,
        again.final_flow,
        again.datapath_actions,
    )


def _parse_pass(lines: list[str], bridge: str) -> RawTrace:
    """One pass of the packet through the bridges."""
    trace = RawTrace()
    bridges: list[tuple[int, str]] = []
    contexts: list[tuple[int, TraceRule]] = []
    bucket: tuple[int, int] | None = None  # (indent of the bucket line, bucket number)
    done = False
    for line in lines:
        body = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if not body:
            continue
        if done:
            trace.notes.append(body)
            continue
        for prefix, attr in (
            ("Flow: ", "flow"),
            ("Final flow: ", "final_flow"),
            ("Megaflow: ", "megaflow"),
            ("Datapath actions: ", "datapath_actions"),
        ):
            if indent == 0 and body.startswith(prefix):
                setattr(trace, attr, body[len(prefix) :])
                done = attr == "datapath_actions"
                break
        else:
            header = _BRIDGE.match(body)
            if header:
                while bridges and bridges[-1][0] >= indent:
                    bridges.pop()
                bridges.append((indent, header.group(1)))
                continue
            while len(bridges) > 1 and bridges[-1][0] > indent:
                bridges.pop()
            if not bridges or bridges[-1][1] != bridge or set(body) == {"-"}:
                continue
            if body == "thaw" or body.startswith("Resuming from table "):
                continue
            rule_line = _RULE.match(line)
            if rule_line:
                norm, rule = _rule(len(rule_line.group(1)), rule_line.group(2), rule_line.group(3))
                while contexts and contexts[-1][0] >= norm:
                    contexts.pop()
                contexts.append((norm, rule))
                trace.rules.append(rule)
                bucket = None
                continue
            while contexts and contexts[-1][0] >= indent:
                contexts.pop()
            if not contexts:
                trace.notes.append(body)
                continue
            rule = contexts[-1][1]
            if bucket is not None and indent <= bucket[0]:
                bucket = None
            found = _BUCKET.match(body)
            if found:
                bucket = (indent, int(found.group(1)))
            elif body.startswith(("->", ">>")):
                (rule.actions[-1].notes if rule.actions else rule.notes).append(body)
            else:
                rule.actions.append(TraceAction(_action(body), bucket[1] if bucket else None))
    return trace


# ------------------------------------------------------------------ explained


@dataclass(frozen=True)
class Outcome:
    """Where (part of) the packet ends on this host."""

    kind: str  # one of OUTCOME_KINDS
    reason: str
    port: str | None = None  # delivered, answered: the VM port
    next_hop: str | None = None  # tunnel: the underlay address it is sent to
    vni: int | None = None
    tun_src: str | None = None
    branch: str = ""  # a condition (check_pkt_larger), empty on the main path
    nat: str = ""  # external: what conntrack did to its addresses

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class Step:
    """One rule hit, explained."""

    table: int
    priority: int | None
    match: str
    actions: str
    origin: Origin | None
    says: str  # why this rule, and what it does to the packet
    depth: int = 0
    resumed: str = ""  # the first rule after conntrack recirculated the packet: how

    @property
    def table_name(self) -> str:
        return table_name(self.table)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "table_name": self.table_name,
            "priority": self.priority,
            "match": self.match,
            "actions": self.actions,
            "origin": self.origin.to_json() if self.origin else None,
            "says": self.says,
            "depth": self.depth,
            "resumed": self.resumed,
        }


@dataclass
class Hop:
    """The packet's way through one bridge."""

    node: str
    role: str
    address: str
    flow: str
    steps: list[Step] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    datapath_actions: str = ""
    notes: list[str] = field(default_factory=list)  # what the agent state adds (peers)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "role": self.role,
            "address": self.address,
            "flow": self.flow,
            "steps": [s.to_json() for s in self.steps],
            "outcomes": [o.to_json() for o in self.outcomes],
            "datapath_actions": self.datapath_actions,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Packet:
    """What we know of the traced packet (from the flow we asked OVS to trace)."""

    fields: Mapping[str, str | int]

    @classmethod
    def from_spec(cls, spec: str, ports: Mapping[int, str]) -> Packet:
        try:
            parsed = parse_match(spec)
        except DumpError:
            parsed = ()
        names = {name: number for number, name in ports.items()}
        values: dict[str, str | int] = {}
        for f in parsed:
            if f.value is None:
                continue
            value = f.value
            if f.key == "in_port" and isinstance(value, str):
                value = names.get(value.strip('"'), value)
            values[_ALIASES.get(f.key, f.key)] = value
        return cls(values)

    def after(self, flow: str) -> Packet:
        """The packet as a resumed pass's ``Flow:`` line has it (NAT applied)."""
        try:
            parsed = parse_match(flow)
        except DumpError:
            return self
        values = dict(self.fields)
        for f in parsed:
            if f.value is not None and f.key != "in_port":
                values[_ALIASES.get(f.key, f.key)] = f.value
        return Packet(values)

    def get(self, key: str) -> str | int | None:
        return self.fields.get(key)

    def text(self, key: str) -> str:
        value = self.fields.get(key)
        return "?" if value is None else str(value)


_ALIASES = {"eth_src": "dl_src", "eth_dst": "dl_dst", "tunnel_id": "tun_id"}


@dataclass(frozen=True)
class HopInput:
    """One host's side of a trace: its identity, ports, tunnel port and state."""

    view: AgentView
    ports: Mapping[int, str]
    tunnel: int | None
    packet: Packet
    spec: str
    node: str = ""


def explain(trace: RawTrace, given: HopInput) -> Hop:
    """Each rule hit with the state that made it, and the packet's outcomes."""
    view = given.view
    hop = Hop(
        node=given.node or view.host or "this host",
        role=view.role if view.known else "unknown",
        address=", ".join(view.addresses),
        flow=given.spec,
        datapath_actions=" | ".join(
            [
                trace.datapath_actions,
                *(f"recirc({r.recirc_id}): {r.datapath_actions}" for r in trace.resumes),
            ]
        ),
    )
    walker = _Walker(given, hop)
    for rule in trace.rules:
        walker.rule(rule)
    if not hop.outcomes:
        if walker.skipped:
            reason = (
                "its only output is the port it came in on, and OpenFlow never sends back there"
            )
        elif hop.steps:
            reason = hop.steps[-1].says
        else:
            reason = "no rule matched"
        hop.outcomes.append(Outcome("dropped", reason))
    return hop


def _dedupe(actions: list[TraceAction]) -> list[TraceAction]:
    """Without the repeats the trace prints around a branch (a goto_table shown again
    after the check_pkt_larger branch it led to)."""
    kept: list[TraceAction] = []
    for action in actions:
        if kept and (kept[-1].op, kept[-1].bucket) == (action.op, action.bucket):
            continue
        if kept and kept[-1].op.key == "ct" and action.op.text.startswith("nat"):
            kept[-1].notes.extend(action.notes)  # the trace echoes ct's nat() on a line
            continue
        kept.append(action)
    return kept


def _render_actions(actions: Sequence[TraceAction], ports: Mapping[int, str]) -> str:
    """The actions, a group's buckets each after a ``bucket <n>:`` marker."""
    parts: list[str] = []
    bucket: int | None = None
    for action in actions:
        text = action.op.render(ports)
        if any("skipping output to input port" in n for n in action.notes):
            text += " (not to the input port)"
        if action.bucket is not None and action.bucket != bucket:
            text = f"bucket {action.bucket}: {text}"
        bucket = action.bucket
        parts.append(text)
    return ",".join(parts).replace(",bucket ", " | bucket ")


class _Walker:
    """Follows the actions of the rules in order, as the datapath does."""

    def __init__(self, given: HopInput, hop: Hop) -> None:
        self.given, self.hop = given, hop
        self.tun_dst: str | None = None
        self.tun_id: int | None = None
        self.larger: int | None = None  # the last check_pkt_larger's length
        self.skipped = False  # an output to the input port, which OpenFlow never does
        self.packet = given.packet  # as the current pass sees it (after NAT)
        self.nat: list[str] = []  # what conntrack did, in words

    def rule(self, rule: TraceRule) -> None:
        given, ports = self.given, self.given.ports
        if rule.resumed is not None:
            self.packet = self.packet.after(rule.resumed.flow)
        if rule.no_match:
            step = Step(rule.table, None, "", "", None, "no flow matched: dropped", rule.depth)
            self.hop.steps.append(step)
            self.hop.outcomes.append(Outcome("dropped", f"{table_name(rule.table)}: no match"))
            return
        rule.actions = _dedupe(rule.actions)
        actions = tuple(a.op for a in rule.actions)
        origin = origin_of(
            rule.cookie, rule.match, actions, given.view, ports, rule.table, rule.priority or 0
        )
        says = self._says(rule, origin, actions)
        self.hop.steps.append(
            Step(
                rule.table,
                rule.priority,
                render(rule.match, ports),
                _render_actions(rule.actions, ports),
                origin,
                says,
                rule.depth,
                rule.resumed.says() if rule.resumed else "",
            )
        )
        branch = ""
        if rule.depth > 0 and self.larger is not None:
            branch = f"if the frame is longer than {self.larger} bytes"
        for action in rule.actions:
            self._act(action, rule, origin, says, branch)

    def _act(
        self, action: TraceAction, rule: TraceRule, origin: Origin, says: str, branch: str
    ) -> None:
        f, ports, packet = action.op, self.given.ports, self.packet
        if f.key == "ct":
            nat = _NAT.search(f.text)
            zone = _ZONE.search(f.text)
            if nat:
                side, key = (
                    ("source", "nw_src") if nat.group(1) == "src" else ("destination", "nw_dst")
                )
                where = f" (conntrack zone {zone.group(1)})" if zone else ""
                self.nat.append(f"{side} NAT {packet.text(key)} -> {nat.group(2)}{where}")
        elif f.key in _SETS and f.target == "tun_dst" and isinstance(f.value, str):
            self.tun_dst = f.value
        elif f.key in _SETS and f.target == "tun_id" and isinstance(f.value, int):
            self.tun_id = f.value
        elif f.key == "check_pkt_larger" and isinstance(f.value, int):
            self.larger = f.value
        elif f.key == "output":
            if any("skipping output to input port" in n for n in action.notes):
                self.skipped = True
                return
            port = packet.get("in_port") if f.value == "IN_PORT" else f.value
            # A tunnel port: the one classify names, or (a host with two encapsulations:
            # tests/ovs/test_geneve_ovs.py) any port a tunnel destination was written for.
            if port is not None and (port == self.given.tunnel or self.tun_dst is not None):
                self.hop.outcomes.append(
                    Outcome(
                        "tunnel",
                        says,
                        next_hop=self.tun_dst,
                        vni=self.tun_id,
                        tun_src=_tunnel_source(action.notes),
                        branch=branch,
                    )
                )
                return
            name = ports.get(port, str(port)) if isinstance(port, int) else str(port)
            ext = self.given.view.external
            if ext is not None and ext.ofport is not None and port == ext.ofport:
                self.hop.outcomes.append(
                    Outcome(
                        "external",
                        says,
                        port=ext.port or name,
                        next_hop=_next_hop_text(ext, written(rule_actions(rule), "eth_dst")),
                        branch=branch,
                        nat="; ".join(self.nat),
                    )
                )
                return
            kind = "answered" if origin.purpose in ("arp_local", "arp_learned") else "delivered"
            self.hop.outcomes.append(Outcome(kind, says, port=name, branch=branch))
        elif f.key.upper() == "CONTROLLER":
            self.hop.outcomes.append(Outcome("agent", says, branch=branch))
        elif f.key == "drop":
            self.hop.outcomes.append(Outcome("dropped", says, branch=branch))

    def _says(self, rule: TraceRule, origin: Origin, actions: Sequence[Field]) -> str:
        """Why this rule matched the packet and what it does, in the agent's terms."""
        view, packet = self.given.view, self.packet
        decoded = decode(rule.cookie)
        if decoded is None:
            return "not a DOVE flow: " + render(actions, self.given.ports)
        p, instance = decoded.purpose, decoded.instance
        name = table_name(rule.table)
        md = first(actions, "write_metadata")
        md_value = int(str(md.value).split("/")[0], 16) if md and md.value is not None else None
        if p is Purpose.LOCAL_PORT and name == "classify":
            return f"from {origin.what}: {metadata_text(md_value or instance)}"
        if p is Purpose.LOCAL_PORT:
            return "the VM sends from its own MAC" + (
                " and, in ARP, its own addresses" if first(rule.match, "arp_sha") else ""
            )
        if p is Purpose.MEMBER:
            meta = metadata_text(md_value) if md_value is not None else f"instance {instance}"
            src = origin.host or packet.text("tun_src")
            return f"tunnelled from {view.host_role(src)} {src}, VNI {instance}: accepted as {meta}"
        if p is Purpose.DROP_NONMEMBER:
            src, vni = packet.text("tun_src"), packet.get("tun_id")
            members = view.members.get(int(vni), ()) if isinstance(vni, int) else ()
            known = f"members: {', '.join(members)}" if members else "no member known here"
            return (
                f"tunnelled from {src} with VNI {vni if vni is not None else '?'}, but {src} is "
                f"not a member of that instance here ({known}): dropped"
            )
        if p is Purpose.DROP_UNCLASSIFIED:
            port = packet.get("in_port")
            shown = self.given.ports.get(port, port) if isinstance(port, int) else port
            return f"in_port {shown} is neither a VM port nor the tunnel: dropped"
        if p is Purpose.DROP_SPOOF:
            return self._spoof(origin)
        if p is Purpose.PIPELINE:
            return origin.what
        if p is Purpose.ARP_LOCAL and any(a.key == "goto_table" for a in actions):
            return (
                f"the VM asks for its own address {packet.text('arp_tpa')}: flooded, not answered"
            )
        if p in (Purpose.ARP_LOCAL, Purpose.ARP_LEARNED):
            mac = origin.mac or str(written(actions, "eth_src"))
            where = f"local VM port {origin.port}" if p is Purpose.ARP_LOCAL else ""
            if p is Purpose.ARP_LEARNED:
                where = f"learned, at {origin.host}" if origin.host else "learned"
            return (
                f"ARP request for {packet.text('arp_tpa')}: answered on the host, "
                f"{packet.text('arp_tpa')} is at {mac} ({where})"
            )
        if p is Purpose.LOCAL_ENDPOINT:
            return origin.what
        if p is Purpose.LEARNED:
            next_hop = written(actions, "tun_dst")
            detail = f" ({origin.detail})" if origin.detail else ""
            tail = f": to {next_hop}" if next_hop else ""
            if first(actions, "check_pkt_larger"):
                tail += ", through wan_egress (size checked)"
            return f"learned {origin.what}{detail}{tail}"
        if p is Purpose.INSTANCE:
            return self._instance(decoded.tag, instance, rule)
        if p is Purpose.EGRESS_MISS:
            dst, src = packet.text("dl_dst"), packet.text("tun_src")
            return (
                f"overlay packet for {dst}, which is no endpoint here: to the agent, which tells "
                f"the sender {src} to un-learn it (and forwards it if {dst} just moved away)"
            )
        if p is Purpose.WAN_OVERSIZE:
            return (
                "frame too big for the inter-site path: to the agent, which sends it in "
                "DOVE-layer fragments (or answers ICMP fragmentation-needed, wan_oversize=icmp)"
            )
        routed = _routing_says(
            p, decoded.tag, instance, name, packet, actions, rule.match, view.external
        )
        if routed is not None:
            return routed
        if p is Purpose.DROP_MISS:
            if name == "l3_route":
                return "IPv4 to a gateway MAC that matches no route of its router: dropped"
            if name == "l3_neighbor":
                return "routed into an instance this host resolves nothing in: dropped"
            if name == "flood":
                return "no flood group for this instance: dropped"
            return "no instance took the packet (not a served VM port, not the overlay): dropped"
        return origin.what

    def _spoof(self, origin: Origin) -> str:
        packet = self.packet
        sent = f"dl_src={packet.text('dl_src')}"
        if packet.get("arp_sha") is not None:
            sent += f", arp_sha={packet.text('arp_sha')}, arp_spa={packet.text('arp_spa')}"
        if origin.mac:
            own = f"{origin.mac}" + (f" and {', '.join(origin.ips)}" if origin.ips else "")
            return f"{origin.port} may send only as {own}; this packet has {sent}: dropped"
        port = packet.get("in_port")
        local = self.given.view.local_port(None, port) if isinstance(port, int) else None
        if local is not None:
            return f"{local.port} may send only from {local.mac}; this packet has {sent}: dropped"
        return f"no port-security flow admits {sent} on this port: dropped"

    def _instance(self, tag: int, instance: int, rule: TraceRule) -> str:
        view, packet = self.given.view, self.packet
        members = ", ".join(view.members.get(instance, ())) or "none known"
        if tag == TAG_FLOOD:
            direction = ""
            md = first(rule.match, "metadata")
            if view.role == "proxy" and md is not None and isinstance(md.value, str):
                value = int(md.value.split("/")[0], 16)
                direction = (
                    " (from a remote proxy: to the site's members)"
                    if value >> 25 & 1
                    else " (from the site: once to each remote site's proxy)"
                )
            return f"broadcast: to the flood group of instance {instance}{direction}"
        if tag == TAG_ARP_MISS:
            ip = packet.text("arp_tpa")
            return (
                f"ARP for {ip}, not known here in instance {instance}: to the agent, which "
                f"holds it and asks the instance's members ({members}) with a LEARN by IP"
            )
        if tag == TAG_ROUTE_MISS:
            return (
                f"routed into instance {instance}, but {packet.text('nw_dst')} is not known "
                f"here: to the agent, which holds the packet, asks the instance's members "
                f"({members}) with a LEARN by IP and sends it on when answered"
            )
        if tag == TAG_L2_MISS:
            dst = packet.text("dl_dst")
            return (
                f"no endpoint of instance {instance} known here for {dst}: to the agent, which "
                f"holds the packet and asks the instance's members ({members}) with a LEARN"
            )
        return f"instance {instance} tag {tag}"


_NAT = re.compile(r"nat\((src|dst)=([^)]+)\)")
_ZONE = re.compile(r"zone=(\d+)")
_ZONE_MATCH = re.compile(r"ct_zone=(\d+)")


def _conntrack(actions: Sequence[Field]) -> str:
    """What a ct action does, in words: the zone (the router) and the NAT."""
    ct = first(actions, "ct")
    if ct is None:
        return ""
    zone = _ZONE.search(ct.text)
    nat = _NAT.search(ct.text)
    where = f"conntrack zone {zone.group(1)} (router {zone.group(1)})" if zone else "conntrack"
    if nat:
        side = "source" if nat.group(1) == "src" else "destination"
        return f"{where}, {side} NATed to {nat.group(2)}"
    if "nat" in ct.text:
        return f"{where}, un-NATed if it belongs to a connection"
    return where


def _routing_says(
    p: Purpose,
    tag: int,
    instance: int,
    table: str,
    packet: Packet,
    actions: Sequence[Field],
    match: Sequence[Field] = (),
    ext: ExternalLeg | None = None,
) -> str | None:
    """What a flow of routing, the gateway or DHCP (docs/routing.md) does to this packet;
    None for the other purposes.  The tag of their cookies is the router's id (a
    floating IP's: its low 24 bits; the router is then the conntrack zone)."""
    dst, src = packet.text("nw_dst"), packet.text("nw_src")
    zone = _zone_of(match, actions)
    router = zone if p is Purpose.FLOATING_IP and zone is not None else tag
    ttl = packet.get("nw_ttl")
    if p is Purpose.ROUTER_PORT:
        if packet.get("arp_tpa") is not None:
            gw = written(actions, "eth_src") or written(actions, "arp_sha")
            return (
                f"ARP request for {packet.text('arp_tpa')}, router {tag}'s gateway address in "
                f"instance {instance}: answered on the host, it is at {gw}"
            )
        return f"IPv4 to router {tag}'s gateway MAC in instance {instance}: routed (l3_route)"
    if p in (Purpose.ROUTE, Purpose.FLOATING_IP) and table == "ext_unnat":
        why = "a floating IP's" if p is Purpose.FLOATING_IP else "a reply of a connection's"
        return (
            f"from outside, {why} packet for {dst} (after NAT): routed into router {router}'s "
            f"instance {instance} (TTL - 1, from {written(actions, 'eth_src')}), to l3_neighbor"
        )
    if p is Purpose.ROUTE:
        return (
            f"{dst} is in router {tag}'s subnet of instance {instance}: routed on this host "
            f"(TTL - 1, from {written(actions, 'eth_src')}) into instance {instance}"
        )
    if p is Purpose.ROUTE_DEFAULT and written(actions, "tun_dst") is None:
        left = f"TTL {ttl} - 1" if isinstance(ttl, int) else "TTL - 1"
        return f"{dst} is off router {tag}'s subnets: the default route out ({left}), to snat"
    if p is Purpose.ROUTE_DEFAULT:
        return (
            f"{dst} is off router {tag}'s subnets: through the tunnel to the active gateway "
            f"{written(actions, 'tun_dst')}, unchanged (the gateway routes it)"
        )
    if p is Purpose.ROUTE_TTL and first(actions, "drop") is not None:
        return (
            f"TTL {packet.text('nw_ttl')} would expire on router {tag}: dropped here and "
            "counted (no ICMP from the gateway)"
        )
    if p is Purpose.ROUTE_TTL:
        return (
            f"TTL {packet.text('nw_ttl')} would expire on router {tag}: to the agent, which "
            "drops it, counts ttl_expired and answers ICMP time exceeded"
        )
    if p is Purpose.NEIGHBOR:
        return f"{dst} in instance {instance} is at {written(actions, 'eth_dst')}"
    if p is Purpose.DHCP:
        return "a DHCP request from the VM: to the agent, which answers it from the port's marks"
    if p in (Purpose.SNAT, Purpose.FLOATING_IP):
        return _nat_says(p, router, table, src, dst, actions)
    if p is Purpose.EXTERNAL:
        return _external_says(table, packet, actions, match, ext)
    if p is Purpose.DROP_EXTERNAL and table == "ext_unnat":
        return (
            f"from outside to {dst}: a new connection to a source-NAT address, or a packet of "
            "no connection: dropped (counted)"
        )
    if p is Purpose.DROP_EXTERNAL:
        return (
            f"from outside to {dst}: not a router's external address nor a floating IP here: "
            "dropped (counted)"
        )
    return None


def _zone_of(match: Sequence[Field], actions: Sequence[Field]) -> int | None:
    """The conntrack zone (= the router) a flow matches or commits to."""
    zone = first(match, "ct_zone")
    if zone is not None and isinstance(zone.value, int):
        return zone.value
    ct = first(actions, "ct")
    found = _ZONE.search(ct.text) if ct else None
    return int(found.group(1)) if found else None


def _nat_says(
    p: Purpose, router: int, table: str, src: str, dst: str, actions: Sequence[Field]
) -> str:
    ct = first(actions, "ct")
    nat = _conntrack(actions) or "conntrack"
    recirc = ct is not None and "table=" in ct.text
    after = ", then on to ext_unnat once conntrack has it" if recirc else ", to ext_out"
    if ct is None:  # the miss of snat
        return "routed out, but no router of this instance has a way out here: dropped"
    if p is Purpose.FLOATING_IP and table == "ext_in":
        return f"to router {router}'s floating IP {dst}: {nat}{after}"
    if p is Purpose.FLOATING_IP:
        return f"from {src}, which has router {router}'s floating IP: {nat}{after}"
    if table == "ext_in":
        return (
            f"to router {router}'s source-NAT address {dst}: {nat} (a reply is un-NATed to "
            f"its inside address){after}"
        )
    return f"from {src}, out through router {router}: {nat}{after}"


def _external_says(
    table: str,
    packet: Packet,
    actions: Sequence[Field],
    match: Sequence[Field],
    ext: ExternalLeg | None,
) -> str:
    port = ext.port if ext and ext.port else "the external port"
    dst = packet.text("nw_dst")
    if table == "classify":
        return f"from the external network, on {port}: to ext_in"
    if table == "ext_in" and packet.get("arp_tpa") is not None:
        tpa = packet.text("arp_tpa")
        whose = (ext.address_text(tpa) if ext else "") or "an external address of this gateway"
        return f"ARP request for {tpa} ({whose}): answered, it is at {written(actions, 'eth_src')}"
    if table == "ext_out":
        mac = written(actions, "eth_dst")
        if mac is None:
            return (
                f"out to {dst}, but its MAC (or the next hop's) is not known yet: to the agent, "
                "which asks for it by ARP (this packet is dropped)"
            )
        matched = first(match, "nw_dst")
        hop = ext.next_hop if ext else ""
        if matched is not None and matched.value == dst and dst != hop:
            return f"out of {port} to {dst}, on the external subnet, at {mac}"
        via = f"the next hop {hop} ({mac})" if hop else f"the next hop {mac}"
        return f"out of {port} into the external network, to {via}"
    return PURPOSE_MEANING[Purpose.EXTERNAL]


def _next_hop_text(ext: ExternalLeg, mac: str | int | None) -> str | None:
    if mac is None:
        return None
    if ext.next_hop and mac == ext.next_hop_mac:
        return f"{ext.next_hop} at {mac}"
    return str(mac)


def rule_actions(rule: TraceRule) -> tuple[Field, ...]:
    return tuple(a.op for a in rule.actions)


def _tunnel_source(notes: Sequence[str]) -> str | None:
    """The outer source address from '-> tunneling from <mac> <ip> to <mac> <ip>'."""
    for note in notes:
        words = note.lstrip("->").split()
        if len(words) >= 4 and words[:2] == ["tunneling", "from"]:
            return words[3]
    return None
