"""The agent's pure core: parts that each own one kind of state, composed into roles.

`make_core` builds the role the configuration names: a host (`host.HostCore`) or
a VAN proxy (`proxy.ProxyCore`).  Both answer the same events (`AgentCore`).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Protocol

from dove_ryu.agent.host import HostCore
from dove_ryu.agent.proxy import ProxyCore
from dove_ryu.agent.stats import StatsView
from dove_ryu.config import DoveConfig
from dove_ryu.model import VmPort
from dove_ryu.openflow.ofmsg import CoreOutput


class AgentCore(Protocol):
    """What the shell calls: events in, OpenFlow messages and datagrams out."""

    role: str

    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def tunnel_ofport(self) -> int | None:
        """The bridge's tunnel port while the switch is connected."""
        ...

    def switch_connected(self, now: float, tunnel_ofport: int) -> CoreOutput: ...

    def switch_disconnected(self) -> None: ...

    def ports_changed(self, now: float, ports: list[VmPort]) -> CoreOutput: ...

    def packet_in(
        self,
        now: float,
        cookie: int,
        in_port: int,
        data: bytes,
        metadata: int | None = None,
        tunnel_src: IPv4Address | None = None,
    ) -> CoreOutput: ...

    def flow_removed(
        self, now: float, cookie: int, match: dict[str, object], idle_timeout: bool, age: float
    ) -> CoreOutput: ...

    def control_message(self, now: float, data: bytes, src: IPv4Address) -> CoreOutput: ...

    def tick(self, now: float) -> CoreOutput: ...

    def status(self, now: float) -> dict[str, object]: ...

    def stats_view(self) -> StatsView: ...


def make_core(cfg: DoveConfig, now: float) -> AgentCore:
    """The core for the configured role."""
    return ProxyCore(cfg, now) if cfg.role == "proxy" else HostCore(cfg, now)
