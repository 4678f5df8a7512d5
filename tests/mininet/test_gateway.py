"""The external gateways (issue 12 items 2, 5 and 7): source NAT, floating IPs,
active/standby.

One emulation for the module: 3 hypervisors, 2 tenants with identical plans, 2 subnets
each, a router per tenant with source NAT (203.0.113.1t) and a floating IP
(203.0.113.10t -> t<t>vm1, 10.0.0.1), two gateways (gw1 preferred), an internet host
(203.0.113.254: HTTP on 80, TCP echo on 7) with no route into the overlay.  The failover
test runs last: it stops the active gateway.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from mininet_topos.agents import ADMIN_SOCKET
from mininet_topos.dove_agent import admin, connected_status
from mininet_topos.dove_topo import DoveNet, VmRecord
from mininet_topos.flows_reference import (
    DEFAULT_OUT,
    gateway_scenario,
    settled_gateway_table,
)
from mininet_topos.gateway import (
    ECHO_PORT,
    FLOATING_VM_IP,
    INDEX_TEXT,
    INTERNET_IP,
    External,
    add_gateways,
    fetch,
    floating_ip,
    hosts_and_gateways,
    in_node,
    snat_address,
)
from mininet_topos.hypervisor import Hypervisor, wait_until
from tests.tools.scrape import scrape


@dataclass
class World:
    dnet: DoveNet
    ext: External


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.agents import build_dove_net

    extra = {"peers": hosts_and_gateways(3)}
    dnet, key = build_dove_net(3, 2, 4, extra=extra, subnets=2, routers=True)
    try:
        ext = add_gateways(dnet, key)
        try:
            yield World(dnet, ext)
        finally:
            ext.stop()
    finally:
        dnet.stop()


# --- helpers ---------------------------------------------------------------------------

_CLIENT = """
import socket, sys, time
s = socket.create_connection(({ip!r}, {port}), timeout=5)
for line in sys.stdin:
    if line.startswith("sleep "):
        time.sleep(float(line.split()[1])); continue
    s.sendall(line.encode())
    got = b""
    while not got.endswith(b"\\n"):
        got += s.recv(4096)
    print(got.decode(), end="", flush=True)
