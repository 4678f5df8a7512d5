"""The agent's view of the local OVSDB: bridge set-up and the VM-port watcher.

Set-up uses ``ovs-vsctl`` (one idempotent transaction, run once at start);
the watcher uses the ``ovs`` Python IDL so that ports appearing, changing and
disappearing reach the core within milliseconds, without polling.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_interface
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from dove_ryu.adapters.bfd import EXT_BFD
from dove_ryu.config import DoveConfig
from dove_ryu.model import (
    MAX_ROUTER,
    FloatingIp,
    Router,
    Subnet,
    VmPort,
    check_instance,
    endpoint_mac,
    normalize_mac,
)
from dove_ryu.openflow.pipeline import TABLES
from dove_ryu.openflow.tunnels import UDP_PORTS

LOG = logging.getLogger("dove_ryu.adapters.ovsdb")

EXT_INSTANCE = "dove-instance"
EXT_MAC = "attached-mac"
EXT_IPS = "dove-ips"
MAX_ADDRESSES_PER_FAMILY = 8  # in a dove-ips mark
EXT_IPV6_ROUTER = "dove-ipv6-router"  # "true": the VM may send Router Advertisements
# Router marks on the integration bridge (docs/routing.md, "Declaring routers").
EXT_ROUTER = "dove-router-"
EXT_GATEWAYS = "dove-gateways"
# An id as it is written: no leading zero, at most 4 digits (a longer one is refused
# before int() sees it: Python refuses to convert more than 4,300 digits).
_ROUTER_KEY = re.compile(r"dove-router-([1-9][0-9]{0,3})(-snat|-fips)?", re.ASCII)
VXLAN_UDP_PORT = UDP_PORTS["vxlan"]
CONTROLLER_MAX_BACKOFF_MS = 1000


class OvsdbError(Exception):
    pass


def _vsctl(cfg: DoveConfig, *args: str) -> str:
    # ovs-vsctl reads the whole database first: with thousands of ports on a busy host that
    # takes tens of seconds, so the time allowed is generous (it bounds a hung server only).
    cmd = ["ovs-vsctl", f"--db={cfg.host.ovsdb}", "--timeout=120", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OvsdbError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def vsctl(cfg: DoveConfig, *args: str) -> str:
    """ovs-vsctl on the agent's OVSDB; OvsdbError if it fails."""
    return _vsctl(cfg, *args)


def _tunnel_ports(cfg: DoveConfig) -> list[str]:
    """One flow-based tunnel port per accepted encapsulation (docs/interop.md)."""
    args: list[str] = []
    for encap, port in cfg.host.tunnel_ports.items():
        args += [
            "--", "--may-exist", "add-port", cfg.host.bridge, port,
            "--", "set", "Interface", port, f"type={encap}",
            "options:remote_ip=flow", "options:key=flow",
            f"options:dst_port={UDP_PORTS[encap]}",
            *_tunnel_source(cfg, port),
        ]  # fmt: skip
    for encap in UDP_PORTS:
        name = f"dove-{encap}"
        if name not in cfg.host.tunnel_ports.values():  # no longer accepted (a migration)
            args += ["--", "--if-exists", "del-port", cfg.host.bridge, name]
    return args


def _tunnel_source(cfg: DoveConfig, port: str) -> list[str]:
    """A host tunnels from its underlay address.  A proxy has two legs: the source
    is left to the route towards each destination (OVS picks the leg's address)."""
    if cfg.role == "proxy":
        return ["--", "remove", "Interface", port, "options", "local_ip"]
    return ["--", "set", "Interface", port, f"options:local_ip={cfg.host.underlay_ip}"]


def _external_port(cfg: DoveConfig) -> list[str]:
    """A gateway's port in the external network is on the bridge (the interface itself
    is the deployment's: a NIC, or the emulation's veth)."""
    if cfg.role != "gateway":
        return []
    return ["--", "--may-exist", "add-port", cfg.host.bridge, cfg.gateway.external_port]


