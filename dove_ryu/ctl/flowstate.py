"""Flows tied back to the agent state that made them: each cookie decoded (purpose,
instance, tag) and its tag completed from the flow itself and the agent's status
(the VM port, the learned endpoint and its host, the member host).

Pure: parsed flows (dove_ryu.ctl.flowdump) and the status in, `Origin`s out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from dove_ryu.ctl.flowdump import DumpError, Field, Flow, Group, mac_text, table_name, written
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.flows import TAG_ARP_MISS, TAG_FLOOD, TAG_L2_MISS, TAG_ROUTE_MISS
from dove_ryu.openflow.pipeline import FROM_TUNNEL, FROM_WAN, INSTANCE_MASK

MAC_FIELDS = frozenset({"dl_src", "dl_dst", "eth_src", "eth_dst", "arp_sha", "arp_tha"})
IP_FIELDS = frozenset({"arp_spa", "arp_tpa", "tun_src", "tun_dst", "nw_src", "nw_dst"})
# What a flow may write that names a MAC or an IP (set_field targets).
MAC_TARGETS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha"})
IP_TARGETS = frozenset({"arp_spa", "arp_tpa", "tun_dst", "tun_src"})

# ------------------------------------------------------------------ the agent's state


@dataclass(frozen=True)
class LocalEndpoint:
    """A VM port of this host, as the agent lists it."""

    instance: int
    port: str
    ofport: int
    mac: str
    ips: tuple[str, ...]
    seq: int


@dataclass(frozen=True)
class LearnedEndpoint:
    """An endpoint the agent learned: where it is, since when, who answered."""

    instance: int
    mac: str
    ips: tuple[str, ...]
    host: str
    seq: int
    age: float
    answered_by: str = ""
    side: str = ""  # a proxy's: 'site' or 'remote'


@dataclass(frozen=True)
class ExternalLeg:
    """A gateway's leg in the external network, and the router addresses it serves."""

    port: str  # the OVS port's name ('' when the agent does not say)
    ofport: int | None
    mac: str | None
    ip: str
    next_hop: str
    next_hop_mac: str | None
    # Each external address it serves: (router id, the inside address, or '' for SNAT).
    addresses: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    def address_text(self, address: str) -> str:
        """'router 1's floating IP for 10.0.0.1', 'router 1's source-NAT address'."""
        found = self.addresses.get(address)
        if found is None:
            return ""
        router, inside = found
        if inside:
            return f"router {router}'s floating IP for {inside}"
        return f"router {router}'s source-NAT address"

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> ExternalLeg:
        ext = status.get("external") or {}
        ofport = ext.get("ofport", status.get("external_port"))
        hop = status.get("next_hop") or {}
        addresses: dict[str, tuple[int, str]] = {}
        for rid, router in status.get("routers", {}).items():
            if router.get("snat"):
                addresses[str(router["snat"])] = (int(rid), "")
            for external, inside in router.get("floating_ips", {}).items():
                addresses[str(external)] = (int(rid), str(inside))
        return cls(
            port=str(ext.get("port", "")),
            ofport=int(ofport) if ofport is not None else None,
            mac=ext.get("mac"),
            ip=str(ext.get("ip", status.get("external_ip", ""))),
            next_hop=str(hop.get("ip", "")),
            next_hop_mac=hop.get("mac"),
            addresses=addresses,
        )


