"""The flow that sends a VM's DHCP requests to its host's agent (docs/routing.md,
"DHCP on the host"): in port_security, above every other flow of the port, so a
request never reaches flood or the tunnel.  Only for a port whose marks give it an
address; another port's DHCP is plain layer 2 (a tenant may run its own server)."""

from __future__ import annotations

from dove_ryu.model import VmPort
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.dhcp_packet import CLIENT_PORT, IPPROTO_UDP, SERVER_PORT
from dove_ryu.openflow.ofmsg import OFPP_CONTROLLER, FlowMod, Output
from dove_ryu.openflow.packet import ETH_TYPE_IPV4
from dove_ryu.openflow.pipeline import PORT_SECURITY, delete_by_cookie

# Above the port's ARP checks (120) and its IPv4 source check: a client without an
# address yet sends from 0.0.0.0.
PRIO_DHCP = 150


def dhcp_cookie(port: VmPort) -> Cookie:
    return Cookie(Purpose.DHCP, port.instance, port.ofport)


def dhcp_request_flows(port: VmPort) -> list[FlowMod]:
    """The port's DHCP client packets (UDP 68 -> 67, from its MAC) to the agent."""
    if not port.ips:
        return []
    return [
        PORT_SECURITY.flow(
            priority=PRIO_DHCP,
            match={
                "in_port": port.ofport,
                "eth_src": port.mac,
                "eth_type": ETH_TYPE_IPV4,
                "ip_proto": IPPROTO_UDP,
                "udp_src": CLIENT_PORT,
                "udp_dst": SERVER_PORT,
            },
            cookie=dhcp_cookie(port),
            actions=[Output(OFPP_CONTROLLER)],
        )
    ]


def delete_dhcp_request_flows(port: VmPort) -> list[FlowMod]:
    return [delete_by_cookie(dhcp_cookie(port), cookies.MASK_EXACT)]
