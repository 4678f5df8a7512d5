"""The reference flow tables in flows/: what a hypervisor's and a proxy's bridge hold
after a fixed scenario, so operators can read a real table and tests can see any
change to it.

The scenario runs in two places and must come out the same, byte for byte: on fake
switches (tests.fakesites, unprivileged: what `scripts/regen-flows.sh` and the unit
test use) and in the two-site emulation on live Open vSwitch (this module's `regenerate`,
as root: what the Mininet test uses). Both describe a node by a `Snapshot` (the agent's
status, the bridge's ports, flows and groups as ovs-ofctl prints them, parsed by the
`ovs` package) and turn it into text with `reference_texts`, the one normaliser.

    scripts/regen-flows.sh                                  # rewrites flows/ (fake switches)
    sudo scripts/regen-flows.sh --live --out /tmp/flows     # the same from live OVS

Only the shared part imports nothing from Mininet, so the unit tests can use it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dove_ryu.ctl import flows as ctl_flows
from dove_ryu.ctl.common import Snapshot
from dove_ryu.openflow.cookies import Purpose

if TYPE_CHECKING:
    from mininet_topos.dove_topo import DoveNet
    from mininet_topos.gateway import External
    from mininet_topos.sites import SitesNet

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "flows"
BRIDGE = "br-dove"
# The scenario's shape: mininet_topos.sites.SitesSpec's defaults (checked in `regenerate`).
SITES, HYPERVISORS, PROXIES, TENANTS, VMS_PER_TENANT = 2, 2, 2, 2, 2
# (role, node): the tables kept in flows/.
NODES = (("hypervisor", "s1hv1"), ("proxy", "s1px1"))
ACTIVE_PROXIES = ("s1px1", "s2px1")  # the higher proxy_priority of each site
# A gateway's table comes from live OVS only (the gateway emulation, issue 12): no fake
# scenario makes it, and the Mininet test of the gateways compares it.
GATEWAY_NODE = ("gateway", "gw1")  # the preferred, active one
LIVE_ONLY = (f"{GATEWAY_NODE[0]}-{GATEWAY_NODE[1]}.txt",)
SETTLE_TIMEOUT = 30.0
PING_TRIES = 3


def header(role: str, node: str) -> list[str]:
    return [
        f"The flow table of {node}, a {role}, on bridge {BRIDGE}: a reference (flows/README.md).",
        "Made by scripts/regen-flows.sh (fake switches; live OVS must agree); do not edit.",
        f"Scenario: the two-site emulation ({SITES} sites, each {HYPERVISORS} "
        f"hypervisors and {PROXIES} proxies; {TENANTS} tenants, "
        f"{VMS_PER_TENANT} VMs each per site),",
        "where every VM pinged every other VM of its tenant once, in plan order.",
        "Stripped: duration, n_packets, n_bytes, idle_age, hard_age. Ports and tables by name;",
        "sorted by table, priority (highest first), match; groups last. '# ' decodes the cookie.",
        "",
    ]


def gateway_header() -> list[str]:
    role, node = GATEWAY_NODE
    return [
        f"The flow table of {node}, a {role}, on bridge {BRIDGE}: a reference (flows/README.md).",
        "Made by scripts/regen-flows.sh --live (live OVS only); do not edit.",
        "Scenario: the gateway emulation (mininet_topos.gateway: 3 hypervisors, 2 tenants of",
        "4 VMs in 2 subnets, a router each with source NAT and a floating IP for vm1, two",
        "gateways), where every VM fetched a page from the internet host once, in plan order,",
        "then the internet host pinged each floating IP once.",
        "Stripped: duration, n_packets, n_bytes, idle_age, hard_age. Ports and tables by name;",
        "sorted by table, priority (highest first), match; groups last. '# ' decodes the cookie.",
        "",
    ]


def gateway_text(snap: Snapshot) -> dict[str, str]:
    """File name -> text of the gateway's reference table."""
    return {LIVE_ONLY[0]: ctl_flows.reference_text(snap, gateway_header())}


