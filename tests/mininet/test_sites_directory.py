"""Two sites in directory mode (issue 11): each site has its own 3-member directory on its
underlay, every agent of the site (hypervisors and VAN proxies) registers there over
SSL with ``discovery = directory`` and no ``peers``; the proxies keep ``wan_peers``.

Cross-site pings in a ``learn`` and in a ``push`` instance (the first ping answered);
a hypervisor of site 1 whose agent stops and starts again is reached from site 2 with
no change at the proxies; stopping a site's active proxy still carries traffic across.
One emulation for the module (conftest's ``sites`` fixture reads SITES_SPEC).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mininet_topos.agents import admin
from mininet_topos.dove_agent import agent_cmd, connected_status
from mininet_topos.hypervisor import wait_until
from mininet_topos.sites import SitesNet, SitesSpec, active_proxy
from tests.tools.nodes import received

DOVECTL = str(Path(sys.executable).parent / "dovectl")
SITES_SPEC = SitesSpec(directory=True)  # 2 sites, 2 hypervisors and 2 proxies each
PUSHED = 5002  # tenant 2's instance resolves by push; tenant 1's by learn (the default)


def run(node: Any, *argv: str) -> str:
    out, err, rc = node.pexec(list(argv))
    assert rc == 0, f"{node.name}: {' '.join(argv)}: rc {rc}\n{out}{err}"
    return str(out)


def ping(vm: Any, ip: str, count: int = 1) -> str:
    out, err, _ = vm.host.pexec(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", ip])
    return str(out + err)


def members(node: Any, instance: int) -> set[str]:
    return set(admin(node)["instances"].get(str(instance), {}).get("members", []))


def learned(node: Any, instance: int) -> dict[str, dict[str, Any]]:
    info = admin(node)["instances"].get(str(instance), {})
    return {e["mac"]: e for e in info.get("learned", [])}


@pytest.fixture(scope="module")
def pushed(sites: SitesNet) -> SitesNet:
    """Tenant 2's instance in push mode in both sites' directories, the push arrived."""
    for site in sites.spec.site_numbers:
        hv, cluster = sites.site_hvs(site)[0], sites.directories[site]
        args = ["--db", cluster.remotes, "--instance", str(PUSHED), "--mode", "push"]
        run(hv, DOVECTL, "directory", "resolution", *args)
        rows = json.loads(
            run(hv, DOVECTL, "directory", "instances", "--db", cluster.remotes, "--json")
        )
        assert {"id": PUSHED, "resolution": "push"}.items() <= next(
            r for r in rows if r["id"] == PUSHED
        ).items()
    for vm in sites.tenant_vms(2):
        for other in sites.site_vms(vm.site):
            if other.tenant == 2 and other.hypervisor is not vm.hypervisor:
                wait_until(
                    lambda v=vm, o=other: o.mac in learned(v.hypervisor, PUSHED),
                    15.0,
                    f"{other.name} pushed to {vm.hypervisor.name}",
                )
    return sites


def test_the_site_agents_find_each_other_and_the_proxies_in_their_directory(
    sites: SitesNet,
) -> None:
    for node in sites.nodes:
        config = node.in_rundir("dove.ini").read_text()
        assert "discovery = directory" in config and "\npeers =" not in config, node.name
    for site in sites.spec.site_numbers:
        px = active_proxy(sites, site)
        hvs = sites.site_hvs(site)
        # Its site's hosts from the directory; the standby's row lists nothing.
        assert members(px, 5001) == {h.underlay_ip for h in hvs}
        assert admin(px)["directory"]["reachable"]
        for hv in hvs:
            # Its row lists what it stands for once its client wrote it (a poll later).
            wait_until(
                lambda hv=hv, px=px: px.underlay_ip in members(hv, 5001),
                5.0,
                f"{hv.name}: {px.name}",
            )
            standby = [p for p in sites.site_proxies(site) if p is not px]
            assert not {p.underlay_ip for p in standby} & members(hv, 5001)


def test_the_first_ping_across_sites_is_answered_in_learn_and_in_push(pushed: SitesNet) -> None:
    for a, b in (("t1s1vm1", "t1s2vm1"), ("t2s2vm2", "t2s1vm2")):
        src, dst = pushed.vm(a), pushed.vm(b)
        out = ping(src, dst.ip)
        assert received(out) == 1, f"{a} -> {b} ({src.instance}):\n{out}"
    # A cross-site endpoint is not in the site's directory: it was learned through the
    # proxy, in the push instance too.
    s2hv = pushed.vm("t2s2vm2").hypervisor
    assert (
        learned(s2hv, PUSHED)[pushed.vm("t2s1vm2").mac]["host"]
        == active_proxy(pushed, 2).underlay_ip
    )


def test_a_hypervisor_that_stops_and_starts_in_site_1_is_reached_from_site_2(
    sites: SitesNet,
) -> None:
    src, dst = sites.vm("t1s2vm2"), sites.vm("t1s1vm2")
    hv = dst.hypervisor
    px = active_proxy(sites, 1)
    proxies = {p.name: (p.agent.pid, p.in_rundir("dove.ini").read_text()) for p in sites.proxies}
    hv.stop_agent()
    try:
        wait_until(lambda: hv.underlay_ip not in members(px, 5001), 15.0, f"{hv.name} to leave")
    finally:
        hv.start_agent(None, agent_cmd())
    wait_until(lambda: connected_status(hv), 15.0, f"{hv.name}'s agent to have its switch")
    wait_until(lambda: hv.underlay_ip in members(px, 5001), 15.0, f"{hv.name} to join again")
    wait_until(lambda: received(ping(src, dst.ip)) == 1, 15.0, f"{src.name} to reach {dst.name}")
    # Nothing changed or restarted at any proxy.
    after = {p.name: (p.agent.pid, p.in_rundir("dove.ini").read_text()) for p in sites.proxies}
    assert after == proxies


def test_stopping_the_active_proxy_still_carries_traffic_across(sites: SitesNet) -> None:
    """Last in this module: it leaves site 1 with one proxy."""
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm2")
    assert received(ping(a, b.ip, 3)) == 3
    old = active_proxy(sites, 1)
    standby = next(p for p in sites.site_proxies(1) if p is not old)
    pinger = a.host.popen(
        ["ping", "-n", "-i", "0.05", "-w", "8", b.ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # traffic flowing before the stop
    old.stop_agent()
    old.stop_ovs()  # the whole proxy is gone, its datapath too; its row stays
    out, _ = pinger.communicate(timeout=30)
    assert admin(standby)["active"], "the standby did not take over"
    sent = int(out.split("packets transmitted")[0].split()[-1])
    assert received(out) >= sent - 60, f"traffic did not come back through {standby.name}:\n{out}"
    assert learned(a.hypervisor, a.instance)[b.mac]["host"] == standby.underlay_ip
    assert received(ping(b, a.ip, 3)) == 3