@dataclass(frozen=True)
class AgentView:
    """What the agent's status says, as much as reading flows needs.  ``known`` is
    False when the agent did not answer: then tags stay raw."""

    known: bool = False
    host: str = ""
    role: str = "host"
    underlay_ip: str = ""
    wan_ip: str = ""
    site: str = ""
    local: tuple[LocalEndpoint, ...] = ()
    learned: tuple[LearnedEndpoint, ...] = ()
    members: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    remote_proxies: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    proxies: Mapping[str, str] = field(default_factory=dict)  # address -> site
    # The router subnet each routed instance is: (router id, gateway address/prefix, MAC).
    subnets: Mapping[int, tuple[int, str, str]] = field(default_factory=dict)
    external: ExternalLeg | None = None  # a gateway's
    gateways: tuple[str, ...] = ()  # a host's: the gateways its routers go out through

    def subnet_of(self, instance: int) -> tuple[int, IPv4Interface, str] | None:
        found = self.subnets.get(instance)
        return (found[0], IPv4Interface(found[1]), found[2]) if found else None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> AgentView:
        """Checked at the edge: a status without the keys we read is an error."""
        try:
            return cls._from_status(status)
        except (KeyError, TypeError, ValueError) as e:
            raise DumpError(f"the agent's status cannot be read: {e!r}") from e

    @classmethod
    def _from_status(cls, status: Mapping[str, Any]) -> AgentView:
        local, learned = [], []
        members: dict[int, tuple[str, ...]] = {}
        remote: dict[int, tuple[str, ...]] = {}
        for key, info in status["instances"].items():
            instance = int(key)
            members[instance] = tuple(info.get("members", ()))
            remote[instance] = tuple(info.get("remote_proxies", ()))
            for ep in info.get("local", ()):
                local.append(
                    LocalEndpoint(
                        instance,
                        str(ep["port"]),
                        int(ep["ofport"]),
                        str(ep["mac"]),
                        tuple(ep.get("ips", ())),
                        int(ep.get("seq", 0)),
                    )
                )
            for ep in info.get("learned", ()):
                learned.append(
                    LearnedEndpoint(
                        instance,
                        str(ep["mac"]),
                        tuple(ep.get("ips", ())),
                        str(ep["host"]),
                        int(ep.get("seq", 0)),
                        float(ep.get("age", 0.0)),
                        str(ep.get("answered_by", "")),
                        str(ep.get("side", "")),
                    )
                )
        role = str(status.get("role", "host"))
        # A proxy lists the other sites' proxies; a host (newer agents) its site's.
        known = status.get("remote_proxies" if role == "proxy" else "proxies", {})
        proxies = {str(a): str(p.get("site", "")) for a, p in known.items()}
        site = str(status.get("site", ""))
        if not site and role != "proxy":
            sites = set(proxies.values())
            site = sites.pop() if len(sites) == 1 else ""
        subnets = {
            int(sub["instance"]): (int(rid), str(sub["gateway"]), str(sub["mac"]))
            for rid, router in status.get("routing", {}).get("routers", {}).items()
            for sub in router["subnets"]
        }
        external = ExternalLeg.from_status(status) if role == "gateway" else None
        return cls(
            known=True,
            host=str(status["host"]),
            role=role,
            underlay_ip=str(status["underlay_ip"]),
            wan_ip=str(status.get("wan_ip", "")),
            site=site,
            local=tuple(local),
            learned=tuple(learned),
            members=members,
            remote_proxies=remote,
            proxies=proxies,
            subnets=subnets,
            external=external,
            gateways=tuple(str(g) for g in status.get("routing", {}).get("gateways", ())),
        )

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.underlay_ip, self.wan_ip) if a)

    def local_port(self, instance: int | None, ofport: int) -> LocalEndpoint | None:
        return next(
            (
                ep
                for ep in self.local
                if ep.ofport == ofport and (instance is None or ep.instance == instance)
            ),
            None,
        )

    def endpoints(
        self, mac: str | None = None, ip: str | None = None
    ) -> list[LocalEndpoint | LearnedEndpoint]:
        """Local and learned endpoints, of any instance, with that MAC or IP."""
        every: list[LocalEndpoint | LearnedEndpoint] = [*self.local, *self.learned]
        return [
            ep for ep in every if (mac is None or ep.mac == mac) and (ip is None or ip in ep.ips)
        ]

    def endpoint(
        self, instance: int, mac: str | None = None, ip: str | None = None
    ) -> LocalEndpoint | LearnedEndpoint | None:
        return next((ep for ep in self.endpoints(mac, ip) if ep.instance == instance), None)

    def learned_by_tag(self, instance: int, tag: int) -> LearnedEndpoint | None:
        return next(
            (
                ep
                for ep in self.learned
                if ep.instance == instance and cookies.mac_tag(ep.mac) == tag
            ),
            None,
        )

    def known_hosts(self) -> set[str]:
        hosts = {h for hs in self.members.values() for h in hs}
        hosts |= {h for hs in self.remote_proxies.values() for h in hs}
        return hosts | set(self.proxies) | set(self.addresses)

    def host_role(self, address: str) -> str:
        """How this agent knows ``address``: 'remote proxy (site s2)', 'proxy', 'member'."""
        if self.role == "proxy" and (
            address in self.proxies or any(address in hs for hs in self.remote_proxies.values())
        ):
            site = self.proxies.get(address)
            return f"remote proxy{f' (site {site})' if site else ''}"
        if address in self.proxies:
            return "proxy of this site"
        if address in self.gateways:
            return "gateway"
        if self.role == "proxy":
            return "site member"
        return "member"


# ------------------------------------------------------------------ origins


