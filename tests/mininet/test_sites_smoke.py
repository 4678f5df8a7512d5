"""Smoke test of the multi-site emulation (mininet_topos.sites): 2 sites, 2 hypervisors and
2 VAN proxies each, one WAN with a smaller MTU.

Without agents: each site's underlay works and is its own although every site uses the same
addresses (a ping stays in its site); a site host has no way onto the WAN, not even with a
route through its proxy, which neither forwards nor takes one leg's address from the other
leg; the WAN's MTU holds on the whole path; a proxy's userspace OVS routes and terminates
tunnels on both legs. With agents: every agent, hypervisors' and proxies', starts and
answers. Both builds must leave nothing behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mininet.node import Node  # noqa: E402

from mininet_topos.agents import admin  # noqa: E402
from mininet_topos.hypervisor import BR_PHY, BR_WAN, TUNNEL_PORT, wait_until  # noqa: E402
from mininet_topos.sites import (  # noqa: E402
    WAN_SWITCH,
    SitesNet,
    SitesSpec,
    build_sites_net,
    site_switch,
)
from tests.tools.capture import Capture, settle  # noqa: E402
from tests.tools.leftovers import live_pids_mentioning  # noqa: E402

WAN_MTU = 1400  # not the default, so the test sees it was set
SPEC = SitesSpec(sites=2, hypervisors=2, proxies=2, wan_mtu=WAN_MTU)


def _bridges() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


@contextmanager
def running(spec: SitesSpec, agents: bool) -> Iterator[SitesNet]:
    """Build the sites, always stop them, then check the teardown left nothing."""
    snet, _ = build_sites_net(spec, agents=agents)
    rundirs = [n.rundir for n in snet.nodes if n.rundir is not None]
    try:
        yield snet
    finally:
        snet.stop()
    assert len(rundirs) == len(snet.nodes), "a node without a rundir"
    assert not any(d.exists() for d in rundirs), "rundir left behind"
    assert not live_pids_mentioning(rundirs), "OVS/agent processes left behind"
    ours = {WAN_SWITCH, *(site_switch(s) for s in spec.site_numbers)}
    assert not ours & _bridges(), "underlay bridge left behind"


def _pings(node: Node, ip: str, *opts: str) -> bool:
    return bool(node.pexec(["ping", "-c1", "-W1", *opts, ip])[2] == 0)


def _root_peer(node: Node, intf: str) -> str:
    """The root-namespace end of a node's veth (the port on an underlay bridge)."""
    link = node.intf(intf).link
    return str(link.intf2.name if link.intf1.node is node else link.intf1.name)


@pytest.fixture(scope="class")
def snet() -> Iterator[SitesNet]:
    """One build, OVS only, shared by the tests of TestWithoutAgents."""
    with running(SPEC, agents=False) as snet:
        yield snet


