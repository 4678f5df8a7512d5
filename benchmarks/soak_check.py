"""The soak's verdicts, from facts gathered during the run (pure: no Mininet).

- ``stale_state``: every agent's learned state (its admin status) against where the VMs
  really are: no learned endpoint pointing where the VM is not, no local endpoint that is
  not plugged here, no member listed that serves nothing, none missing.
- ``ping_outcome``: a ``ping -D`` log's sent, received and longest silence.
- ``Stream`` / ``stream_problems``: a TCP stream that reset, stalled or was corrupted.
- ``rss_leak``: an agent process's RSS growth after its warm-up, against a bound.
- ``foreign_frames``: frames in a VM's capture that carry another tenant's marker.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STALL_S = 20.0  # a stream whose receiver gets nothing this long has stalled
PING_BROKEN_S = 20.0  # a ping pair silent this long lost reachability
RSS_WARMUP_S = 30.0  # an agent process's RSS baseline is taken this long after it starts
RSS_BOUND_MIB = 16.0  # growth past the baseline allowed, absolute...
RSS_BOUND_SHARE = 0.25  # ...and relative: a leak is growth beyond both
MARKER = b"SOAKT"  # every payload the soak sends carries MARKER + tenant digit


# ----------------------------------------------------------------------- stale state


@dataclass(frozen=True)
class NodeFact:
    """An agent's node: its name, site, role ('host' or 'proxy') and addresses."""

    name: str
    site: int
    role: str
    underlay_ip: str
    wan_ip: str = ""


@dataclass(frozen=True)
class VmFact:
    """A running VM (its port is plugged) and the node it is plugged into."""

    name: str
    instance: int
    mac: str
    ip: str
    node: str


@dataclass
class _World:
    nodes: dict[str, NodeFact]
    vms: dict[tuple[int, str], VmFact]
    active: dict[int, NodeFact] = field(default_factory=dict)  # site -> its active proxy

    def site_of(self, vm: VmFact) -> int:
        return self.nodes[vm.node].site

    def hv_ips(self, site: int, instance: int, but: str = "") -> set[str]:
        """The underlay addresses of ``site``'s hosts with a VM of ``instance``."""
        return {
            self.nodes[v.node].underlay_ip
            for v in self.vms.values()
            if v.instance == instance and self.site_of(v) == site and v.node != but
        }

    def other_sites(self, site: int, instance: int) -> set[int]:
        return {self.site_of(v) for v in self.vms.values() if v.instance == instance} - {site}


def _active_proxies(
    nodes: Iterable[NodeFact], statuses: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[int, NodeFact], list[str]]:
    """Each site's active proxy, from the proxies' own word; problems if not exactly one."""
    by_site: dict[int, list[NodeFact]] = {}
    proxies = [n for n in nodes if n.role == "proxy"]
    for n in proxies:
        by_site.setdefault(n.site, [])
        if statuses.get(n.name, {}).get("active"):
            by_site[n.site].append(n)
    problems = [
        f"site {s}: {len(found)} active proxies ({', '.join(n.name for n in found) or 'none'})"
        for s, found in sorted(by_site.items())
        if len(found) != 1
    ]
    return {s: found[0] for s, found in by_site.items() if len(found) == 1}, problems


def _learned(w: _World, me: NodeFact, instance: int, row: Mapping[str, Any]) -> str | None:
    """What is wrong with one learned endpoint of ``me``, or None."""
    where = f"{me.name}: instance {instance}: learned {row['mac']} at {row['host']}"
    vm = w.vms.get((instance, str(row["mac"])))
    if vm is None:
        return f"{where}, but no such VM runs"
    site = w.site_of(vm)
    if site == me.site:
        want = w.nodes[vm.node].underlay_ip
    elif me.role == "host":
        want = w.active[me.site].underlay_ip if me.site in w.active else "?"
    else:
        want = w.active[site].wan_ip if site in w.active else "?"
    if str(row["host"]) != want:
        return f"{where}, but {vm.name} is on {vm.node} (site {site}): expected {want}"
    if not set(map(str, row.get("ips", []))) <= {vm.ip, link_local(vm.mac)}:
        return f"{where} with IPs {row['ips']}, but {vm.name} has {vm.ip}, {link_local(vm.mac)}"
    return None