PURPOSE_MEANING: dict[Purpose, str] = {
    Purpose.PIPELINE: "a fixed flow of the pipeline",
    Purpose.LOCAL_PORT: "classify and port security of a local VM port",
    Purpose.LOCAL_ENDPOINT: "delivery to a local VM",
    Purpose.LEARNED: "forwarding to a learned endpoint, through the tunnel",
    Purpose.ARP_LOCAL: "ARP answered on the host for a local VM",
    Purpose.ARP_LEARNED: "ARP answered on the host for a learned endpoint",
    Purpose.MEMBER: "tunnelled packets accepted from a member host",
    Purpose.INSTANCE: "a per-instance miss (to the agent) or the flood group",
    Purpose.DROP_NONMEMBER: "a tunnelled packet from a host that is no member of its instance",
    Purpose.DROP_SPOOF: "a VM sending from an address that is not its own",
    Purpose.DROP_UNCLASSIFIED: "a packet from a port that is neither a VM port nor the tunnel",
    Purpose.EGRESS_MISS: "overlay packet for no local endpoint: to the agent, the sender un-learns",
    Purpose.DROP_MISS: "the default of a table",
    Purpose.WAN_OVERSIZE: "proxy: a frame too big for the inter-site path, to the agent",
    Purpose.ROUTER_PORT: "a subnet's router port: ARP for its gateway answered, IPv4 to it routed",
    Purpose.ROUTE: "routed into a subnet of the router (TTL, MACs)",
    Purpose.ROUTE_DEFAULT: "off the router's subnets: to the active gateway (a gateway: to snat)",
    Purpose.ROUTE_TTL: "a routed packet whose TTL would expire: dropped (a host answers ICMP)",
    Purpose.NEIGHBOR: "a routed packet's destination address -> its MAC",
    Purpose.DHCP: "a VM's DHCP request: to the agent, which answers it",
    Purpose.SNAT: "gateway: source NAT to the router's external address (conntrack)",
    Purpose.FLOATING_IP: "gateway: a floating IP, NATed both ways (conntrack)",
    Purpose.EXTERNAL: "gateway: the external network's side",
    Purpose.DROP_EXTERNAL: "gateway: from outside, for no floating IP or connection",
    Purpose.VTEP_LEARNED: "a MAC behind an external VTEP, learned in the datapath",
    Purpose.VTEP_STATIC: "a MAC declared behind an external VTEP",
}

INSTANCE_TAGS = {
    TAG_ARP_MISS: "ARP request for an address not known here: to the agent",
    TAG_L2_MISS: "destination not known here: to the agent, which resolves it (LEARN)",
    TAG_FLOOD: "broadcast and multicast: to the instance's flood group",
    TAG_ROUTE_MISS: "a routed packet for an address not known here: to the agent (LEARN by IP)",
}


def pipeline_meaning(table: int, priority: int) -> str:
    """What a fixed (PIPELINE) flow does, by where it sits."""
    name = table_name(table)
    if name == "arp_nd":
        return "not an ARP request answered here: on to l2_forward"
    if name == "l2_forward" and priority >= 90:
        return "broadcast and multicast: to flood"
    if name == "l2_forward":
        return "from the overlay, for no endpoint of the instance here: to egress_check"
    if name == "wan_egress":
        return "to the remote proxy: back out the tunnel port"
    return PURPOSE_MEANING[Purpose.PIPELINE]


@dataclass(frozen=True)
class Origin:
    """The state behind a flow, decoded from its cookie and completed from the flow
    itself and the agent's status.  ``what`` holds nothing that changes from run to
    run; ``detail`` does (sequence numbers, ages)."""

    cookie: int
    purpose: str  # the Purpose name in lower case, or 'foreign'
    instance: int | None
    tag: int
    what: str
    detail: str = ""
    mac: str | None = None
    ips: tuple[str, ...] = ()
    host: str | None = None
    port: str | None = None

    def text(self, volatile: bool = True) -> str:
        head = self.purpose + (f" {self.instance}" if self.instance else "")
        body = self.what + (f" ({self.detail})" if volatile and self.detail else "")
        return f"{head}: {body}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cookie": f"{self.cookie:#018x}",
            "purpose": self.purpose,
            "instance": self.instance,
            "tag": self.tag,
            "what": self.what,
            "detail": self.detail,
            "mac": self.mac,
            "ips": list(self.ips),
            "host": self.host,
            "port": self.port,
        }


def _ep_text(mac: str, ips: Sequence[str]) -> str:
    return f"{mac} {','.join(ips)}" if ips else mac