class TestWithoutAgents:
    def test_site_underlays_answer(self, snet: SitesNet) -> None:
        for s in SPEC.site_numbers:
            probe = snet.probe(s)
            for node in (*snet.site_hvs(s), *snet.site_proxies(s)):
                assert _pings(probe, node.underlay_ip), f"{probe.name} -> {node.name}"
        for px in snet.proxies:
            assert _pings(snet.wan_probe, px.wan_ip), f"wanprobe -> {px.name}"
            for other in snet.proxies:
                if other is not px:
                    assert _pings(px, other.wan_ip, "-I", BR_WAN), f"{px.name} -> {other.name}"

    def test_site_host_cannot_reach_the_wan(self, snet: SitesNet) -> None:
        hv, px = snet.hv("s1hv1"), snet.hv("s1px1")
        wan = [p.wan_ip for p in snet.proxies] + ["172.31.0.250"]
        for ip in wan:
            assert not _pings(hv, ip), f"{hv.name} reached {ip}"
        # Even with a route through its proxy: it neither forwards nor, although the WAN
        # address is its own, takes a datagram for it from the site leg.
        hv.run("ip", "route", "add", "172.31.0.0/24", "via", px.underlay_ip)
        try:
            for ip in wan:
                assert not _pings(hv, ip), f"{hv.name} reached {ip} through {px.name}"
        finally:
            hv.run("ip", "route", "del", "172.31.0.0/24")
        assert px.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
        # The same from the WAN side.
        probe = snet.wan_probe
        probe.cmd(f"ip route add 10.99.0.0/24 via {px.wan_ip}")
        try:
            for ip in (px.underlay_ip, hv.underlay_ip):
                assert not _pings(probe, ip), f"wanprobe reached {ip} through {px.name}"
        finally:
            probe.cmd("ip route del 10.99.0.0/24")

    def test_wan_mtu_on_the_whole_path(self, snet: SitesNet) -> None:
        for px in snet.proxies:
            for intf in (px.wan_uplink, BR_WAN):
                assert px.run("cat", f"/sys/class/net/{intf}/mtu").strip() == str(WAN_MTU)
            peer = _root_peer(px, px.wan_uplink)
            assert Path(f"/sys/class/net/{peer}/mtu").read_text().strip() == str(WAN_MTU)
            assert px.run("cat", f"/sys/class/net/{BR_PHY}/mtu").strip() == "1500"
        a, b = snet.hv("s1px1"), snet.hv("s2px1")
        most = str(WAN_MTU - 28)  # ICMP payload of a WAN_MTU-byte datagram
        assert _pings(a, b.wan_ip, "-M", "do", "-s", most), "a full-size WAN datagram"
        # A sender that believes in 1500 bytes: its bigger frame does not cross.
        probe, intf = snet.wan_probe, f"{snet.wan_probe.name}-eth0"
        probe.cmd(f"ip link set {intf} mtu 1500")
        try:
            assert _pings(probe, a.wan_ip, "-M", "do", "-s", most)
            assert not _pings(probe, a.wan_ip, "-M", "do", "-s", str(WAN_MTU - 27))
        finally:
            probe.cmd(f"ip link set {intf} mtu {WAN_MTU}")

    def test_proxy_ovs_routes_and_listens_on_both_legs(self, snet: SitesNet) -> None:
        for px in snet.proxies:
            routes = px.appctl("ovs/route/show")
            assert px.legs_routed(), routes
            assert f"10.99.0.0/24 dev {BR_PHY} SRC {px.underlay_ip}" in routes, routes
            assert f"172.31.0.0/24 dev {BR_WAN} SRC {px.wan_ip}" in routes, routes
            opts = px.vsctl("get", "Interface", TUNNEL_PORT, "options")
            assert "local_ip" not in opts, opts
            listening = px.appctl("tnl/ports/show", "-v")
            for ip in (px.underlay_ip, px.wan_ip):
                assert f"ipv4(dst={ip}," in listening, listening
        for hv in snet.hypervisors:
            assert f'local_ip="{hv.underlay_ip}"' in hv.vsctl(
                "get", "Interface", TUNNEL_PORT, "options"
            )

    def test_a_ping_stays_in_its_site(self, snet: SitesNet) -> None:
        src, dst, twin = snet.hv("s1hv1"), snet.hv("s1hv2"), snet.hv("s2hv2")
        assert dst.underlay_ip == twin.underlay_ip == "10.99.0.2"
        bpf = f"icmp[icmptype] = icmp-echo and src {src.underlay_ip} and dst {dst.underlay_ip}"
        with (
            Capture(dst, dst.uplink, bpf) as here,
            Capture(twin, twin.uplink, bpf) as there,
        ):
            out, err, rc = src.pexec(["ping", "-c3", "-i0.2", "-W1", dst.underlay_ip])
            assert rc == 0, out + err
            # Once all three reached s1hv2, a copy on the other site would have arrived too.
            wait_until(lambda: len(here.packets()) >= 3, 5.0, "3 echo requests at s1hv2")
            settle()
            assert len(here.packets()) == 3, here.packets()
            assert there.packets() == [], there.packets()
            # The same ping in site 2 (its s2hv1 is 10.99.0.1 too) is seen there.
            out, err, rc = snet.hv("s2hv1").pexec(["ping", "-c1", "-W1", twin.underlay_ip])
            assert rc == 0, out + err
            wait_until(there.packets, 5.0, "the echo request at s2hv2")


def test_agents_start_and_answer() -> None:
    with running(SPEC, agents=True) as snet:  # build_sites_net waits until they are ready
        for node in snet.nodes:
            assert node.agent is not None and node.agent.poll() is None, node.name
            status = admin(node)
            assert status["connected"], (node.name, status)
            assert status["underlay_ip"] == node.underlay_ip, (node.name, status)
