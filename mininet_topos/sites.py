"""Multi-site DOVE emulation: sites that cannot reach each other, joined by VAN proxies.

The paper's section IV-C: hypervisors of different sites have no path to each other;
each site has VAN proxies with one leg in the site's underlay and one in an inter-site
network (the WAN), and overlay traffic between sites goes proxy to proxy.

Every site has its own underlay bridge (``ul-s1``, ...) and reuses THE SAME range
10.99.0.0/24 (sites may reuse ranges; a proxy never routes between them): hypervisor n
is 10.99.0.n, proxy k is 10.99.0.(200+k), the site's probe 10.99.0.250. The WAN
(bridge ``wan``, 172.31.0.0/24, MTU ``wan_mtu``) holds the proxies' other legs, proxy k
of site s at 172.31.0.(10s+k), and ``wanprobe`` at 172.31.0.250.

Each tenant is one layer-2 overlay across all sites, with the same plan in every tenant
(tenant t is instance 5000+t): VM i of tenant t in site s is ``t<t>s<s>vm<i>``, MAC
02:00:00:00:0s:0i, IP 10.0.0.(10s+i)/24, on the site's hypervisor (i + t - 2) % H + 1,
so that each tenant spans the hypervisors of every site.

With ``directory`` (``--directory``) every site has its own directory (issue 11): a
3-member clustered OVSDB, ``s<s>dir1``-``s<s>dir3`` at 10.99.0.241-243 on the site's
underlay, with its own CA; every agent of the site, hypervisors and proxies, registers
there over SSL (RBAC role dove-host) with ``discovery = directory`` and no ``peers``.
The proxies keep ``wan_peers``: the WAN carries only proxy-to-proxy traffic.

    sudo .venv/bin/python -m mininet_topos.sites --sites 2 --hypervisors 2 --proxies 2
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo
from mininet.util import quietRun

from dove_ryu.config import OVERSIZE_ACTIONS
from dove_ryu.ctl.dircluster import agent_remotes
from dove_ryu.openflow.tunnels import mtu as tunnel_mtu
from mininet_topos.directory import MEMBERS as DIRECTORY_MEMBERS
from mininet_topos.directory import ClusterPki, DirectoryCluster, DirectoryMember
from mininet_topos.dove_agent import admin, agent_cmd, agent_config, agent_ready
from mininet_topos.emulation import (
    FIRST_INSTANCE,
    UNDERLAY_NET,
    RunningNet,
    VmPlan,
    VmRecord,
    address_probe,
    attach_vm,
    instance_peers,
    new_mininet,
    warm_legs,
)
from mininet_topos.hypervisor import (
    BR_PHY,
    BR_WAN,
    DAEMONS,
    Hypervisor,
    reap_rundirs,
    wait_until,
)
from mininet_topos.migration import cli_class
from mininet_topos.relays import RUNDIR_PREFIX as RELAY_RUNDIR_PREFIX
from mininet_topos.relays import (
    RelayHandle,
    add_relayed_link,
    new_rundir,
    relay_name,
    start_relay,
    stop_relays,
)
from mininet_topos.underlay import UnderlayBridge

WAN_NET = "172.31.0"
WAN_SWITCH = "wan"
WAN_PROBE = "wanprobe"
PROBE_OCTET = 250  # the site probes' and the WAN probe's last octet
PROXY_OCTET = 200  # proxy k of a site is <net>.(200 + k)
PROXY_PRIORITY = {1: 200, 2: 100}  # proxy k's proxy_priority: px1 starts active
MAX_SITES = 24  # keeps 10s + k (WAN) and 10s + i (VM IPs) below the probes' .250
DIRECTORY_OCTET = 240  # directory member n of a site is <net>.(240 + n)
RUNDIR_PATTERN = "dove-s[0-9]*-*"  # Hypervisor rundirs are dove-<node>-XXXX


def site_switch(site: int) -> str:
    return f"ul-s{site}"


def hv_name(site: int, n: int) -> str:
    return f"s{site}hv{n}"


def proxy_name(site: int, k: int) -> str:
    return f"s{site}px{k}"


def probe_name(site: int) -> str:
    return f"s{site}probe"


def site_label(site: int) -> str:
    """The site's name, as nodes are prefixed and as proxies' ``site`` setting says."""
    return f"s{site}"


def hv_ip(n: int) -> str:
    """Hypervisor n's address in its site (the same in every site)."""
    return f"{UNDERLAY_NET}.{n}"


