"""ovs-vswitchd restarted under traffic (issue 13, point 2; docs/control-plane.md section 2).

One emulation for the module: two hypervisors, two tenants of three VMs with the same
addresses (t1vm1@hv1, t1vm2@hv2, t1vm3@hv1; t2vm1@hv2, t2vm2@hv1, t2vm3@hv2). hv1's
ovs-vswitchd is restarted (`mininet_topos.ovs_restart`) while a 5 ms ping stream crosses it;
ovsdb-server and the agent keep running. Each test checks that the stream comes back, that
the switch then has its learned and its flood state (a first ping to a VM nobody has
learned, a broadcast that reaches its tenant's VMs), and that the other tenant's VMs
received nothing the whole time.

- as an operator restarts it (`ovs-ctl restart`: flows saved and replayed under
  flow-restore-wait): the agent takes over the replayed flows;
- a plain stop and start: the switch comes back empty and the agent reprograms it;
- the VM port's and the tunnel port's OpenFlow numbers change across the restart: the
  replayed flows name the old ones, the agent must find the new ones and leave nothing
  that outputs to a number another port may get;
- ovsdb-server restarted: the agent's OVSDB watcher reconnects and takes a new VM.

No timing is asserted: only that traffic resumes within a bounded, polled wait.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from dove_ryu.openflow import cookies
from mininet_topos.agents import admin, build_dove_net
from mininet_topos.dove_topo import DoveNet, VmRecord, plug_vm
from mininet_topos.hypervisor import BR_DOVE, TUNNEL_PORT, Hypervisor, wait_until
from mininet_topos.ovs_restart import Restart, restart_ovsdb, restart_vswitchd
from mininet_topos.traffic import parse_stream, ping_stream, read_so_far, stop_stream
from tests.tools import netsend
from tests.tools.capture import Capture, settle
from tests.tools.nodes import received, send_frames

RESUME_TIMEOUT = 20.0  # seconds the stream may take to come back (polled)
WATCHED = "icmp or arp or udp port 9100"
COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")


@pytest.fixture(scope="module")
def dnet() -> Iterator[DoveNet]:
    net, _ = build_dove_net(hypervisors=2, tenants=2, vms_per_tenant=3)
    try:
        yield net
    finally:
        net.stop()


# --- helpers ------------------------------------------------------------------------------


def vm(dnet: DoveNet, name: str) -> VmRecord:
    return dnet.vm(name)


def ping_ok(src: VmRecord, dst: VmRecord, count: int = 1) -> str:
    out = src.host.cmd(f"ping -n -c {count} -i 0.1 -W 2 {dst.ip}")
    assert received(out) == count, f"{src.name} -> {dst.name}:\n{out}"
    return str(out)


def learned_macs(hv: Hypervisor, instance: int) -> set[str]:
    info = admin(hv)["instances"].get(str(instance), {})
    return {e["mac"] for e in info.get("learned", [])}


def local_ofports(hv: Hypervisor, instance: int) -> dict[str, int]:
    """The agent's local ports of ``instance``: MAC -> the ofport it uses."""
    info = admin(hv)["instances"].get(str(instance), {})
    return {e["mac"]: e["ofport"] for e in info.get("local", [])}


def ofport(hv: Hypervisor, port: str) -> int:
    return int(hv.vsctl("get", "Interface", port, "ofport").strip())


def generations(hv: Hypervisor) -> set[int]:
    """The cookie generations of our flows on the bridge (docs/control-plane.md, 1)."""
    found = set()
    for cookie in COOKIE.findall(hv.ofctl("dump-flows", BR_DOVE)):
        gen = cookies.generation(int(cookie, 16))
        if gen is not None:
            found.add(gen)
    return found


def agent_pid(hv: Hypervisor) -> int:
    assert hv.agent is not None and hv.agent.poll() is None, f"{hv.name}: agent died"
    return hv.agent.pid


def watch(vms: list[VmRecord]) -> list[Capture]:
    return [Capture(v.host, v.host.intf().name, WATCHED) for v in vms]


def stop_all(caps: list[Capture]) -> None:
    for cap in caps:
        cap.stop()


