"""The multi-site emulation's plan (mininet_topos.sites), without building anything."""

from __future__ import annotations

import pytest

from mininet_topos.sites import (
    PROXY_PRIORITY,
    SitesSpec,
    hv_name,
    plan_sites,
    probe_name,
    proxy_name,
    proxy_wan_ip,
    site_switch,
)

pytestmark = pytest.mark.unit

IFNAMSIZ = 15


def test_each_tenant_is_one_overlay_over_every_site() -> None:
    spec = SitesSpec()
    plans = plan_sites(spec)
    assert len(plans) == spec.tenants * spec.sites * spec.vms_per_tenant
    for t in range(1, spec.tenants + 1):
        mine = [p for p in plans if p.tenant == t]
        assert {p.instance for p in mine} == {5000 + t}
        assert len({p.mac for p in mine}) == len({p.ip for p in mine}) == len(mine)
        for s in spec.site_numbers:
            in_site = [p for p in mine if p.site == s]
            assert {p.hypervisor for p in in_site} == {hv_name(s, n) for n in (1, 2)}
    # Every tenant has the same plan: isolation is tested with identical addresses.
    plan_of = {t: {(p.site, p.mac, p.ip_cidr) for p in plans if p.tenant == t} for t in (1, 2)}
    assert plan_of[1] == plan_of[2]
    vm = next(p for p in plans if p.name == "t2s2vm1")
    assert (vm.mac, vm.ip_cidr, vm.port) == ("02:00:00:00:02:01", "10.0.0.21/24", "t2s2vm1-p")


def test_names_fit_interface_names_at_the_largest_spec() -> None:
    spec = SitesSpec(sites=24, hypervisors=199, proxies=2, tenants=99, vms_per_tenant=9)
    names = [f"{p.name}-eth0" for p in plan_sites(spec)] + [p.port for p in plan_sites(spec)]
    names += [f"{hv_name(24, 199)}-eth0", f"{proxy_name(24, 2)}-eth1", f"{probe_name(24)}-eth0"]
    names += [f"{site_switch(24)}-eth{199 + 2 + 1}"]
    assert max(len(n) for n in names) <= IFNAMSIZ
    assert proxy_wan_ip(24, 2) == "172.31.0.242"  # below the WAN probe's .250
    assert sorted(PROXY_PRIORITY.values(), reverse=True) == [200, 100]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sites": 0},
        {"sites": 25},
        {"hypervisors": 200},
        {"proxies": 0},
        {"proxies": 3},
        {"vms_per_tenant": 10},
        {"wan_mtu": 575},
        {"wan_mtu": 9001},
        {"wan_oversize": "drop"},
    ],
)
def test_spec_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SitesSpec(**kwargs)  # type: ignore[arg-type]


def test_spec_is_dove_mode_for_migration() -> None:
    assert SitesSpec().mode == "dove"
