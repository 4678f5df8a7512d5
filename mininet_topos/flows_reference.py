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
from typing import TYPE_CHECKING

from dove_ryu.ctl import flows as ctl_flows
from dove_ryu.ctl.common import Snapshot
from dove_ryu.openflow.cookies import Purpose

if TYPE_CHECKING:
    from mininet_topos.sites import SitesNet

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "flows"
BRIDGE = "br-dove"
# The scenario's shape: mininet_topos.sites.SitesSpec's defaults (checked in `regenerate`).
SITES, HYPERVISORS, PROXIES, TENANTS, VMS_PER_TENANT = 2, 2, 2, 2, 2
# (role, node): the tables kept in flows/.
NODES = (("hypervisor", "s1hv1"), ("proxy", "s1px1"))
ACTIVE_PROXIES = ("s1px1", "s2px1")  # the higher proxy_priority of each site
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
    from dove_ryu.ctl import common as ctl_common
    from dove_ryu.ctl.common import Node
    from mininet_topos.agents import ADMIN_SOCKET

    node = snet.hv(name)
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


def main(argv: list[str] | None = None) -> int:
    from mininet.log import setLogLevel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    setLogLevel("warning")
    for path in regenerate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
