"""Where the first packet's time goes: first pings between never-contacted VMs on two
hypervisors, with every step timed from packet captures on both.

Builds ``build_dove_net(2, 1, vms)`` (static peers, LEARN), pairs each VM of hv1 with a
VM of hv2 that neither has contacted (and every other pair with the direction swapped),
pings once per pair, one pair at a time, while tcpdump captures ARP, ICMP, the control
protocol and the tunnel in both hypervisors' namespaces.  The captures are decoded here
(the control messages with the run's key), so each step is found by what it is: the
VM's ARP request, the LEARN request and its reply on the wire at both ends, the agent's
ARP answer, the tunnelled echo request and reply, the remote VM's own ARP.

Run as root, under the emulation lock::

    flock /tmp/dove-mininet.lock .venv/bin/python -m benchmarks.first_packet_breakdown --vms 40

Prints the ping RTT and each step's median and range in ms, and the agents' packet-in
counters; ``--json FILE`` keeps every pair's timestamps.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from statistics import median
from typing import Any

from dove_ryu.protocol.messages import LearnReply, LearnRequest, decode
from mininet_topos.agents import admin, build_dove_net
from mininet_topos.dove_topo import DoveNet, VmRecord

RTT = re.compile(r"time=([\d.]+) ms")
CONTROL_PORT = 4799
VXLAN_PORT = 4789
CAPTURE = f"arp or icmp or udp port {CONTROL_PORT} or udp port {VXLAN_PORT}"
LINKTYPE_SLL2 = 276
ETH_ARP, ETH_IP = 0x0806, 0x0800
OUTGOING = 4  # SLL2 packet type: sent by this host

# The steps of one first ping, in order: (name, from event, to event).  Events are
# "<side>.<what>", side a (the pinging VM's hypervisor) or b (the pinged VM's).
STEPS = (
    ("A: packet-in + agent -> LEARN out", "a.arp_request", "a.learn_out"),
    ("wire: LEARN A -> B", "a.learn_out", "b.learn_in"),
    ("B: agent answers LEARN", "b.learn_in", "b.reply_out"),
    ("wire: LEARN reply B -> A", "b.reply_out", "a.reply_in"),
    ("A: agent -> ARP reply to VM", "a.reply_in", "a.arp_reply"),
    ("VM a + OVS A: echo into tunnel", "a.arp_reply", "a.echo_out"),
    ("wire: echo A -> B", "a.echo_out", "b.echo_in"),
    ("OVS B: echo to VM b", "b.echo_in", "b.echo_to_vm"),
    ("VM b (+ its ARP): echo reply", "b.echo_to_vm", "b.reply_from_vm"),
    ("OVS B: reply into tunnel", "b.reply_from_vm", "b.echo_reply_out"),
    ("wire: echo reply B -> A", "b.echo_reply_out", "a.echo_reply_in"),
    ("OVS A: reply to VM a", "a.echo_reply_in", "a.echo_reply_to_vm"),
    ("total (captured)", "a.arp_request", "a.echo_reply_to_vm"),
    ("  of which B: VM b's ARP", "b.vm_arp_request", "b.vm_arp_reply"),
)


@dataclass
class Packet:
    ts: float
    ifname: str
    outgoing: bool
    kind: str  # arp, icmp, learn_request, learn_reply, other
    src: str = ""  # ARP sender / IP source (inner for a tunnelled packet)
    dst: str = ""  # ARP target / IP destination
    op: int = 0  # ARP op, ICMP type
    tunnelled: bool = False


@dataclass
class PairResult:
    a: str
    b: str
    rtt_ms: float | None
    events: dict[str, float] = field(default_factory=dict)


def read_pcap(path: Path, ifnames: dict[int, str], key: bytes) -> list[Packet]:
    """The packets of a LINUX_SLL2 capture, decoded as far as this benchmark needs."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    (linktype,) = struct.unpack(endian + "I", data[20:24])
    if linktype != LINKTYPE_SLL2:
        raise ValueError(f"{path}: link type {linktype}, expected LINUX_SLL2")
    out, offset = [], 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        proto, _, ifindex, _, pkttype = struct.unpack("!HHIHB", frame[:11])
        ts = sec + frac / (1e9 if nano else 1e6)
        pkt = Packet(ts, ifnames.get(ifindex, str(ifindex)), pkttype == OUTGOING, "other")
        _decode(pkt, proto, frame[20:], key)
        out.append(pkt)
    return out