def proxy_ip(k: int) -> str:
    """Proxy k's address in its site (the same in every site)."""
    return f"{UNDERLAY_NET}.{PROXY_OCTET + k}"


def proxy_wan_ip(site: int, k: int) -> str:
    return f"{WAN_NET}.{10 * site + k}"


def directory_name(site: int, n: int) -> str:
    return f"s{site}dir{n}"


def directory_ip(n: int) -> str:
    """Directory member n's address in its site (the same in every site)."""
    return f"{UNDERLAY_NET}.{DIRECTORY_OCTET + n}"


def node_index(site: int, octet: int) -> int:
    """A machine-wide unique number for a node's datapath ids: site, then last octet."""
    return (site << 8) | octet


@dataclass(frozen=True)
class SitesSpec:
    """How big the multi-site emulation is; counts of hypervisors, proxies and VMs are
    per site. ``wan_oversize`` is what the proxies' agents do with frames too big for
    the WAN ('fragment' or 'icmp')."""

    sites: int = 2
    hypervisors: int = 2
    proxies: int = 2
    tenants: int = 2
    vms_per_tenant: int = 2
    wan_mtu: int = 1500
    wan_oversize: str = "fragment"
    directory: bool = False  # a directory cluster per site; agents use discovery = directory
    # Every hypervisor's underlay link and every proxy's WAN link through a relay namespace
    # (mininet_topos.relays) whose loss, delay and reordering can be set while running.
    impairable: bool = False
    relay_seed: int = 0  # the relays' randomness (relay i draws from relay_seed * 1000 + i)

    def __post_init__(self) -> None:
        if not 1 <= self.sites <= MAX_SITES:
            raise ValueError(f"sites must be 1..{MAX_SITES}, not {self.sites}")
        if not 1 <= self.hypervisors < PROXY_OCTET:
            raise ValueError(f"hypervisors (per site) must be 1..{PROXY_OCTET - 1}")
        if self.proxies not in PROXY_PRIORITY:
            raise ValueError(f"proxies (per site) must be one of {sorted(PROXY_PRIORITY)}")
        if not 1 <= self.tenants <= 99:
            raise ValueError("tenants must be 1..99 (names t<t>s<s>vm<i> fit 15 characters)")
        if not 1 <= self.vms_per_tenant <= 9:
            raise ValueError("vms_per_tenant (per site) must be 1..9 (IP 10.0.0.<10s+i>)")
        # dove_ryu.config's bounds for wan_mtu.
        if not 576 <= self.wan_mtu <= 9000:
            raise ValueError(f"wan_mtu must be 576..9000, not {self.wan_mtu}")
        if self.wan_oversize not in OVERSIZE_ACTIONS:
            raise ValueError(f"wan_oversize must be one of {OVERSIZE_ACTIONS}")

    @property
    def mode(self) -> str:
        """Always 'dove' (what migration.migrate checks)."""
        return "dove"

    @property
    def site_numbers(self) -> range:
        return range(1, self.sites + 1)


@dataclass(frozen=True)
class SiteVmPlan(VmPlan):
    """One VM as planned: an emulation.VmPlan plus its site."""

    site: int