"""


class EchoClient:
    """One TCP connection from a VM to the internet host's echo server, kept open."""

    def __init__(self, vm: VmRecord) -> None:
        code = _CLIENT.format(ip=INTERNET_IP, port=ECHO_PORT)
        self.proc = vm.host.popen(
            ["python3", "-u", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def say(self, line: str, timeout: float = 10.0) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
        return self.proc.stdout.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def ping(node: Any, dst: str, count: int = 3) -> int:
    out, _, _ = in_node(node, ["ping", "-n", "-c", str(count), "-W", "2", "-i", "0.2", dst], 30)
    m = re.search(r"(\d+) received", out)
    return int(m.group(1)) if m else 0


def drops(gw: Hypervisor) -> int:
    """Packets the gateway's DROP_EXTERNAL flows dropped."""
    total = 0
    for line in gw.ofctl("dump-flows", "br-dove").splitlines():
        m = re.search(r"cookie=(0x[0-9a-f]+).*n_packets=(\d+)", line)
        if m:
            decoded = cookies.decode(int(m.group(1), 16))
            if decoded is not None and decoded.purpose is Purpose.DROP_EXTERNAL:
                total += int(m.group(2))
    return total


def bfd_up(node: Hypervisor, partner: Hypervisor) -> bool:
    partners = admin(node).get("partners", {})
    return bool(partners.get(str(partner.underlay_ip), {}).get("bfd"))


def active(world: World) -> Hypervisor:
    gw = wait_until(world.ext.active, 30.0, "one active gateway")
    assert isinstance(gw, Hypervisor)
    return gw


# --- tests ------------------------------------------------------------------------------


def test_the_gateways_reference_table_is_what_the_live_gateway_holds(world: World) -> None:
    """flows/gateway-gw1.txt (made by `scripts/regen-flows.sh --live`) is gw1's table
    after its scenario: the module's first test, so nothing else has run before it."""
    gateway_scenario(world.dnet, world.ext)
    tables = settled_gateway_table(world.ext)
    diffs: list[str] = []
    for name, text in tables.items():
        expected = (DEFAULT_OUT / name).read_text().splitlines(keepends=True)
        diffs += difflib.unified_diff(
            expected, text.splitlines(keepends=True), f"flows/{name}", f"now/{name}"
        )
    assert not diffs, (
        "the gateway's flow table changed; if that is intended, run "
        "`sudo scripts/regen-flows.sh --live --only gateway` and commit flows/:\n" + "".join(diffs)
    )


def test_vms_of_both_tenants_fetch_a_page_from_their_own_snat_address(world: World) -> None:
    for t in (1, 2):
        vm = world.dnet.vm(f"t{t}vm2")  # 10.0.1.2: the same address in both tenants
        body = wait_until(
            lambda vm=vm: fetch(vm.host, f"http://{INTERNET_IP}/index.html"),
            30.0,
            f"{vm.name} fetches the page",
            step=0.5,
        )
        assert body == INDEX_TEXT
    log = world.ext.http_log()
    assert snat_address(1) in log and snat_address(2) in log
    assert "10.0." not in log  # inside addresses never reach the internet


def test_the_internet_host_has_no_route_into_the_overlay(world: World) -> None:
    routes = world.ext.internet.cmd("ip route show")
    assert "default" not in routes and "10.0." not in routes
    assert ping(world.ext.internet, "10.0.0.1", count=1) == 0


def test_two_tenants_never_get_each_others_replies(world: World) -> None:
    one, two = EchoClient(world.dnet.vm("t1vm2")), EchoClient(world.dnet.vm("t2vm2"))
    try:
        for n in range(5):
            assert one.say(f"tenant-1 #{n}") == f"tenant-1 #{n}"
            assert two.say(f"tenant-2 #{n}") == f"tenant-2 #{n}"
    finally:
        one.close()
        two.close()


def test_the_internet_host_reaches_a_vm_by_its_floating_ip(world: World) -> None:
    vm = world.dnet.vm("t1vm1")
    received = ping(world.ext.internet, floating_ip(1), count=3)  # the first one held, not lost
    assert received == 3, {g.name: admin(g, "counters") for g in world.ext.gateways}
    server = vm.host.popen(
        [sys.executable, "-m", "http.server", "8080", "--bind", vm.ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = wait_until(
            lambda: fetch(world.ext.internet, f"http://{floating_ip(1)}:8080/"),
            20.0,
            "the internet host fetches from t1vm1 by its floating IP",
            step=0.5,
        )
        assert "Directory listing" in body
    finally:
        server.terminate()
        _, err = server.communicate(timeout=5)
    assert INTERNET_IP in err.decode()  # the VM sees the internet host, not the gateway
    assert ping(world.ext.internet, floating_ip(2), count=1) == 1  # tenant 2's vm1 too


DOVECTL = str(Path(sys.executable).parent / "dovectl")


def dovectl(node: Hypervisor, *args: str) -> str:
    """dovectl in ``node``'s namespace, against its agent and its OVS."""
    cmd = [DOVECTL, "--admin-socket", str(Path(str(node.rundir)) / ADMIN_SOCKET), *args]
    out, err, rc = node.pexec(cmd, env=node.ovs_env())
    assert rc == 0, f"dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return str(out)


def peers(world: World) -> list[str]:
    """--peer for every hypervisor and gateway."""
    out = []
    for node in [*world.dnet.hypervisors, *world.ext.gateways]:
        sock = Path(str(node.rundir)) / ADMIN_SOCKET
        out += ["--peer", f"{node.underlay_ip}={sock}:{node.rundir}"]
    return out


def test_trace_follows_a_vm_to_the_internet_out_of_the_gateways_external_port(
    world: World,
) -> None:
    gw, vm = active(world), world.dnet.vm("t1vm2")  # 10.0.1.2: no floating IP, SNAT
    args = ["trace", "--from", vm.port, "--to", INTERNET_IP, "--follow", *peers(world)]
    report = json.loads(dovectl(vm.hypervisor, *args, "--json"))
    text = dovectl(vm.hypervisor, *args)
    assert [h["node"] for h in report["hops"]] == [vm.hypervisor.name, gw.name], text
    assert [(v["node"], v["kind"], v.get("port")) for v in report["verdict"]] == [
        (gw.name, "external", f"{gw.name}-ext")
    ], text
    assert f"source NAT {vm.ip} -> {snat_address(1)}" in report["verdict"][0]["nat"], text
    purposes = [s["origin"]["purpose"] for s in report["hops"][1]["steps"] if s["origin"]]
    assert purposes == ["member", "route_default", "snat", "external"], text
    assert "out through router 1: conntrack zone 1 (router 1), source NATed to" in text


def test_trace_from_the_external_port_to_a_floating_ip_is_delivered_to_the_vm(
    world: World,
) -> None:
    gw, vm = active(world), world.dnet.vm("t1vm1")  # 10.0.0.1, floating IP 203.0.113.101
    assert ping(world.ext.internet, floating_ip(1), count=1) == 1  # the VM resolved
    ext = f"{gw.name}-ext"
    args = ["trace", "--from", ext, "--to", floating_ip(1), "--follow", *peers(world)]
    report = json.loads(dovectl(gw, *args, "--json"))
    text = dovectl(gw, *args)
    assert [(v["node"], v["kind"], v.get("port")) for v in report["verdict"]] == [
        (vm.hypervisor.name, "delivered", vm.port)
    ], text
    steps = report["hops"][0]["steps"]
    assert [s["table_name"] for s in steps] == [
        "classify", "ext_in", "ext_unnat", "l3_neighbor", "l2_forward"
    ], text  # fmt: skip
    assert f"nw_dst {floating_ip(1)} -> {vm.ip}" in steps[2]["resumed"], text
    assert f"router 1's floating IP for {vm.ip}" in report["request"]["summary"]


def test_dovectl_shows_the_gateways_state_external_leg_and_routers(world: World) -> None:
    gw = active(world)
    standby = world.ext.standby()
    routers = json.loads(dovectl(gw, "routers", "--json"))
    assert routers["state"] == "active" and routers["external"]["port"] == f"{gw.name}-ext"
    assert routers["next_hop"]["ip"] == INTERNET_IP and routers["next_hop"]["mac"]
    assert routers["routers"]["1"]["snat"] == snat_address(1)
    assert routers["routers"]["1"]["floating_ips"] == {floating_ip(1): "10.0.0.1"}
    text = dovectl(standby, "status")
    assert f"gateway {standby.name}: standby" in text and f"{standby.name}-ext" in text
    assert snat_address(2) in text and f"{floating_ip(2)}->10.0.0.1" in text


def test_inbound_to_an_external_address_without_a_floating_ip_is_dropped(world: World) -> None:
    gw = active(world)
    before = drops(gw)
    # A new connection to a router's source-NAT address, and to an address nobody has
    # (the internet host is told it is at the gateway's MAC, so it reaches the gateway).
    out, err, rc = in_node(
        world.ext.internet,
        ["python3", "-c", f"import socket; socket.create_connection(({snat_address(1)!r}, 22), 2)"],
    )
    assert rc != 0
    mac = gw.cmd(f"cat /sys/class/net/{gw.name}-ext/address").strip()
    world.ext.internet.cmd(f"ip neigh replace 203.0.113.77 lladdr {mac} dev inet-eth0")
    assert ping(world.ext.internet, "203.0.113.77", count=2) == 0
    wait_until(lambda: drops(gw) >= before + 3, 5.0, "the drops counted")


def test_nat_and_the_active_gateway_show_in_prometheus(world: World) -> None:
    """The gateway's NAT never reaches its agent: the switch counts it; and each
    gateway says whether it is the active one."""
    gw = active(world)
    standby = next(g for g in world.ext.gateways if g is not gw)
    assert scrape(gw).value("dove_gateway_active") == 1
    assert scrape(standby).value("dove_gateway_active") == 0

    def nat(direction: str) -> float:
        return scrape(gw).value("dove_nat_packets_total", direction=direction, kind="snat")

    out_before, in_before = nat("out"), nat("in")
    vm = world.dnet.vm("t1vm2")  # no floating IP: source NAT
    assert fetch(vm.host, f"http://{INTERNET_IP}/") == INDEX_TEXT
    wait_until(lambda: nat("out") > out_before and nat("in") > in_before, 15.0, "NAT counted", 0.5)


def _set_mark(world: World, key: str, value: str | None) -> None:
    """Write (or, with None, remove) a bridge mark on every hypervisor and gateway."""
    for node in [*world.dnet.hypervisors, *world.ext.gateways]:
        node.vsctl("br-set-external-id", "br-dove", key, *([value] if value else []))


def _zone_connections(gw: Hypervisor, zone: int) -> int:
    out = gw.appctl("dpctl/dump-conntrack", f"zone={zone}")
    return len([line for line in out.splitlines() if line.strip()])


def test_a_floating_ip_taken_away_takes_its_connections_with_it(world: World) -> None:
    """The operator removes tenant 2's floating IP (it might be given to tenant 1 next):
    the gateway flushes router 2's conntrack zone, so no reply to that address is
    un-NATed into tenant 2 any more, and the address no longer reaches the VM."""
    gw, fip = active(world), floating_ip(2)
    key = "dove-router-2-fips"
    assert ping(world.ext.internet, fip, count=2) == 2
    assert _zone_connections(gw, 2) > 0
    _set_mark(world, key, None)
    try:
        wait_until(lambda: _zone_connections(gw, 2) == 0, 10.0, "router 2's zone flushed")
        assert ping(world.ext.internet, fip, count=2) == 0
        assert not [k for k in admin(gw, "counters") if "error" in k]
    finally:
        _set_mark(world, key, f"{fip}={FLOATING_VM_IP}")
    wait_until(lambda: ping(world.ext.internet, fip, count=1) == 1, 20.0, "the floating IP back")


def test_a_tcp_connection_through_snat_survives_a_restart_of_the_active_agent(
    world: World,
) -> None:
    gw = active(world)
    standby = world.ext.standby()
    wait_until(lambda: bfd_up(standby, gw), 10.0, f"{standby.name}: BFD to {gw.name} up")
    client = EchoClient(world.dnet.vm("t1vm3"))
    try:
        assert client.say("before") == "before"
        gw.stop_agent()
        world.ext.start_agent(gw)
        wait_until(lambda: connected_status(gw), 30.0, f"{gw.name} agent back")
        assert client.say("after") == "after"
        # The standby did not take over (the restarted one claims once it hears it).
        assert active(world) is gw
    finally:
        client.close()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_snat_pings_and_a_tcp_connection_lose_nothing_while_the_active_gateway_restarts(
    world: World, kill: bool
) -> None:
    """Issue 13 point 1: a 5 ms ping stream from a VM to the internet host through
    source NAT, and an established TCP connection, through a restart of the active
    gateway's agent: nothing lost, the connection intact, the gateway still active,
    its predecessor's generation swept once settled."""
    from tests.mininet.test_restart import COUNT, INTERVAL

    gw, vm = active(world), world.dnet.vm("t1vm3")
    standby = world.ext.standby()
    took_over = admin(standby, "counters").get("gateway_became_active", 0)
    # Default hellos (0.2 s): the standby waits out the restart because BFD says the
    # active gateway's datapath forwards.
    wait_until(lambda: bfd_up(standby, gw), 10.0, f"{standby.name}: BFD to {gw.name} up")
    client = EchoClient(vm)
    try:
        assert client.say("before") == "before"
        assert ping(vm.host, INTERNET_IP, count=2) == 2
        pinger = vm.host.popen(
            ["ping", "-n", "-q", "-i", str(INTERVAL), "-c", str(COUNT), INTERNET_IP],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1.0)
        if kill:
            assert gw.agent is not None
            gw.agent.kill()
            gw.agent.wait(5)
        gw.stop_agent()  # SIGTERM (a killed agent is only reaped)
        world.ext.start_agent(gw)

        def settled() -> bool:
            st = connected_status(gw)
            return bool(st and st["active"] and not st["takeover"]["settling"])

        wait_until(settled, 30.0, f"{gw.name} back, active and settled", step=0.1)
        out = pinger.communicate(timeout=60)[0].decode()
        assert f"{COUNT} packets transmitted, {COUNT} received" in out, out
        assert client.say("after") == "after"
        assert world.ext.active() is gw
        assert admin(standby, "counters").get("gateway_became_active", 0) == took_over
        gens = set(re.findall(r"cookie=0xd([0-9a-f])", gw.ofctl("dump-flows", "br-dove")))
        assert len(gens) == 1, gens
    finally:
        client.close()


def test_failover_to_the_standby_when_the_active_gateway_stops(world: World) -> None:
    gw, vm = active(world), world.dnet.vm("t2vm3")
    standby = world.ext.standby()
    assert ping(vm.host, INTERNET_IP, count=2) == 2
    pinger = vm.host.popen(
        ["ping", "-n", "-D", "-i", "0.1", "-w", "40", INTERNET_IP],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)  # replies through the active gateway first
    gw.stop_agent()
    gw.stop_ovs()  # the whole gateway: its datapath too
    stopped = time.time()
    wait_until(lambda: admin(standby).get("active"), 30.0, f"{standby.name} active")
    replies: list[float] = []

    def resumed() -> bool:
        return any(t > stopped for t in replies)

    assert pinger.stdout is not None
    deadline = time.time() + 30
    while not resumed() and time.time() < deadline:
        line = pinger.stdout.readline().decode()
        m = re.match(r"\[(\d+\.\d+)\].*bytes from", line)
        if m:
            replies.append(float(m.group(1)))
    pinger.kill()
    pinger.wait()
    assert resumed(), "no reply through the standby gateway"
    # The longest silence between two replies: the gateway went between them.
    gap = max(b - a for a, b in zip(replies, replies[1:], strict=False))
    print(f"\ngateway failover gap: {gap:.2f} s ({gw.name} -> {standby.name})")
    body = fetch(vm.host, f"http://{INTERNET_IP}/index.html")
    assert body == INDEX_TEXT