def ensure_bridge(cfg: DoveConfig, of_host: str, of_port: int) -> None:
    """Make the bridge, its one flow-based tunnel port, the controller and the
    table names exist as the agent needs them.  Safe to run on every start."""
    br = cfg.host.bridge
    args = [
        "--", "--may-exist", "add-br", br,
        "--", "set", "Bridge", br, f"datapath_type={cfg.host.datapath_type}",
        "protocols=OpenFlow13", "fail_mode=secure", "other-config:disable-in-band=true",
        *_tunnel_ports(cfg),
        *_external_port(cfg),
        "--", "set-controller", br, f"tcp:{_connect_to(of_host)}:{of_port}",
    ]  # fmt: skip
    for table in TABLES:
        args += [
            "--", f"--id=@t{table.table_id}", "create", "Flow_Table", f"name={table.name}",
            "--", "set", "Bridge", br, f"flow_tables:{table.table_id}=@t{table.table_id}",
        ]  # fmt: skip
    _vsctl(cfg, *args)
    # NOTE: OVS queues packet-ins per input port and serves the ports round-robin
    # under this limit (pinsched), so one VM spraying misses cannot starve the
    # others' learning.  Seen on OVS 3.1.
    # NOTE: OVS backs off up to 8 s between attempts to reach a controller that went
    # away (OVS 3.1's default max_backoff): a restarted agent would wait that long for
    # its switch.  The controller is on this machine; one second is plenty.
    _vsctl(
        cfg, "set", "Controller", br,
        f"controller_rate_limit={cfg.learning.packet_in_rate_limit}",
        f"controller_burst_limit={max(25, cfg.learning.packet_in_rate_limit // 4)}",
        f"max_backoff={CONTROLLER_MAX_BACKOFF_MS}",
    )  # fmt: skip


def reconnect_now(cfg: DoveConfig) -> None:
    """Ask ovs-vswitchd to connect to its controllers now (``bridge/reconnect``).

    NOTE (OVS 3.1): the Controller row's max_backoff does not reach a connection that
    is already backing off; a restarted agent waited up to 8 s for its switch (measured,
    benchmarks/agent_restart_bench.py), learning nothing meanwhile.  The daemon is
    found in the run directory beside the database socket (OVS_RUNDIR)."""
    env = dict(os.environ)
    if cfg.host.ovsdb.startswith("unix:"):
        env["OVS_RUNDIR"] = os.path.dirname(cfg.host.ovsdb[len("unix:") :])
    cmd = ["ovs-appctl", "--timeout=5", "-t", "ovs-vswitchd", "bridge/reconnect", cfg.host.bridge]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise OvsdbError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


def _connect_to(listen_host: str) -> str:
    """Where OVS should connect, given where the controller listens."""
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{listen_host}]" if ":" in listen_host else listen_host


@dataclass(frozen=True)
class BridgeView:
    """What the core needs from OVSDB: the tunnel port number, the VM ports and the
    routers declared on the bridge."""

    tunnel_ofport: int | None  # tunnel_type's port
    vm_ports: tuple[VmPort, ...]
    datapath_id: int | None = None  # the only switch the agent will program
    rejected: tuple[tuple[str, str], ...] = ()  # (port name, why)
    routers: tuple[Router, ...] = ()
    gateways: tuple[IPv4Address, ...] = ()  # dove-gateways, in order of preference
    routers_rejected: tuple[tuple[str, str], ...] = ()  # (mark, why)
    external: tuple[int, str] | None = None  # a gateway's external port: (ofport, MAC)
    # The BFD ports towards HA partners (adapters/bfd.py): (partner, port, session up).
    bfd: tuple[tuple[IPv4Address, str, bool], ...] = ()
    # Every accepted encapsulation's tunnel port OVS has numbered: (encapsulation, ofport).
    tunnel_ofports: tuple[tuple[str, int], ...] = ()

    def bfd_ports(self) -> dict[IPv4Address, str]:
        return {partner: name for partner, name, _ in self.bfd}

    def bfd_states(self) -> dict[IPv4Address, bool]:
        return {partner: up for partner, _, up in self.bfd}


def _ofport(iface: Any) -> int | None:
    value = iface.ofport[0] if iface.ofport else None
    return value if value is not None and value > 0 else None


