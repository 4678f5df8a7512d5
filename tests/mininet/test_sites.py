"""Multi-site DOVE in Mininet: two sites that cannot reach each other, joined by VAN
proxies (paper section IV-C), with real agents on every hypervisor and proxy.

Both sites use the same underlay range; each has two proxies (px1 starts active).
Tenant t's VM i of site s is t<t>s<s>vm<i>, 10.0.0.(10s+i), so tenant 1's and
tenant 2's VMs have the same addresses in every site.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.openflow.cookies import Purpose
from mininet_topos.agents import admin
from mininet_topos.hypervisor import wait_until
from mininet_topos.sites import (
    SitesNet,
    SitesSpec,
    active_proxy,
)
from tests.tools import netsend, ovs
from tests.tools.capture import Capture, settle
from tests.tools.forge import ping_through_forged_vxlan
from tests.tools.nodes import received
from tests.tools.transfer import transfer

PYTHON = sys.executable
NETSEND = str(Path(netsend.__file__).resolve())
VXLAN_PORT = 4789
WAN_MTU = 1400


SITES_SPEC = SitesSpec(wan_mtu=WAN_MTU)
SITES_EXTRA = {"departure_memory": 3.0}  # read by conftest's `sites` fixture


def ping(vm: Any, ip: str, count: int = 3, size: int | None = None, df: bool = False) -> str:
    cmd = ["ping", "-n", "-c", str(count), "-i", "0.1", "-W", "2"]
    if size is not None:
        cmd += ["-s", str(size)]
    if df:
        cmd += ["-M", "do"]
    out, err, _ = vm.host.pexec([*cmd, ip])
    return str(out + err)


def counters(node: Any) -> dict[str, int]:
    return dict(admin(node, "counters"))


def learned(node: Any, instance: int) -> dict[str, dict[str, Any]]:
    info = admin(node)["instances"].get(str(instance), {})
    return {e["mac"]: e for e in info.get("learned", [])}


def flow_packets(node: Any, purpose: Purpose, controller_only: bool = False) -> int:
    node.appctl("revalidator/wait")
    return ovs.packets(node, purpose, controller_only)


# --------------------------------------------------------------------- reach


def test_vms_reach_their_tenant_in_the_other_site_through_the_proxies(sites: SitesNet) -> None:
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    out = ping(a, b.ip)
    assert received(out) == 3, out
    px1, px2 = active_proxy(sites, 1), active_proxy(sites, 2)
    # a's host learned b behind its own site's proxy, and each proxy knows the next hop.
    assert learned(a.hypervisor, a.instance)[b.mac]["host"] == px1.underlay_ip
    assert learned(px1, a.instance)[b.mac]["host"] == px2.wan_ip
    assert learned(px2, a.instance)[b.mac]["host"] == b.hypervisor.underlay_ip
    assert learned(px2, a.instance)[a.mac]["host"] == px1.wan_ip
    back = ping(b, a.ip)
    assert received(back) == 3, back


def test_steady_traffic_crosses_in_the_datapath_without_packet_ins(sites: SitesNet) -> None:
    a, b = sites.vm("t1s1vm2"), sites.vm("t1s2vm2")
    assert received(ping(a, b.ip)) == 3
    proxies = [active_proxy(sites, 1), active_proxy(sites, 2)]
    before = {p.name: counters(p).get("packet_in", 0) for p in proxies}
    learned_before = {p.name: flow_packets(p, Purpose.LEARNED) for p in proxies}
    out = ping(a, b.ip, count=50)
    assert received(out) == 50, out
    for p in proxies:
        assert counters(p).get("packet_in", 0) == before[p.name], f"{p.name} got packet-ins"
        assert flow_packets(p, Purpose.LEARNED) >= learned_before[p.name] + 100


def test_hosts_of_one_site_never_go_through_a_proxy(sites: SitesNet) -> None:
    a, b = sites.vm("t2s1vm1"), sites.vm("t2s1vm2")
    assert a.hypervisor is not b.hypervisor
    out = ping(a, b.ip, count=5)
    assert received(out) == 5, out
    assert learned(a.hypervisor, a.instance)[b.mac]["host"] == b.hypervisor.underlay_ip
    for proxy in sites.site_proxies(1):
        for mac in (a.mac, b.mac):
            entry = learned(proxy, a.instance).get(mac)
            # The proxy may know them (it hears their LEARNs) but never as remote.
            assert entry is None or entry["side"] == "site", entry


def test_tenants_stay_apart_across_sites(sites: SitesNet) -> None:
    # Tenant 2 has the same addresses as tenant 1, in both sites.
    a, b, twin = sites.vm("t1s1vm1"), sites.vm("t1s2vm2"), sites.vm("t2s2vm2")
    assert b.ip == twin.ip
    with Capture(twin.host, twin.host.intf().name, "icmp or arp") as cap:
        out = ping(a, b.ip, count=5)
        assert received(out) == 5, out
        settle()
    assert not cap.packets(), f"tenant 1's frames reached tenant 2:\n{cap}"


def send_frames(vm: Any, frames: list[bytes]) -> None:
    args = [PYTHON, NETSEND, "frames", "--iface", vm.host.intf().name, "--interval", "0.01"]
    for frame in frames:
        args += ["--hex", frame.hex()]
    out, err, rc = vm.host.pexec(args)
    assert rc == 0, f"netsend frames in {vm.name}: {out}{err}"


def test_broadcast_crosses_to_the_other_site_once(sites: SitesNet) -> None:
    src = sites.vm("t1s1vm1")
    px2 = active_proxy(sites, 2)
    receivers = [v for v in sites.tenant_vms(1) if v.site == 2]
    others = [v for v in sites.tenant_vms(2) if v.site == 2]
    frame = netsend.ethernet(
        netsend.BROADCAST,
        src.mac,
        netsend.ETH_TYPE_IPV4,
        netsend.ipv4_udp(src.ip, "10.0.0.255", 40000, 9100, b"dove-bcast"),
    )
    caps = [Capture(v.host, v.host.intf().name, "udp port 9100") for v in [*receivers, *others]]
    wan = Capture(px2, f"{px2.name}-eth1", f"udp dst port {VXLAN_PORT}", label="px2 wan leg")
    try:
        send_frames(src, [frame])
        for cap in caps[: len(receivers)]:
            cap.wait_for(lambda line: "9100" in line, 5.0, "the broadcast")
        settle()
    finally:
        for cap in [*caps, wan]:
            cap.stop()
    for cap in caps[: len(receivers)]:
        assert len(cap.packets()) == 1, str(cap)
    for cap in caps[len(receivers) :]:
        assert not cap.packets(), f"tenant 1's broadcast reached tenant 2: {cap}"
    crossing = wan.matching(lambda line: "9100" in line)
    assert len(crossing) == 1, f"the broadcast crossed the WAN {len(crossing)} times:\n{wan}"


def test_a_broadcast_too_big_for_the_wan_crosses_in_dove_fragments(sites: SitesNet) -> None:
    src = sites.vm("t1s1vm2")
    px1 = active_proxy(sites, 1)
    receivers = [v for v in sites.tenant_vms(1) if v.site == 2]
    payload = b"B" * 1400  # a 1442-byte frame; the 1400-byte WAN carries 1364
    frame = netsend.ethernet(
        netsend.BROADCAST,
        src.mac,
        netsend.ETH_TYPE_IPV4,
        netsend.ipv4_udp(src.ip, "10.0.0.255", 40001, 9101, payload),
    )
    before = counters(px1).get("wan_frames_fragmented", 0)
    caps = [Capture(v.host, v.host.intf().name, "udp port 9101") for v in receivers]
    try:
        send_frames(src, [frame])
        for cap in caps:
            cap.wait_for(lambda line: "length 1400" in line, 5.0, "the big broadcast, whole")
        settle()
    finally:
        for cap in caps:
            cap.stop()
    for cap in caps:
        assert len(cap.packets()) == 1, str(cap)
    assert counters(px1).get("wan_frames_fragmented", 0) == before + 1


# ----------------------------------------------------------- forged traffic


@pytest.mark.parametrize("leg", ["site", "wan"])
def test_a_proxy_refuses_tunnelled_traffic_from_strangers(sites: SitesNet, leg: str) -> None:
    target = sites.vm("t1s2vm1")  # in site 2, reached through site 1's proxy
    proxy = active_proxy(sites, 1)
    assert received(ping(sites.vm("t1s1vm1"), target.ip)) == 3  # the proxy knows it
    if leg == "site":
        prober, dev, remote = sites.probe(1), "s1probe-eth0", proxy.underlay_ip
    else:
        prober, dev, remote = sites.wan_probe, "wanprobe-eth0", proxy.wan_ip
    before = flow_packets(proxy, Purpose.DROP_NONMEMBER)
    with Capture(target.host, target.host.intf().name, "icmp and src host 10.0.0.200") as cap:
        rc, out = ping_through_forged_vxlan(prober, dev, remote, target)
        assert rc != 0, f"{prober.name} reached {target.name} through a proxy:\n{out}"
        settle()
    assert not cap.packets(), f"forged VXLAN went through the proxy: {cap}"
    wait_until(
        lambda: flow_packets(proxy, Purpose.DROP_NONMEMBER) >= before + 5,
        10.0,
        f"{proxy.name} counts the forged packets",
    )


# -------------------------------------------------------------- MTU, slow path


def test_full_size_frames_with_df_cross_a_smaller_wan_in_dove_fragments(sites: SitesNet) -> None:
    a, b = sites.vm("t1s1vm2"), sites.vm("t1s2vm1")
    px1, px2 = active_proxy(sites, 1), active_proxy(sites, 2)
    before1, before2 = counters(px1), counters(px2)
    # 1422 bytes of ICMP data: 1450-byte IP packets, the VMs' MTU, with DF set.
    with Capture(px2, f"{px2.name}-eth1", "ip[6:2] & 0x3fff != 0", label="IP fragments") as frags:
        out = ping(a, b.ip, count=5, size=1422, df=True)
        settle()
    assert received(out) == 5, out
    assert "1430 bytes from" in out  # the echo replies came back whole
    assert not frags.packets(), f"outer IP packets were fragmented on the WAN:\n{frags}"
    after1, after2 = counters(px1), counters(px2)
    assert after1.get("wan_frames_fragmented", 0) >= before1.get("wan_frames_fragmented", 0) + 5
    assert after2.get("wan_frames_reassembled", 0) >= before2.get("wan_frames_reassembled", 0) + 5
    # Small frames still cross in the datapath.
    small_before = counters(px1).get("packet_in", 0)
    assert received(ping(a, b.ip, count=5)) == 5
    assert counters(px1).get("packet_in", 0) == small_before


# ---------------------------------------------------------------- migration


def test_tcp_survives_a_move_to_the_other_site_and_back(sites: SitesNet) -> None:
    from mininet_topos.migration import migrate

    sender, mover = sites.vm("t2s1vm1"), sites.vm("t2s1vm2")
    home, away = mover.hypervisor, sites.site_hvs(2)[0]
    with transfer(sender, mover, port=7778, total=12_000_000):  # about 6 s at 2 MB/s
        time.sleep(1.5)  # the stream runs before the move
        migrate(sites, mover, away)
        wait_until(
            lambda: (
                learned(sender.hypervisor, sender.instance).get(mover.mac, {}).get("host")
                == active_proxy(sites, 1).underlay_ip
            ),
            10.0,
            "the sender's host follows the VM to the proxy",
        )
        time.sleep(1.5)
        migrate(sites, mover, home)


def test_a_stopped_vm_is_unlearned_in_the_other_site(sites: SitesNet) -> None:
    """UN-LEARN crosses sites: the proxies pass on what the VM's host says."""
    from mininet_topos.dove_topo import attach_vm, detach_vm

    a, gone = sites.vm("t2s1vm2"), sites.vm("t2s2vm2")
    assert received(ping(a, gone.ip)) == 3
    assert gone.mac in learned(a.hypervisor, a.instance)
    hv = gone.hypervisor
    detach_vm(hv, gone.port)
    try:
        wait_until(
            lambda: gone.mac not in learned(a.hypervisor, a.instance),
            5.0,
            f"{a.hypervisor.name} un-learns {gone.name}",
        )
        assert gone.mac not in learned(active_proxy(sites, 1), a.instance)
    finally:
        attach_vm(hv, gone.host, gone.instance, gone.mac, gone.ip_cidr)
    out = ping(a, gone.ip)
    assert received(out) == 3, f"not reached again once it is back:\n{out}"


# --------------------------------------------------------------- redundancy


def test_stopping_the_active_proxy_moves_traffic_to_the_standby(sites: SitesNet) -> None:
    """Last in this module: it leaves site 1 with one proxy."""
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm2")
    assert received(ping(a, b.ip)) == 3
    old = active_proxy(sites, 1)
    standby = next(p for p in sites.site_proxies(1) if p is not old)
    pinger = a.host.popen(
        ["ping", "-n", "-i", "0.05", "-w", "8", b.ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    old.stop_agent()
    old.stop_ovs()  # the whole proxy is gone, its datapath too
    out, _ = pinger.communicate(timeout=30)
    assert admin(standby)["active"], "the standby did not take over"
    got = received(out)
    sent = int(out.split("packets transmitted")[0].split()[-1])
    assert got >= sent - 40, f"traffic did not come back through {standby.name}:\n{out}"
    assert learned(a.hypervisor, a.instance)[b.mac]["host"] == standby.underlay_ip
    assert received(ping(a, b.ip)) == 3