def plan_sites(spec: SitesSpec) -> list[SiteVmPlan]:
    """The VMs: every tenant the same plan, ``vms_per_tenant`` VMs in every site.

    MACs and IPs are unique within a tenant across sites (one L2 overlay per tenant) and
    the same in every tenant."""
    plans = []
    for t in range(1, spec.tenants + 1):
        for s in spec.site_numbers:
            for i in range(1, spec.vms_per_tenant + 1):
                name = f"t{t}s{s}vm{i}"
                plans.append(
                    SiteVmPlan(
                        name=name,
                        tenant=t,
                        index=i,
                        hypervisor=hv_name(s, (i - 1 + t - 1) % spec.hypervisors + 1),
                        instance=FIRST_INSTANCE + t - 1,
                        mac=f"02:00:00:00:{s:02x}:{i:02x}",
                        ip_cidr=f"10.0.0.{10 * s + i}/24",
                        port=f"{name}-p",
                        site=s,
                    )
                )
    return plans


class SiteHypervisor(Hypervisor):
    """A dove hypervisor that knows its site (``site``, 1-based)."""

    def __init__(self, name: str, site: int = 1, **params: Any) -> None:
        self.site = site
        super().__init__(name, **params)


class Proxy(SiteHypervisor):
    """A VAN proxy: a dove hypervisor (br-phy on the site leg, br-dove for the agent) plus
    br-wan, built as br-phy is, with its leg in the inter-site network.

    Extra constructor parameters: wan_cidr (its WAN address), wan_mtu (set on br-wan and
    the WAN uplink), wan_uplink (default '<name>-eth1'), priority (its proxy_priority).
    """

    def __init__(
        self,
        name: str,
        wan_cidr: str = f"{WAN_NET}.11/24",
        wan_mtu: int = 1500,
        wan_uplink: str | None = None,
        priority: int = 100,
        **params: Any,
    ) -> None:
        if params.get("mode", "dove") != "dove":
            raise ValueError("a proxy runs in mode 'dove' only")
        self.wan_cidr = wan_cidr
        self.wan_ip = wan_cidr.split("/")[0]
        self.wan_mtu = wan_mtu
        self.wan_uplink = wan_uplink or f"{name}-eth1"
        self.priority = priority
        super().__init__(name, **params)

    def tunnel_source(self) -> list[str]:
        """No local_ip: OVS takes the source from the route to each destination, so the
        one tunnel port sends and terminates on both legs."""
        return []

    def start_ovs(self) -> None:
        """The dove hypervisor's OVS, then the WAN leg, then the legs kept apart."""
        super().start_ovs()
        self.setup_br_wan()
        self.isolate_legs()
        wait_until(self.legs_routed, 5.0, f"{self.name}: OVS routes for both legs")

    def setup_br_wan(self) -> None:
        """br-wan with the WAN address; every WAN interface here gets the WAN's MTU."""
        self.run("ip", "link", "set", self.wan_uplink, "mtu", str(self.wan_mtu))
        self.setup_br_phy(BR_WAN, self.wan_uplink, self.wan_cidr)
        # NOTE (ovs-vswitchd.conf.db, mtu_request): without it OVS itself sets an internal
        # port's MTU to the smallest of its bridge's other ports, whenever they change.
        self.vsctl("set", "Interface", BR_WAN, f"mtu_request={self.wan_mtu}")
        wait_until(
            lambda: self.run("cat", f"/sys/class/net/{BR_WAN}/mtu").strip() == str(self.wan_mtu),
            5.0,
            f"{self.name}: {BR_WAN} mtu {self.wan_mtu}",
        )

    def isolate_legs(self) -> None:
        """Nothing crosses between the legs through this namespace's kernel.

        NOTE: ip_forward=0 stops routing only. With IPv4's weak host model the kernel also
        takes a datagram for ANY of its addresses from either leg, and answers ARP for it
        there, so a site host with a route through the proxy would reach its WAN address.
        arp_ignore=1/arp_announce=2 keep ARP per leg, and two rules placed before the
        local table (moved from preference 0 to 100 behind them) drop a datagram for one
        leg's address arriving on the other. Locally sent traffic (iif lo) is untouched.
        """
        self.run(
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        )
        for dev, foreign in ((BR_PHY, self.wan_ip), (BR_WAN, self.underlay_ip)):
            self.run("ip", "rule", "add", "pref", "10", "iif", dev, "to", foreign, "blackhole")
        self.run("ip", "rule", "add", "pref", "100", "lookup", "local")
        self.run("ip", "rule", "del", "pref", "0", "lookup", "local")

    def legs_routed(self) -> bool:
        """OVS's route table (what the userspace tunnel uses) has both legs' addresses."""
        routes = self.appctl("ovs/route/show").split()
        return self.underlay_ip in routes and self.wan_ip in routes


