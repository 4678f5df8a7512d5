"""Send hand-made traffic from inside an emulated VM or the probe (stdlib only).

Importable (frame builders, used by tests to make exact frames) and runnable with any
Python 3.11 inside a Mininet namespace::

    python netsend.py frames --iface t1vm1-eth0 --hex <frame> [--hex <frame> ...] [--repeat N]
    python netsend.py spray --iface t1vm3-eth0 --src-mac 02:.. --src-ip 10.0.0.3 \
        --count 10000 --duration 3 --seed 7
    python netsend.py udp --dst 10.99.0.1 --port 4799 --hex <payload> [--hex ...]

Each subcommand prints one JSON line saying what it sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def random_unicast_mac(rng: random.Random) -> str:
    """A locally administered unicast MAC that is not one of the 02:00:00:00:00:xx VMs."""
    first = (rng.randrange(256) | 0x02) & 0xFE
    rest = [rng.randrange(256) for _ in range(5)]
    if first == 0x02 and rest[:4] == [0, 0, 0, 0]:
        rest[0] = 0x5A
    return ":".join(f"{b:02x}" for b in [first, *rest])


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    frame = mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload
    return frame.ljust(60, b"\0")


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """An IPv4 packet carrying UDP (UDP checksum 0: allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        64,
        17,
        0,
        ipaddress.IPv4Address(src_ip).packed,
        ipaddress.IPv4Address(dst_ip).packed,
    )
    header = header[:10] + struct.pack("!H", _ip_checksum(header)) + header[12:]
    return header + udp


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_TYPE_IPV4,
        6,
        4,
        op,
        mac_bytes(sha),
        ipaddress.IPv4Address(spa).packed,
        mac_bytes(tha),
        ipaddress.IPv4Address(tpa).packed,
    )


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, dport: int) -> bytes:
    return ethernet(dst_mac, src_mac, ETH_TYPE_IPV4, ipv4_udp(src_ip, dst_ip, 40000, dport))


def arp_request_frame(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    return ethernet(
        BROADCAST, src_mac, ETH_TYPE_ARP, arp(1, src_mac, src_ip, "00:00:00:00:00:00", target_ip)
    )


def arp_reply_frame(src_mac: str, dst_mac: str, claimed_ip: str, dst_ip: str) -> bytes:
    return ethernet(dst_mac, src_mac, ETH_TYPE_ARP, arp(2, src_mac, claimed_ip, dst_mac, dst_ip))


def _raw_socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    return sock


def _random_target_ip(rng: random.Random, avoid: set[str]) -> str:
    while True:
        if rng.random() < 0.5:
            ip = f"10.0.0.{rng.randrange(1, 255)}"
        else:
            ip = str(ipaddress.IPv4Address(rng.randrange(0x0B000001, 0xDF000000)))
        if ip not in avoid:
            return ip


def spray_frames(src_mac: str, src_ip: str, count: int, seed: int, avoid: set[str]) -> list[bytes]:
    """``count`` frames that are all misses: a third unicast IPv4/UDP to random MACs and
    addresses, a third ARP requests for random addresses (both from the VM's own MAC, so
    they pass port security and reach the miss flows), a third from random source MACs."""
    rng = random.Random(seed)
    frames = []
    for n in range(count):
        kind = n % 3
        if kind == 0:
            frames.append(
                udp_frame(
                    src_mac,
                    random_unicast_mac(rng),
                    src_ip,
                    _random_target_ip(rng, avoid),
                    rng.randrange(1, 65536),
                )
            )
        elif kind == 1:
            frames.append(arp_request_frame(src_mac, src_ip, _random_target_ip(rng, avoid)))
        else:
            frames.append(
                udp_frame(
                    random_unicast_mac(rng),
                    random_unicast_mac(rng),
                    src_ip,
                    _random_target_ip(rng, avoid),
                    rng.randrange(1, 65536),
                )
            )
    return frames


def send_paced(iface: str, frames: list[bytes], duration: float) -> dict[str, object]:
    """Send ``frames`` spread evenly over ``duration`` seconds (in small batches)."""
    sock = _raw_socket(iface)
    start = time.monotonic()
    sent = errors = 0
    batch = max(1, len(frames) // max(1, int(duration * 100)))
    for i in range(0, len(frames), batch):
        due = start + duration * i / max(1, len(frames))
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for frame in frames[i : i + batch]:
            try:
                sock.send(frame)
                sent += 1
            except OSError:
                errors += 1
    return {"sent": sent, "errors": errors, "elapsed": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frames", help="send the given frames (hex) on a raw socket")
    f.add_argument("--iface", required=True)
    f.add_argument("--hex", action="append", required=True)
    f.add_argument("--repeat", type=int, default=1)
    f.add_argument("--interval", type=float, default=0.0)
    s = sub.add_parser("spray", help="send frames to random destinations, all misses")
    s.add_argument("--iface", required=True)
    s.add_argument("--src-mac", required=True)
    s.add_argument("--src-ip", required=True)
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--duration", type=float, default=3.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--avoid", action="append", default=[], help="an IP never to target")
    u = sub.add_parser("udp", help="send the given payloads (hex) as UDP datagrams, in order")
    u.add_argument("--dst", required=True)
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--hex", action="append", required=True)
    args = p.parse_args(argv)

    if args.cmd == "frames":
        frames = [bytes.fromhex(h) for h in args.hex] * args.repeat
        result = send_paced(args.iface, frames, args.interval * len(frames))
    elif args.cmd == "spray":
        frames = spray_frames(args.src_mac, args.src_ip, args.count, args.seed, set(args.avoid))
        result = send_paced(args.iface, frames, args.duration)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for h in args.hex:
            sock.sendto(bytes.fromhex(h), (args.dst, args.port))
        result = {"sent": len(args.hex)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
