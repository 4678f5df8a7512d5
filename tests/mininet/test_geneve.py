"""Geneve between DOVE hosts, and both encapsulations at once (docs/interop.md section 1),
in Mininet with real agents: one 3-hypervisor emulation with tunnel_type = geneve.

Layout: t1vm1@hv1, t1vm2@hv2, t2vm1@hv2, t2vm2@hv3 (the tenants use the same addresses).
The last test turns it into a mixed deployment (hv1 VXLAN only) and changes it back.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.tools.capture import settle
from tests.tools.transfer import transfer

DEPARTURE_MEMORY = 3.0
GENEVE_MTU = 1442  # 1500 - 58: outer IPv4, UDP, Geneve with the DOVE option, inner Ethernet
FIELDS = ("udp.dstport", "geneve.vni", "geneve.option.class", "vxlan.vni")


@pytest.fixture(scope="module")
def dnet() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.agents import build_dove_net

    net, _ = build_dove_net(
        hypervisors=3,
        tenants=2,
        vms_per_tenant=2,
        extra={"departure_memory": DEPARTURE_MEMORY},
        tunnel_type="geneve",
    )
    try:
        yield net
    finally:
        net.stop()


def ping_ok(src: Any, dst_ip: str, count: int = 3) -> bool:
    out = src.host.cmd(f"ping -c{count} -i0.1 -W1 {dst_ip}")
    return f"{count} received" in out


def wait(cond: Any, timeout: float, what: str) -> None:
    from mininet_topos.hypervisor import wait_until

    wait_until(cond, timeout, what, step=0.05)


@contextmanager
def underlay_capture(
    hv: Any, seconds: float, intf: str | None = None
) -> Iterator[list[tuple[str, ...]]]:
    """tshark on ``hv``'s underlay uplink (or ``intf``) for the body's traffic: one tuple
    of FIELDS a packet.  NOTE: the netdev datapath pushes the tunnel header in userspace
    and sends out of the uplink; br-phy's own interface never sees the packets."""
    argv = ["tshark", "-l", "-n", "-i", intf or hv.uplink, "-f", "udp port 6081 or udp port 4789"]
    argv += ["-a", f"duration:{seconds}", "-T", "fields", "-E", "separator=|"]
    for name in FIELDS:
        argv += ["-e", name]
    proc = hv.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    wait(lambda: "Capturing on" in (proc.stderr.readline() or ""), 10, "tshark capturing")
    found: list[tuple[str, ...]] = []
    try:
        yield found
    finally:
        out, _ = proc.communicate(timeout=seconds + 10)
        found += [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def test_vms_get_the_geneve_mtu_and_ping_across_hypervisors(dnet: Any) -> None:
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    intf = a.host.intf().name
    assert a.host.cmd(f"cat /sys/class/net/{intf}/mtu").strip() == str(GENEVE_MTU)
    wait(lambda: ping_ok(a, b.ip, 1), 10, "t1vm1 reaches t1vm2")
    assert ping_ok(a, b.ip, 5)
    # A full-size packet (DF) fits: 1442 - 28 bytes of ICMP payload.
    out = a.host.cmd(f"ping -c2 -i0.2 -W1 -M do -s {GENEVE_MTU - 28} {b.ip}")
    assert "2 received" in out, out


def test_every_data_packet_is_geneve_with_the_vni_and_the_dove_option(dnet: Any) -> None:
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    hv1 = dnet.hv("hv1")
    with underlay_capture(hv1, 4) as seen:
        settle()  # tshark is up; the ping below is what it must see
        assert ping_ok(a, b.ip, 5)
    assert seen, "nothing captured"
    for dstport, vni, option_class, vxlan_vni in seen:
        assert dstport == "6081" and not vxlan_vni, seen
        assert int(vni, 0) == a.instance, seen
        assert "0xff0d" in option_class.lower() or option_class == str(0xFF0D), seen


def test_tcp_across_hypervisors(dnet: Any) -> None:
    with transfer(dnet.vm("t1vm1"), dnet.vm("t1vm2"), port=7777, total=4_000_000):
        pass


def test_tenants_with_the_same_addresses_stay_apart(dnet: Any) -> None:
    from tests.tools.capture import Capture

    t1vm2, t2vm1, t2vm2 = dnet.vm("t1vm2"), dnet.vm("t2vm1"), dnet.vm("t2vm2")
    assert t1vm2.ip == t2vm2.ip  # the same address in both tenants
    with Capture(t1vm2.host, t1vm2.host.intf().name, "icmp") as cap:
        assert ping_ok(t2vm1, t2vm2.ip, 3)  # tenant 2's own VM answers
        time.sleep(0.3)
    assert not cap.packets(), str(cap)


def test_migration_under_a_ping_stream(dnet: Any) -> None:
    from mininet_topos.migration import migrate

    a, mover = dnet.vm("t1vm1"), dnet.vm("t1vm2")
    wait(lambda: ping_ok(a, mover.ip, 1), 10, "reachable before")
    proc = a.host.popen(
        ["ping", "-i", "0.05", "-c", "80", "-W", "1", mover.ip],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    migrate(dnet, mover, dnet.hv("hv3"))
    out, _ = proc.communicate(timeout=30)
    received = int(out.split(" received")[0].rsplit(" ", 1)[-1])
    assert received >= 70, out  # a few lost while the port moves
    assert ping_ok(a, mover.ip, 3)


def _restart_with(hv: Any, tunnel_type: str, accept: str) -> None:
    from mininet_topos.agents import agent_cmd
    from mininet_topos.hypervisor import wait_until

    ini = hv._dir() / "dove.ini"
    lines = [
        line
        for line in ini.read_text().splitlines()
        if not line.startswith(("tunnel_type", "accept_tunnel_types"))
    ]
    lines += [f"tunnel_type = {tunnel_type}", f"accept_tunnel_types = {accept}"]
    hv.stop_agent()
    hv.start_agent("\n".join(lines) + "\n", agent_cmd())
    from mininet_topos.agents import connected_status

    wait_until(lambda: connected_status(hv) is not None, 20, f"{hv.name} agent back")


def test_a_mixed_deployment_talks_and_a_host_switches_without_loss(dnet: Any) -> None:
    """hv1 VXLAN only; hv2 takes both and sends Geneve: hv1 and hv2 talk VXLAN, hv2 and
    hv3 Geneve.  Then hv1 takes both too (the first step of a rolling change)."""
    a, b = dnet.vm("t1vm1"), dnet.vm("t1vm2")  # t1vm2 is on hv3 after the migration
    from mininet_topos.migration import migrate

    if b.hypervisor is not dnet.hv("hv2"):
        migrate(dnet, b, dnet.hv("hv2"))
    _restart_with(dnet.hv("hv2"), "geneve", "vxlan, geneve")
    _restart_with(dnet.hv("hv1"), "vxlan", "vxlan")
    wait(lambda: ping_ok(a, b.ip, 1), 20, "hv1 (VXLAN) reaches hv2 (both)")
    with underlay_capture(dnet.hv("hv1"), 4) as seen:
        settle()
        assert ping_ok(a, b.ip, 5)
    assert seen and all(p[0] == "4789" and int(p[3], 0) == a.instance for p in seen), seen
    # hv1 now takes Geneve as well: hv2 switches to Geneve towards it, no ping lost.
    proc = a.host.popen(
        ["ping", "-i", "0.05", "-c", "100", "-W", "1", b.ip], stdout=subprocess.PIPE, text=True
    )
    _restart_with(dnet.hv("hv1"), "vxlan", "vxlan, geneve")
    out, _ = proc.communicate(timeout=30)
    assert " 0% packet loss" in out, out
    with underlay_capture(dnet.hv("hv1"), 4) as seen:
        settle()
        assert ping_ok(a, b.ip, 5)
    ports = {p[0] for p in seen}
    assert ports == {"4789", "6081"}, seen  # hv1 sends VXLAN (its own), hv2 Geneve