@dataclass
class SiteVm(VmRecord):
    """A running VM: an emulation.VmRecord plus the site whose addresses it has."""

    home: int

    @property
    def site(self) -> int:
        """The site it runs in now: its hypervisor's (changes when it migrates across)."""
        return site_of(self.hypervisor)


def site_of(hv: Hypervisor) -> int:
    if not isinstance(hv, SiteHypervisor):
        raise TypeError(f"{hv.name} belongs to no site")
    return hv.site


@dataclass
class SitesNet(RunningNet):
    """A running multi-site emulation: the Mininet net, its hypervisors, proxies and VMs."""

    net: Mininet
    spec: SitesSpec
    hypervisors: list[SiteHypervisor]  # all sites'; the proxies are not among them
    proxies: list[Proxy]
    vms: list[SiteVm] = field(default_factory=list)
    directories: dict[int, DirectoryCluster] = field(default_factory=dict)  # by site
    relays: dict[str, RelayHandle] = field(default_factory=dict)  # by "node:interface"
    relay_dir: Path | None = None

    def stop(self) -> None:
        try:
            stop_relays(self.relays, self.relay_dir)
            super().stop()
        finally:
            for cluster in self.directories.values():
                if cluster.pki is not None:
                    cluster.pki.remove()

    @property
    def nodes(self) -> list[SiteHypervisor]:
        """Every node that runs OVS and an agent: hypervisors, then proxies."""
        return [*self.hypervisors, *self.proxies]

    def site_hvs(self, site: int) -> list[SiteHypervisor]:
        return [h for h in self.hypervisors if h.site == site]

    def site_proxies(self, site: int) -> list[Proxy]:
        return [p for p in self.proxies if p.site == site]

    def site_vms(self, site: int) -> list[SiteVm]:
        """The VMs running in ``site`` now."""
        return [v for v in self.vms if v.site == site]

    def tenant_vms(self, tenant: int) -> list[SiteVm]:
        return [v for v in self.vms if v.tenant == tenant]

    def hv(self, name: str) -> SiteHypervisor:
        """A hypervisor or a proxy, by name."""
        return next(h for h in self.nodes if h.name == name)

    def vm(self, name: str) -> SiteVm:
        return next(v for v in self.vms if v.name == name)

    def probe(self, site: int) -> Host:
        """The host on ``site``'s underlay (10.99.0.250) that serves nothing."""
        return self.net.get(probe_name(site))

    @property
    def wan_probe(self) -> Host:
        """The host on the WAN (172.31.0.250) that serves nothing."""
        return self.net.get(WAN_PROBE)

    def probes(self) -> list[Host]:
        return [*(self.probe(s) for s in self.spec.site_numbers), self.wan_probe]

    def __iter__(self) -> Iterator[SiteVm]:
        return iter(self.vms)


