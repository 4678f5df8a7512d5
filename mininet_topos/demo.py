"""The DOVE demo: tenants with identical address plans, isolated, across hypervisors.

    sudo scripts/demo.sh [--hypervisors 3] [--tenants 2] [--vms-per-tenant 2] [--json] [--cli]
    sudo scripts/demo.sh --sites 2 [--hypervisors 2] [--wan-mtu 1400] ...

Builds the emulation with a real agent on every hypervisor, pings from every VM
to every address of its tenant's plan (the first ping of each pair is the
first packet that pair ever sent), and shows who received each ping: a VM of
the same tenant, never the VM of another tenant that has the same MAC and IP.
Then prints the agents' learn counters and an excerpt of each flow table, and
tears everything down, checking that nothing is left behind.

With ``--sites N`` the tenants span N sites that cannot reach each other, each
with two VAN proxies (mininet_topos.sites): pings across sites go through the
active proxy of each site, and the proxies' flow tables are shown too.

With ``--directory`` the hosts (and, with ``--sites``, the proxies) find each other
through a 3-member directory cluster (one per site; no peers lists), and ``--push T``
(repeatable) puts tenant T's instance in ``push`` resolution: its endpoints reach every
host before the first ping; ``--lookup T`` in ``lookup``: a miss is answered from the
agent's copy of the directory.  The report says which mode each instance used, with its
first-ping RTT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mininet.cli import CLI
from mininet.log import setLogLevel

from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from mininet_topos import demo_routing, sites
from mininet_topos.dove_agent import admin
from mininet_topos.dove_topo import (
    UNDERLAY_SWITCH,
    DoveNet,
    build_dove_net,
    pushed,
    set_resolution,
)
from mininet_topos.emulation import VmRecord
from mininet_topos.hypervisor import wait_until

RTT = re.compile(r"time=([\d.]+) ms")
VOLATILE = re.compile(r" (duration|n_packets|n_bytes|idle_age|hard_age)=[^,]+,")
SHOWN_COUNTERS = (
    "packet_in", "learn_requests_sent", "learn_requests_received", "learn_replies_sent",
    "learned", "packets_released", "announce_sent", "announce_received",
)  # fmt: skip


def in_echos(vm: VmRecord) -> int:
    """ICMP echo requests this VM's kernel has received (per-namespace SNMP counter)."""
    lines = [
        line.split()
        for line in vm.host.cmd("cat /proc/net/snmp").splitlines()
        if line.startswith("Icmp:")
    ]
    header, values = lines[0], lines[1]
    return int(values[header.index("InEchos")])


@dataclass
class PingResult:
    src: str
    dst: str
    ok: bool
    first_rtt_ms: float | None
    steady_rtt_ms: float | None
    known_before: bool  # the source's host had learned the target (e.g. from its request)
    received_by: list[str] = field(default_factory=list)


def known_to(src: VmRecord, dst: VmRecord) -> bool:
    """Whether the source's hypervisor already knows where the target is (in the
    target's instance: with --routing, the other subnet's)."""
    info = admin(src.hypervisor)["instances"].get(str(dst.instance), {})
    return any(ep["mac"] == dst.mac for ep in info.get("learned", []) + info.get("local", []))


