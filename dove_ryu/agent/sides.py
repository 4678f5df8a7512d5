"""A VAN proxy's two sides and its datapath for them.

A proxy has a leg in its site's underlay and one in the inter-site network (WAN).
The other sites' proxies are on the WAN side; every other member is in the site.
Per instance it has two flood groups (into the site, and once to each remote
site's proxy), one classify flow per member on the leg that member reaches, and
one forwarding flow per learned endpoint towards the side it is on.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from dove_ryu.agent.link import SwitchLink
from dove_ryu.agent.membership import Membership
from dove_ryu.model import Endpoint
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import GroupCommand, OfMsg
from dove_ryu.openflow.tunnels import Tunnels


class Sides:
    def __init__(self, site_leg: IPv4Address, wan_leg: IPv4Address, wan_peers: frozenset) -> None:
        self.site_leg = site_leg
        self.wan_leg = wan_leg
        self.wan_peers: frozenset[IPv4Address] = wan_peers

    def wan(self, host: IPv4Address) -> bool:
        """Whether ``host`` is a remote site's proxy."""
        return host in self.wan_peers

    def leg(self, host: IPv4Address) -> IPv4Address:
        """Our address as ``host`` sees it."""
        return self.wan_leg if self.wan(host) else self.site_leg


class ProxyFlows:
    """Forwarding to a learned endpoint, towards its side
    (`dove_ryu.agent.endpoints.EndpointFlows`)."""

    def __init__(
        self, sides: Sides, idle_timeout: int, wan_mtu: int, tunnels: Tunnels | None = None
    ) -> None:
        self.sides = sides
        self.tunnels = tunnels
        self.idle_timeout = idle_timeout
        self.wan_mtu = wan_mtu

    def install(self, ep: Endpoint, idle_timeout: int | None = None) -> list[OfMsg]:
        behind_wan = self.sides.wan(ep.host)
        idle = self.idle_timeout if idle_timeout is None else idle_timeout
        return [flows.proxied_flow(ep, behind_wan, idle, self.wan_mtu, self.tunnels)]

    def remove(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        # A proxy answers no ARP: nothing of an endpoint outlives its forwarding flow.
        return [] if keep_l2 else [flows.delete_proxied(ep, self.sides.wan(ep.host))]


class ProxyInstances:
    """An instance has flows and groups on a proxy while it has a member, either side."""

    def __init__(self, sides: Sides, members: Membership, link: SwitchLink, wan_mtu: int) -> None:
        self.sides = sides
        self.members = members
        self.link = link
        self.wan_mtu = wan_mtu
        self._served: dict[bool, tuple[int, list[int]]] = {}  # wan -> (version, served)

    def side(self, instance: int, wan: bool) -> list[IPv4Address]:
        """The instance's remote proxies (``wan``) or its site members."""
        return [h for h in self.members.hosts(instance) if self.sides.wan(h) == wan]

    def served(self, wan: bool) -> list[int]:
        """Instances served by other sites (``wan``) or in our site.  Kept until the
        membership changes: a proxy asks before and after each announcement part."""
        version = self.members.version
        cached = self._served.get(wan)
        if cached is None or cached[0] != version:
            cached = (version, [i for i in self.members.instances() if self.side(i, wan)])
            self._served[wan] = cached
        return list(cached[1])

    def _groups(self, instance: int, command: GroupCommand) -> list[OfMsg]:
        site, remote = self.side(instance, False), self.side(instance, True)
        return list(flows.proxy_groups(instance, site, remote, command, self.link.tunnel))

    def _member_flow(self, instance: int, host: IPv4Address) -> OfMsg:
        wan, leg = self.sides.wan(host), self.sides.leg(host)
        return flows.proxy_member_flow(instance, host, leg, wan, self.link.tunnel)

    def up(self, instance: int) -> list[OfMsg]:
        return [
            *self._groups(instance, GroupCommand.ADD_OR_MODIFY),  # a predecessor's may exist
            *flows.proxy_instance_flows(instance, self.wan_mtu),
            *(self._member_flow(instance, h) for h in self.members.hosts(instance)),
        ]

    def resync(self) -> list[OfMsg]:
        return [msg for instance in self.members.instances() for msg in self.up(instance)]

    def member_changed(self, instance: int, host: IPv4Address, joined: bool) -> list[OfMsg]:
        if not self.link.connected:
            return []
        count = self.members.count(instance)
        if not count:
            return [*flows.delete_instance(instance), *flows.delete_proxy_groups(instance)]
        if joined and count == 1:  # the first member: the instance comes up
            return self.up(instance)
        if joined:
            change = self._member_flow(instance, host)
        else:
            leg = self.sides.leg(host)
            change = flows.delete_proxy_member_flow(instance, host, leg, self.link.tunnel)
        return [change, *self._groups(instance, GroupCommand.MODIFY)]