class SitesTopo(Topo):
    """Per site an underlay bridge with hypervisors, proxies and a probe; the WAN bridge
    with every proxy's second leg and the WAN probe; VMs linked to their hypervisor.

    Site links are added before WAN links so a proxy's uplinks are -eth0 (site) and
    -eth1 (WAN), as Proxy expects."""

    def build(self, spec: SitesSpec = SitesSpec()) -> None:  # noqa: B008 - frozen dataclass
        for s in spec.site_numbers:
            underlay = self.addSwitch(site_switch(s), cls=UnderlayBridge)
            for n in range(1, spec.hypervisors + 1):
                hv = self.addHost(
                    hv_name(s, n),
                    cls=SiteHypervisor,
                    site=s,
                    index=node_index(s, n),
                    underlay_cidr=f"{hv_ip(n)}/24",
                    ip=None,
                )
                self._uplink(spec, hv, underlay, f"{hv}-eth0")
            for k in range(1, spec.proxies + 1):
                px = self.addHost(
                    proxy_name(s, k),
                    cls=Proxy,
                    site=s,
                    index=node_index(s, PROXY_OCTET + k),
                    underlay_cidr=f"{proxy_ip(k)}/24",
                    wan_cidr=f"{proxy_wan_ip(s, k)}/24",
                    wan_mtu=spec.wan_mtu,
                    priority=PROXY_PRIORITY[k],
                    ip=None,
                )
                self.addLink(px, underlay, intfName1=f"{px}-eth0")  # never relayed
            probe = self.addHost(probe_name(s), ip=None)
            self.addLink(probe, underlay, intfName1=f"{probe}-eth0")
            for n in range(1, DIRECTORY_MEMBERS + 1) if spec.directory else ():
                name, cidr = directory_name(s, n), f"{directory_ip(n)}/24"
                self.addHost(name, cls=DirectoryMember, index=n, cidr=cidr, ip=None)
                self.addLink(name, underlay, intfName1=f"{name}-eth0")
        wan = self.addSwitch(WAN_SWITCH, cls=UnderlayBridge, mtu=spec.wan_mtu)
        for s in spec.site_numbers:
            for k in range(1, spec.proxies + 1):
                px = proxy_name(s, k)
                self._uplink(spec, px, wan, f"{px}-eth1")
        self.addHost(WAN_PROBE, ip=None)
        self.addLink(WAN_PROBE, wan, intfName1=f"{WAN_PROBE}-eth0")
        for vm in plan_sites(spec):
            self.addHost(vm.name, ip=None)
            self.addLink(vm.name, vm.hypervisor, intfName1=f"{vm.name}-eth0", intfName2=vm.port)

    def _uplink(self, spec: SitesSpec, node: str, switch: str, intf: str) -> None:
        """``node``'s ``intf`` to ``switch``: a plain link, or through a relay if impairable."""
        if spec.impairable:
            add_relayed_link(self, node, switch, intf)
        else:
            self.addLink(node, switch, intfName1=intf)


def warm_sites(snet: SitesNet, timeout: float = 10.0) -> None:
    """Each site's underlay among its hypervisors and proxies, then the WAN among all
    proxies: pinged until answered, OVS tunnel neighbours set (emulation.warm_legs)."""
    for s in snet.spec.site_numbers:
        nodes = [*snet.site_hvs(s), *snet.site_proxies(s)]
        warm_legs([(n, n.underlay_dev, n.underlay_ip) for n in nodes], timeout)
    warm_legs([(p, BR_WAN, p.wan_ip) for p in snet.proxies], timeout)


def node_config(
    snet: SitesNet,
    node: SiteHypervisor,
    key: str,
    extra: dict[str, Any] | None = None,
    proxy_extra: dict[str, Any] | None = None,
) -> str:
    """A node's dove.ini. Its site peers: the site's hypervisors and proxies (site legs),
    or with directories its site's directory instead (SSL, its own certificate).
    A proxy also gets its role, site, WAN leg and the other sites' proxies."""
    site = node.site
    peers = [n.underlay_ip for n in (*snet.site_hvs(site), *snet.site_proxies(site))]
    cluster = snet.directories.get(site)
    settings = dict(extra or {})
    if isinstance(node, Proxy):
        wan_peers = [p.wan_ip for p in snet.proxies if p.site != site]
        settings = {
            "role": "proxy",
            "site": site_label(site),
            "wan_ip": node.wan_ip,
            "wan_peers": ", ".join(wan_peers),
            "proxy_priority": node.priority,
            "wan_mtu": snet.spec.wan_mtu,
            "wan_oversize": snet.spec.wan_oversize,
            **settings,
            **(proxy_extra or {}),
        }
    if cluster is None:
        return agent_config(node, peers, key, settings)
    assert cluster.pki is not None
    remotes = agent_remotes(cluster.addresses)
    return agent_config(node, peers, key, settings, remotes, cluster.pki.issue(node.name))


