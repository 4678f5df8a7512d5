"""The operator's other choice for frames too big for the inter-site path
(``wan_oversize = icmp``): the proxy answers with ICMP "fragmentation needed", the
VM lowers its path MTU and its next packets fit."""

from __future__ import annotations

from mininet_topos.agents import admin
from mininet_topos.sites import (
    SitesNet,
    SitesSpec,
    active_proxy,
)

WAN_MTU = 1400
INNER_MTU = WAN_MTU - 50  # outer IPv4, UDP, VXLAN and the inner Ethernet header


SITES_SPEC = SitesSpec(  # read by conftest's `sites` fixture
    tenants=1, vms_per_tenant=1, proxies=1, wan_mtu=WAN_MTU, wan_oversize="icmp"
)


def test_too_big_with_df_gets_fragmentation_needed_and_the_vm_adapts(sites: SitesNet) -> None:
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    proxy = active_proxy(sites, 1)
    out = a.host.cmd(f"ping -n -c2 -W1 {b.ip}")
    assert "2 received" in out, out
    before = admin(proxy, "counters").get("wan_icmp_frag_needed_sent", 0)
    big = a.host.cmd(f"ping -n -c3 -i0.2 -W1 -M do -s 1422 {b.ip}")
    assert f"mtu = {INNER_MTU}" in big or f"mtu={INNER_MTU}" in big, big
    assert admin(proxy, "counters").get("wan_icmp_frag_needed_sent", 0) > before
    assert f"{INNER_MTU}" in a.host.cmd(f"ip route get {b.ip}"), "no path MTU learned"
    fits = a.host.cmd(f"ping -n -c3 -i0.2 -W1 -M do -s {INNER_MTU - 28} {b.ip}")
    assert "3 received" in fits, fits
    assert admin(proxy, "counters").get("wan_frames_fragmented", 0) == 0
