"""The external network and two gateways in the emulation (docs/routing.md, "The gateway
role"; issue 12 items 2 and 5).

`add_gateways` adds to a running `DoveNet` (built with two subnets and a router per tenant):

- an external network: a bridge in the root namespace with no address, as the underlay's;
- an "internet" host on it, 203.0.113.254/24, serving HTTP (``python3 -m http.server``)
  and TCP echo, with no route into the overlay (only its connected subnet);
- two gateway nodes, like hypervisors (private OVS, br-dove, an agent) with a leg in the
  underlay (10.99.0.201 and .202) and an OVS port in the external network (203.0.113.2
  and .3), running agents with ``role = gateway``, the first preferred.

Each tenant t's router (id t) gets source NAT to 203.0.113.(10+t) and a floating IP
203.0.113.(100+t) for t{t}vm1 (10.0.0.1); the marks are written on every hypervisor and
gateway, ``dove-gateways`` naming both.  The hypervisors' agents must list the gateways
among their peers (``peers`` in `build_dove_net`'s ``extra``, see `hosts_and_gateways`).

    sudo python -m mininet_topos.gateway        # build it, print the plan, a CLI
    sudo python -m mininet_topos.gateway --clean
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mininet.node import Host
from mininet.util import quietRun

from mininet_topos.dove_agent import admin, agent_cmd, agent_config, connected_status
from mininet_topos.emulation import UNDERLAY_NET, warm_underlay
from mininet_topos.hypervisor import (
    BR_DOVE,
    DAEMONS,
    Hypervisor,
    reap_rundirs,
    wait_until,
)
from mininet_topos.routing import add_router, gateway_cidr
from mininet_topos.underlay import UnderlayBridge, _no_addresses

if TYPE_CHECKING:
    from mininet_topos.dove_topo import DoveNet

EXTERNAL_SWITCH = "ext1"
EXTERNAL_NET = "203.0.113"
EXTERNAL_PREFIX = 24
INTERNET = "inet"
INTERNET_IP = f"{EXTERNAL_NET}.254"
HTTP_PORT = 80
ECHO_PORT = 7
GATEWAY_COUNT = 2
GATEWAY_FIRST = 201  # gateway k: underlay <UNDERLAY_NET>.(200 + k), external .(1 + k)
# Hellos between the gateways: None, the agent's default (0.2 s); a restarted agent keeps
# its role because BFD says its datapath forwards (benchmarks.routing_bench sets others).
HELLO_INTERVAL: float | None = None
INDEX_TEXT = "hello from the internet\n"

# A TCP echo server: each connection's lines come back as they are.
_ECHO = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({ip!r}, {port})); s.listen(64)
def serve(c):
    with c:
        while (data := c.recv(4096)):
            c.sendall(data)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


# Fixed MACs on the external network, so that a gateway's flows (its own MAC, the next
# hop's) read the same in every run: flows/gateway-gw1.txt is compared with them.
INTERNET_MAC = "02:ee:00:00:00:fe"


def gateway_external_mac(k: int) -> str:
    return f"02:ee:00:00:00:{k:02x}"


def gateway_name(k: int) -> str:
    return f"gw{k}"


def gateway_underlay(k: int) -> str:
    return f"{UNDERLAY_NET}.{200 + k}"


def gateway_external(k: int) -> str:
    return f"{EXTERNAL_NET}.{1 + k}"


def snat_address(tenant: int) -> str:
    return f"{EXTERNAL_NET}.{10 + tenant}"


def floating_ip(tenant: int) -> str:
    return f"{EXTERNAL_NET}.{100 + tenant}"


FLOATING_VM_IP = "10.0.0.1"  # t{t}vm1


def hosts_and_gateways(hypervisors: int) -> str:
    """The ``peers`` of every agent: the hypervisors and the gateways."""
    hosts = [f"{UNDERLAY_NET}.{n}" for n in range(1, hypervisors + 1)]
    gateways = [gateway_underlay(k) for k in range(1, GATEWAY_COUNT + 1)]
    return ", ".join([*hosts, *gateways])


@dataclass
class External:
    """The external network of a running emulation: the internet host, the gateways."""

    internet: Host
    gateways: list[Hypervisor]
    key: str
    peers: str
    workdir: Path
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def gateway(self, k: int) -> Hypervisor:
        return self.gateways[k - 1]

    def active(self) -> Hypervisor | None:
        """The gateway whose agent says it is active (None if none, or not one)."""
        found = []
        for gw in self.gateways:
            try:
                if gw.agent is not None and admin(gw).get("active"):
                    found.append(gw)
            except (OSError, ValueError):
                continue
        return found[0] if len(found) == 1 else None

    def standby(self) -> Hypervisor:
        active = self.active()
        return next(g for g in self.gateways if g is not active)

    def http_log(self) -> str:
        return (self.workdir / "http.log").read_text(errors="replace")

    def start_agent(self, gw: Hypervisor) -> None:
        gw.start_agent(None, agent_cmd())  # its dove.ini is already there

    def stop(self) -> None:
        """Stop the internet host's servers and remove their files (the nodes go with
        the emulation's net)."""
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def gateway_config(
    gw: Hypervisor, k: int, peers: str, key: str, extra: dict[str, Any] | None = None
) -> str:
    """A gateway's dove.ini: role = gateway, its external leg, the first one preferred."""
    return agent_config(
        gw,
        [],
        key,
        {
            "peers": peers,
            "role": "gateway",
            "external_port": f"{gw.name}-ext",
            "external_ip": gateway_external(k),
            "external_prefix": EXTERNAL_PREFIX,
            "external_nexthop": INTERNET_IP,
            "gateway_priority": 200 - 50 * (k - 1),
            **({} if HELLO_INTERVAL is None else {"gateway_hello_interval": HELLO_INTERVAL}),
            **(extra or {}),
        },
    )