def _site_ready(snet: SitesNet, node: SiteHypervisor) -> bool:
    """Connected; a hypervisor also lists its site's other hosts of its instances as members.

    Proxies are not required as members (nor checked for members): their protocol role
    is still being written."""
    if isinstance(node, Proxy):
        return agent_ready(node, {})
    return agent_ready(node, instance_peers(node, [v for v in snet.vms if v.site == node.site]))


def wait_sites_ready(snet: SitesNet, timeout: float = 30.0) -> None:
    """Until every agent (hypervisors and proxies) is connected and every hypervisor knows
    its site's members of its instances."""
    for node in snet.nodes:
        wait_until(partial(_site_ready, snet, node), timeout, f"{node.name} agent ready")


def proxies_active(snet: SitesNet) -> bool:
    """Each site has exactly one active proxy, and it knows an active proxy of every
    other site."""
    for site in snet.spec.site_numbers:
        running = [p for p in snet.site_proxies(site) if p.agent is not None]
        active = [st for st in (admin(p) for p in running) if st.get("active")]
        if len(active) != 1:
            return False
        remote_sites = {r["site"] for r in active[0]["remote_proxies"].values() if r["active"]}
        if len(remote_sites) != snet.spec.sites - 1:
            return False
    return True


def active_proxy(snet: SitesNet, site: int) -> Proxy:
    """The running proxy of ``site`` that says it is active (waits for one)."""
    found: Proxy = wait_until(
        lambda: next(
            (p for p in snet.site_proxies(site) if p.agent is not None and admin(p)["active"]),
            None,
        ),
        30.0,
        f"an active proxy in site {site}",
    )
    return found


def wait_proxies_active(snet: SitesNet, timeout: float = 30.0) -> None:
    """Until every site has its active proxy and the proxies know each other."""
    wait_until(lambda: proxies_active(snet), timeout, "one active proxy per site, known")


