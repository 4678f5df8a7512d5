"""Tenant routers in the emulation (docs/routing.md, "Declaring routers").

`add_router` writes a router's marks on the integration bridge of every hypervisor
(and of any other node given, a gateway), as an orchestrator would; `route_tenants`
gives each tenant of a two-subnet plan its router (id = tenant, gateway address
10.0.<subnet>.254) and points the VMs' default route at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Interface
from typing import TYPE_CHECKING, Any

from mininet_topos.dove_agent import admin
from mininet_topos.hypervisor import Hypervisor, wait_until

if TYPE_CHECKING:
    from mininet_topos.dove_topo import DoveNet

GATEWAY_HOST = 254  # a subnet's gateway address: 10.0.<subnet>.254


def gateway_cidr(subnet: int) -> str:
    return f"10.0.{subnet}.{GATEWAY_HOST}/24"


def router_marks(
    router_id: int,
    subnets: Mapping[int, str],
    snat: str | None = None,
    fips: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The bridge's external_ids that declare one router: ``subnets`` maps an instance
    to its gateway address with prefix."""
    key = f"dove-router-{router_id}"
    marks = {key: ",".join(f"{i}={gw}" for i, gw in sorted(subnets.items()))}
    if snat:
        marks[f"{key}-snat"] = snat
    if fips:
        marks[f"{key}-fips"] = ",".join(f"{e}={i}" for e, i in sorted(fips.items()))
    return marks


def add_router(
    dnet: DoveNet,
    router_id: int,
    subnets: Mapping[int, str],
    snat: str | None = None,
    fips: Mapping[str, str] | None = None,
    gateways: Sequence[str] = (),
    nodes: Iterable[Hypervisor] = (),
) -> None:
    """Declare a router on every hypervisor of ``dnet`` and on ``nodes``."""
    marks = router_marks(router_id, subnets, snat, fips)
    if gateways:
        marks["dove-gateways"] = ",".join(gateways)
    for node in [*dnet.hypervisors, *nodes]:
        args: list[str] = []
        for key, value in marks.items():
            args += ["--", "br-set-external-id", "br-dove", key, value]
        node.vsctl(*args[1:])


def _knows_routers(hv: Hypervisor, ids: set[str]) -> bool:
    status: dict[str, Any] = admin(hv)
    return ids <= set(status.get("routing", {}).get("routers", {}))


def route_tenants(dnet: DoveNet, timeout: float = 30.0) -> None:
    """A router per tenant joining its subnets; each VM routes through its gateway."""
    tenants = sorted({vm.tenant for vm in dnet.vms})
    for tenant in tenants:
        subnets = {
            vm.instance: gateway_cidr(_subnet_of(vm.ip_cidr))
            for vm in dnet.vms
            if vm.tenant == tenant
        }
        add_router(dnet, tenant, subnets)
    for vm in dnet.vms:
        gateway = gateway_cidr(_subnet_of(vm.ip_cidr)).split("/")[0]
        vm.host.cmd(f"ip route replace default via {gateway}")
    ids = {str(t) for t in tenants}
    for hv in dnet.hypervisors:
        wait_until(lambda hv=hv: _knows_routers(hv, ids), timeout, f"{hv.name} routers")


def _subnet_of(ip_cidr: str) -> int:
    return int(IPv4Interface(ip_cidr).ip.packed[2])