def parse_vm_port(name: str, ofport: int, external_ids: dict[str, str]) -> VmPort:
    """A VM port from its OVSDB marks; ValueError says what is wrong."""
    try:
        instance = check_instance(int(external_ids[EXT_INSTANCE]))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{EXT_INSTANCE}: {e}") from None
    if EXT_MAC not in external_ids:
        raise ValueError(f"{EXT_MAC}: missing")
    try:
        mac = endpoint_mac(external_ids[EXT_MAC])
    except ValueError as e:
        raise ValueError(f"{EXT_MAC}: {e}") from None
    written = [ip.strip() for ip in external_ids.get(EXT_IPS, "").split(",") if ip.strip()]
    try:
        parsed = [ip_interface(ip) for ip in written]
    except ValueError as e:
        raise ValueError(f"{EXT_IPS}: {e}") from None
    ips = tuple(i.ip for i in parsed if isinstance(i, IPv4Interface))
    ips6 = tuple(i.ip for i in parsed if isinstance(i, IPv6Interface))
    for ip6 in ips6:
        if ip6.is_multicast or ip6.is_unspecified or ip6.is_loopback:
            raise ValueError(f"{EXT_IPS}: {ip6} is not a VM's unicast address")
    if len(set(ips)) != len(ips) or len(set(ips6)) != len(ips6):
        raise ValueError(f"{EXT_IPS}: an address is listed twice")
    if max(len(ips), len(ips6)) > MAX_ADDRESSES_PER_FAMILY:
        # Bounded: every address costs flows (IPv6 port security grows with its square)
        # and room in control messages, which must fit one frame.
        raise ValueError(f"{EXT_IPS}: more than {MAX_ADDRESSES_PER_FAMILY} addresses of a family")
    # The first IPv4 address's prefix, if written: what DHCP tells the VM (docs/routing.md).
    first = next((w for w, i in zip(written, parsed, strict=True) if i.version == 4), "")
    prefixlen = IPv4Interface(first).network.prefixlen if "/" in first else None
    router = external_ids.get(EXT_IPV6_ROUTER, "false").strip().lower()
    if router not in ("true", "false"):
        raise ValueError(f"{EXT_IPV6_ROUTER}: {router!r} is not true or false")
    return VmPort(
        name=name,
        ofport=ofport,
        instance=instance,
        mac=mac,
        ips=ips,
        prefixlen=prefixlen,
        ips6=ips6,
        ipv6_router=router == "true",
    )


def _router_subnets(text: str) -> tuple[Subnet, ...]:
    subnets: list[Subnet] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        instance_text, sep, address = item.partition("=")
        if not sep or "/" not in address:
            raise ValueError(f"{item!r} is not <instance>=<gateway address>/<prefix>")
        try:
            instance = check_instance(int(instance_text))
            gateway = IPv4Interface(address.strip())
        except ValueError as e:
            raise ValueError(f"{item!r}: {e}") from None
        if gateway.network.prefixlen > 30 or gateway.ip in (
            gateway.network.network_address,
            gateway.network.broadcast_address,
        ):
            raise ValueError(f"{item!r}: not a host address of a /30 or wider subnet")
        subnets.append(Subnet(instance, gateway))
    if not subnets:
        raise ValueError("no subnets")
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            if a.instance == b.instance:
                raise ValueError(f"instance {a.instance} twice")
            if a.network.overlaps(b.network):
                raise ValueError(f"subnets {a.network} and {b.network} overlap")
    return tuple(subnets)


def _floating_ips(text: str, subnets: tuple[Subnet, ...]) -> tuple[FloatingIp, ...]:
    fips: list[FloatingIp] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        external, sep, inside = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not <external>=<inside>")
        try:
            fip = FloatingIp(IPv4Address(external.strip()), IPv4Address(inside.strip()))
        except ValueError as e:
            raise ValueError(f"{item!r}: {e}") from None
        subnet = next((s for s in subnets if fip.inside in s.network), None)
        if subnet is None:
            raise ValueError(f"{item!r}: {fip.inside} is in none of the router's subnets")
        net = subnet.network
        if fip.inside in (subnet.gateway.ip, net.network_address, net.broadcast_address):
            raise ValueError(f"{item!r}: {fip.inside} is the subnet's gateway or not a host")
        fips.append(fip)
    if len({f.external for f in fips}) != len(fips) or len({f.inside for f in fips}) != len(fips):
        raise ValueError("a floating or inside address is mapped twice")
    return tuple(fips)


def _one_router(router_id: int, marks: dict[str, str]) -> Router:
    key = f"{EXT_ROUTER}{router_id}"
    if key not in marks:
        raise ValueError(f"{key}-snat or -fips without {key}")
    subnets = _router_subnets(marks[key])
    snat = None
    if f"{key}-snat" in marks:
        try:
            snat = IPv4Address(marks[f"{key}-snat"].strip())
        except ValueError as e:
            raise ValueError(f"{key}-snat: {e}") from None
    try:
        fips = _floating_ips(marks.get(f"{key}-fips", ""), subnets)
    except ValueError as e:
        raise ValueError(f"{key}-fips: {e}") from None
    if snat is not None and snat in {f.external for f in fips}:
        raise ValueError(f"{snat} is both the -snat address and a floating IP")
    return Router(router_id, subnets, snat, fips)


