"""Multi-site figures: the gap when a site's active VAN proxy stops, and what the
path through two proxies costs next to a path inside one site.

Each sample builds the two-site emulation (mininet_topos.sites), so every figure
comes from a fresh deployment; the in-site path of the same deployment is the
baseline of the cross-site one.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from typing import Any

from benchmarks.stats import ratio, summary
from mininet_topos.agents import admin
from mininet_topos.sites import (
    SitesNet,
    SitesSpec,
    active_proxy,
    build_sites_net,
    wait_proxies_active,
)

PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)")
RTT = re.compile(r"time=([\d.]+) ms")
STREAM_INTERVAL = 0.005  # seconds between echo requests of the failover stream


def _build(wan_mtu: int = 1500) -> SitesNet:
    snet, _ = build_sites_net(SitesSpec(tenants=1, vms_per_tenant=2, wan_mtu=wan_mtu))
    try:
        wait_proxies_active(snet)
    except BaseException:
        snet.stop()
        raise
    return snet


def failover_sample(site: int, settle: float = 1.0) -> dict[str, Any]:
    """A 5 ms ping stream from site 1 to site 2; the active proxy of ``site`` stops
    (agent and datapath).  The gap is the longest silence between replies."""
    snet = _build()
    try:
        src, dst = snet.vm("t1s1vm1"), snet.vm("t1s2vm1")
        warm = src.host.cmd(f"ping -c3 -i0.05 -W1 {dst.ip}")
        if "3 received" not in warm:
            return {"site": site, "error": f"no path before the failover: {warm[-200:]}"}
        old = active_proxy(snet, site)
        log = tempfile.TemporaryFile(mode="w+")
        stream = src.host.popen(
            ["ping", "-D", "-i", str(STREAM_INTERVAL), "-W", "1", dst.ip],
            stdout=log,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(settle)
        stopped_at = time.time()
        old.stop_agent()
        old.stop_ovs()
        new = active_proxy(snet, site)
        time.sleep(settle + 1.0)
        stream.send_signal(2)
        stream.wait(timeout=10)
        log.seek(0)
        output = log.read()
        took_over = admin(new)["counters"].get("proxy_became_active", 0)
    finally:
        snet.stop()
    replies = [float(m.group(1)) for m in map(PING_LINE.match, output.splitlines()) if m]
    before = [t for t in replies if t < stopped_at]
    points = ([before[-1]] if before else []) + [t for t in replies if t >= stopped_at]
    gap = max((b - a for a, b in zip(points, points[1:], strict=False)), default=None)
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    return {
        "site": site,
        "gap_ms": gap * 1000 if gap is not None else None,
        "lost": int(sent.group(1)) - int(sent.group(2)) if sent else None,
        "sent": int(sent.group(1)) if sent else None,
        "took_over": bool(took_over),
        "recovered": bool(points) and points[-1] > stopped_at + 0.5,
    }


def path_sample(count: int = 50) -> dict[str, Any]:
    """RTT in one site (hypervisor to hypervisor) and across sites (through two
    proxies), in the same deployment, after the first packet."""
    snet = _build()
    try:
        a, b = snet.vm("t1s1vm1"), snet.vm("t1s1vm2")
        far = snet.vm("t1s2vm1")
        assert a.hypervisor is not b.hypervisor, "the in-site pair must span two hosts"
        out: dict[str, Any] = {}
        for label, dst in (("in_site", b), ("cross_site", far)):
            first = a.host.cmd(f"ping -c1 -W2 {dst.ip}")
            stream = a.host.cmd(f"ping -c{count} -i0.01 -W1 {dst.ip}")
            out[label] = {
                "first_ms": (RTT.findall(first) or [None])[0],
                "rtt_ms": [float(x) for x in RTT.findall(stream)],
            }
    finally:
        snet.stop()
    for label in ("in_site", "cross_site"):
        first = out[label]["first_ms"]
        out[label]["first_ms"] = float(first) if first is not None else None
        out[label]["rtt"] = summary(out[label]["rtt_ms"])
    return out


def run_sites(reps: int, progress: Any) -> dict[str, Any]:
    """The failover gap (the active proxy of the sender's site, then of the far
    site, alternating) and the cross-site path next to the in-site one."""
    failovers = []
    for rep in range(reps):
        site = 1 + rep % 2
        progress(f"sites: failover {rep + 1}/{reps} (site {site}'s active proxy stops)")
        try:
            failovers.append(failover_sample(site))
        except Exception as e:
            failovers.append({"site": site, "error": f"{type(e).__name__}: {e}"[-400:]})
    paths = []
    for rep in range(max(1, reps // 2)):
        progress(f"sites: in-site and cross-site RTT {rep + 1}")
        try:
            paths.append(path_sample())
        except Exception as e:
            paths.append({"error": f"{type(e).__name__}: {e}"[-400:]})
    good = [p for p in paths if "error" not in p]
    in_site = summary([p["in_site"]["rtt"]["median"] for p in good])
    cross = summary([p["cross_site"]["rtt"]["median"] for p in good])
    return {
        "failover": failovers,
        "failover_gap_ms": summary([f.get("gap_ms") for f in failovers if "error" not in f]),
        "paths": paths,
        "rtt_in_site_ms": in_site,
        "rtt_cross_site_ms": cross,
        "cross_over_in_site": ratio(cross, in_site),
        "first_in_site_ms": summary([p["in_site"]["first_ms"] for p in good]),
        "first_cross_site_ms": summary([p["cross_site"]["first_ms"] for p in good]),
    }
