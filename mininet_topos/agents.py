"""The dove agents of the emulations, under the import paths they have always had.

What runs an agent on one node (its command, dove.ini, admin socket, readiness) lives in
mininet_topos.dove_agent, below the builders; the one-site emulation with an agent on every
hypervisor (build_dove_net, wait_ready) lives in mininet_topos.dove_topo, as the multi-site
one lives in mininet_topos.sites. Both stay importable from here.
"""

from __future__ import annotations

from mininet_topos.dove_agent import (
    ADMIN_SOCKET,
    METRICS_PORT,
    admin,
    agent_binary,
    agent_cmd,
    agent_config,
    agent_ready,
    connected_status,
    knows_members,
)
from mininet_topos.dove_topo import build_dove_net, underlay_ip, wait_ready

__all__ = [
    "ADMIN_SOCKET",
    "METRICS_PORT",
    "admin",
    "agent_binary",
    "agent_cmd",
    "agent_config",
    "agent_ready",
    "build_dove_net",
    "connected_status",
    "knows_members",
    "underlay_ip",
    "wait_ready",
]