def restart_under_stream(
    src: VmRecord,
    dst: VmRecord,
    hv: Hypervisor,
    restore: bool,
    while_down: Callable[[], None] | None = None,
) -> Restart:
    """A 5 ms ping stream ``src`` -> ``dst`` while ``hv``'s ovs-vswitchd restarts; returns
    once the stream has a reply from after the restart (polled, bounded)."""
    ping_ok(src, dst)  # learned before the stream
    proc, log = ping_stream(src, dst.ip)
    try:
        wait_until(lambda: parse_stream(read_so_far(log))[0], 5.0, "the stream to run")
        restart = restart_vswitchd(hv, restore=restore, while_down=while_down)
        wait_until(
            lambda: any(t > restart.released for t in parse_stream(read_so_far(log))[0]),
            RESUME_TIMEOUT,
            f"the stream {src.name} -> {dst.name} to come back after {hv.name}'s restart",
            step=0.05,
        )
    finally:
        stop_stream(proc, log)
    return restart


def broadcast_reaches_tenant_only(dnet: DoveNet, sender: VmRecord) -> None:
    """A UDP broadcast and a gratuitous ARP from ``sender`` reach every other VM of its
    tenant once each, and no VM of another tenant."""
    peers = [v for v in dnet.tenant_vms(sender.tenant) if v is not sender]
    others = [v for v in dnet.vms if v.tenant != sender.tenant]
    caps = {v.name: Capture(v.host, v.host.intf().name, WATCHED) for v in peers + others}
    try:
        frame = netsend.ethernet(
            netsend.BROADCAST,
            sender.mac,
            netsend.ETH_TYPE_IPV4,
            netsend.ipv4_udp(sender.ip, "10.0.0.255", 40000, 9100, b"after-restart"),
        )
        garp = netsend.arp_request_frame(sender.mac, sender.ip, sender.ip)
        send_frames(sender, [frame, garp])
        for peer in peers:
            caps[peer.name].wait_for(lambda line: ".9100:" in line, 5.0, "the UDP broadcast")
            caps[peer.name].wait_for(lambda line: "ARP" in line, 5.0, "the gratuitous ARP")
        settle()
    finally:
        stop_all(list(caps.values()))
    for peer in peers:
        got = caps[peer.name].matching(lambda line: ".9100:" in line or "ARP" in line)
        assert len(got) == 2, f"each broadcast once at {peer.name}: {got}"
    leaked = {str(caps[v.name]): caps[v.name].packets() for v in others if caps[v.name].packets()}
    assert not leaked, f"{sender.name}'s broadcast reached another tenant: {leaked}"


def first_ping_to_unlearned(src: VmRecord, dst: VmRecord) -> None:
    """``dst`` is unknown to ``src``'s host and to ``src``: one echo, answered."""
    assert dst.mac not in learned_macs(src.hypervisor, src.instance), "already learned"
    src.host.cmd(f"ip neigh flush dev {src.host.intf().name}")
    ping_ok(src, dst)


def assert_nothing_leaked(caps: list[Capture], tenant: int) -> None:
    leaked = {str(cap): cap.packets() for cap in caps if cap.packets()}
    assert not leaked, f"tenant {tenant}'s traffic reached another tenant: {leaked}"


# --- tests --------------------------------------------------------------------------------


def test_restart_with_saved_flows_resumes_and_keeps_learned_and_flood_state(
    dnet: DoveNet,
) -> None:
    """ovs-ctl's way: flows saved, replayed under flow-restore-wait, the agent takes over."""
    hv1 = dnet.hv("hv1")
    pid = agent_pid(hv1)
    connects = admin(hv1, "counters").get("switch_connected", 0)
    t1vm1, t1vm2, t1vm3 = (vm(dnet, f"t1vm{i}") for i in (1, 2, 3))
    negatives = watch(dnet.tenant_vms(2))
    try:
        restart = restart_under_stream(t1vm1, t1vm2, hv1, restore=True)
        assert restart.saved_flows > 0
        wait_until(
            lambda: admin(hv1, "counters").get("switch_connected", 0) > connects,
            10.0,
            "the agent to have its switch again",
        )
        # NOTE (OVS 3.1.0): clearing flow-restore-wait gives br-dove its primary
        # controller back, and OVS flushes a bridge's flows when it gains one: the
        # replayed flows are gone before the agent connects, and it programs the empty
        # switch.  Whatever it found, what it leaves is one generation, nothing stale.
        wait_until(lambda: len(generations(hv1)) == 1, 15.0, "our flows to be of one generation")
        # Into the restarted host, from a host that never learned the VM.
        first_ping_to_unlearned(t1vm2, t1vm3)
        broadcast_reaches_tenant_only(dnet, t1vm1)
        settle()
    finally:
        stop_all(negatives)
    assert_nothing_leaked(negatives, 1)
    assert agent_pid(hv1) == pid, "the agent was restarted"