def _enslave(bridge: str, intf: str) -> None:
    """A root-namespace veth end of a link made after the bridge started: into it."""
    _no_addresses(intf)
    quietRun(f"ethtool -K {intf} tx off")
    quietRun(f"ip link set {intf} master {bridge} up")


def _root_end(link: Any, node: Any) -> str:
    """The name of the link's end that is not ``node``'s (the bridge's, in the root)."""
    return str(link.intf2.name if link.intf1.node is node else link.intf1.name)


def _start_internet(host: Host, workdir: Path) -> list[subprocess.Popen[bytes]]:
    """The internet host: its address on the external network, no other route; an HTTP
    server (its log names each client) and a TCP echo server."""
    intf = f"{INTERNET}-eth0"
    host.cmd(f"ip addr flush dev {intf}")
    host.cmd(f"ip addr add {INTERNET_IP}/{EXTERNAL_PREFIX} dev {intf}")
    host.cmd(f"ip link set {intf} up")
    host.cmd(f"ethtool -K {intf} tx off")
    site = workdir / "www"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(INDEX_TEXT)
    log = open(workdir / "http.log", "ab")  # noqa: SIM115 - the server's, for its life
    http = host.popen(
        ["python3", "-m", "http.server", str(HTTP_PORT), "--bind", INTERNET_IP],
        cwd=str(site),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    echo = host.popen(
        ["python3", "-c", _ECHO.format(ip=INTERNET_IP, port=ECHO_PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return [http, echo]


def _serving(host: Host) -> bool:
    out = host.cmd(f"ss -ltn sport = :{HTTP_PORT} or sport = :{ECHO_PORT}")
    return out.count("LISTEN") >= 2


def add_gateways(
    dnet: DoveNet,
    key: str,
    tenants: Iterable[int] | None = None,
    timeout: float = 60.0,
    extra: dict[str, Any] | None = None,
) -> External:
    """The external network, the internet host and two gateways, added to ``dnet`` (its
    tenants' routers declared again with source NAT, a floating IP and the gateways);
    returns once both agents are connected, one is active and the servers listen.
    ``extra``: more settings for the gateways (``tunnel_type``, say)."""
    net = dnet.net
    tenants = sorted(tenants or {vm.tenant for vm in dnet.vms})
    workdir = Path(tempfile.mkdtemp(prefix="dove-external-"))
    underlay = net.get("ul1")
    ext = net.addSwitch(EXTERNAL_SWITCH, cls=UnderlayBridge)
    internet = net.addHost(INTERNET, ip=None)
    net.addLink(internet, ext, intfName1=f"{INTERNET}-eth0", addr1=INTERNET_MAC)
    gateways: list[Hypervisor] = []
    for k in range(1, GATEWAY_COUNT + 1):
        name = gateway_name(k)
        gw = net.addHost(
            name,
            cls=Hypervisor,
            index=GATEWAY_FIRST - 1 + k,
            mode="dove",
            underlay_cidr=f"{gateway_underlay(k)}/24",
            ip=None,
        )
        link = net.addLink(gw, underlay, intfName1=f"{name}-eth0")
        _enslave(underlay.name, _root_end(link, gw))
        net.addLink(gw, ext, intfName1=f"{name}-ext", addr1=gateway_external_mac(k))
        gateways.append(gw)
    ext.start([])
    peers = ", ".join(
        [hv.underlay_ip for hv in dnet.hypervisors] + [gateway_underlay(k) for k in (1, 2)]
    )
    external = External(internet, gateways, key, peers, workdir)
    try:
        external.servers = _start_internet(internet, workdir)
        for k, gw in enumerate(gateways, start=1):
            gw.configDefault()  # private OVS, br-phy with the underlay address, br-dove
            gw.make_port_only(f"{gw.name}-ext")
            gw.vsctl("--may-exist", "add-port", BR_DOVE, f"{gw.name}-ext")
            gw.start_agent(gateway_config(gw, k, peers, key, extra), agent_cmd())
        # OVS's tunnel neighbour caches, both ways: a gateway's first tunnelled packet
        # (a reply held while it resolved the VM) is not lost to underlay ARP.
        warm_underlay([*dnet.hypervisors, *gateways])
        declare_routers(dnet, external, tenants)
        for gw in gateways:
            wait_until(lambda gw=gw: connected_status(gw), timeout, f"{gw.name} agent connected")
        wait_until(external.active, timeout, "an active gateway")
        wait_until(lambda: _serving(internet), timeout, "the internet host's servers")
    except BaseException:
        external.stop()
        raise
    return external


def declare_routers(dnet: DoveNet, external: External, tenants: Iterable[int]) -> None:
    """Tenant t's router (id t): its two subnets, source NAT, a floating IP for vm1;
    written on every hypervisor and gateway with both gateways in dove-gateways."""
    gateways = [gateway_underlay(k) for k in range(1, GATEWAY_COUNT + 1)]
    for t in tenants:
        subnets = {
            vm.instance: gateway_cidr(int(vm.ip.split(".")[2])) for vm in dnet.vms if vm.tenant == t
        }
        add_router(
            dnet,
            t,
            subnets,
            snat=snat_address(t),
            fips={floating_ip(t): FLOATING_VM_IP},
            gateways=gateways,
            nodes=external.gateways,
        )


def in_node(node: Host, argv: list[str], timeout: float = 10.0) -> tuple[str, str, int]:
    """Run ``argv`` in a node's namespace with a time limit."""
    proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out.decode(errors="replace"), "timeout", -1
    return out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode


def fetch(node: Host, url: str, timeout: float = 5.0) -> str | None:
    """The body at ``url`` fetched from ``node`` (python's urllib), or None."""
    code = (
        "import sys, urllib.request\n"
        f"print(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode(), end='')"
    )
    out, _, rc = in_node(node, ["python3", "-c", code], timeout + 2)
    return out if rc == 0 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove a crashed run's gateways")
    parser.add_argument("--no-cli", action="store_true")
    args = parser.parse_args(argv)
    if args.clean:
        for d in reap_rundirs("dove-gw*-*", DAEMONS):
            print(f"removed {d}")
        for d in Path(tempfile.gettempdir()).glob("dove-external-*"):
            shutil.rmtree(d, ignore_errors=True)
        quietRun(f"ip link del {EXTERNAL_SWITCH}")
        return
    from mininet.cli import CLI

    from mininet_topos.dove_topo import build_dove_net

    dnet, key = build_dove_net(
        3, 2, 4, subnets=2, routers=True, extra={"peers": hosts_and_gateways(3)}
    )
    external = add_gateways(dnet, key)
    try:
        active = external.active()
        print(f"active gateway: {active.name if active else '?'}")
        for t in (1, 2):
            print(f"tenant {t}: snat {snat_address(t)}, {floating_ip(t)} -> t{t}vm1")
        print(f"internet: http://{INTERNET_IP}/, logs in {shlex.quote(str(external.workdir))}")
        if not args.no_cli:
            CLI(dnet.net)
        else:
            time.sleep(1)
    finally:
        external.stop()
        dnet.stop()


if __name__ == "__main__":
    main()