def link_local(mac: str) -> str:
    """The IPv6 link-local address a VM's kernel gives itself from its MAC (EUI-64): the
    agents learn it too (IPv6 at layer 2), so it is one of the VM's addresses."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def _members(
    w: _World, me: NodeFact, instance: int, listed: Iterable[str], want: set[str], what: str
) -> list[str]:
    got = set(listed)
    out = [f"{me.name}: instance {instance}: {what} {h} listed, serves nothing" for h in got - want]
    out += [f"{me.name}: instance {instance}: {what} {h} missing" for h in want - got]
    return sorted(out)


def _node_problems(w: _World, me: NodeFact, status: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    instances: Mapping[str, Any] = status.get("instances", {})
    mine = {(v.instance, v.mac) for v in w.vms.values() if v.node == me.name}
    for key, info in instances.items():
        instance = int(key)
        for ep in info.get("local", []):
            if (instance, ep["mac"]) not in mine:
                problems.append(f"{me.name}: instance {instance}: local {ep['mac']} not here")
        problems += filter(None, (_learned(w, me, instance, r) for r in info.get("learned", [])))
    for instance, mac in sorted(mine):
        local = instances.get(str(instance), {}).get("local", [])
        if not any(ep["mac"] == mac for ep in local):
            problems.append(f"{me.name}: instance {instance}: {mac} plugged here, not local")
    carried = {int(k) for k in instances} | {v.instance for v in w.vms.values()}
    for instance in sorted({i for i, _ in mine} if me.role == "host" else carried):
        info = instances.get(str(instance), {})
        want = w.hv_ips(me.site, instance, but=me.name)
        if me.role == "host":
            if w.other_sites(me.site, instance) and me.site in w.active:
                want.add(w.active[me.site].underlay_ip)
            problems += _members(w, me, instance, info.get("members", []), want, "member")
            continue
        problems += _members(w, me, instance, info.get("members", []), want, "member")
        remote = {w.active[s].wan_ip for s in w.other_sites(me.site, instance) if s in w.active}
        listed = info.get("remote_proxies", [])
        problems += _members(w, me, instance, listed, remote, "remote proxy")
    return problems


def stale_state(
    nodes: Iterable[NodeFact],
    vms: Iterable[VmFact],
    statuses: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Every disagreement between the agents' state and where the VMs are, one line each.

    A host must list, per instance it serves: the other hosts of its site serving it, plus
    its site's active proxy if another site serves it; learned endpoints at their host
    (same site) or at its site's active proxy (another site). A proxy: its site's hosts
    serving each instance it carries, the other sites' active proxies serving it, learned
    endpoints at their host (its site) or at their site's active proxy's WAN address.
    Endpoints of VMs that are not running and local endpoints not plugged there are stale.
    """
    nodes = list(nodes)
    active, problems = _active_proxies(nodes, statuses)
    w = _World({n.name: n for n in nodes}, {(v.instance, v.mac): v for v in vms}, active)
    for n in nodes:
        status = statuses.get(n.name)
        if status is None:
            problems.append(f"{n.name}: no status (agent not answering)")
            continue
        problems += _node_problems(w, n, status)
    return problems


# ----------------------------------------------------------------------------- pings

PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class PingOutcome:
    sent: int
    received: int
    longest_gap_s: float  # between replies (or from start/to end), seconds

    @property
    def lost(self) -> int:
        return self.sent - self.received


