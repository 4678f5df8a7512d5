"""dovectl against a live two-site deployment: every read command (text and --json),
attach, detach and migrate with their effect on real traffic, and the picture.

dovectl runs inside a node's namespace with that node's OVS environment, as an
operator would run it on the hypervisor itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dove_ryu.model import link_local
from mininet_topos.agents import ADMIN_SOCKET
from mininet_topos.sites import (
    SitesNet,
    SitesSpec,
    active_proxy,
)

DOVECTL = str(Path(sys.executable).parent / "dovectl")


SITES_SPEC = SitesSpec(tenants=2, vms_per_tenant=2)  # read by conftest's `sites` fixture


def sock(node: Any) -> str:
    return str(Path(node.rundir) / ADMIN_SOCKET)


def dovectl(node: Any, *args: str, ok: bool = True) -> tuple[int, str]:
    """Run dovectl in ``node``'s namespace against its agent and OVS."""
    cmd = [DOVECTL, "--admin-socket", sock(node), "--ovsdb", f"unix:{node.db_sock}", *args]
    out, err, rc = node.pexec(cmd, env=node.ovs_env())
    if ok:
        assert rc == 0, f"dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return rc, out + err


def as_json(node: Any, *args: str) -> Any:
    return json.loads(dovectl(node, *args, "--json")[1])


def ping_ok(vm: Any, ip: str) -> bool:
    return "3 received" in vm.host.cmd(f"ping -n -c3 -i0.1 -W1 {ip}")


def test_reads_show_instances_endpoints_members_proxies_counters(sites: SitesNet) -> None:
    a, b, far = sites.vm("t1s1vm1"), sites.vm("t1s1vm2"), sites.vm("t1s2vm1")
    hv = a.hypervisor
    assert ping_ok(a, b.ip) and ping_ok(a, far.ip)
    proxy = active_proxy(sites, 1)

    instances = {r["instance"]: r for r in as_json(hv, "instances")}
    mine = [v for v in sites.vms if v.hypervisor is hv]
    assert set(instances) >= {v.instance for v in mine}
    assert instances[a.instance]["local"] == sum(v.instance == a.instance for v in mine)

    endpoints = {(e["kind"], e["mac"]): e for e in as_json(hv, "endpoints")}
    local = endpoints[("local", a.mac)]
    assert local["port"] == a.port and local["ips"] == [a.ip] and local["seq"] > 0
    # Who learned it: the other host of the site, and the proxy for the other site.
    assert {b.hypervisor.underlay_ip, proxy.underlay_ip} <= set(local["learned_by"])
    near, remote = endpoints[("learned", b.mac)], endpoints[("learned", far.mac)]
    assert near["host"] == b.hypervisor.underlay_ip and near["answered_by"] == near["host"]
    # Its addresses as its host announced them, through the proxies: with its link-local.
    assert remote["host"] == proxy.underlay_ip
    assert remote["ips"] == [far.ip, str(link_local(far.mac))]
    assert remote["age"] >= 0 and remote["seq"] > 0

    members = as_json(hv, "members", "--instance", str(a.instance))
    assert proxy.underlay_ip in members[str(a.instance)]["members"]

    proxies = {p["address"]: p for p in as_json(hv, "proxies")}
    assert {p.underlay_ip for p in sites.site_proxies(1)} == set(proxies)
    assert proxies[proxy.underlay_ip]["active"] and proxies[proxy.underlay_ip]["site"] == "s1"
    seen_by_proxy: dict[str, list[bool]] = {}
    for p in as_json(proxy, "proxies"):
        seen_by_proxy.setdefault(p["relation"], []).append(p["active"])
    assert seen_by_proxy["this proxy"] == [True] and seen_by_proxy["partner"] == [False]
    assert sorted(seen_by_proxy["other site"]) == [False, True]

    counters = as_json(hv, "counters")
    assert counters["learned"] >= 2 and counters["packet_in"] >= 1

    _, text = dovectl(hv, "status")
    assert (
        f"host {hv.name}" in text and a.mac in text and f"answered by {proxy.underlay_ip}" in text
    )
    _, text = dovectl(proxy, "endpoints", "--mac", far.mac)
    assert far.mac in text and "remote" in text


