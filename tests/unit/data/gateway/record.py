"""Capture the gateway traces of tests/unit/test_ctl_flows.py from the live emulation
(mininet_topos.gateway, as tests/mininet/test_gateway.py builds it), as root:

    flock /tmp/dove-mininet.lock .venv/bin/python tests/unit/data/gateway/record.py

Writes, beside this file, each node's ``<node>-{flows,ports}.txt`` and ``-status.json``
and ``trace-<case>.txt`` (``ofproto/trace br-dove <flow>``, the flows of ``TRACES``
below; OVS follows conntrack's recirculations itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dove_ryu.adapters import admin as admin_socket
from mininet_topos.agents import ADMIN_SOCKET, build_dove_net
from mininet_topos.gateway import (
    INTERNET_IP,
    add_gateways,
    fetch,
    floating_ip,
    hosts_and_gateways,
    in_node,
    snat_address,
)
from mininet_topos.hypervisor import Hypervisor, wait_until

HERE = Path(__file__).parent


def env(node: Hypervisor) -> dict[str, str]:
    import os

    return {**os.environ, "OVS_RUNDIR": str(node.rundir)}


def tool(node: Hypervisor, *argv: str) -> str:
    return subprocess.run(argv, env=env(node), capture_output=True, text=True, check=True).stdout


def status(node: Hypervisor) -> dict[str, object]:
    return admin_socket.query(str(Path(node.rundir) / ADMIN_SOCKET), {"cmd": "status"})


def save(node: Hypervisor) -> dict[str, object]:
    of = ("ovs-ofctl", "-O", "OpenFlow13")
    (HERE / f"{node.name}-flows.txt").write_text(
        tool(node, *of, "dump-flows", "br-dove", "--no-names")
    )
    (HERE / f"{node.name}-ports.txt").write_text(tool(node, *of, "dump-ports-desc", "br-dove"))
    st = status(node)
    (HERE / f"{node.name}-status.json").write_text(json.dumps(st, indent=2, sort_keys=True) + "\n")
    return st


def trace(node: Hypervisor, case: str, flow: str) -> str:
    out = tool(node, "ovs-appctl", "ofproto/trace", "br-dove", flow)
    (HERE / f"trace-{case}.txt").write_text(out)
    print(f"--- {case}: {flow}\n{out}", flush=True)
    return flow


def main() -> None:
    dnet, key = build_dove_net(
        3, 2, 4, extra={"peers": hosts_and_gateways(3)}, subnets=2, routers=True
    )
    try:
        ext = add_gateways(dnet, key)
        try:
            record(dnet, ext)
        finally:
            ext.stop()
    finally:
        dnet.stop()


def record(dnet, ext) -> None:  # type: ignore[no-untyped-def]
    src, dst = dnet.vm("t1vm2"), dnet.vm("t1vm1")  # 10.0.1.2 out; 203.0.113.101 -> 10.0.0.1
    wait_until(lambda: fetch(src.host, f"http://{INTERNET_IP}/"), 30.0, "fetch", step=0.5)
    out, _, _ = in_node(ext.internet, ["ping", "-n", "-c", "2", "-W", "2", floating_ip(1)], 20)
    print(out)
    gw = wait_until(ext.active, 30.0, "active gateway")
    hv_src, hv_dst = src.hypervisor, dst.hypervisor
    st_src = save(hv_src)
    st_gw = save(gw)
    save(hv_dst)
    save(ext.standby())
    sub = {
        int(s["instance"]): s for r in st_src["routing"]["routers"].values() for s in r["subnets"]
    }
    gw_mac_src = sub[src.instance]["mac"]
    gw_mac_dst = sub[dst.instance]["mac"]
    ext_mac = gw.cmd(f"cat /sys/class/net/{gw.name}-ext/address").strip()
    inet_mac = ext.internet.cmd("cat /sys/class/net/inet-eth0/address").strip()
    ping = "icmp,icmp_type=8,icmp_code=0"
    out_pkt = (
        f"dl_src={src.mac},dl_dst={gw_mac_src},{ping},"
        f"nw_src={src.ip},nw_dst={INTERNET_IP},nw_ttl=64"
    )
    trace(hv_src, f"{hv_src.name}-to-internet", f"in_port={src.port},{out_pkt}")
    routed = out_pkt  # the host tunnels it unchanged: the gateway routes it
    tun = (
        f"in_port=vxlan0,tun_id={src.instance},"
        f"tun_src={hv_src.underlay_ip},tun_dst={gw.underlay_ip}"
    )
    trace(gw, "gw-snat-out", f"{tun},{routed}")
    inbound = (
        f"dl_src={inet_mac},dl_dst={ext_mac},{ping},"
        f"nw_src={INTERNET_IP},nw_dst={floating_ip(1)},nw_ttl=64"
    )
    trace(gw, "gw-floating-in", f"in_port={gw.name}-ext,{inbound}")
    trace(
        gw,
        "gw-snat-address-in",
        f"in_port={gw.name}-ext,{inbound.replace(floating_ip(1), snat_address(1))}",
    )
    fip_out = (
        f"in_port=vxlan0,tun_id={dst.instance},tun_src={hv_dst.underlay_ip},tun_dst={gw.underlay_ip},"
        f"dl_src={dst.mac},dl_dst={gw_mac_dst},{ping},nw_src={dst.ip},nw_dst={INTERNET_IP},nw_ttl=64"
    )
    trace(gw, "gw-floating-out", fip_out)
    trace(
        gw,
        "gw-no-floating-in",
        f"in_port={gw.name}-ext,{inbound.replace(floating_ip(1), '203.0.113.77')}",
    )
    back = (
        f"in_port=vxlan0,tun_id={dst.instance},tun_src={gw.underlay_ip},tun_dst={hv_dst.underlay_ip},"
        f"dl_src={gw_mac_dst},dl_dst={dst.mac},{ping},nw_src={INTERNET_IP},nw_dst={dst.ip},nw_ttl=63"
    )
    trace(hv_dst, f"{hv_dst.name}-from-gateway", back)
    meta = {
        "src": src.name,
        "dst": dst.name,
        "gateway": gw.name,
        "ext_mac": ext_mac,
        "inet_mac": inet_mac,
        "hv_src": hv_src.name,
        "hv_dst": hv_dst.name,
        "active": st_gw.get("active"),
    }
    (HERE / "capture.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(meta)


if __name__ == "__main__":
    sys.exit(main())
