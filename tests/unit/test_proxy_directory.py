"""VAN proxies in directory mode, on fake switches (tests.fakesites): each site has its
own directory, faked here as the directory client would hand the rows to each core
(every node of a site sees its own row and, a host, the rows serving an instance it
serves; a proxy every row of its site), each row's ``alive`` as the site's reaper
judges the heartbeats (`Liveness`, on the test's clock).  Hosts and proxies have no ``peers``: the
site's hosts and proxies find each other in the directory, the proxies of the other
sites stay in ``wan_peers``.  Time is driven by the test."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu.agent.directory import DirectoryView, HostRow, Liveness, LivenessRow, proxy_claim
from dove_ryu.config import from_mapping
from dove_ryu.protocol.messages import Announce
from tests.fakesites import KEY_HEX, TUN, Node, Sites, echo, hv_ip, proxy_ip
from tests.fakeswitch import Delivery
from tests.unit.test_proxy import forge

pytestmark = pytest.mark.unit

INTERVAL = 1.0  # the sites' announce_interval: every agent's heartbeat interval
DIRECTORY = {"discovery": "directory", "directory": "tcp:10.99.0.241:6641", "peers": ""}
PX1, PX2 = proxy_ip(1), proxy_ip(2)
S1HV1, S1HV2 = hv_ip(1), hv_ip(2)


class Directories:
    """One directory per site: the rows its nodes register, shown to each as monitored."""

    def __init__(self, sites: Sites) -> None:
        self.sites = sites
        self.beats: dict[str, int] = {}  # a stopped node's heartbeat stands still
        self.reapers = {site: Liveness() for site in range(1, sites.spec.sites + 1)}
        self.rows: dict[str, HostRow] = {}  # as last written

    def row(self, node: Node, dead: set[str]) -> HostRow:
        """The node's row: as it wrote it last (a stopped node writes nothing), marked
        dead once its site's reaper judged its heartbeat stopped."""
        before = self.rows.get(node.name)
        if node.name not in self.sites.down or before is None:
            proxy, served = node.is_proxy, node.core.served()
            site = f"s{node.site}" if proxy else ""
            others = [r for n, r in self.rows.items() if self.sites.nodes[n].site == node.site]
            claim = proxy_claim(node.name, site, served, others) if proxy else 0
            role = "proxy" if proxy else "host"
            before = HostRow(node.name, node.ip, served, True, role, site, claim)
        row = HostRow(**{**before.__dict__, "alive": node.name not in dead})
        self.rows[node.name] = row
        return row

    def visible(self, node: Node, rows: list[HostRow]) -> list[HostRow]:
        """What the node's conditions select (dove_ryu.adapters.directory.conditions)."""
        if node.is_proxy:
            return rows
        served = node.core.served()
        return [r for r in rows if r.name == node.name or r.instances & served]

    def publish(self) -> None:
        """Every running node beats and registers; every running node is shown its view."""
        for name in self.sites.nodes:
            if name not in self.sites.down:
                self.beats[name] = self.beats.get(name, 0) + 1
        for site in range(1, self.sites.spec.sites + 1):
            nodes = [n for n in self.sites.nodes.values() if n.site == site]
            reaper = self.reapers[site]
            beats = [
                LivenessRow(n.name, self.beats[n.name], INTERVAL)
                for n in nodes
                if n.name in self.beats
            ]
            reaper.rows(self.sites.now, beats)
            dead = reaper.dead(self.sites.now)
            rows = [self.row(n, dead) for n in nodes if n.name in self.beats]
            for node in nodes:
                if node.name not in self.sites.down:
                    view = DirectoryView(self.visible(node, rows))
                    self.sites.apply(node, node.core.directory_rows(self.sites.now, view))
        self.sites.settle()

    def run(self, seconds: float) -> None:
        """Time passes, the agents beating every interval (rows written at once)."""
        end = self.sites.now + seconds
        while self.sites.now < end - 1e-9:
            self.sites.advance(min(INTERVAL / 2, end - self.sites.now))
            self.publish()


def started() -> tuple[Sites, Directories]:
    sites = Sites(settings=DIRECTORY)
    directories = Directories(sites)
    directories.publish()
    directories.run(3.0)  # elections, rows of the active proxies
    return sites, directories


def restart_host(sites: Sites, name: str, ip: IPv4Address) -> Node:
    """A fresh agent (a new core) on site 1's host ``name``, its VMs still there."""
    old = sites.node(name)
    fresh = sites._node(name, 1, ip)
    for vm in sites.vms:
        if vm.node is old:
            vm.node = fresh
    sites.nodes[name] = fresh
    sites.down.discard(name)
    sites.connect(fresh)
    return fresh


def members(sites: Sites, node: str, instance: int) -> list[str]:
    return list(sites.status(node)["instances"].get(str(instance), {}).get("members", []))


def learned_at(sites: Sites, node: str, instance: int, mac: str) -> str | None:
    rows = sites.status(node)["instances"].get(str(instance), {}).get("learned", [])
    return next((str(r["host"]) for r in rows if r["mac"] == mac), None)


def tunnelled(deliveries: list[Delivery]) -> list[tuple[int | None, str | None]]:
    return sorted((d.tunnel_id, d.tun_dst) for d in deliveries if d.port == TUN)