def test_detach_and_attach_change_what_the_agent_serves(sites: SitesNet) -> None:
    a, b = sites.vm("t2s1vm1"), sites.vm("t2s1vm2")
    hv = b.hypervisor
    assert ping_ok(a, b.ip)
    _, text = dovectl(hv, "detach", b.port)
    assert "detached" in text
    assert not ping_ok(a, b.ip), "still reachable after detach"
    assert b.mac not in {e["mac"] for e in as_json(hv, "endpoints") if e["kind"] == "local"}
    _, text = dovectl(
        hv, "attach", b.port, "--instance", str(b.instance), "--mac", b.mac, "--ip", b.ip
    )
    assert "attached" in text and "ofport" in text
    assert ping_ok(a, b.ip), "not reachable after attach"


def test_bad_input_is_refused_with_a_clear_message(sites: SitesNet) -> None:
    hv = sites.site_hvs(1)[0]
    rc, text = dovectl(hv, "attach", "nope0", "--instance", "5001", "--mac", "zz", ok=False)
    assert rc == 1 and "invalid MAC" in text
    rc, text = dovectl(hv, "attach", "nope0", "--instance", "0", "--mac", "02:00:00:00:09:09",
                       ok=False)  # fmt: skip
    assert rc == 1 and "--instance 0" in text
    rc, text = dovectl(hv, "detach", "nope0", ok=False)
    assert rc == 1 and "no such port on br-dove" in text
    out, err, rc = hv.pexec([DOVECTL, "--admin-socket", "/nonexistent.sock", "counters"])
    assert rc == 1 and "cannot reach the agent" in err


def test_migrate_moves_a_vm_and_traffic_follows(sites: SitesNet) -> None:
    from mininet_topos.migration import hand_over

    a, mover = sites.vm("t1s1vm1"), sites.vm("t1s1vm2")
    old = mover.hypervisor
    to = next(h for h in sites.site_hvs(1) if h is not old)
    assert ping_ok(a, mover.ip)
    _, text = dovectl(
        old, "migrate", mover.port, "--to-netns", str(to.pid), "--to-ovsdb", f"unix:{to.db_sock}"
    )
    assert "moved" in text
    hand_over(old, to, mover.port)  # Mininet's own record, for teardown
    mover.hypervisor = to
    mover.host.cmd(f"arping -q -c1 -U -I {mover.host.intf().name} {mover.ip}")
    assert mover.mac in {e["mac"] for e in as_json(to, "endpoints") if e["kind"] == "local"}
    assert ping_ok(a, mover.ip)


def test_graph_draws_sites_hosts_proxies_and_instances(sites: SitesNet, tmp_path: Path) -> None:
    agents = [arg for node in sites.nodes for arg in ("--agent", sock(node))]
    image = tmp_path / "dove.png"
    node = sites.site_hvs(1)[0]
    out, err, rc = node.pexec([DOVECTL, "graph", *agents, "--out", str(image)])
    assert rc == 0, out + err
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot, err, rc = node.pexec([DOVECTL, "graph", *agents])
    assert rc == 0, err
    for n in sites.nodes:
        assert f'"{n.name}"' in dot
    assert 'label="site s1"' in dot and 'label="site s2"' in dot
    assert "(proxy, active)" in dot and "(proxy, standby)" in dot
    assert "instance 5001: " in dot and "inter-site" in dot
    view = json.loads(node.pexec([DOVECTL, "graph", *agents, "--json"])[0])
    assert {n["name"] for n in view["nodes"]} == {n.name for n in sites.nodes}
    assert any(e["kind"] == "wan" for e in view["edges"])
