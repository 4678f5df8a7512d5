"""A bridge's dump made readable: every flow and group parsed by Open vSwitch's own
parser (``ovs.flow``), ports and table ids given their names.

Pure: ovs-ofctl's text in, objects out.  dove_ryu.ctl.flowstate ties each flow to the
agent state that made it; ``dovectl flows``, ``dovectl trace`` and the reference
tables in ``flows/`` are built on both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ovs.flow.decoders import EthMask, IntMask, IPMask, decode_int
from ovs.flow.kv import KeyValue, KVDecoders, KVParser
from ovs.flow.ofp import OFPFlow

from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.flows import WAN_GROUP_BIT
from dove_ryu.openflow.pipeline import BY_ID, BY_NAME, INSTANCE_MASK

OFPP_LOCAL = 0xFFFE


class DumpError(ValueError):
    """A dump or a status that cannot be read; the message says which line or key."""


# NOTE (ovs 4.0.0, python/ovs/flow/ofp.py): OFPFlow decodes ``table=`` and
# ``goto_table:`` as integers only, so a dump taken with --names (table names, some
# quoted) does not parse.  Dumps are taken with --no-names; table and port names come
# from our pipeline declaration and from dump-ports-desc instead.  (ovs 3.1.2 also
# misspelt the "n_packets" counter and lacked "idle_age" among the info decoders; 4.0.0
# fixed that, so the package's own decoders are used as they are.)


# ------------------------------------------------------------------ fields


@dataclass(frozen=True)
class Field:
    """One match field or action, as OVS printed it, with the value we reason about."""

    key: str  # the parser's key: in_port, dl_dst, output, set_field, goto_table, ...
    text: str  # as printed: 'set_field:10.99.0.2->tun_dst'
    value: str | int | None = None  # MAC or IP as text, a number, a port
    target: str = ""  # set_field: the field written

    def render(self, ports: Mapping[int, str]) -> str:
        """As printed, with port numbers and table ids given their names."""
        if self.key == "in_port" and isinstance(self.value, int):
            return f"in_port={ports.get(self.value, self.value)}"
        if self.key == "output" and isinstance(self.value, int) and self.text.startswith("output"):
            return f"output:{ports.get(self.value, self.value)}"
        if self.key == "goto_table" and isinstance(self.value, int) and self.value in BY_ID:
            return f"goto_table:{BY_ID[self.value].name}"
        return self.text


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def _plain(value: Any) -> str | int | None:
    """A parsed value as something we can compare and print: MACs and exact IPs as
    text, fully masked integers as ints, anything masked as its text."""
    if isinstance(value, EthMask):
        return mac_text(int(value.eth)) if value.mask is None else str(value)
    if isinstance(value, IPMask):
        if value.cidr() and str(value.mask) == "255.255.255.255":
            return str(value.ip)
        return str(value)
    if isinstance(value, IntMask):
        return int(value.value) if value.fully() else str(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return value
    return None


def _raw(section: str, kv: KeyValue) -> str:
    """The key-value exactly as it stands in ``section``."""
    meta = kv.meta
    if meta.vpos < 0:
        return str(meta.kstring)
    end = meta.vpos + len(meta.vstring) + len(meta.end_delim)
    return section[meta.kpos : end]


def _field(section: str, kv: KeyValue) -> Field:
    key, value = str(kv.key), kv.value
    text = _raw(section, kv)
    if key == "output" and isinstance(value, dict):
        port = value.get("port")
        return Field(key, text, port if isinstance(port, int | str) else None)
    if key == "set_field" and isinstance(value, dict):
        target = str(value.get("dst", {}).get("field", ""))
        written = value.get("value", {})
        plain = _plain(next(iter(written.values()))) if isinstance(written, dict) else None
        return Field(key, text, plain, target)
    if key == "load" and isinstance(value, dict) and isinstance(value.get("value"), int):
        # A flow a learn action wrote (external VTEPs) loads the tunnel key: read as the
        # set_field the agent's own flows use.
        target = _LOADED.get(str(value.get("dst", {}).get("field", "")), "")
        loaded = value["value"]
        plain = str(IPv4Address(loaded)) if target == "tun_dst" else loaded
        return Field(key, text, plain, target)
    if key == "check_pkt_larger" and isinstance(value, dict):
        return Field(key, text, int(value.get("pkt_len", 0)))
    return Field(key, text, _plain(value))


# The NXM names a learned flow's loads print, as the set_field names of our flows.
_LOADED = {"NXM_NX_TUN_ID": "tun_id", "NXM_NX_TUN_IPV4_DST": "tun_dst"}


def parse_fields(text: str, decoders: KVDecoders) -> tuple[Field, ...]:
    """Fields of one section (a match, or a list of actions) with the parser's decoders."""
    parser = KVParser(text, decoders)
    try:
        parser.parse()
    except Exception as e:  # the parser raises its own ParseError and ValueErrors
        raise DumpError(f"cannot parse {text!r}: {e}") from e
    return tuple(_field(text, kv) for kv in parser.kv())


def parse_match(text: str) -> tuple[Field, ...]:
    return parse_fields(text, OFPFlow.match_decoders())


def parse_actions(text: str) -> tuple[Field, ...]:
    return parse_fields(text, OFPFlow.action_decoders())


def first(fields: Iterable[Field], key: str) -> Field | None:
    return next((f for f in fields if f.key == key), None)


def written(fields: Iterable[Field], target: str) -> str | int | None:
    """What the last set_field (or load) to ``target`` among ``fields`` writes."""
    value = None
    for f in fields:
        if f.key in ("set_field", "load") and f.target == target:
            value = f.value
    return value


