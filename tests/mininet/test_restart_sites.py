"""Hitless restart of the active VAN proxy's agent (issue 13 point 1), with real agents.

A 5 ms ping stream between sites (t1s1vm1 -> t1s2vm1: requests one way, replies the
other, both through each site's active proxy) loses nothing while the agent of either
site's active proxy is stopped (SIGTERM) or killed (SIGKILL) and started again; the
proxy keeps its role: its standby never takes over.

The proxies' hello interval is 2 s here (the dead interval 7 s): a restarted proxy keeps
its role if it is back and hears its standby before the standby misses it (README,
"Restarting the agent"); at the default 0.2 s an agent start is longer than that.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mininet_topos.hypervisor import wait_until
from mininet_topos.sites import SitesSpec, active_proxy
from tests.mininet.test_restart import COUNT, INTERVAL, restart

SITES_SPEC = SitesSpec()
SITES_EXTRA = {"proxy_hello_interval": 2.0}  # read by conftest's `sites` fixture


def status(node: Any) -> dict[str, Any] | None:
    from mininet_topos.agents import admin

    try:
        return dict(admin(node))
    except Exception:  # the agent is still starting
        return None


def back_active_and_settled(node: Any) -> bool:
    st = status(node)
    return bool(st and st["connected"] and st["active"] and not st["takeover"]["settling"])


@pytest.mark.parametrize("site", [1, 2], ids=["source-site", "destination-site"])
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_ping_stream_across_sites_loses_nothing_while_the_active_proxy_restarts(
    sites: Any, site: int, kill: bool
) -> None:
    src, dst = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    proxy = active_proxy(sites, site)
    standby = next(p for p in sites.site_proxies(site) if p is not proxy)
    took_over = status(standby)["counters"].get("proxy_became_active", 0)  # type: ignore[index]
    assert "0% packet loss" in src.host.cmd(f"ping -c3 -i0.1 -W1 {dst.ip}")
    ping = src.host.popen(["ping", "-n", "-q", "-i", str(INTERVAL), "-c", str(COUNT), dst.ip])
    time.sleep(1.0)
    restart(sites, proxy, kill)
    wait_until(lambda: back_active_and_settled(proxy), 30, f"{proxy.name} back, active", step=0.1)
    out = ping.communicate(timeout=60)[0].decode()
    assert f"{COUNT} packets transmitted, {COUNT} received" in out, out
    after = status(standby)
    assert after is not None and not after["active"], f"{standby.name} took over"
    assert after["counters"].get("proxy_became_active", 0) == took_over
    assert active_proxy(sites, site) is proxy
