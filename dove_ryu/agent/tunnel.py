"""How a host reaches a learned endpoint: through the tunnel to the endpoint's host."""

from __future__ import annotations

from typing import Protocol

from dove_ryu.agent.link import SwitchLink
from dove_ryu.model import Endpoint
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import OfMsg


class Neighbors(Protocol):
    """The neighbor flows of an endpoint in a routed instance (`dove_ryu.agent.routers`)."""

    def endpoint_flows(self, ep: Endpoint) -> list[OfMsg]: ...

    def endpoint_gone(self, ep: Endpoint) -> list[OfMsg]: ...


class TunnelFlows:
    """A host forwards to a learned endpoint by tunnelling to its host, and answers
    ARP for its addresses (`dove_ryu.agent.endpoints.EndpointFlows`); in a routed
    instance, routed packets for its addresses get its MAC (``neighbors``)."""

    def __init__(self, link: SwitchLink, idle_timeout: int) -> None:
        self.link = link
        self.idle_timeout = idle_timeout
        self.neighbors: Neighbors | None = None  # set once the host's routers exist

    def install(self, ep: Endpoint, idle_timeout: int | None = None) -> list[OfMsg]:
        idle = self.idle_timeout if idle_timeout is None else idle_timeout
        msgs: list[OfMsg] = list(flows.learned_flows(ep, self.link.tunnel, idle))
        return msgs + (self.neighbors.endpoint_flows(ep) if self.neighbors else [])

    def remove(self, ep: Endpoint, keep_l2: bool = False) -> list[OfMsg]:
        msgs: list[OfMsg] = list(flows.delete_learned(ep, keep_l2=keep_l2))
        return msgs + (self.neighbors.endpoint_gone(ep) if self.neighbors else [])

    def forwarding(self, ep: Endpoint) -> OfMsg:
        return flows.learned_l2_flow(ep, self.link.tunnel, self.idle_timeout)