def parse_routers(
    external_ids: dict[str, str],
) -> tuple[tuple[Router, ...], tuple[tuple[str, str], ...]]:
    """The routers a bridge's ``external_ids`` declare, and those rejected with why
    (docs/routing.md): ids 1..4095, an instance on one router only, no overlapping
    subnets in a router, external and floating addresses distinct across routers.
    A router that breaks a rule is rejected whole; so are both sides of a clash
    between routers (neither can be trusted to be the one meant)."""
    ids: set[int] = set()
    rejected: list[tuple[str, str]] = []
    for key in external_ids:
        if not key.startswith(EXT_ROUTER):
            continue
        found = _ROUTER_KEY.fullmatch(key)
        if found is None:
            rejected.append(
                (key, f"not dove-router-<id>[-snat|-fips], or the id is not in 1..{MAX_ROUTER}")
            )
            continue
        router_id = int(found.group(1))
        if not 1 <= router_id <= MAX_ROUTER:
            rejected.append((key, f"router id {router_id} is not in 1..{MAX_ROUTER}"))
            continue
        ids.add(router_id)
    good: dict[int, Router] = {}
    for router_id in sorted(ids):
        try:
            good[router_id] = _one_router(router_id, external_ids)
        except ValueError as e:
            rejected.append((f"{EXT_ROUTER}{router_id}", str(e)))
    clashes: dict[int, list[str]] = {}
    routers = sorted(good.values(), key=lambda r: r.router_id)
    for i, a in enumerate(routers):
        a_external = _externals(a)
        for b in routers[i + 1 :]:
            why = []
            shared = sorted(set(a.instances) & set(b.instances))
            if shared:
                why.append(f"instance {shared[0]} is on routers {a.router_id} and {b.router_id}")
            same = sorted(a_external & _externals(b))
            if same:
                why.append(f"external address {same[0]} on routers {a.router_id} and {b.router_id}")
            for r in (a, b):
                clashes.setdefault(r.router_id, []).extend(why)
    for router_id, why in sorted(clashes.items()):
        if why:
            del good[router_id]
            rejected.append((f"{EXT_ROUTER}{router_id}", "; ".join(why)))
    return tuple(good[i] for i in sorted(good)), tuple(rejected)


def _externals(router: Router) -> set[IPv4Address]:
    found = {f.external for f in router.floating_ips}
    return found | ({router.snat} if router.snat is not None else set())


def parse_gateways(text: str) -> tuple[IPv4Address, ...]:
    """``dove-gateways``: the gateways' underlay addresses, in order of preference."""
    try:
        gateways = tuple(IPv4Address(g.strip()) for g in text.split(",") if g.strip())
    except ValueError as e:
        raise ValueError(f"{EXT_GATEWAYS}: {e}") from None
    if len(set(gateways)) != len(gateways):
        raise ValueError(f"{EXT_GATEWAYS}: an address twice")
    return gateways


def _bridge_routers(
    external_ids: dict[str, str],
) -> tuple[tuple[Router, ...], tuple[IPv4Address, ...], tuple[tuple[str, str], ...]]:
    routers, rejected = parse_routers(external_ids)
    try:
        gateways = parse_gateways(external_ids.get(EXT_GATEWAYS, ""))
    except ValueError as e:
        gateways, rejected = (), (*rejected, (EXT_GATEWAYS, str(e)))
    return routers, gateways, rejected


