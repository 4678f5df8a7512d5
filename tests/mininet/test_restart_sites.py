"""Hitless restart of the active VAN proxy's agent (issue 13 point 1), with real agents.

A 5 ms ping stream between sites (t1s1vm1 -> t1s2vm1: requests one way, replies the
other, both through each site's active proxy) loses nothing while the agent of either
site's active proxy is stopped (SIGTERM) or killed (SIGKILL) and started again; the
proxy keeps its role: its standby never takes over.

The proxies' hellos are the default 0.2 s (the dead interval 0.7 s), shorter than an
agent start: the standby holds its failover back because BFD (run by ovs-vswitchd,
adapters/bfd.py) says the active proxy's datapath still forwards (README, "Restarting
the agent").  When the datapath itself dies (its underlay link down), BFD goes down with
the hellos and the standby takes over within about a second.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mininet_topos.hypervisor import wait_until
from mininet_topos.sites import SitesSpec, active_proxy
from tests.mininet.test_restart import COUNT, INTERVAL

SITES_SPEC = SitesSpec()
# The agent stays away this long (an upgrade's pause), over four dead intervals (0.7 s):
# without BFD its standby would take over every time.  With the agent's start, its
# silence also outlasts 3.5 announce intervals (1 s here), after which the site's hosts
# and the remote proxies dropped it before they held a proxy as long as its standby does.
AWAY = 3.0
FAILOVER_WITHIN = 1.5  # seconds: BFD down (0.3 s) and the dead interval (0.7 s), polled


def status(node: Any) -> dict[str, Any] | None:
    from mininet_topos.agents import admin

    try:
        return dict(admin(node))
    except Exception:  # the agent is still starting
        return None


def bfd_up(node: Any, partner: Any) -> bool:
    """``node`` sees ``partner``'s datapath alive by BFD."""
    st, other = status(node), status(partner)
    if st is None or other is None:
        return False
    return bool(st["partners"].get(other["underlay_ip"], {}).get("bfd"))


def members_left(nodes: list[Any]) -> dict[str, int]:
    """How many times each node saw a member leave an instance."""
    return {n.name: (status(n) or {}).get("counters", {}).get("member_left", 0) for n in nodes}


def back_active_and_settled(node: Any) -> bool:
    st = status(node)
    return bool(st and st["connected"] and st["active"] and not st["takeover"]["settling"])


@pytest.mark.parametrize("site", [1, 2], ids=["source-site", "destination-site"])
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_ping_stream_across_sites_loses_nothing_while_the_active_proxy_restarts(
    sites: Any, site: int, kill: bool
) -> None:
    from mininet_topos.agents import agent_cmd

    src, dst = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    proxy = active_proxy(sites, site)
    standby = next(p for p in sites.site_proxies(site) if p is not proxy)
    took_over = status(standby)["counters"].get("proxy_became_active", 0)  # type: ignore[index]
    wait_until(lambda: bfd_up(standby, proxy), 10, f"{standby.name}: BFD to {proxy.name} up")
    held = status(standby)["counters"].get("ha_failover_held", 0)  # type: ignore[index]
    assert "0% packet loss" in src.host.cmd(f"ping -c3 -i0.1 -W1 {dst.ip}")
    # Its site's hosts and the other site's proxies, which hold it as a member.
    peers = [*sites.site_hvs(site), *sites.site_proxies(3 - site)]
    left = members_left(peers)
    ping = src.host.popen(["ping", "-n", "-q", "-i", str(INTERVAL), "-c", str(COUNT), dst.ip])
    time.sleep(1.0)
    if kill:
        proxy.agent.kill()
        proxy.agent.wait(5)
    proxy.stop_agent()  # SIGTERM (a killed agent is only reaped)
    time.sleep(AWAY)
    proxy.start_agent(None, agent_cmd())  # its dove.ini is still in the run directory
    wait_until(lambda: back_active_and_settled(proxy), 30, f"{proxy.name} back, active", step=0.1)
    out = ping.communicate(timeout=60)[0].decode()
    assert f"{COUNT} packets transmitted, {COUNT} received" in out, out
    assert members_left(peers) == left  # none dropped it while it was away
    after = status(standby)
    assert after is not None and not after["active"], f"{standby.name} took over"
    assert after["counters"].get("proxy_became_active", 0) == took_over
    assert after["counters"].get("ha_failover_held", 0) == held + 1  # the hellos did stop
    assert active_proxy(sites, site) is proxy


def test_when_the_active_proxys_datapath_dies_the_standby_takes_over_within_a_second(
    sites: Any,
) -> None:
    """Last in the module: it leaves site 1's first active proxy cut off."""
    proxy = active_proxy(sites, 1)
    standby = next(p for p in sites.site_proxies(1) if p is not proxy)
    wait_until(lambda: bfd_up(standby, proxy), 10, f"{standby.name}: BFD to {proxy.name} up")
    held = status(standby)["counters"].get("ha_failover_held", 0)  # type: ignore[index]
    proxy.cmd(f"ip link set {proxy.uplink} down")  # its site leg: datapath and agent cut off
    cut = time.monotonic()
    try:
        wait_until(lambda: (status(standby) or {}).get("active"), 5, f"{standby.name} active")
        took = time.monotonic() - cut
        print(f"\nproxy failover on a dead datapath: {took:.2f} s")
        assert took <= FAILOVER_WITHIN, took
        after = status(standby)
        assert after is not None and not after["partners"].get(str(proxy.underlay_ip), {})
        assert after["counters"].get("ha_failover_held", 0) == held  # BFD was down: no hold
    finally:
        proxy.cmd(f"ip link set {proxy.uplink} up")
