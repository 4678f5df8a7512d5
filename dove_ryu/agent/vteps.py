"""External VTEPs on a host (docs/interop.md section 2): the part that owns them.

A VTEP that runs no agent serves instances at an underlay address.  For each of
them this host serves, the VTEP's tunnel traffic is accepted (and the MACs behind it
learned in the datapath), it is a bucket of the flood group, and the MACs declared
behind it are forwarded to it.  The VTEPs come from sources (`declared`): the
configuration now, the directory's Host rows of role ``vtep`` later; a VTEP named
by two sources is taken from the first declared.

A destination nobody answered a LEARN for goes to the instance's VTEPs (`unknown`):
unknown unicast, and ARP requests, rate-limited per instance like LEARNs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.ports import LocalPorts
from dove_ryu.agent.resolver import Pending, TokenBucket
from dove_ryu.agent.stats import Stats
from dove_ryu.config import ExternalVtepsConfig
from dove_ryu.model import ExternalVtep
from dove_ryu.openflow import vtep_flows
from dove_ryu.openflow.ofmsg import Action, OfMsg, PacketOut

# Packets sent to an instance's VTEPs because nobody else knew their destination, per
# second and instance (a burst of as many).
UNKNOWN_RATE = 50.0


class ExternalVteps:
    def __init__(
        self, ports: LocalPorts, link: SwitchLink, stats: Stats, settings: ExternalVtepsConfig
    ) -> None:
        self.ports = ports
        self.link = link
        self.stats = stats
        self.age = settings.external_mac_age
        self.limit = settings.external_max_macs
        self.by_source: dict[str, tuple[ExternalVtep, ...]] = {}
        self.refused: set[tuple[str, str, str]] = set()  # (source, name, encapsulation)
        # What a predecessor's datapath learned (a take-over): (instance, VTEP tag).
        self.found_learned: set[tuple[int, int]] = set()
        self._buckets: dict[int, TokenBucket] = {}
        # The flood group of an instance whose VTEPs changed (set by the host's wiring).
        self.regroup: Callable[[int], list[OfMsg]] = lambda instance: []

    # ------------------------------------------------------------ declared

    def all(self) -> list[ExternalVtep]:
        """The VTEPs, one per address: a VTEP named by two sources (the configuration
        and the directory, say) is taken from the first declared; two entries for one
        address would flood to it twice, and the one going would cut the other off."""
        by_address: dict[IPv4Address, ExternalVtep] = {}
        for source in self.by_source.values():
            for vtep in source:
                by_address.setdefault(vtep.address, vtep)
        return sorted(by_address.values(), key=lambda v: v.name)

    def _takes(self, source: str, vtep: ExternalVtep) -> bool:
        """A VTEP whose encapsulation this host does not take is refused (the
        configuration checks its own; a directory row is checked here), and counted."""
        if vtep.encapsulation in self.link.tunnels.accepted:
            return True
        refusal = (source, vtep.name, vtep.encapsulation)
        if refusal not in self.refused:  # said once, not at every directory update
            self.refused.add(refusal)
            self.stats.count("vtep_encapsulation_not_taken")
            self.stats.log.warning(
                "%s: %s VTEP %s at %s speaks %s, which this host does not take; ignored",
                self.stats.name,
                source,
                vtep.name,
                vtep.address,
                vtep.encapsulation,
            )
        return False

    def of_instance(self, instance: int) -> list[ExternalVtep]:
        return [v for v in self.all() if instance in v.instances]

    def is_vtep(self, address: IPv4Address) -> bool:
        return any(v.address == address for v in self.all())

    def declared(self, source: str, vteps: Iterable[ExternalVtep]) -> list[OfMsg]:
        """``source``'s VTEPs are now ``vteps``: the flows of the instances served here
        follow (a VTEP that changed goes and comes back)."""
        before_vteps = self.all()
        before = {(v, i) for v in before_vteps for i in v.instances}
        taken = [v for v in vteps if self._takes(source, v)]
        self.by_source[source] = tuple(taken)
        after_vteps = self.all()
        after = {(v, i) for v in after_vteps for i in v.instances}
        # The tunnels reach a VTEP with its encapsulation and never the DOVE option
        # (endpoint rows at its address, a directory's, go through them too).
        tunnels = self.link.tunnels
        for v in before_vteps:
            tunnels.undeclare(v.address)
        for v in after_vteps:
            tunnels.declare(v.address, v.encapsulation, dove=False)
        if not self.link.connected:
            return []
        served = self.ports.instances
        tunnel = self.link.tunnel
        msgs: list[OfMsg] = []
        for vtep, instance in sorted(before - after, key=_order):
            if instance in served:
                msgs += vtep_flows.delete_vtep_flows(vtep, instance, tunnel)
        for vtep, instance in sorted(after - before, key=_order):
            if instance in served:
                msgs += vtep_flows.vtep_flows(vtep, instance, tunnel, self.age, self.limit)
        for instance in sorted({i for _, i in before ^ after} & served):
            msgs += self.regroup(instance)
        return msgs

    # ------------------------------------------- the instance's datapath (HostInstances)

    def buckets(self, instance: int) -> list[tuple[Action, ...]]:
        """The flood group's buckets to the instance's VTEPs."""
        return [
            vtep_flows.vtep_tunnel(self.link.tunnel, v, instance)
            for v in self.of_instance(instance)
        ]

    def up(self, instance: int) -> list[OfMsg]:
        """The instance's first VM arrived (or the switch connected)."""
        tunnel = self.link.tunnel
        return [
            f
            for v in self.of_instance(instance)
            for f in vtep_flows.vtep_flows(v, instance, tunnel, self.age, self.limit)
        ]

    def down(self, instance: int) -> list[OfMsg]:
        """The instance's last VM left: what was learned or declared behind its VTEPs
        goes (their member flows go with the instance's)."""
        self._buckets.pop(instance, None)
        return list(vtep_flows.delete_instance_vteps(instance))

    def stale_learned(self) -> list[OfMsg]:
        """After a take-over: what the datapath learned behind a VTEP that is no longer
        declared in a served instance goes.  The sweep leaves learned flows alone (they
        are the datapath's), and traffic to them would keep them from ageing: a black
        hole that never misses to the agent."""
        served = self.ports.instances
        wanted = {(i, vtep_flows.vtep_tag(v)) for v in self.all() for i in v.instances & served}
        stale, self.found_learned = sorted(self.found_learned - wanted), set()
        return [vtep_flows.delete_learned(instance, tag) for instance, tag in stale]

    def lingering(self, instance: int) -> list[OfMsg]:
        """While the instance lingers, the VTEPs' traffic is taken to egress_check,
        like the members' (the agent forwards it to the VM's new host)."""
        tunnel = self.link.tunnel
        return [
            vtep_flows.vtep_member_flow(v, instance, tunnel, self.age, self.limit, lingering=True)
            for v in self.of_instance(instance)
        ]

    # ---------------------------------------------------------- unknowns

    def unknown(self, now: float, instance: int, held: list[tuple[int, bytes]]) -> list[OfMsg]:
        """Packets whose destination no DOVE host answered for: to each of the
        instance's VTEPs (unknown unicast; ARP requests), within the rate."""
        vteps = self.of_instance(instance)
        if not vteps or not held or not self.link.connected:
            return []
        bucket = self._buckets.setdefault(instance, TokenBucket(UNKNOWN_RATE, UNKNOWN_RATE))
        msgs: list[OfMsg] = []
        for in_port, data in held:
            if not bucket.take(now):
                self.stats.drop("vtep_unknown_rate_limited", now, f"instance {instance}")
                continue
            actions = tuple(
                a for v in vteps for a in vtep_flows.vtep_tunnel(self.link.tunnel, v, instance)
            )
            msgs.append(PacketOut(in_port=in_port, data=data, actions=actions, after_flows=False))
            self.stats.count("vtep_unknown_sent")
        return msgs

    def gave_up(self, now: float, pendings: Iterable[Pending]) -> list[OfMsg]:
        """LEARNs given up: their held packets go to the VTEPs of their instance."""
        return [m for p in pendings for m in self.unknown(now, p.instance, p.held)]

    # ------------------------------------------------------------- status

    def status(self) -> list[dict[str, object]]:
        served = self.ports.instances
        return [
            {
                "name": v.name,
                "address": str(v.address),
                "encapsulation": v.encapsulation,
                "instances": sorted(v.instances),
                "served_here": sorted(v.instances & served),
                "tag": vtep_flows.vtep_tag(v),  # the cookie tag of what is learned behind it
                "max_macs": self.limit,
                "static_macs": [
                    {"instance": m.instance, "mac": m.mac, "ip": str(m.ip) if m.ip else ""}
                    for m in v.macs
                ],
                "source": next(s for s, vs in self.by_source.items() if v in vs),
            }
            for v in self.all()
        ]


def _order(item: tuple[ExternalVtep, int]) -> tuple[str, int]:
    return item[0].name, item[1]