def origin_of(
    cookie: int,
    match: Sequence[Field],
    actions: Sequence[Field],
    view: AgentView,
    ports: Mapping[int, str],
    table: int = -1,
    priority: int = 0,
) -> Origin:
    """Decode ``cookie`` and say what made the flow: the VM port, the learned
    endpoint, the member host, the pipeline, a drop rule.  Without the agent's state
    the endpoint tag is shown raw next to what the flow itself says."""
    origin = _origin(cookie, match, actions, view, ports, table, priority)
    if not view.known and origin.tag and origin.purpose in _TAGGED:
        return replace(origin, what=f"{origin.what} [tag {origin.tag:#08x}]")
    return origin


_TAGGED = frozenset(
    p.name.lower()
    for p in (
        Purpose.LOCAL_PORT,
        Purpose.LOCAL_ENDPOINT,
        Purpose.LEARNED,
        Purpose.ARP_LOCAL,
        Purpose.ARP_LEARNED,
        Purpose.MEMBER,
        Purpose.DROP_SPOOF,
        Purpose.DHCP,
    )
)


def _origin(
    cookie: int,
    match: Sequence[Field],
    actions: Sequence[Field],
    view: AgentView,
    ports: Mapping[int, str],
    table: int = -1,
    priority: int = 0,
) -> Origin:
    decoded = cookies.decode(cookie)
    if decoded is None:
        return Origin(cookie, "foreign", None, 0, "not a DOVE flow (foreign cookie)")
    p, instance, tag = decoded.purpose, decoded.instance or None, decoded.tag
    base = Origin(cookie, p.name.lower(), instance, tag, PURPOSE_MEANING[p])

    def with_(**kw: Any) -> Origin:
        return replace(base, **kw)

    if p in (Purpose.LOCAL_PORT, Purpose.LOCAL_ENDPOINT, Purpose.ARP_LOCAL, Purpose.DHCP) or (
        p is Purpose.DROP_SPOOF and instance
    ):
        ep = view.local_port(instance, tag)
        name = ep.port if ep else ports.get(tag, f"ofport {tag}")
        port = f"VM port {name} (ofport {tag})"
        if ep is None:
            what = port + (" (the agent does not list it)" if view.known else "")
            return with_(what=what, port=name)
        lead = {
            Purpose.LOCAL_PORT: port,
            Purpose.LOCAL_ENDPOINT: f"delivery to {port}",
            Purpose.ARP_LOCAL: f"ARP answered for {port}",
            Purpose.DROP_SPOOF: f"anti-spoofing of {port}",
            Purpose.DHCP: f"DHCP answered for {port}",
        }[p]
        return with_(
            what=f"{lead}, {_ep_text(ep.mac, ep.ips)}",
            detail=f"seq {ep.seq}",
            mac=ep.mac,
            ips=ep.ips,
            port=name,
        )
    if p in (Purpose.LEARNED, Purpose.ARP_LEARNED) and instance:
        mac = _mac_of(match, actions)
        if mac is None:
            learned = view.learned_by_tag(instance, tag)
        else:
            mine = (e for e in view.learned if e.instance == instance and e.mac == mac)
            learned = next(mine, None)
        host = written(actions, "tun_dst")
        if learned is None:
            shown = mac or f"MAC ending {mac_text(tag)[9:]}"
            where = f" at {host}" if isinstance(host, str) else ""
            what = f"{shown}{where}" + (" (the agent does not list it)" if view.known else "")
            return with_(what=what, mac=mac, host=host if isinstance(host, str) else None)
        where = f"at {learned.host}"
        if learned.side == "remote":
            where = f"behind remote proxy {learned.host}"
        elif learned.side == "site":
            where = f"in the site at {learned.host}"
        prefix = "ARP answered for " if p is Purpose.ARP_LEARNED else ""
        answered = (
            f", answered by {learned.answered_by}" if learned.answered_by != learned.host else ""
        )
        return with_(
            what=f"{prefix}{_ep_text(learned.mac, learned.ips)} {where}",
            detail=f"seq {learned.seq}, learned {learned.age:g}s ago{answered}",
            mac=learned.mac,
            ips=learned.ips,
            host=learned.host,
        )
    if p in (Purpose.VTEP_LEARNED, Purpose.VTEP_STATIC) and instance:
        mac = _mac_of(match, actions)
        host = written(actions, "tun_dst")
        host = host if isinstance(host, str) else None
        shown = mac or "a MAC"
        where = f" behind external VTEP {host}" if host else " behind an external VTEP"
        if p is Purpose.VTEP_LEARNED and table_name(table) == "l2_forward":
            return with_(what=f"{shown}{where}, learned in the datapath", mac=mac, host=host)
        if p is Purpose.VTEP_STATIC:
            prefix = "ARP answered for " if table_name(table) == "arp_nd" else ""
            return with_(what=f"{prefix}{shown}{where}, declared", mac=mac, host=host)
    if p is Purpose.MEMBER and instance and any(f.key == "learn" for f in actions):
        src = next((f.value for f in match if f.key == "tun_src"), None)
        host = src if isinstance(src, str) else f"*.{_ip_tail(tag)}"
        return with_(what=f"accepts tunnels from external VTEP {host}, learns its MACs", host=host)
    if p is Purpose.MEMBER and instance:
        src = next((f.value for f in match if f.key == "tun_src"), None)
        host = src if isinstance(src, str) else _host_by_tag(view, tag)
        if host is None:
            return with_(what=f"accepts tunnels from a member at *.{_ip_tail(tag)}")
        return with_(what=f"accepts tunnels from {view.host_role(host)} {host}", host=host)
    if p is Purpose.INSTANCE and instance and tag == TAG_FLOOD and view.role == "proxy":
        md = next((f.value for f in match if f.key == "metadata"), None)
        from_wan = isinstance(md, str) and int(md.split("/")[0], 16) & FROM_WAN
        return with_(
            what="broadcast from a remote proxy: to the site members' group"
            if from_wan
            else "broadcast from the site: to the remote proxies' group"
        )
    if p is Purpose.INSTANCE and instance:
        return with_(what=INSTANCE_TAGS.get(tag, f"tag {tag}"))
    if p is Purpose.PIPELINE:
        return with_(what=pipeline_meaning(table, priority))
    if p is Purpose.DROP_MISS and table_name(table) == "flood":
        return with_(what="no flood group for the packet's instance")
    if p is Purpose.DROP_MISS and table_name(table) == "l2_forward":
        return with_(what="no instance took the packet (not a VM port's, not the overlay's)")
    return base


