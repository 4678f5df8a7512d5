"""How a host reaches a learned endpoint: through the tunnel to the endpoint's host."""

from __future__ import annotations

from dove_ryu.agent.link import SwitchLink
from dove_ryu.model import Endpoint
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import OfMsg


class TunnelFlows:
    """A host forwards to a learned endpoint by tunnelling to its host, and answers
    ARP for its addresses (`dove_ryu.agent.endpoints.EndpointFlows`)."""

    def __init__(self, link: SwitchLink, idle_timeout: int) -> None:
        self.link = link
        self.idle_timeout = idle_timeout

    def install(self, ep: Endpoint) -> list[OfMsg]:
        return list(flows.learned_flows(ep, self.link.tunnel, self.idle_timeout))

    def remove(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        return list(flows.delete_learned(ep, keep_l2=keep_l2))

    def forwarding(self, ep: Endpoint) -> OfMsg:
        return flows.learned_l2_flow(ep, self.link.tunnel, self.idle_timeout)