def ping_pair(dnet: DoveNet, src: VmRecord, dst: VmRecord) -> PingResult:
    known = known_to(src, dst)
    before = {vm.name: in_echos(vm) for vm in dnet.vms}
    first = src.host.cmd(f"ping -c1 -W2 {dst.ip}")
    steady = src.host.cmd(f"ping -c5 -i0.05 -W2 {dst.ip}")
    received = [vm.name for vm in dnet.vms if in_echos(vm) > before[vm.name]]
    first_rtt = RTT.findall(first)
    steady_rtt = sorted(float(x) for x in RTT.findall(steady))
    return PingResult(
        src.name,
        dst.name,
        ok=bool(first_rtt),
        first_rtt_ms=float(first_rtt[0]) if first_rtt else None,
        steady_rtt_ms=steady_rtt[len(steady_rtt) // 2] if steady_rtt else None,
        known_before=known,
        received_by=received,
    )


OVERLAY_STATE = (Purpose.MEMBER, Purpose.LOCAL_ENDPOINT, Purpose.LEARNED, Purpose.ARP_LEARNED)
COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")


def flow_excerpt(hv: Any, lines: int) -> tuple[int, list[str]]:
    """The flows that carry overlay state (members, endpoints), each with its cookie decoded."""
    flows = hv.ofctl("dump-flows", "br-dove", "--names").splitlines()
    excerpt = []
    for line in flows:
        found = COOKIE.search(line)
        cookie = cookies.decode(int(found.group(1), 16)) if found else None
        if cookie is not None and cookie.purpose in OVERLAY_STATE:
            excerpt.append(f"{VOLATILE.sub('', line).strip()}  # {cookie}")
    return len(flows), excerpt[:lines]


def leftovers(rundirs: list[Path], bridges: list[str]) -> list[str]:
    """What this run could have left behind: its run directories, processes started
    in them (agents run there; OVS daemons name them), and the underlay bridges."""
    found = [f"directory: {d}" for d in rundirs if d.exists()]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(str(d) in cwd or str(d) in cmdline for d in rundirs):
            found.append(f"process {proc.name}: {cmdline.strip()}")
    for bridge in bridges:
        shown = subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False)
        if shown.returncode == 0:
            found.append(f"link: {bridge}")
    return found


def _build(args: argparse.Namespace) -> tuple[Any, list[Any], list[str], Any]:
    """The emulation, the nodes that run agents, the bridges it makes in the root
    namespace (checked at teardown), and (--routing) its external network."""
    if args.routing:
        dnet, external = demo_routing.build(args.hypervisors, args.tenants, args.vms_per_tenant)
        bridges = [UNDERLAY_SWITCH, demo_routing.ext.EXTERNAL_SWITCH]
        return dnet, [*dnet.hypervisors, *external.gateways], bridges, external
    dnet, nodes, bridges = _build_overlay(args)
    return dnet, nodes, bridges, None


def _build_overlay(args: argparse.Namespace) -> tuple[Any, list[Any], list[str]]:
    if args.sites == 1:
        dnet, _key = build_dove_net(
            args.hypervisors, args.tenants, args.vms_per_tenant, directory=args.directory
        )
        try:
            for tenant in args.lookup:
                set_resolution(dnet, dnet.tenant_vms(tenant)[0].instance, "lookup")
            for tenant in args.push:
                push_instance(dnet, tenant)
        except BaseException:
            dnet.stop()
            raise
        return dnet, dnet.hypervisors, [UNDERLAY_SWITCH]
    spec = sites.SitesSpec(
        sites=args.sites,
        hypervisors=args.hypervisors,
        tenants=args.tenants,
        vms_per_tenant=args.vms_per_tenant,
        wan_mtu=args.wan_mtu,
        directory=args.directory,
    )
    snet, _key = sites.build_sites_net(spec)
    try:
        sites.wait_proxies_active(snet)
    except BaseException:
        snet.stop()
        raise
    bridges = [sites.site_switch(s) for s in spec.site_numbers] + [sites.WAN_SWITCH]
    return snet, snet.nodes, bridges


def push_instance(dnet: DoveNet, tenant: int) -> None:
    """Set the tenant's instance to ``push`` (as an operator would, with dovectl) and wait
    until every host of the tenant has the others' endpoints, before any packet."""
    instance = dnet.tenant_vms(tenant)[0].instance
    set_resolution(dnet, instance, "push")
    wait_until(lambda: pushed(dnet, instance), 15.0, f"tenant {tenant}'s endpoints to be pushed")


