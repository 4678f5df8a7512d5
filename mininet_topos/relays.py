"""Impairable links: a node's link to a switch through a relay namespace (mininet_topos.impair).

    node -- veth -- relay namespace (mininet_topos.impair) -- veth -- switch

The relay namespace is a Mininet host named ``<node>r<n>`` for the node's ``-eth<n>``, with
two interfaces (``<relay>-eth0`` towards the node, ``<relay>-eth1`` towards the switch),
no address (IPv6 off too), promiscuous, checksum and segmentation offloads off (frames
cross into userspace there, as they do into the userspace OVS), and the link's MTU on
both. ``RelayHandle`` sets a relay's impairments and reads its counts over its control
socket; the node keeps its interface name, so nothing else sees a difference.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

from mininet.node import Host
from mininet.topo import Topo

from mininet_topos import impair
from mininet_topos.hypervisor import kill_pid, wait_until
from mininet_topos.impair import Impairment

RUNDIR_PREFIX = "dove-relays-"


def relay_name(node: str, intf: str) -> str:
    """The relay namespace for ``node``'s interface ``intf`` (``<node>-eth<n>``)."""
    return f"{node}r{intf.rsplit('-eth', 1)[1]}"


def add_relayed_link(topo: Topo, node: str, switch: str, intf: str) -> str:
    """``node``'s ``intf`` linked to ``switch`` through a relay namespace; its name."""
    relay = relay_name(node, intf)
    topo.addHost(relay, ip=None)
    topo.addLink(node, relay, intfName1=intf, intfName2=f"{relay}-eth0")
    topo.addLink(relay, switch, intfName1=f"{relay}-eth1")
    return relay


@dataclass
class RelayHandle:
    """A running relay: for ``node``'s ``intf``, in ``host``, controlled at ``sock``."""

    node: str
    intf: str
    host: Host
    proc: Popen[bytes]
    sock: Path

    @property
    def target(self) -> str:
        return f"{self.node}:{self.intf}"

    def set(self, imp: Impairment, direction: str = "both") -> dict[str, Any]:
        return impair.control(str(self.sock), {"cmd": "set", "dir": direction, **vars(imp)})

    def counts(self) -> dict[str, Any]:
        return impair.control(str(self.sock), {"cmd": "counts"})

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_pid(self.proc.pid)
        self.proc.wait(5)


def start_relay(host: Host, node: str, intf: str, mtu: int, seed: int, rundir: Path) -> RelayHandle:
    """Set up the relay namespace ``host``'s interfaces and start its relay."""
    host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    ends = (f"{host.name}-eth0", f"{host.name}-eth1")
    for end in ends:
        host.cmd(f"ip addr flush dev {end}")
        out = host.cmd(f"ip link set {end} mtu {mtu} promisc on up")
        if out.strip():
            raise RuntimeError(f"{host.name}: {end}: {out.strip()}")
        host.cmd(f"ethtool -K {end} tx off sg off tso off gso off gro off")
    sock = rundir / f"{host.name}.sock"
    log = (rundir / f"{host.name}.log").open("wb")
    cmd = [sys.executable, impair.__file__, *ends, "--control", str(sock), "--seed", str(seed)]
    proc = host.popen(cmd, cwd=str(rundir), stdout=log, stderr=log)
    log.close()
    handle = RelayHandle(node, intf, host, proc, sock)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"relay {host.name} exited {proc.returncode}")
        try:
            handle.counts()
        except OSError:
            return False
        return True

    wait_until(answers, 10.0, f"relay {host.name} control socket")
    return handle


def new_rundir() -> Path:
    return Path(tempfile.mkdtemp(prefix=RUNDIR_PREFIX))


def stop_relays(relays: dict[str, RelayHandle], rundir: Path | None) -> None:
    for r in relays.values():
        try:
            r.stop()
        except Exception:  # noqa: BLE001 - tear-down goes on
            continue
    if rundir is not None:
        shutil.rmtree(rundir, ignore_errors=True)


def impairment_from_netem(args: tuple[str, ...] | list[str]) -> Impairment:
    """tc netem arguments (as soak_plan writes them) as an Impairment:
    ``loss P%``, ``delay D [J]``, ``reorder P% [corr%]`` (held back by D; at least 10 ms).

    netem's reorder sends P% of frames at once and delays the others by D; the relay holds
    P% back by D more instead: either way about P% of frames arrive out of order."""
    d: dict[str, float] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if word == "loss":
            d["loss"] = _share(args[i + 1])
            i += 2
        elif word == "delay":
            d["delay_ms"] = _ms(args[i + 1])
            i += 2
            if i < len(args) and args[i][0].isdigit():
                d["jitter_ms"] = _ms(args[i])
                i += 1
        elif word == "reorder":
            d["reorder"] = _share(args[i + 1])
            i += 2
            if i < len(args) and args[i].endswith("%"):
                i += 1  # correlation: not modelled
        else:
            raise ValueError(f"netem argument not understood: {word!r}")
    if "reorder" in d:
        d["reorder_ms"] = max(d.get("delay_ms", 0.0), 10.0)
    return Impairment(**d)


def _ms(text: str) -> float:
    for unit, scale in (("ms", 1.0), ("us", 0.001), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text) / 1000.0  # tc's bare number is microseconds


def _share(text: str) -> float:
    return float(text.rstrip("%")) / 100.0