def test_a_proxy_takes_discovery_directory_with_or_without_peers() -> None:
    values = {
        "underlay_ip": "10.99.0.201",
        "auth_key": KEY_HEX,
        "role": "proxy",
        "site": "s1",
        "wan_ip": "172.31.0.11",
        "wan_peers": "172.31.0.21",
        "discovery": "directory",
        "directory": "tcp:10.99.0.241:6641",
    }
    assert from_mapping(values).host.discovery == "directory"
    assert from_mapping({**values, "peers": "10.99.0.202"}).host.peers == (PX2,)


def test_the_active_proxys_row_lists_what_the_other_sites_serve_the_standbys_none() -> None:
    sites, _ = started()
    px1, px2 = sites.node("s1px1").core, sites.node("s1px2").core
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]

    assert px1.served() == frozenset({5001, 5002})  # site 2 serves both tenants
    assert px2.served() == frozenset()
    assert sites.status("s1px1")["directory"]["partners"] == [str(PX2)]
    # No peers and no announcements in the site: the hosts know px1 from its row only.
    assert sorted(members(sites, "s1hv1", 5001)) == sorted([str(S1HV2), str(PX1)])
    assert sites.status("s1hv1")["proxies"] == {str(PX1): {"site": "s1", "active": True}}


def test_a_proxys_site_members_come_from_the_directory_views() -> None:
    sites, directories = started()
    for name in ("s1px1", "s1px2"):  # the standby too: it is ready to take over
        assert sorted(members(sites, name, 5001)) == [str(S1HV1), str(S1HV2)]
        assert sites.status(name)["directory"]["alive"] == {
            str(S1HV1): "s1hv1",
            str(S1HV2): "s1hv2",
        }
    # The other site's proxies still come from wan_peers and announcements.
    assert sites.status("s1px1")["instances"]["5001"]["remote_proxies"] == ["172.31.0.21"]

    sites.stop("s1hv2")  # its heartbeat stops; its row stays
    directories.run(3 * INTERVAL)
    assert str(S1HV2) in members(sites, "s1px1", 5001)  # within 3.5 intervals
    directories.run(1.5 * INTERVAL)
    assert members(sites, "s1px1", 5001) == [str(S1HV1)]


def test_traffic_crosses_the_sites_with_members_from_the_directories() -> None:
    sites, _ = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b) and sites.ping(b, a)
    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX1)
    assert sites.ping(sites.vm("t2s2vm2"), sites.vm("t2s1vm2"))


def test_a_hypervisor_registering_in_its_site_is_reached_from_the_other_site() -> None:
    sites, directories = started()
    sites.stop("s1hv2")
    directories.run(5 * INTERVAL)
    assert str(S1HV2) not in members(sites, "s1px1", 5001)
    # A fresh agent on s1hv2; nothing in either site is told of it but its directory.
    fresh = restart_host(sites, "s1hv2", S1HV2)
    directories.run(INTERVAL)
    assert str(S1HV2) in members(sites, "s1px1", 5001)
    b = next(v for v in sites.vms if v.node is fresh and v.instance == 5001)
    assert sites.ping(sites.vm("t1s2vm1"), b)


def test_after_a_failover_the_rows_change_and_hosts_move_what_they_learned() -> None:
    sites, directories = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b)
    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX1)

    sites.stop("s1px1")  # its row stays, listing the instances, heartbeat still
    directories.run(1.0)  # the standby takes over after 3.5 hellos and writes its row

    assert sites.node("s1px2").core.served() == frozenset({5001, 5002})
    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX2)  # moved at once
    assert sites.status("s1hv1")["proxies"][str(PX1)]["active"] is False
    assert sites.counters("s1hv1")["proxy_failover"] == 1
    h1 = sites.node("s1hv1")
    assert tunnelled(h1.switch.process(a.ofport, echo(a, b.mac, b.ip, 8))) == [(5001, str(PX2))]
    assert sites.ping(a, b) and sites.ping(b, a)

    directories.run(4 * INTERVAL)  # the old row's heartbeat is judged stopped
    assert str(PX1) not in members(sites, "s1hv1", 5001)
    assert str(PX1) not in sites.status("s1hv1")["proxies"]
    assert sites.ping(a, b)


def test_in_directory_mode_a_site_hosts_announcement_changes_no_member() -> None:
    sites, _ = started()
    stranger = hv_ip(9)  # a host the site's directory does not list

    forge(sites, "s1px1", stranger, PX1, Announce(frozenset({5001})))

    assert str(stranger) not in members(sites, "s1px1", 5001)
    assert sites.counters("s1px1")["drop_site_announce_in_directory_mode"] == 1


def test_a_host_started_after_a_failover_takes_the_proxy_that_claimed_last() -> None:
    sites, directories = started()
    sites.stop("s1px1")
    directories.run(1.0)
    sites.start_proxy(1, 1)  # back as the standby
    directories.run(2.0)
    sites.stop("s1px2")  # now the dead row with the higher address lists the instances
    directories.run(1.0)
    assert sites.node("s1px1").core.served() and sites.node("s1px2").core.served()
    restart_host(sites, "s1hv1", S1HV1)  # its fresh agent sees both rows list instances
    directories.run(2 * INTERVAL)  # px1 claimed after px2 (px2 not yet judged dead)

    assert sites.status("s1hv1")["proxies"][str(PX1)]["active"]
    assert str(PX2) not in members(sites, "s1hv1", 5001)
    assert sites.ping(sites.vm("t1s1vm1"), sites.vm("t1s2vm1"))
