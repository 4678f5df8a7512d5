"""Forged overlay traffic from a host that is a member of nothing."""

from __future__ import annotations

from typing import Any

VXLAN_PORT = 4789
FORGED_IP = "10.0.0.200"  # the forger's address inside the overlay


def ping_through_forged_vxlan(prober: Any, dev: str, remote: str, target: Any) -> tuple[int, str]:
    """From ``prober``, a kernel VXLAN device to ``remote`` in ``target``'s instance and
    5 pings to ``target`` through it; returns ping's (status, output).  The device is
    removed again whatever happens."""
    setup = [
        f"ip link add vx0 type vxlan id {target.instance} remote {remote} "
        f"dstport {VXLAN_PORT} dev {dev}",
        f"ip addr add {FORGED_IP}/24 dev vx0",
        "ip link set vx0 up",
        "ethtool -K vx0 tx off",
        f"ip neigh replace {target.ip} lladdr {target.mac} dev vx0 nud permanent",
    ]
    try:
        for cmd in setup:
            out, err, rc = prober.pexec(cmd.split())
            if rc != 0:
                raise RuntimeError(f"{prober.name}: {cmd}: {out}{err}")
        out, err, rc = prober.pexec(["ping", "-n", "-c", "5", "-i", "0.1", "-W", "1", target.ip])
        return rc, out + err
    finally:
        prober.pexec(["ip", "link", "del", "vx0"])
