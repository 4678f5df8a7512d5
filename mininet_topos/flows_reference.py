"""The reference flow tables in flows/: what a hypervisor's and a proxy's bridge hold
after a fixed scenario, so operators can read a real table and a test can see any
change to it.

    sudo scripts/regen-flows.sh              # rewrites flows/
    sudo .venv/bin/python -m mininet_topos.flows_reference --out /tmp/flows

Builds the two-site emulation (mininet_topos.sites defaults), lets every VM ping
every other VM of its tenant once, in plan order, waits until every agent is quiet
and each dumped table agrees with its agent's state, and writes one file per node:
flows/<role>-<node>.txt, made by dove_ryu.ctl.flows.reference_text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from mininet.log import setLogLevel

from dove_ryu.ctl import common as ctl_common
from dove_ryu.ctl import flows as ctl_flows
from dove_ryu.ctl.common import Node, Snapshot
from dove_ryu.openflow.cookies import Purpose
from mininet_topos.agents import ADMIN_SOCKET, admin
from mininet_topos.hypervisor import BR_DOVE, wait_until
from mininet_topos.sites import SitesNet, SitesSpec, build_sites_net, wait_proxies_active

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "flows"
SPEC = SitesSpec()
# (role, node): the tables kept in flows/.
NODES = (("hypervisor", "s1hv1"), ("proxy", "s1px1"))
ACTIVE_PROXIES = ("s1px1", "s2px1")  # the higher proxy_priority of each site
SETTLE_TIMEOUT = 30.0
PING_TRIES = 3


def header(role: str, node: str) -> list[str]:
    return [
        f"The flow table of {node}, a {role}, on bridge {BR_DOVE}: a reference (flows/README.md).",
        "Made by scripts/regen-flows.sh (mininet_topos.flows_reference); do not edit by hand.",
        f"Scenario: the two-site emulation ({SPEC.sites} sites, each {SPEC.hypervisors} "
        f"hypervisors and {SPEC.proxies} proxies; {SPEC.tenants} tenants, "
        f"{SPEC.vms_per_tenant} VMs each per site),",
        "where every VM pinged every other VM of its tenant once, in plan order.",
        "Stripped: duration, n_packets, n_bytes, idle_age, hard_age. Ports and tables by name;",
        "sorted by table, priority (highest first), match; groups last. '# ' decodes the cookie.",
        "",
    ]


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
    node = snet.hv(name)
    where = Node(str(Path(str(node.rundir)) / ADMIN_SOCKET), BR_DOVE, node.ovs_env())
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
    return all(admin(node).get("pending", 0) == 0 for node in snet.nodes if node.agent)


def settled_tables(snet: SitesNet, timeout: float = SETTLE_TIMEOUT) -> dict[str, str]:
    """The reference texts, once every agent is quiet and every dumped table agrees with
    its agent on two reads in a row (the second read shows nothing was on its way)."""
    last: dict[str, str] = {}

    def ready() -> dict[str, str] | None:
        nonlocal last
        if not quiet(snet):
            return None
        texts = {}
        for role, name in NODES:
            snap = snapshot(snet, name)
            if not consistent(snap):
                return None
            texts[f"{role}-{name}.txt"] = ctl_flows.reference_text(snap, header(role, name))
        done = texts == last
        last = texts
        return texts if done else None

    tables: dict[str, str] = wait_until(ready, timeout, "settled flow tables", step=0.2)
    return tables


def regenerate(
    out: Path, build: Callable[[], tuple[SitesNet, str]] = lambda: build_sites_net(SPEC)
) -> list[Path]:
    """Build the emulation, run the scenario, write the tables into ``out``."""
    snet, _ = build()
    try:
        wait_proxies_active(snet)
        active = [p.name for p in snet.proxies if admin(p).get("active")]
        if sorted(active) != sorted(ACTIVE_PROXIES):
            raise RuntimeError(f"active proxies {active}, expected {list(ACTIVE_PROXIES)}")
        ping_all(snet)
        tables = settled_tables(snet)
    finally:
        snet.stop()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(tables.items()):
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    setLogLevel("warning")
    for path in regenerate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