def _mac_of(match: Sequence[Field], actions: Sequence[Field]) -> str | None:
    """The endpoint's MAC as the flow itself names it: the destination it forwards,
    or the answer an ARP responder writes."""
    for f in match:
        if f.key in ("dl_dst", "eth_dst") and isinstance(f.value, str) and "/" not in f.value:
            return f.value
    value = written(actions, "eth_src")
    return value if isinstance(value, str) else None


def _ip_tail(tag: int) -> str:
    return ".".join(str((tag >> s) & 0xFF) for s in (16, 8, 0))


def _host_by_tag(view: AgentView, tag: int) -> str | None:
    for host in sorted(view.known_hosts()):
        if int(IPv4Address(host)) & cookies.TAG_MASK == tag:
            return host
    return None


def metadata_text(value: int) -> str:
    """The metadata bits we write, in words."""
    words = [f"instance {value & INSTANCE_MASK}"]
    if value & FROM_TUNNEL:
        words.append("from the overlay")
    if value & FROM_WAN:
        words.append("from another site")
    return ", ".join(words)


# ------------------------------------------------------------------ filters


@dataclass(frozen=True)
class FlowFilter:
    """What ``dovectl flows`` keeps: flows of one instance, naming a MAC or an IP,
    in one table (each None: no restriction)."""

    instance: int | None = None
    mac: str | None = None
    ip: str | None = None
    table: int | None = None

    def keep(self, flow: Flow, origin: Origin) -> bool:
        if self.instance is not None and origin.instance != self.instance:
            return False
        if self.table is not None and flow.table != self.table:
            return False
        if self.mac is not None and not _names(flow, origin, self.mac, MAC_FIELDS, MAC_TARGETS):
            return False
        if self.ip is not None and not _names(flow, origin, self.ip, IP_FIELDS, IP_TARGETS):
            return False
        return True

    def keep_group(self, group: Group) -> bool:
        if self.instance is not None and group.instance != self.instance:
            return False
        if self.table is not None and table_name(self.table) != "flood":
            return False
        if self.mac is not None:
            return False
        if self.ip is not None:
            return any(written(b, "tun_dst") == self.ip for b in group.buckets)
        return True


def _names(
    flow: Flow, origin: Origin, value: str, fields: frozenset[str], targets: frozenset[str]
) -> bool:
    """Whether ``flow`` matches ``value`` in one of ``fields``, writes it into one of
    ``targets``, or was made for it."""
    if any(f.key in fields and f.value == value for f in flow.match):
        return True
    for f in flow.actions:
        if f.key == "set_field" and f.target in targets and f.value == value:
            return True
    return value in (origin.mac, origin.host) or value in origin.ips