def test_plain_restart_reprograms_the_empty_switch(dnet: DoveNet) -> None:
    """No saved flows: ovs-vswitchd comes back empty and the agent programs it whole."""
    hv1 = dnet.hv("hv1")
    pid = agent_pid(hv1)
    t2vm1, t2vm2, t2vm3 = (vm(dnet, f"t2vm{i}") for i in (1, 2, 3))
    negatives = watch(dnet.tenant_vms(1))
    try:
        restart = restart_under_stream(t2vm2, t2vm1, hv1, restore=False)
        assert restart.saved_flows == 0
        # Out of the restarted host, to a VM it never learned.
        first_ping_to_unlearned(t2vm2, t2vm3)
        broadcast_reaches_tenant_only(dnet, t2vm2)
        settle()
    finally:
        stop_all(negatives)
    assert_nothing_leaked(negatives, 2)
    assert agent_pid(hv1) == pid, "the agent was restarted"


def test_new_port_numbers_after_a_restart_are_found(dnet: DoveNet) -> None:
    """The VM port and the tunnel port come back with other OpenFlow numbers: the replayed
    flows name the old ones; the agent must use the new ones and leave no flow that
    matches or outputs to an old one (another port may get that number next)."""
    hv1 = dnet.hv("hv1")
    t1vm1, t1vm2, t1vm3 = (vm(dnet, f"t1vm{i}") for i in (1, 2, 3))
    old = {t1vm1.port: ofport(hv1, t1vm1.port), TUNNEL_PORT: ofport(hv1, TUNNEL_PORT)}
    wanted = {t1vm1.port: 41, TUNNEL_PORT: 42}

    def renumber() -> None:
        args = ["--no-wait"]
        for name, number in wanted.items():
            args += ["--", "set", "Interface", name, f"ofport_request={number}"]
        hv1.vsctl(*args)

    negatives = watch(dnet.tenant_vms(2))
    try:
        restart_under_stream(t1vm2, t1vm1, hv1, restore=True, while_down=renumber)
        assert {name: ofport(hv1, name) for name in wanted} == wanted
        wait_until(
            lambda: local_ofports(hv1, t1vm1.instance).get(t1vm1.mac) == wanted[t1vm1.port],
            10.0,
            f"the agent to use {t1vm1.port}'s new number",
        )
        # In through the renumbered tunnel port, out to the renumbered VM port.
        broadcast_reaches_tenant_only(dnet, t1vm2)
        ping_ok(t1vm1, t1vm2, count=3)
        ping_ok(t1vm3, t1vm2, count=3)
        settle()
    finally:
        stop_all(negatives)
    assert_nothing_leaked(negatives, 1)

    numbers = "|".join(str(n) for n in old.values())
    naming_old = re.compile(rf"(in_port=|output:)({numbers})\b")

    def stale() -> list[str]:
        dumps = hv1.ofctl("dump-flows", BR_DOVE) + hv1.ofctl("dump-groups", BR_DOVE)
        return [line for line in dumps.splitlines() if naming_old.search(line)]

    wait_until(lambda: not stale(), 10.0, "no flow naming an old port number")


def test_the_agent_follows_an_ovsdb_server_restart(dnet: DoveNet) -> None:
    """ovsdb-server restarts: the agent's watcher reconnects, forwarding never stops, and a
    VM plugged afterwards is taken and reachable."""
    hv1 = dnet.hv("hv1")
    pid = agent_pid(hv1)
    t1vm2, t1vm3 = vm(dnet, "t1vm2"), vm(dnet, "t1vm3")
    ping_ok(t1vm2, t1vm3)
    proc, log = ping_stream(t1vm2, t1vm3.ip)
    try:
        wait_until(lambda: parse_stream(read_so_far(log))[0], 5.0, "the stream to run")
        restart_ovsdb(hv1)
        new = plug_vm(dnet, "t1vm4", hv1, 1, "02:00:00:00:00:04", "10.0.0.4/24", timeout=30.0)
        so_far = len(parse_stream(read_so_far(log))[0])
        wait_until(
            lambda: len(parse_stream(read_so_far(log))[0]) > so_far + 20,
            5.0,
            "more echoes after the plug",
        )
    finally:
        output = stop_stream(proc, log)
    _, sent, got = parse_stream(output)
    # The echo in flight when the stream is stopped may count as lost.
    assert sent is not None and got is not None and sent - got <= 1, (
        f"the stream lost echoes across ovsdb-server's restart: {sent} sent, {got} back"
    )
    first_ping_to_unlearned(t1vm2, new)
    assert agent_pid(hv1) == pid, "the agent was restarted"
