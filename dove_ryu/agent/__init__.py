"""The agent's pure core: parts that each own one kind of state, composed into roles.

`make_core` builds the role the configuration names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dove_ryu.agent.core import DoveCore
    from dove_ryu.config import DoveConfig


def make_core(cfg: DoveConfig, now: float) -> DoveCore:
    """The core for the configured role (a host or a VAN proxy)."""
    from dove_ryu.agent.proxy import make_core as build

    return build(cfg, now)