def reference_texts(snapshots: Mapping[str, Snapshot]) -> dict[str, str]:
    """File name -> text for each node of `NODES`: the one normaliser of both sources."""
    return {
        f"{role}-{name}.txt": ctl_flows.reference_text(snapshots[name], header(role, name))
        for role, name in NODES
    }


def write_tables(out: Path, tables: Mapping[str, str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(tables.items()):
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


# ------------------------------------------------------------------ live OVS (root)


def ping_all(snet: SitesNet) -> None:
    """Every VM pings every other VM of its tenant once; a lost reply is retried."""
    for src in snet.vms:
        for dst in snet.tenant_vms(src.tenant):
            if dst is src:
                continue
            for _ in range(PING_TRIES):
                _, _, rc = src.host.pexec(["ping", "-n", "-c1", "-W2", dst.ip])
                if rc == 0:
                    break
            else:
                raise RuntimeError(f"{src.name} cannot ping {dst.name} ({dst.ip})")


def snapshot(snet: SitesNet, name: str) -> Snapshot:
    return node_snapshot(snet.hv(name))


def node_snapshot(node: Any) -> Snapshot:
    """What dovectl reads of a node: its agent's status, the bridge's ports, flows, groups."""
    from dove_ryu.ctl import common as ctl_common
    from dove_ryu.ctl.common import Node
    from mininet_topos.agents import ADMIN_SOCKET

    where = Node(str(Path(str(node.rundir)) / ADMIN_SOCKET), BRIDGE, node.ovs_env())
    return ctl_common.snapshot(where, ctl_common.run_tool, ctl_common.ask_agent)


def consistent(snap: Snapshot) -> bool:
    """The table holds exactly the agent's state: a flow for each learned endpoint,
    local endpoint and member, and none for anything else."""
    view = snap.view
    if not view.known:
        return False
    found: dict[Purpose, set[tuple[int | None, str | None]]] = {
        p: set() for p in (Purpose.LEARNED, Purpose.LOCAL_ENDPOINT, Purpose.MEMBER)
    }
    for flow in snap.flows:
        decoded = flow.decoded
        if decoded is not None and decoded.purpose in found:
            origin = snap.origin(flow)
            key = origin.host if decoded.purpose is Purpose.MEMBER else origin.mac
            found[decoded.purpose].add((origin.instance, key))
    learned = {(ep.instance, ep.mac) for ep in view.learned}
    local = {(ep.instance, ep.mac) for ep in view.local}
    members = {
        (instance, host)
        for table in (view.members, view.remote_proxies)
        for instance, hosts in table.items()
        for host in hosts
    }
    return (
        found[Purpose.LEARNED] == learned
        and found[Purpose.LOCAL_ENDPOINT] == local
        and found[Purpose.MEMBER] == members
    )


def quiet(snet: SitesNet) -> bool:
    """No agent is still resolving anything."""
    from mininet_topos.agents import admin

    return all(admin(node).get("pending", 0) == 0 for node in snet.nodes if node.agent)


def settled_tables(snet: SitesNet, timeout: float = SETTLE_TIMEOUT) -> dict[str, str]:
    """The reference texts, once every agent is quiet and every dumped table agrees with
    its agent on two reads in a row (the second read shows nothing was on its way)."""
    from mininet_topos.hypervisor import wait_until

    last: dict[str, str] = {}

    def ready() -> dict[str, str] | None:
        nonlocal last
        if not quiet(snet):
            return None
        snaps = {name: snapshot(snet, name) for _, name in NODES}
        if not all(consistent(snap) for snap in snaps.values()):
            return None
        texts = reference_texts(snaps)
        done = texts == last
        last = texts
        return texts if done else None

    tables: dict[str, str] = wait_until(ready, timeout, "settled flow tables", step=0.2)
    return tables


def regenerate(out: Path, build: Callable[[], tuple[SitesNet, str]] | None = None) -> list[Path]:
    """Build the emulation, run the scenario, write the tables into ``out``."""
    from mininet_topos.agents import admin
    from mininet_topos.sites import SitesSpec, build_sites_net, wait_proxies_active

    spec = SitesSpec()
    shape = (spec.sites, spec.hypervisors, spec.proxies, spec.tenants, spec.vms_per_tenant)
    if shape != (SITES, HYPERVISORS, PROXIES, TENANTS, VMS_PER_TENANT):
        raise RuntimeError(f"the emulation's defaults changed to {spec}: update the scenario")
    snet, _ = (build or (lambda: build_sites_net(spec)))()
    try:
        wait_proxies_active(snet)
        active = [p.name for p in snet.proxies if admin(p).get("active")]
        if sorted(active) != sorted(ACTIVE_PROXIES):
            raise RuntimeError(f"active proxies {active}, expected {list(ACTIVE_PROXIES)}")
        ping_all(snet)
        tables = settled_tables(snet)
    finally:
        snet.stop()
    return write_tables(out, tables)


def gateway_scenario(dnet: DoveNet, external: External) -> None:
    """Every VM fetches a page from the internet host once, in plan order; then the
    internet host pings each floating IP once (a lost one is retried)."""
    from mininet_topos import gateway

    for vm in dnet.vms:
        for _ in range(PING_TRIES):
            if gateway.fetch(vm.host, f"http://{gateway.INTERNET_IP}/") == gateway.INDEX_TEXT:
                break
        else:
            raise RuntimeError(f"{vm.name} cannot fetch from the internet host")
    for tenant in sorted({vm.tenant for vm in dnet.vms}):
        address = gateway.floating_ip(tenant)
        for _ in range(PING_TRIES):
            _, _, rc = external.internet.pexec(["ping", "-n", "-c1", "-W2", address])
            if rc == 0:
                break
        else:
            raise RuntimeError(f"the internet host cannot ping {address}")


def settled_gateway_table(external: External, timeout: float = SETTLE_TIMEOUT) -> dict[str, str]:
    """The gateway's reference text, once its agent is quiet and two reads agree."""
    from mininet_topos.agents import admin
    from mininet_topos.hypervisor import wait_until

    gw = next(g for g in external.gateways if g.name == GATEWAY_NODE[1])
    last: dict[str, str] = {}

    def ready() -> dict[str, str] | None:
        nonlocal last
        if admin(gw).get("pending", 0):
            return None
        texts = gateway_text(node_snapshot(gw))
        done = texts == last
        last = texts
        return texts if done else None

    tables: dict[str, str] = wait_until(ready, timeout, "a settled gateway table", step=0.5)
    return tables


def regenerate_gateway(out: Path) -> list[Path]:
    """Build the gateway emulation, run its scenario, write the gateway's table."""
    from mininet_topos.agents import build_dove_net
    from mininet_topos.gateway import add_gateways, hosts_and_gateways

    extra = {"peers": hosts_and_gateways(3)}
    dnet, key = build_dove_net(3, 2, 4, extra=extra, subnets=2, routers=True)
    try:
        external = add_gateways(dnet, key)
        try:
            gateway_scenario(dnet, external)
            tables = settled_gateway_table(external)
        finally:
            external.stop()
    finally:
        dnet.stop()
    return write_tables(out, tables)


def main(argv: list[str] | None = None) -> int:
    from mininet.log import setLogLevel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--only", choices=("sites", "gateway"), help="one scenario (default: both)")
    args = parser.parse_args(argv)
    setLogLevel("warning")
    paths = []
    if args.only in (None, "sites"):
        paths += regenerate(args.out)
    if args.only in (None, "gateway"):
        paths += regenerate_gateway(args.out)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