def build_sites_net(
    spec: SitesSpec = SitesSpec(),  # noqa: B008 - frozen dataclass
    agents: bool = True,
    extra: dict[str, Any] | None = None,
    proxy_extra: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> tuple[SitesNet, str]:
    """Build and start the emulation, with an agent on every hypervisor and proxy unless
    ``agents`` is False; tear it down again if any step fails.

    ``extra`` goes into every agent's [dove] settings, ``proxy_extra`` into the proxies'
    only (after ``extra``). Returns the net, ready (wait_sites_ready), and the deployment
    key (DOVE_AUTH_KEY or a fresh one; tests forge messages with it)."""
    key = os.environ.get("DOVE_AUTH_KEY") or secrets.token_hex(16)
    cmd = agent_cmd() if agents else None  # fails before building if not bootstrapped
    net = new_mininet(SitesTopo(spec=spec))
    try:
        net.build()
        net.start()
        snet = SitesNet(
            net,
            spec,
            [
                net.get(hv_name(s, n))
                for s in spec.site_numbers
                for n in range(1, spec.hypervisors + 1)
            ],
            [
                net.get(proxy_name(s, k))
                for s in spec.site_numbers
                for k in range(1, spec.proxies + 1)
            ],
        )
        for s in spec.site_numbers:
            address_probe(snet.probe(s), f"{UNDERLAY_NET}.{PROBE_OCTET}/24")
            if spec.directory:
                members = [net.get(directory_name(s, n)) for n in range(1, DIRECTORY_MEMBERS + 1)]
                snet.directories[s] = DirectoryCluster(members, ClusterPki())
                snet.directories[s].start()
        address_probe(snet.wan_probe, f"{WAN_NET}.{PROBE_OCTET}/24", mtu=spec.wan_mtu)
        if spec.impairable:
            start_site_relays(snet)
        # The VMs' MTU follows the agents' encapsulation (extra's tunnel_type).
        vm_mtu = tunnel_mtu(str((extra or {}).get("tunnel_type", "vxlan")))
        for plan in plan_sites(spec):
            hv, host = net.get(plan.hypervisor), net.get(plan.name)
            port = attach_vm(hv, host, plan.instance, plan.mac, plan.ip_cidr, vm_mtu)
            snet.vms.append(SiteVm.plugged(plan, host, hv, port, home=plan.site))
        warm_sites(snet)
        if cmd:
            for node in snet.nodes:
                node.start_agent(node_config(snet, node, key, extra, proxy_extra), cmd)
            wait_sites_ready(snet, timeout)
        return snet, key
    except BaseException:
        net.stop()
        raise


def start_site_relays(snet: SitesNet) -> None:
    """Start the relay of every hypervisor's underlay link and every proxy's WAN link."""
    snet.relay_dir = new_rundir()
    links = [(h, h.uplink, 1500) for h in snet.hypervisors]
    links += [(p, p.wan_uplink, snet.spec.wan_mtu) for p in snet.proxies]
    for i, (node, intf, mtu) in enumerate(links):
        host = snet.net.get(relay_name(node.name, intf))
        seed = snet.spec.relay_seed * 1000 + i
        relay = start_relay(host, node.name, intf, mtu, seed, snet.relay_dir)
        snet.relays[relay.target] = relay


def clean() -> list[str]:
    """What a crashed run left: OVS daemons and rundirs of site nodes, relays, the bridges."""
    removed = [str(d) for d in reap_rundirs(RUNDIR_PATTERN, DAEMONS)]
    removed += [str(d) for d in reap_rundirs(f"{RELAY_RUNDIR_PREFIX}*", ())]
    bridges = quietRun("ip -o link show type bridge")
    for name in re.findall(r"^\d+: ([^:@]+)[:@]", bridges, re.MULTILINE):
        if re.fullmatch(r"ul-s\d+", name) or name == WAN_SWITCH:
            quietRun(f"ip link del {name}")
            removed.append(name)
    return removed


def main(argv: list[str] | None = None) -> None:
    """Build the emulation, open the Mininet CLI (with `migrate <vm> <node>`), tear down."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--hypervisors", type=int, default=2, help="per site")
    p.add_argument("--proxies", type=int, default=2, help="per site (1 or 2)")
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--vms-per-tenant", type=int, default=2, help="per site")
    p.add_argument("--wan-mtu", type=int, default=1500)
    p.add_argument("--wan-oversize", choices=OVERSIZE_ACTIONS, default="fragment")
    p.add_argument("--no-agents", action="store_true", help="OVS only, no dove-agent")
    p.add_argument(
        "--directory",
        action="store_true",
        help="a 3-member directory cluster per site; agents use it for discovery",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--clean", action="store_true", help="only clean up after a crashed run")
    args = p.parse_args(argv)
    setLogLevel(args.log_level)
    if args.clean:
        for what in clean():
            print(f"removed {what}")
        return
    spec = SitesSpec(
        args.sites,
        args.hypervisors,
        args.proxies,
        args.tenants,
        args.vms_per_tenant,
        args.wan_mtu,
        args.wan_oversize,
        args.directory,
    )
    snet, _ = build_sites_net(spec, agents=not args.no_agents)
    try:
        for node in snet.nodes:
            legs = node.underlay_ip + (f" + WAN {node.wan_ip}" if isinstance(node, Proxy) else "")
            print(f"{node.name}: {legs}, rundir {node.rundir}")
        print(f"WAN MTU {spec.wan_mtu}; migrate across sites with: migrate t1s1vm1 s2hv1")
        cli_class(snet)(snet.net)
    finally:
        snet.stop()


if __name__ == "__main__":
    main()