def _decode(pkt: Packet, proto: int, body: bytes, key: bytes) -> None:
    if proto == ETH_ARP and len(body) >= 28:
        pkt.kind, pkt.op = "arp", struct.unpack("!H", body[6:8])[0]
        pkt.src, pkt.dst = str(IPv4Address(body[14:18])), str(IPv4Address(body[24:28]))
        return
    if proto != ETH_IP or len(body) < 20:
        return
    ihl = (body[0] & 0x0F) * 4
    ip_proto = body[9]
    src, dst = str(IPv4Address(body[12:16])), str(IPv4Address(body[16:20]))
    l4 = body[ihl:]
    if ip_proto == 1 and l4:
        pkt.kind, pkt.src, pkt.dst, pkt.op = "icmp", src, dst, l4[0]
        return
    if ip_proto != 17 or len(l4) < 8:
        return
    dport = struct.unpack("!H", l4[2:4])[0]
    payload = l4[8:]
    if dport == VXLAN_PORT and len(payload) >= 8 + 14:
        inner = payload[8:]
        inner_proto = struct.unpack("!H", inner[12:14])[0]
        _decode(pkt, inner_proto, inner[14:], key)
        pkt.tunnelled = True
        return
    if dport == CONTROL_PORT:
        try:
            msg = decode(payload, key=key).message
        except Exception:  # a truncated capture, or not ours: not a step
            return
        if isinstance(msg, LearnRequest):
            pkt.kind, pkt.src, pkt.dst = "learn_request", src, str(msg.ip or msg.mac)
        elif isinstance(msg, LearnReply):
            pkt.kind, pkt.src, pkt.dst = "learn_reply", src, ",".join(map(str, msg.ips))


def ifindexes(node: Any) -> dict[int, str]:
    found = {}
    for line in node.cmd("ip -o link").splitlines():
        m = re.match(r"(\d+): ([^:@]+)", line)
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def first(packets: list[Packet], t0: float, t1: float, **want: Any) -> float | None:
    for p in packets:
        if t0 <= p.ts <= t1 and all(getattr(p, k) == v for k, v in want.items()):
            return p.ts
    return None


def events_of(
    a: VmRecord, b: VmRecord, pa: list[Packet], pb: list[Packet], t0: float, t1: float
) -> dict[str, float]:
    """Each step's first timestamp in the window of one ping."""
    found = {
        "a.arp_request": first(pa, t0, t1, kind="arp", op=1, src=a.ip, dst=b.ip, ifname=a.port),
        "a.learn_out": first(pa, t0, t1, kind="learn_request", dst=b.ip),
        "b.learn_in": first(pb, t0, t1, kind="learn_request", dst=b.ip),
        "b.reply_out": first(pb, t0, t1, kind="learn_reply", dst=b.ip),
        "a.reply_in": first(pa, t0, t1, kind="learn_reply", dst=b.ip),
        "a.arp_reply": first(pa, t0, t1, kind="arp", op=2, src=b.ip, dst=a.ip, ifname=a.port),
        "a.echo_out": first(pa, t0, t1, kind="icmp", op=8, src=a.ip, tunnelled=True),
        "b.echo_in": first(pb, t0, t1, kind="icmp", op=8, src=a.ip, tunnelled=True),
        "b.echo_to_vm": first(pb, t0, t1, kind="icmp", op=8, src=a.ip, ifname=b.port),
        "b.vm_arp_request": first(pb, t0, t1, kind="arp", op=1, src=b.ip, ifname=b.port),
        "b.vm_arp_reply": first(pb, t0, t1, kind="arp", op=2, dst=b.ip, ifname=b.port),
        "b.reply_from_vm": first(pb, t0, t1, kind="icmp", op=0, src=b.ip, ifname=b.port),
        "b.echo_reply_out": first(pb, t0, t1, kind="icmp", op=0, src=b.ip, tunnelled=True),
        "a.echo_reply_in": first(pa, t0, t1, kind="icmp", op=0, src=b.ip, tunnelled=True),
        "a.echo_reply_to_vm": first(pa, t0, t1, kind="icmp", op=0, src=b.ip, ifname=a.port),
    }
    return {k: v for k, v in found.items() if v is not None}


