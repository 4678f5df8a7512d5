"""The demo's ``--routing`` part (issue 12): a tenant's two subnets, its router, the
gateways and the internet.

Every tenant gets two subnets (VM i in subnet (i-1) % 2: 10.0.<s>.<i>/24, gateway
10.0.<s>.254) joined by its router, which has source NAT to 203.0.113.(10+t) and a
floating IP 203.0.113.(100+t) for t<t>vm1; two gateways (active and standby) join the
routers to an external network where an "internet" host serves HTTP and has no route
into the overlay (mininet_topos.gateway).  The demo then shows, with real packets:

1. every VM takes its address by DHCP from its own hypervisor's agent (its address,
   prefix, router and MTU 1450), with no DHCP server anywhere;
2. every VM reaches every other VM of its tenant, in its subnet and, routed on its own
   hypervisor, in the other one; no echo reaches another tenant;
3. every VM fetches a page from the internet host, which sees the tenant's source NAT
   address (a VM with a floating IP: that address);
4. the internet host reaches each tenant's VM by its floating IP.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mininet_topos import gateway as ext
from mininet_topos.dhcp_client import take_address
from mininet_topos.dove_topo import DoveNet, build_dove_net
from mininet_topos.emulation import VmRecord

GATEWAY_HOST = 254  # the subnets' gateway address: 10.0.<s>.254
_CLIENT = re.compile(r"^(\d+\.\d+\.\d+\.\d+) .*\"GET (\S+) ")


def build(hypervisors: int, tenants: int, vms_per_tenant: int) -> tuple[DoveNet, ext.External]:
    """The routed emulation with the gateways and the internet host, ready."""
    dnet, key = build_dove_net(
        hypervisors,
        tenants,
        vms_per_tenant,
        subnets=2,
        routers=True,
        extra={"peers": ext.hosts_and_gateways(hypervisors)},
    )
    try:
        return dnet, ext.add_gateways(dnet, key)
    except BaseException:
        dnet.stop()
        raise


@dataclass
class DhcpResult:
    vm: str
    ok: bool  # the lease gave the VM its planned address, its subnet's gateway, MTU 1450
    ip: str
    prefix: str
    router: str
    mtu: str


def has_floating_ip(vm: VmRecord) -> bool:
    """t<t>vm1 has its tenant's floating IP (mininet_topos.gateway)."""
    return vm.name == f"t{vm.tenant}vm1"


def _gateway_of(vm: VmRecord) -> str:
    return ".".join(vm.ip.split(".")[:3] + [str(GATEWAY_HOST)])


def take_addresses(dnet: DoveNet) -> list[DhcpResult]:
    """Each VM flushes its address and takes one by DHCP (busybox udhcpc)."""
    results = []
    for vm in dnet.vms:
        lease = take_address(vm)
        result = DhcpResult(
            vm.name,
            ok=False,
            ip=lease.get("ip", ""),
            prefix=lease.get("subnet", ""),
            router=lease.get("router", ""),
            mtu=lease.get("mtu", ""),
        )
        result.ok = (result.ip, result.router, result.mtu) == (vm.ip, _gateway_of(vm), "1450")
        if not result.ok:  # put the planned address back, so the rest of the demo runs
            intf = vm.host.intf().name
            vm.host.cmd(f"ip -4 addr flush dev {intf}; ip addr add {vm.ip_cidr} dev {intf}")
            vm.host.cmd(f"ip route replace default via {_gateway_of(vm)}")
        results.append(result)
    return results


@dataclass
class InternetResult:
    vm: str
    ok: bool  # the page came back
    seen_as: str  # the client address the internet host's log shows
    expected: str  # the tenant's source NAT address, or the VM's floating IP


def fetch_pages(dnet: DoveNet, external: ext.External) -> list[InternetResult]:
    """Each VM fetches a page of its own from the internet host; its log names the client."""
    results = []
    for vm in dnet.vms:
        path = f"/?from={vm.name}"
        body = ext.fetch(vm.host, f"http://{ext.INTERNET_IP}{path}")
        seen = ""
        for line in external.http_log().splitlines():
            found = _CLIENT.match(line)
            if found and found.group(2) == path:
                seen = found.group(1)
        floating = has_floating_ip(vm)
        expected = ext.floating_ip(vm.tenant) if floating else ext.snat_address(vm.tenant)
        results.append(InternetResult(vm.name, body == ext.INDEX_TEXT, seen, expected))
    return results


@dataclass
class FloatingResult:
    floating_ip: str
    vm: str
    ok: bool  # the internet host's pings came back
    received_by: list[str]  # the VMs whose kernels got its echo requests


def reach_floating_ips(
    dnet: DoveNet, external: ext.External, in_echos: Any
) -> list[FloatingResult]:
    """The internet host pings each tenant's floating IP; who received the echoes."""
    results = []
    for tenant in sorted({vm.tenant for vm in dnet.vms}):
        target = next(vm for vm in dnet.tenant_vms(tenant) if has_floating_ip(vm))
        address = ext.floating_ip(tenant)
        before = {vm.name: in_echos(vm) for vm in dnet.vms}
        out = external.internet.cmd(f"ping -n -c3 -i0.2 -W2 {address}")
        received = [vm.name for vm in dnet.vms if in_echos(vm) > before[vm.name]]
        ok = " 0% packet loss" in out
        results.append(FloatingResult(address, target.name, ok, received))
    return results


def report(
    dhcp: list[DhcpResult],
    internet: list[InternetResult],
    floating: list[FloatingResult],
    external: ext.External,
) -> dict[str, Any]:
    active = external.active()
    return {
        "dhcp": [asdict(r) for r in dhcp],
        "internet": [asdict(r) for r in internet],
        "floating_ips": [asdict(r) for r in floating],
        "active_gateway": active.name if active else None,
        "internet_host": ext.INTERNET_IP,
    }


def verdict(routing: dict[str, Any]) -> bool:
    """DHCP, the internet and the floating IPs all worked, and each as expected."""
    return (
        all(r["ok"] for r in routing["dhcp"])
        and all(r["ok"] and r["seen_as"] == r["expected"] for r in routing["internet"])
        and all(r["ok"] and r["received_by"] == [r["vm"]] for r in routing["floating_ips"])
    )


def print_routing(routing: dict[str, Any]) -> None:
    print("\nDHCP, answered by each VM's own hypervisor (busybox udhcpc in the VM):")
    for r in routing["dhcp"]:
        mark = "ok" if r["ok"] else "WRONG"
        print(
            f"  {r['vm']:9} {r['ip'] or '-':>10}/{r['prefix'] or '-':15} router "
            f"{r['router'] or '-':11} mtu {r['mtu'] or '-':5} {mark}"
        )
    print(
        f"\nThe internet (http://{routing['internet_host']}/, through gateway "
        f"{routing['active_gateway']}): the address the server saw"
    )
    for r in routing["internet"]:
        mark = "ok" if r["ok"] and r["seen_as"] == r["expected"] else "WRONG"
        print(
            f"  {r['vm']:9} page {'fetched' if r['ok'] else 'NOT fetched':11} seen as "
            f"{r['seen_as'] or '-':15} (expected {r['expected']}) {mark}"
        )
    print("\nFloating IPs, pinged from the internet host:")
    for r in routing["floating_ips"]:
        got = ", ".join(r["received_by"]) or "nobody"
        print(f"  {r['floating_ip']:15} -> {r['vm']:9} {'answered' if r['ok'] else 'NO ANSWER'}, "
              f"received by {got}")  # fmt: skip
