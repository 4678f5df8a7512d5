"""Taking over what a predecessor left on the switch (docs/control-plane.md, section 1).

The datapath keeps forwarding while no agent is connected (`fail_mode=secure`), so an
agent that connects (a new process, or the same one after a reconnect) never deletes
everything.  The shell reads our flows and groups from the switch and hands them here
as a `SwitchState` (plain values, no os-ken types).  `Takeover`:

1. adopts what only the switch remembers: learned remote endpoints (the `learned`
   flows: instance, MAC, tunnel destination; their addresses from `arp_learned`) and
   the members of each instance (the flood groups' buckets);
2. picks a new cookie generation, under which the role installs its whole state: an
   ``OFPFC_ADD`` of the same match and priority replaces a flow in place, and a group
   that exists is modified, not added;
3. once the state is settled (each adopted member heard from again, or a grace time
   passed) deletes what is stale: flows of the other generations, groups the state
   no longer has.  A crash before that leaves two generations, both swept by the next
   process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address

from dove_ryu.model import Endpoint
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import Action, GroupCommand, GroupMod, OfMsg, SetField
from dove_ryu.openflow.pipeline import (
    DATAPATH_LEARNED,
    EXT_OUT,
    delete_generation_but_learned,
    group_mod,
)


@dataclass(frozen=True)
class FoundFlow:
    """One of our flows as the switch holds it."""

    table_id: int
    priority: int
    cookie: int
    match: Mapping[str, object]
    actions: tuple[Action, ...] = ()  # the apply-actions the shell could read


@dataclass(frozen=True)
class FoundGroup:
    group_id: int
    buckets: tuple[tuple[Action, ...], ...] = ()


@dataclass(frozen=True)
class SwitchState:
    """What the switch held when the agent connected (only our flows: cookie marker).

    ``flows_read`` / ``groups_read`` False: the switch did not answer that read in
    time, so the switch may hold more than ``flows`` / ``groups`` say."""

    flows: tuple[FoundFlow, ...] = ()
    groups: tuple[FoundGroup, ...] = ()
    flows_read: bool = True
    groups_read: bool = True

    @property
    def complete(self) -> bool:
        return self.flows_read and self.groups_read

    def generations(self) -> Counter[int]:
        """How many of our flows each generation has (the agent's: not those the
        datapath learned, which keep the generation of the flow that learned them)."""
        found = (
            cookies.generation(f.cookie)
            for f in self.flows
            if (d := cookies.decode(f.cookie)) is None or d.purpose is not DATAPATH_LEARNED
        )
        return Counter(g for g in found if g is not None)


@dataclass
class Adopted:
    """What a predecessor knew that only the switch remembers."""

    endpoints: list[Endpoint] = field(default_factory=list)
    members: dict[int, set[IPv4Address]] = field(default_factory=dict)  # instance -> hosts
    # A gateway's external MACs (ext_out): a neighbor's by its address, None: the next hop.
    external: dict[IPv4Address | None, str] = field(default_factory=dict)
    # What the datapath learned behind external VTEPs: (instance, the VTEP's cookie tag).
    vtep_learned: set[tuple[int, int]] = field(default_factory=set)

    def hosts(self) -> set[IPv4Address]:
        return {h for hosts in self.members.values() for h in hosts}


def pick_generation(found: Counter[int]) -> int:
    """The generation after the one most flows have (mod 16), skipping any present;
    0 on an empty switch (a fresh start's flows read as they always did)."""
    if not found:
        return 0
    most = max(sorted(found), key=lambda g: found[g])
    for step in range(1, cookies.GENERATIONS + 1):
        gen = (most + step) % cookies.GENERATIONS
        if gen not in found:
            return gen
    return (most + 1) % cookies.GENERATIONS  # every generation present: a stuck sweep


def groups_in(msgs: Iterable[OfMsg]) -> set[int]:
    """The groups that ``msgs`` (a role's whole state) add or modify."""
    return {
        m.group_id for m in msgs if isinstance(m, GroupMod) and m.command is not GroupCommand.DELETE
    }


def _set_fields(actions: Iterable[Action]) -> dict[str, object]:
    return {a.field: a.value for a in actions if isinstance(a, SetField)}


def _address(value: object) -> IPv4Address | None:
    try:
        return IPv4Address(str(value))
    except ValueError:
        return None


def _address6(value: object) -> IPv6Address | None:
    try:
        return IPv6Address(str(value))
    except ValueError:
        return None


def adopt(state: SwitchState, member_flows: bool = False) -> Adopted:
    """The learned endpoints and instance members the switch's flows and groups show:
    members from the flood groups' buckets, or (``member_flows``: a gateway, which has
    no groups) from its classify flows accepting each member; a gateway's external
    MACs from its ext_out flows (or source NAT would wait for ARP after a restart)."""
    adopted = Adopted()
    ips: dict[tuple[int, str], list[IPv4Address]] = {}
    ips6: dict[tuple[int, str], list[IPv6Address]] = {}
    where: dict[tuple[int, str], IPv4Address] = {}
    for flow in state.flows:
        decoded = cookies.decode(flow.cookie)
        if decoded is None:
            continue
        if decoded.purpose is Purpose.VTEP_LEARNED:
            adopted.vtep_learned.add((decoded.instance, decoded.tag))
            continue
        sets = _set_fields(flow.actions)
        if decoded.purpose is Purpose.LEARNED:
            mac, host = flow.match.get("eth_dst"), _address(sets.get("tun_ipv4_dst"))
            if isinstance(mac, str) and host is not None:
                where[(decoded.instance, mac)] = host
        elif decoded.purpose is Purpose.ARP_LEARNED and "ipv6_nd_target" in flow.match:
            # A Neighbor Advertisement built for the endpoint's IPv6 address.
            mac, ip6 = sets.get("eth_src"), _address6(flow.match["ipv6_nd_target"])
            if isinstance(mac, str) and ip6 is not None:
                ips6.setdefault((decoded.instance, mac), []).append(ip6)
        elif decoded.purpose is Purpose.ARP_LEARNED:
            mac, ip = sets.get("arp_sha"), _address(sets.get("arp_spa"))
            if isinstance(mac, str) and ip is not None:
                ips.setdefault((decoded.instance, mac), []).append(ip)
        elif decoded.purpose is Purpose.NEIGHBOR:  # a routed address: its MAC
            mac, ip = sets.get("eth_dst"), _address(flow.match.get("ipv4_dst"))
            if isinstance(mac, str) and ip is not None:
                ips.setdefault((decoded.instance, mac), []).append(ip)
        elif decoded.purpose is Purpose.EXTERNAL and flow.table_id == EXT_OUT.table_id:
            mac, dst = sets.get("eth_dst"), flow.match.get("ipv4_dst")
            if isinstance(mac, str):  # not the on-link miss (to the agent): no MAC
                where_ext = _address(dst) if isinstance(dst, str) else None
                if dst is None or where_ext is not None:
                    adopted.external[where_ext] = mac
        elif decoded.purpose is Purpose.MEMBER and member_flows:
            host = _address(flow.match.get("tun_ipv4_src"))
            if host is not None and decoded.instance:
                adopted.members.setdefault(decoded.instance, set()).add(host)
    for (instance, mac), host in sorted(where.items(), key=lambda kv: (kv[0], str(kv[1]))):
        known = tuple(sorted(set(ips.get((instance, mac), []))))
        known6 = tuple(sorted(set(ips6.get((instance, mac), []))))
        # Sequence 0: any announcement or answer about the endpoint is newer.
        adopted.endpoints.append(Endpoint(instance, mac, known, host, 0, known6))
    for group in state.groups:
        for bucket in group.buckets:
            sets = _set_fields(bucket)
            tunnel_id, host = sets.get("tunnel_id"), _address(sets.get("tun_ipv4_dst"))
            if isinstance(tunnel_id, int) and tunnel_id and host is not None:
                adopted.members.setdefault(tunnel_id, set()).add(host)
    return adopted


class Takeover:
    """The agent's cookie generation, and what is stale until the state settles."""

    def __init__(self, grace: float) -> None:
        self.grace = grace  # seconds after a take-over before stale state goes anyway
        self.generation = 0
        self.stale_generations: set[int] = set()
        self.found_groups: set[int] = set()
        self.waiting_for: set[IPv4Address] = set()  # adopted members not heard from yet
        self.settle_by: float | None = None  # None: nothing to sweep
        self.groups_unknown = False  # the switch's groups were not read: any may exist

    def begin(
        self,
        now: float,
        found: SwitchState,
        me: Iterable[IPv4Address],
        member_flows: bool = False,
    ) -> Adopted:
        """A switch connected holding ``found``: the new generation, and what to adopt
        (`adopt`; ``me``: our own addresses, never a member or an endpoint's host)."""
        counts = found.generations()
        if found.flows_read:
            self.generation = pick_generation(counts)
            self.stale_generations = set(counts) - {self.generation}
        else:
            # Which generation the predecessor used is unknown: one other than ours so
            # far, and every other one stale, so the sweep removes its leftovers
            # whichever it was (a predecessor's flow under ours stays, as ADD replaces
            # what we install).
            self.generation = (self.generation + 1) % cookies.GENERATIONS
            self.stale_generations = set(range(cookies.GENERATIONS)) - {self.generation}
        self.found_groups = {g.group_id for g in found.groups}
        self.groups_unknown = not found.groups_read
        adopted = adopt(found, member_flows)
        mine = set(me)
        for hosts in adopted.members.values():
            hosts -= mine
        adopted.endpoints = [e for e in adopted.endpoints if e.host not in mine]
        self.waiting_for = adopted.hosts()
        pending = self.stale_generations or self.found_groups
        self.settle_by = now + self.grace if pending else None
        return adopted

    def install(self, msgs: list[OfMsg]) -> list[OfMsg]:
        """The whole state for the switch: a group it already holds is modified (an
        add would fail, a delete first would drop what floods through it, and the flows
        that use it: OpenFlow deletes them with the group).  When the groups were not
        read, every group is added or modified (OVS's extension): an add of one that
        exists fails with GROUP_EXISTS and leaves its old buckets."""
        return [self._group_command(m) for m in msgs]

    def _group_command(self, msg: OfMsg) -> OfMsg:
        adds = (GroupCommand.ADD, GroupCommand.ADD_OR_MODIFY)
        if not isinstance(msg, GroupMod) or msg.command not in adds:
            return msg
        if self.groups_unknown:
            return replace(msg, command=GroupCommand.ADD_OR_MODIFY)
        if msg.group_id in self.found_groups:
            return replace(msg, command=GroupCommand.MODIFY)
        return msg

    def renew(self, now: float) -> None:
        """The whole state goes in again under the next generation (a gateway's
        external port changed: the flows that named it are not the same), and the
        current one is stale at once: the next sweep removes only the flows the new
        state did not replace, never a flow still wanted (no flush)."""
        self.stale_generations.add(self.generation)
        for step in range(1, cookies.GENERATIONS):
            gen = (self.generation + step) % cookies.GENERATIONS
            if gen not in self.stale_generations:
                self.generation = gen
                break
        if self.settle_by is None:
            self.settle_by = now

    def heard(self, host: IPv4Address) -> None:
        """An announcement from ``host``: its membership is current again."""
        self.waiting_for.discard(host)

    @property
    def settling(self) -> bool:
        return self.settle_by is not None

    def sweep(self, now: float, wanted_groups: Iterable[int]) -> list[OfMsg]:
        """Once settled, the deletes of what is stale: the other generations' flows,
        and the groups found that the role's state now (``wanted_groups``) has not."""
        if self.settle_by is None or (self.waiting_for and now < self.settle_by):
            return []
        wanted = set(wanted_groups)
        # The flows the datapath learned (external VTEPs) age out by themselves.
        msgs: list[OfMsg] = [
            m for g in sorted(self.stale_generations) for m in delete_generation_but_learned(g)
        ]
        msgs += [group_mod(g, GroupCommand.DELETE) for g in sorted(self.found_groups - wanted)]
        self.settle_by = None
        self.stale_generations = set()
        self.found_groups = set()
        self.waiting_for = set()
        return msgs

    def status(self) -> dict[str, object]:
        return {
            "generation": self.generation,
            "settling": self.settling,
            "stale_generations": sorted(self.stale_generations),
            "groups_unknown": self.groups_unknown,
            "waiting_for": sorted(str(h) for h in self.waiting_for),
        }
