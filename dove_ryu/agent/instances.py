"""A host's per-instance datapath: flood group, accepted members, lingering.

An instance has flows on a host while a VM of it is here: its flood group (local
ports + one bucket per member host), the misses that punt to the agent, and one
classify flow per member whose tunnelled packets are accepted.  When the last VM
leaves, the instance lingers for `departure_memory` seconds: members' traffic is
still taken in, to egress_check, so the agent can forward it to the VM's new host
and tell the sender to un-learn (see `dove_ryu.agent.host`).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Protocol

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.agent.vteps import ExternalVteps
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import GroupCommand, OfMsg


class Acceptance(Protocol):
    """Who else classify accepts for an instance: a routed instance takes packets from
    the members of the other instances of its router, and from the gateways
    (`dove_ryu.agent.routers.Routers`)."""

    def extra_members(self, instance: int) -> set[IPv4Address]: ...

    def siblings(self, instance: int) -> tuple[int, ...]: ...


class HostInstances:
    def __init__(
        self,
        ports: LocalPorts,
        members: Membership,
        link: SwitchLink,
        linger_for: float,
        acceptance: Acceptance | None = None,
        vteps: ExternalVteps | None = None,
    ) -> None:
        self.ports = ports
        self.members = members
        self.link = link
        self.linger_for = linger_for
        self.acceptance = acceptance
        self.vteps = vteps  # external VTEPs: in the flood group, accepted, learned from
        self.lingering: dict[int, float] = {}  # instance -> until
        self.accepted: dict[int, set[IPv4Address]] = {}  # tunnel sources with a classify flow

    @property
    def announced(self) -> list[int]:
        """What this host announces: the instances it serves and those lingering (the
        VM's new host must go on taking what this host forwards to it)."""
        return sorted(self.ports.instances | set(self.lingering))

    def _group(self, instance: int, command: GroupCommand) -> list[OfMsg]:
        """The flood group (member hosts and external VTEPs), and with two tunnel ports
        the local one (split horizon)."""
        local = self.ports.ofports(instance)
        tunnel = self.link.tunnel
        vteps = self.vteps.buckets(instance) if self.vteps else ()
        msgs: list[OfMsg] = [
            flows.flood_group(
                instance, local, self.members.hosts(instance), tunnel, command, vteps=vteps
            )
        ]
        if tunnel.mixed:
            msgs.append(flows.local_flood_group(instance, local, command))
        return msgs

    def groups_of(self, instances: list[int]) -> list[OfMsg]:
        """The flood groups of those served (a member's encapsulation changed)."""
        if not self.link.connected:
            return []
        served = [i for i in sorted(instances) if i in self.ports.instances]
        return [m for i in served for m in self._group(i, GroupCommand.MODIFY)]

    def _member_flows(self, instance: int, lingering: bool = False) -> list[OfMsg]:
        tunnel = self.link.tunnel
        msgs: list[OfMsg] = [
            m
            for h in self.members.hosts(instance)
            for m in flows.member_flows(instance, h, tunnel, lingering=lingering)
        ]
        if self.vteps is not None and lingering:
            msgs += self.vteps.lingering(instance)
        return msgs

    def _accept(self, instance: int) -> set[IPv4Address]:
        extra = self.acceptance.extra_members(instance) if self.acceptance else set()
        return set(self.members.hosts(instance)) | extra

    def refresh_accepted(self, instances: list[int]) -> list[OfMsg]:
        """Bring the classify flows of served instances to the hosts they accept now
        (their members, and for a routed instance its router's other members)."""
        if not self.link.connected:
            return []
        msgs: list[OfMsg] = []
        tunnel = self.link.tunnel
        for instance in instances:
            if instance not in self.ports.instances:
                continue
            old, new = self.accepted.get(instance, set()), self._accept(instance)
            for h in sorted(old - new):
                msgs += flows.delete_member_flows(instance, h, tunnel)
            for h in sorted(new - old):
                msgs += flows.member_flows(instance, h, tunnel)
            self.accepted[instance] = new
        return msgs

    def resync(self) -> list[OfMsg]:
        """Every instance's flows and groups, for a switch that (re)connected."""
        msgs: list[OfMsg] = []
        for instance in sorted(self.ports.instances):
            msgs += self.up(instance)
        for instance in self.lingering:
            msgs += self._member_flows(instance, lingering=True)
        if self.vteps is not None:
            msgs += self.vteps.stale_learned()
        return msgs

    def up(self, instance: int) -> list[OfMsg]:
        """The instance's first VM arrived."""
        self.lingering.pop(instance, None)
        self.accepted.pop(instance, None)
        if not self.link.connected:
            return []
        # Added or modified: a predecessor's group may still be there (the take-over's
        # sweep has not run yet), and a plain add of it fails with GROUP_EXISTS.
        return [
            *self._group(instance, GroupCommand.ADD_OR_MODIFY),
            *flows.instance_flows(instance, split_horizon=self.link.tunnel.mixed),
            *self.refresh_accepted([instance]),
            *(self.vteps.up(instance) if self.vteps else ()),
        ]

    def down(self, now: float, instance: int) -> list[OfMsg]:
        """The instance's last VM left: its flows go, and it lingers."""
        self.lingering[instance] = now + self.linger_for
        self.accepted.pop(instance, None)
        if not self.link.connected:
            return []
        msgs = [
            *flows.delete_instance(instance),
            *(self.vteps.down(instance) if self.vteps else ()),
            *self._member_flows(instance, lingering=True),
        ]
        if self.link.tunnel.mixed:
            msgs.append(flows.group_mod(instance | flows.LOCAL_GROUP_BIT, GroupCommand.DELETE))
        return msgs

    def ports_changed(self, instance: int) -> list[OfMsg]:
        """The instance's set of local ports changed (it had some before and after)."""
        return self._group(instance, GroupCommand.MODIFY) if self.link.connected else []

    def member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        if not self.link.connected:
            return []
        tunnel = self.link.tunnel
        if instance in self.lingering:
            if joined:
                return list(flows.member_flows(instance, host, tunnel, lingering=True))
            return list(flows.delete_member_flows(instance, host, tunnel))
        # A member of a routed instance is accepted by the router's other instances too.
        routed = list(self.acceptance.siblings(instance)) if self.acceptance else []
        msgs = self.refresh_accepted(routed)
        if instance not in self.ports.instances:
            return msgs
        return [
            *msgs,
            *self.refresh_accepted([instance]),
            *self._group(instance, GroupCommand.MODIFY),
        ]

    def expire(self, now: float) -> tuple[list[OfMsg], bool]:
        """Lingering that ran out: (flows to delete, whether any ended)."""
        ended = [i for i, until in self.lingering.items() if until <= now]
        msgs: list[OfMsg] = []
        for instance in ended:
            del self.lingering[instance]
            msgs += flows.delete_instance(instance)
        return msgs, bool(ended)