def _snapshot(idl: Any, cfg: DoveConfig) -> BridgeView:
    tunnel = None
    dpid = None
    ports: list[VmPort] = []
    rejected: list[tuple[str, str]] = []
    routers: tuple[Router, ...] = ()
    gateways: tuple[IPv4Address, ...] = ()
    routers_rejected: tuple[tuple[str, str], ...] = ()
    external = None
    bfd: list[tuple[IPv4Address, str, bool]] = []
    tunnels: list[tuple[str, int]] = []
    tunnel_names = {name: encap for encap, name in cfg.host.tunnel_ports.items()}
    for bridge in idl.tables["Bridge"].rows.values():
        if bridge.name != cfg.host.bridge:
            continue
        routers, gateways, routers_rejected = _bridge_routers(dict(bridge.external_ids))
        if bridge.datapath_id:
            dpid = int(bridge.datapath_id[0], 16)
        for port in bridge.ports:
            for iface in port.interfaces:
                ofport = _ofport(iface)
                if iface.name in tunnel_names:
                    if ofport is not None:
                        tunnels.append((tunnel_names[iface.name], ofport))
                    if iface.name == cfg.host.tunnel_port:
                        tunnel = ofport
                elif _is_external(cfg, iface.name):
                    external = _external(iface, ofport)
                elif EXT_BFD in iface.external_ids:
                    bfd += _bfd(iface)
                elif EXT_INSTANCE in iface.external_ids and ofport is not None:
                    try:
                        ports.append(parse_vm_port(iface.name, ofport, dict(iface.external_ids)))
                    except ValueError as e:
                        rejected.append((iface.name, str(e)))
    return BridgeView(
        tunnel,
        tuple(sorted(ports, key=lambda p: p.name)),
        dpid,
        tuple(rejected),
        routers,
        gateways,
        routers_rejected,
        external,
        tuple(sorted(bfd)),
        tuple(sorted(tunnels)),
    )


def _is_external(cfg: DoveConfig, name: str) -> bool:
    return cfg.role == "gateway" and name == cfg.gateway.external_port


def _external(iface: Any, ofport: int | None) -> tuple[int, str] | None:
    """A gateway's external port, once OVS has numbered it and knows its MAC."""
    mac = iface.mac_in_use[0] if iface.mac_in_use else None
    return (ofport, normalize_mac(mac)) if ofport is not None and mac else None


def _bfd(iface: Any) -> list[tuple[IPv4Address, str, bool]]:
    """A BFD port's partner and whether its session is up (``bfd_status:state``)."""
    try:
        partner = IPv4Address(iface.external_ids[EXT_BFD])
    except ValueError:
        return []
    return [(partner, iface.name, dict(iface.bfd_status).get("state") == "up")]


def _schema_helper(remote: str) -> ovs.db.idl.SchemaHelper:
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), 10000)
    if error:
        raise OvsdbError(f"cannot connect to OVSDB at {remote}: {error}")
    rpc = ovs.jsonrpc.Connection(stream)
    error, reply = rpc.transact_block(
        ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
    )
    rpc.close()
    if error or reply is None or reply.error:
        raise OvsdbError(f"cannot read the OVSDB schema from {remote}: {error or reply}")
    helper = ovs.db.idl.SchemaHelper(None, reply.result)
    helper.register_columns("Bridge", ["name", "ports", "datapath_id", "external_ids"])
    helper.register_columns("Port", ["name", "interfaces"])
    helper.register_columns(
        "Interface", ["name", "ofport", "external_ids", "mac_in_use", "bfd_status"]
    )
    return helper


class PortWatcher:
    """Runs the IDL loop in a thread; calls ``on_change(view)`` after each change."""

    def __init__(self, cfg: DoveConfig, on_change: Callable[[BridgeView], None]) -> None:
        self.cfg = cfg
        self.on_change = on_change
        self.idl = ovs.db.idl.Idl(cfg.host.ovsdb, _schema_helper(cfg.host.ovsdb))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ovsdb-watch", daemon=True)
        self.reported: set[tuple[str, str]] = set()
        self.errors = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        last: BridgeView | None = None
        seen_seqno = -1
        while not self.stopping.is_set():
            try:
                last, seen_seqno = self._step(last, seen_seqno)
            except Exception:  # one bad update must not end port tracking
                LOG.exception("%s: OVSDB watcher", self.cfg.name)
                self.errors += 1
                self.stopping.wait(0.5)

    def _step(self, last: BridgeView | None, seen_seqno: int) -> tuple[BridgeView | None, int]:
        """One IDL round: report a changed view, then sleep until OVSDB speaks."""
        self.idl.run()
        view = last
        if self.idl.change_seqno != seen_seqno:
            seen_seqno = self.idl.change_seqno
            view = _snapshot(self.idl, self.cfg)
        if view is not None and view != last:
            for name, why in set(view.rejected) - self.reported:
                LOG.error("%s: port %s ignored, bad marks: %s", self.cfg.name, name, why)
            for mark, why in set(view.routers_rejected) - self.reported:
                LOG.error("%s: router mark %s rejected: %s", self.cfg.name, mark, why)
            self.reported = set(view.rejected) | set(view.routers_rejected)
            self.on_change(view)
        poller = ovs.poller.Poller()
        self.idl.wait(poller)
        poller.timer_wait(500)  # to notice stop()
        poller.block()
        return view, seen_seqno
