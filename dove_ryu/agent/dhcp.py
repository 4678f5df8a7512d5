"""DHCP answered on the host (docs/routing.md, "DHCP on the host").

A VM port whose marks give it an address has its DHCP client packets sent here by
port_security (cookie DHCP); `DhcpServer` answers them straight out of that port, so
there is no DHCP server anywhere and no DHCP on the underlay.  The address is the
port's first one: the lease only tells the VM what its marks already say.

- DISCOVER -> OFFER; REQUEST for the port's address -> ACK; REQUEST for another
  address -> NAK; REQUEST naming another server (the client chose another offer) ->
  nothing (RFC 2131 4.3.2); INFORM from the port's address -> ACK without a lease.
- RELEASE and DECLINE change nothing (the address is the port's, fixed): counted.
- What does not parse is dropped and counted (``drop_dhcp_malformed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from dove_ryu.agent.stats import Stats
from dove_ryu.config import DhcpConfig
from dove_ryu.model import Subnet, VmPort
from dove_ryu.openflow.dhcp_packet import (
    BadDhcp,
    ClientMessage,
    Lease,
    MessageType,
    build_reply,
    parse_client,
)
from dove_ryu.openflow.ofmsg import OFPP_CONTROLLER, OfMsg, Output, PacketOut
from dove_ryu.openflow.tunnels import OVERHEAD, VXLAN

DEFAULT_PREFIXLEN = 24
# NOTE: the server identifier of an instance on no router.  A DHCP answer must name its
# server (option 54) by an IPv4 address, and such an instance has no address of ours.
# A link-local address (RFC 3927) is never a tenant's and never routed; it is the one
# clouds give their on-host metadata service, the same kind of thing as this server.
# The VM's unicast renewal to it finds no route and the client falls back to a
# broadcast rebinding at T2, which port_security sends here as any DHCP request.
SERVER_ID = IPv4Address("169.254.169.254")
# The source MAC of those answers: the router MAC prefix with instance 0, which no
# subnet has (instance 0 is never an instance), so it never clashes with a VM or a
# gateway MAC.
SERVER_MAC = "0a:d0:00:00:00:00"


@dataclass(frozen=True)
class Offer:
    """Who answers a port and what it is told."""

    server_mac: str
    lease: Lease


def no_subnet(instance: int) -> Subnet | None:
    return None


class DhcpServer:
    """Answers the DHCP requests of local VM ports that have an address.

    ``subnet_of(instance)`` is the router subnet the instance is, if any (the routing
    part's lookup): it gives the prefix, the router option and the server's address.
    ``encapsulations``: those the host takes; ``dhcp_mtu`` is the MTU under VXLAN, and a
    host that takes Geneve tells what is left under Geneve with the DOVE option."""

    def __init__(
        self,
        stats: Stats,
        cfg: DhcpConfig,
        subnet_of: Callable[[int], Subnet | None] = no_subnet,
        encapsulations: Iterable[str] = (VXLAN,),
    ) -> None:
        self.stats = stats
        self.cfg = cfg
        self.subnet_of = subnet_of
        worst = max(OVERHEAD[e] for e in encapsulations)
        self.mtu = cfg.dhcp_mtu - (worst - OVERHEAD[VXLAN])

    def offer(self, port: VmPort) -> Offer | None:
        """What ``port`` is told, or None when its marks give it no address."""
        if not port.ips:
            return None
        address = port.ips[0]
        subnet = self.subnet_of(port.instance)
        if subnet is not None and address in subnet.network:
            return Offer(
                subnet.mac,
                self._lease(address, subnet.network.prefixlen, subnet.gateway.ip, subnet),
            )
        prefixlen = port.prefixlen if port.prefixlen is not None else DEFAULT_PREFIXLEN
        return Offer(SERVER_MAC, self._lease(address, prefixlen, SERVER_ID, None))

    def _lease(
        self, address: IPv4Address, prefixlen: int, server_id: IPv4Address, subnet: Subnet | None
    ) -> Lease:
        return Lease(
            address=address,
            prefixlen=prefixlen,
            server_id=server_id,
            lease_time=self.cfg.dhcp_lease_time,
            mtu=self.mtu,
            router=subnet.gateway.ip if subnet is not None else None,
            dns=self.cfg.dhcp_dns,
        )

    def packet_in(self, now: float, port: VmPort, data: bytes) -> list[OfMsg]:
        """The answer to a DHCP packet from ``port`` (sent out of it), if any."""
        try:
            request = parse_client(data)
        except BadDhcp as e:
            self.stats.drop("dhcp_malformed", now, f"port {port.name}: {e}")
            return []
        offer = self.offer(port)
        if offer is None:  # the marks lost the address while the flow was still there
            self.stats.drop("dhcp_no_address", now, f"port {port.name}")
            return []
        if request.chaddr != port.mac:
            # port_security checked the frame's source MAC; the message's own must agree.
            self.stats.drop("dhcp_foreign", now, f"port {port.name} chaddr {request.chaddr}")
            return []
        reply = self._answer(now, port, request, offer)
        if reply is None:
            return []
        frame = build_reply(request, reply, offer.server_mac, offer.lease.server_id, offer.lease)
        return [PacketOut(OFPP_CONTROLLER, frame, (Output(port.ofport),), after_flows=False)]

    def _answer(
        self, now: float, port: VmPort, request: ClientMessage, offer: Offer
    ) -> MessageType | None:
        lease = offer.lease
        kind = request.msg_type
        if kind is MessageType.DISCOVER:
            self.stats.count("dhcp_offers")
            return MessageType.OFFER
        if kind is MessageType.REQUEST:
            if request.server_id is not None and request.server_id != lease.server_id:
                self.stats.count("dhcp_other_server")  # it took another server's offer
                return None
            # SELECTING and INIT-REBOOT name the address (option 50); RENEWING and
            # REBINDING hold it already (ciaddr).
            wanted = request.requested_ip or request.ciaddr
            if wanted != lease.address:
                self.stats.count("dhcp_naks")
                self._log(now, port, f"NAK: asked for {wanted}, has {lease.address}")
                return MessageType.NAK
            self.stats.count("dhcp_acks")
            return MessageType.ACK
        if kind is MessageType.INFORM:
            if request.ciaddr != lease.address:
                self.stats.drop("dhcp_foreign", now, f"port {port.name} INFORM {request.ciaddr}")
                return None
            self.stats.count("dhcp_acks")
            return MessageType.ACK
        if kind is MessageType.DECLINE:
            # The VM found its address in use: the marks gave it to two ports.
            self.stats.count("dhcp_declines")
            self._log(now, port, f"DECLINE of {lease.address}: the address is in use")
        else:
            self.stats.count("dhcp_releases")
        return None

    def _log(self, now: float, port: VmPort, text: str) -> None:
        if self.stats.log_limit.allow("dhcp", now):
            self.stats.log.warning("%s: dhcp on port %s: %s", self.stats.name, port.name, text)