def ping_outcome(log: str, started: float, ended: float) -> PingOutcome:
    """A ``ping -D`` log; ``started``/``ended`` (epoch s) bound the silence at either end."""
    replies = sorted({float(t) for t, _ in PING_REPLY.findall(log)})
    points = [started, *replies, ended]
    gap = max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)
    m = PING_SUMMARY.search(log)
    sent = int(m.group(1)) if m else len(replies)
    received = int(m.group(2)) if m else len(replies)
    return PingOutcome(sent, received, round(gap, 2))


# ---------------------------------------------------------------------------- streams


@dataclass
class Stream:
    """One long-lived TCP stream, as the soak saw it: progress lines of both ends."""

    name: str
    sent: int = 0
    received: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)  # receiver: (t, bytes)
    errors: list[str] = field(default_factory=list)  # 'reset', 'corrupt at ...', ...
    finished: bool = False  # both ends exited cleanly at the end

    def longest_stall(self, started: float, ended: float) -> float:
        """The longest time the received byte count did not grow, seconds."""
        last_t, last_n, worst = started, 0, 0.0
        for t, n in self.progress:
            if n > last_n:
                worst = max(worst, t - last_t)
                last_t, last_n = t, n
        return round(max(worst, ended - last_t), 2)


def stream_problems(s: Stream, started: float, ended: float) -> list[str]:
    """Why a stream counts as broken: an error, a stall, or bytes lost at the end."""
    out = [f"{s.name}: {e}" for e in s.errors]
    stall = s.longest_stall(started, ended)
    if stall > STALL_S:
        out.append(f"{s.name}: stalled {stall:.1f}s")
    if not s.finished:
        out.append(f"{s.name}: did not finish cleanly")
    elif s.received != s.sent:
        out.append(f"{s.name}: sent {s.sent} bytes, received {s.received}")
    return out


# -------------------------------------------------------------------------------- RSS


def rss_leak(samples: list[tuple[float, float]], started: float) -> str | None:
    """A verdict on one agent process's RSS samples ((t, MiB)) since ``started``: None, or
    why it leaks (growth from the first sample after the warm-up to the last beyond both
    RSS_BOUND_MIB and RSS_BOUND_SHARE). Too short a life to judge: None."""
    after = [(t, m) for t, m in samples if t - started >= RSS_WARMUP_S]
    if len(after) < 2:
        return None
    base, last = after[0][1], after[-1][1]
    grew = last - base
    if grew > RSS_BOUND_MIB and grew > RSS_BOUND_SHARE * base:
        return f"RSS {base:.1f} -> {last:.1f} MiB (+{grew:.1f}) after warm-up"
    return None


# ---------------------------------------------------------------------- foreign frames


def pcap_frames(data: bytes) -> list[bytes]:
    """The frames of a classic pcap file (either byte order; a cut-off last frame kept)."""
    if len(data) < 24:
        return []
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)  # fmt: skip
    if order is None:
        raise ValueError("not a pcap file")
    frames, off = [], 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from(f"{order}I", data, off + 8)[0]
        frames.append(data[off + 16 : off + 16 + caplen])
        off += 16 + caplen
    return frames


def foreign_frames(frames: Iterable[bytes], tenant: int) -> list[bytes]:
    """The frames that carry another tenant's marker (MARKER + a digit other than ours)."""
    mine = str(tenant).encode()
    found = []
    for frame in frames:
        at = frame.find(MARKER)
        while at >= 0:
            digit = frame[at + len(MARKER) : at + len(MARKER) + 1]
            if digit.isdigit() and digit != mine:
                found.append(frame)
                break
            at = frame.find(MARKER, at + 1)
    return found


def marker(tenant: int, label: str = "") -> bytes:
    """A tenant's payload pattern: MARKER, the tenant's digit, a label, 16 bytes in all."""
    if not 1 <= tenant <= 9:
        raise ValueError("the soak marks tenants 1..9")
    return (MARKER + str(tenant).encode() + b"." + label.encode()).ljust(16, b".")[:16]