def render(fields: Iterable[Field], ports: Mapping[int, str]) -> str:
    return ",".join(f.render(ports) for f in fields)


# ------------------------------------------------------------------ flows and groups


@dataclass(frozen=True)
class Flow:
    """One line of ``ovs-ofctl dump-flows``."""

    table: int
    priority: int
    cookie: int
    match: tuple[Field, ...]
    actions: tuple[Field, ...]
    n_packets: int = 0
    n_bytes: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: tuple[str, ...] = ()  # send_flow_rem and other valueless info keys

    @property
    def table_name(self) -> str:
        return table_name(self.table)

    @property
    def decoded(self) -> cookies.Cookie | None:
        return cookies.decode(self.cookie)

    def get(self, key: str) -> str | int | None:
        found = first(self.match, key)
        return found.value if found else None

    def render(self, ports: Mapping[int, str]) -> tuple[str, str]:
        """Match (with the priority first, as ovs-ofctl prints it) and actions, named."""
        match = render(self.match, ports)
        prio = f"priority={self.priority}"
        return (f"{prio},{match}" if match else prio), render(self.actions, ports)


def table_name(table_id: int) -> str:
    table = BY_ID.get(table_id)
    return table.name if table else str(table_id)


def table_id(name: str) -> int:
    """A table by name or number; DumpError if the pipeline has no such table."""
    if name.isdigit():
        return int(name)
    if name not in BY_NAME:
        raise DumpError(f"no table {name!r}; the pipeline has {', '.join(BY_NAME)}")
    return BY_NAME[name].table_id


def parse_flow(line: str) -> Flow:
    try:
        parsed = OFPFlow(line.strip())
    except Exception as e:  # the parser raises ParseError or ValueError
        raise DumpError(f"cannot parse flow {line.strip()!r}: {e}") from e
    info, match_section = parsed.info, parsed.section("match")
    match = tuple(
        _field(match_section.string, kv) for kv in parsed.match_kv if kv.key != "priority"
    )
    actions_section = parsed.section("actions")
    actions = tuple(_field(actions_section.string, kv) for kv in parsed.actions_kv)

    def number(key: str) -> int:
        value = info.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    return Flow(
        table=number("table"),
        priority=int(parsed.match.get("priority", 0x8000)),
        cookie=number("cookie"),
        match=match,
        actions=actions,
        n_packets=number("n_packets"),
        n_bytes=number("n_bytes"),
        idle_timeout=number("idle_timeout"),
        hard_timeout=number("hard_timeout"),
        flags=tuple(sorted(k for k, v in info.items() if v is True)),
    )


def parse_flows(text: str) -> list[Flow]:
    """Every flow of a dump (the reply header line is skipped)."""
    return [parse_flow(line) for line in text.splitlines() if "actions=" in line]


@dataclass(frozen=True)
class Group:
    """One line of ``ovs-ofctl dump-groups``."""

    group_id: int
    type: str
    buckets: tuple[tuple[Field, ...], ...]

    @property
    def instance(self) -> int:
        return self.group_id & INSTANCE_MASK

    @property
    def toward_wan(self) -> bool:
        """A proxy's group for flooding from its site to the remote proxies."""
        return bool(self.group_id & WAN_GROUP_BIT)

    def render(self, ports: Mapping[int, str]) -> str:
        buckets = "".join(f",bucket=actions={render(b, ports)}" for b in self.buckets)
        return f"group_id={self.group_id},type={self.type}{buckets}"

    def describe(self, role: str = "host") -> str:
        if self.toward_wan:
            return f"flood of instance {self.instance} from the site: once to each remote site"
        if role == "proxy":
            return f"flood of instance {self.instance} from a remote proxy: to the site's members"
        return f"flood of instance {self.instance}: local ports and member hosts"


_GROUP_HEADER = KVDecoders({"group_id": decode_int}, default=lambda k, v: (k, v))


def parse_groups(text: str) -> list[Group]:
    groups = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("group_id="):
            continue
        header, *buckets = line.split(",bucket=")
        parser = KVParser(header, _GROUP_HEADER)
        try:
            parser.parse()
        except Exception as e:  # the parser's own errors
            raise DumpError(f"cannot parse group {line!r}: {e}") from e
        head = {kv.key: kv.value for kv in parser.kv()}
        groups.append(
            Group(
                int(head["group_id"]),
                str(head.get("type", "")),
                tuple(parse_actions(b.partition("actions=")[2]) for b in buckets),
            )
        )
    return sorted(groups, key=lambda g: g.group_id)


_PORT_DESC = re.compile(r"^\s*(\d+|LOCAL)\((.*)\): addr:")


def parse_ports(text: str) -> dict[int, str]:
    """OpenFlow port number -> name, from ``ovs-ofctl dump-ports-desc``."""
    ports = {}
    for line in text.splitlines():
        found = _PORT_DESC.match(line)
        if found:
            number = OFPP_LOCAL if found.group(1) == "LOCAL" else int(found.group(1))
            ports[number] = found.group(2)
    return ports


def tunnel_ofport(flows: Iterable[Flow]) -> int | None:
    """The tunnel port: the one port whose non-member packets classify drops."""
    for flow in flows:
        decoded = flow.decoded
        if decoded and decoded.purpose is Purpose.DROP_NONMEMBER and not decoded.instance:
            port = flow.get("in_port")
            if isinstance(port, int):
                return port
    return None