def fresh_pairs(dnet: DoveNet) -> list[tuple[VmRecord, VmRecord]]:
    """Disjoint pairs across the two hypervisors: no VM is in two pairs, so every ping
    is the first contact for both ends and both agents."""
    hv1, hv2 = dnet.hypervisors[:2]
    left = [v for v in dnet.vms if v.hypervisor is hv1]
    right = [v for v in dnet.vms if v.hypervisor is hv2]
    pairs = list(zip(left, right, strict=False))
    return [(a, b) if i % 2 == 0 else (b, a) for i, (a, b) in enumerate(pairs)]


PACKET_IN_COUNTERS = (
    "packet_in_arp_miss",
    "packet_in_l2_miss",
    "packet_in_known",
    "learn_requests_sent",
    "learned_from_request",
    "arp_answered_by_agent",
)


def run(vms: int, gap: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    dnet, key = build_dove_net(2, 1, vms, extra=extra)
    tmp = Path(tempfile.mkdtemp(prefix="firstpkt-"))
    results: list[PairResult] = []
    try:
        hvs = dnet.hypervisors[:2]
        caps = []
        for hv in hvs:
            cmd = ["tcpdump", "-i", "any", "-y", "LINUX_SLL2", "-n", "-U", "-s", "256"]
            cmd += ["-w", str(tmp / f"{hv.name}.pcap"), CAPTURE]
            caps.append(hv.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # tcpdump attached
        before = {hv.name: admin(hv, "counters") for hv in hvs}
        windows = []
        for a, b in fresh_pairs(dnet):
            t0 = time.time()
            rtt = RTT.findall(a.host.cmd(f"ping -c1 -W2 {b.ip}"))
            windows.append((a, b, t0, time.time(), float(rtt[0]) if rtt else None))
            time.sleep(gap)
        after = {hv.name: admin(hv, "counters") for hv in hvs}
        time.sleep(0.5)
        for cap in caps:
            cap.terminate()
            cap.wait()
        packets = {
            hv.name: read_pcap(tmp / f"{hv.name}.pcap", ifindexes(hv), bytes.fromhex(key))
            for hv in hvs
        }
        for a, b, t0, t1, rtt in windows:
            pa, pb = packets[a.hypervisor.name], packets[b.hypervisor.name]
            results.append(PairResult(a.name, b.name, rtt, events_of(a, b, pa, pb, t0, t1)))
        counts = {
            h: {k: after[h].get(k, 0) - before[h].get(k, 0) for k in PACKET_IN_COUNTERS}
            for h in after
        }
    finally:
        dnet.stop()
    return {"pairs": [r.__dict__ for r in results], "counters": counts}


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):6.2f} ({min(values):.2f}-{max(values):.2f}) n={len(values)}"


def report(result: dict[str, Any]) -> str:
    pairs = result["pairs"]
    rtts = [p["rtt_ms"] for p in pairs if p["rtt_ms"] is not None]
    lines = [f"{'first ping RTT (ping)':38s} {_stat(rtts)}  lost {len(pairs) - len(rtts)}"]
    for name, start, end in STEPS:
        spans = [
            (p["events"][end] - p["events"][start]) * 1000
            for p in pairs
            if start in p["events"] and end in p["events"]
        ]
        lines.append(f"{name:38s} {_stat(spans)}")
    lines.append(f"agent counters over the run: {result['counters']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=40, help="VMs in all (half per hypervisor)")
    p.add_argument("--gap", type=float, default=0.2, help="seconds between two pings")
    p.add_argument("--json", type=Path, help="write every pair's timestamps here")
    args = p.parse_args(argv)
    from mininet.log import setLogLevel

    setLogLevel("error")
    result = run(args.vms, args.gap)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
