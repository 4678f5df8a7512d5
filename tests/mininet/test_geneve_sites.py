"""VAN proxies over Geneve (docs/interop.md section 1): two sites, one hypervisor and one
proxy each, every agent with tunnel_type = geneve.  A VM reaches a VM of the other site
through both proxies, and the WAN carries Geneve with the instance's VNI and the DOVE
option."""

from __future__ import annotations

from typing import Any

from mininet_topos.sites import SitesSpec, active_proxy
from tests.mininet.test_geneve import underlay_capture, wait
from tests.tools.capture import settle

SITES_SPEC = SitesSpec(hypervisors=1, proxies=1, tenants=1, vms_per_tenant=1)
SITES_EXTRA = {"tunnel_type": "geneve"}  # read by conftest's `sites` fixture


def ping_ok(vm: Any, ip: str, count: int = 3) -> bool:
    return f"{count} received" in vm.host.cmd(f"ping -c{count} -i0.1 -W1 {ip}")


def test_vms_of_two_sites_talk_through_geneve_proxies(sites: Any) -> None:
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    intf = a.host.intf().name
    assert a.host.cmd(f"cat /sys/class/net/{intf}/mtu").strip() == "1442"
    wait(lambda: ping_ok(a, b.ip, 1), 20, "t1s1vm1 reaches t1s2vm1")
    proxy = active_proxy(sites, 1)
    with underlay_capture(proxy, 4, proxy.wan_uplink) as seen:
        settle()
        assert ping_ok(a, b.ip, 5)
    assert seen, "nothing on the WAN"
    for dstport, vni, option_class, vxlan_vni in seen:
        assert dstport == "6081" and not vxlan_vni, seen
        assert int(vni, 0) == a.instance and "0xff0d" in option_class.lower(), seen