def resolution(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per instance: how its addresses were resolved, and the median RTT of the first
    ping of each of its pairs (whether or not the source's host knew the target)."""
    out: dict[str, Any] = {}
    for v in report["layout"]:
        mode = (
            "push"
            if v["tenant"] in args.push
            else "lookup"
            if v["tenant"] in args.lookup
            else "learn"
        )
        out.setdefault(str(v["instance"]), {"tenant": v["tenant"], "mode": mode})
    for instance, row in out.items():
        vms = {v["vm"] for v in report["layout"] if str(v["instance"]) == instance}
        firsts = sorted(
            p["first_rtt_ms"]
            for p in report["pings"]
            if p["src"] in vms and p["first_rtt_ms"] is not None
        )
        row["first_rtt_ms_median"] = firsts[len(firsts) // 2] if firsts else None
    return out


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    dnet, nodes, bridges, external = _build(args)
    report: dict[str, Any] = {"layout": [], "pings": [], "agents": {}, "flows": {}}
    rundirs = [Path(hv.rundir) for hv in nodes]
    try:
        if external is not None:
            dhcp = demo_routing.take_addresses(dnet)  # before any other packet
        for vm in dnet.vms:
            report["layout"].append(
                {
                    "vm": vm.name,
                    "tenant": vm.tenant,
                    "instance": vm.instance,
                    "hypervisor": vm.hypervisor.name,
                    "mac": vm.mac,
                    "ip": vm.ip,
                }
            )
        for src in dnet.vms:
            for dst in dnet.tenant_vms(src.tenant):
                if dst is not src:
                    report["pings"].append(asdict(ping_pair(dnet, src, dst)))
        if external is not None:
            internet = demo_routing.fetch_pages(dnet, external)
            floating = demo_routing.reach_floating_ips(dnet, external, in_echos)
            report["routing"] = demo_routing.report(dhcp, internet, floating, external)
        for hv in nodes:
            report["agents"][hv.name] = admin(hv)
            count, excerpt = flow_excerpt(hv, args.flow_lines)
            report["flows"][hv.name] = {"count": count, "excerpt": excerpt}
        if args.cli:
            CLI(dnet.net)
    finally:
        if external is not None:
            external.stop()
        dnet.stop()
    report["leftovers"] = leftovers(rundirs, bridges)
    if args.directory:
        report["resolution"] = resolution(report, args)
    return report


def verdict(report: dict[str, Any]) -> tuple[bool, bool]:
    """(every same-tenant ping answered by its VM only and, with --routing, DHCP, the
    internet and the floating IPs as expected; nothing crossed tenants)."""
    tenant = {v["vm"]: v["tenant"] for v in report["layout"]}
    reached = all(p["ok"] and p["received_by"] == [p["dst"]] for p in report["pings"])
    if "routing" in report:
        reached = reached and demo_routing.verdict(report["routing"])
    isolated = all(tenant[r] == tenant[p["src"]] for p in report["pings"] for r in p["received_by"])
    return reached, isolated


def print_report(report: dict[str, Any]) -> None:
    vms = [v["vm"] for v in report["layout"]]
    print("\nLayout (tenants share one address plan):")
    for v in report["layout"]:
        print(
            f"  {v['vm']:9} tenant {v['tenant']} instance {v['instance']} on "
            f"{v['hypervisor']:6} {v['mac']} {v['ip']}"
        )
    print("\nReachability: row pings every address of its tenant's plan; a cell shows")
    print("whether that VM received the pings (Y), or not (.), '-' is the VM itself.")
    width = max(len(v) for v in vms) + 1
    print(" " * width + " ".join(f"{v:>{width}}" for v in vms))
    for src in vms:
        got = {r for p in report["pings"] if p["src"] == src for r in p["received_by"]}
        cells = ["-" if d == src else ("Y" if d in got else ".") for d in vms]
        print(f"{src:{width}}" + " ".join(f"{c:>{width}}" for c in cells))
    reached, isolated = verdict(report)
    cold = [p for p in report["pings"] if not p["known_before"]]
    firsts = [p["first_rtt_ms"] for p in cold if p["first_rtt_ms"] is not None]
    steadies = [p["steady_rtt_ms"] for p in report["pings"] if p["steady_rtt_ms"] is not None]
    lost_first = sum(1 for p in cold if not p["ok"])
    print(
        f"\nwithin each tenant: {'all reached' if reached else 'SOME UNREACHED'}; "
        f"across tenants: {'nothing' if isolated else 'LEAKED'}"
    )
    if firsts and steadies:
        print(
            f"first ping to a target its host had not learned (ping -c1): {lost_first} lost of "
            f"{len(cold)}, "
            f"RTT median {sorted(firsts)[len(firsts) // 2]:.2f} ms; steady-state median "
            f"{sorted(steadies)[len(steadies) // 2]:.2f} ms"
        )
    print("\nAgent counters:")
    print(" " * 26 + "".join(f"{h:>10}" for h in report["agents"]))
    for name in SHOWN_COUNTERS:
        print(
            f"  {name:24}"
            + "".join(f"{a['counters'].get(name, 0):>10}" for a in report["agents"].values())
        )
    drops = sorted(
        {n for a in report["agents"].values() for n in a["counters"] if n.startswith("drop_")}
    )
    for name in drops:
        print(
            f"  {name:24}"
            + "".join(f"{a['counters'].get(name, 0):>10}" for a in report["agents"].values())
        )
    for hv, flows in report["flows"].items():
        print(f"\n{hv}: br-dove has {flows['count']} flows; the overlay state among them:")
        for line in flows["excerpt"]:
            print(f"  {line}")
    if "routing" in report:
        demo_routing.print_routing(report["routing"])
    if "resolution" in report:
        print("\nResolution, through the directory (--directory):")
        for instance, row in report["resolution"].items():
            rtt = row["first_rtt_ms_median"]
            shown = f"{rtt:.2f} ms" if rtt is not None else "-"
            print(
                f"  instance {instance} (tenant {row['tenant']}): {row['mode']:5} "
                f"first-ping RTT median {shown}"
            )
    print(f"\nteardown: {'clean' if not report['leftovers'] else report['leftovers']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hypervisors", type=int, default=None, help="default 3; per site with --sites (2)"
    )
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--vms-per-tenant", type=int, default=2, help="per site with --sites")
    parser.add_argument(
        "--sites", type=int, default=1, help="sites joined by VAN proxies (hypervisors per site)"
    )
    parser.add_argument("--wan-mtu", type=int, default=1500, help="inter-site MTU (--sites)")
    parser.add_argument(
        "--flow-lines", type=int, default=14, help="flow table lines shown per hypervisor"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--directory", action="store_true", help="hosts find each other through a directory"
    )
    parser.add_argument(
        "--push",
        type=int,
        action="append",
        default=[],
        metavar="TENANT",
        help="with --directory: this tenant's instance in push resolution (repeatable)",
    )
    parser.add_argument(
        "--lookup",
        type=int,
        action="append",
        default=[],
        metavar="TENANT",
        help="with --directory: this tenant's instance in lookup resolution (repeatable)",
    )
    parser.add_argument(
        "--routing",
        action="store_true",
        help="two subnets per tenant joined by its router, two gateways and an internet host: "
        "VMs take their addresses by DHCP, reach the other subnet, fetch a page from the "
        "internet host, which reaches each tenant by its floating IP",
    )
    parser.add_argument(
        "--cli", action="store_true", help="open the Mininet CLI before tearing down"
    )
    args = parser.parse_args(argv)
    if args.hypervisors is None:
        args.hypervisors = 3 if args.sites == 1 else 2
    if (args.push or args.lookup) and args.sites != 1:
        parser.error("--push and --lookup are for one site (no --sites) for now")
    if (args.push or args.lookup) and not args.directory:
        parser.error("--push and --lookup need --directory")
    if set(args.push) & set(args.lookup):
        parser.error("a tenant's instance is in one resolution: --push or --lookup")
    if args.routing and (args.sites != 1 or args.directory):
        parser.error("--routing runs on one site with static discovery (no --sites, --directory)")
    if args.vms_per_tenant < 2:
        parser.error("--vms-per-tenant must be at least 2 so tenants span hypervisors")
    setLogLevel("warning")
    report = run_demo(args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    reached, isolated = verdict(report)
    return 0 if reached and isolated and not report["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())
