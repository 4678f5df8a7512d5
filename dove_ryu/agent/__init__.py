"""The agent's pure core: parts that each own one kind of state, composed into roles.

`make_core` builds the role the configuration names: a host (`host.HostCore`), a
VAN proxy (`proxy.ProxyCore`) or an external gateway (`gateway.GatewayCore`).  All
answer the same events, the shell's calls:
``switch_connected``, ``switch_disconnected``, ``ports_changed``, ``packet_in``,
``flow_removed``, ``control_message``, ``tick``, ``status`` and ``stats_view``.
What each role is made of: `parts`.
"""

from __future__ import annotations

from dove_ryu.agent.gateway import GatewayCore
from dove_ryu.agent.host import HostCore
from dove_ryu.agent.proxy import ProxyCore
from dove_ryu.config import DoveConfig

AgentCore = HostCore | ProxyCore | GatewayCore


def make_core(cfg: DoveConfig, now: float) -> AgentCore:
    """The core for the configured role."""
    if cfg.role == "gateway":
        return GatewayCore(cfg, now)
    return ProxyCore(cfg, now) if cfg.role == "proxy" else HostCore(cfg, now)
