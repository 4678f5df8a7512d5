"""Plugging VM ports into br-dove through OVSDB, as a hypervisor's tooling does
(design.md section 2): the marks go on the Interface row in the same transaction
as the add-port, so the agent never sees an unmarked VM port.

``move_port`` is the emulation's live migration (a veth moves between the network
namespaces of two hypervisors on one machine); `mininet_topos.migration` and
``dovectl migrate`` both use it.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from dove_ryu.model import check_instance, normalize_mac

Run = Callable[[str], str]  # runs a shell command line in some namespace, returns output


class PortError(Exception):
    """A port operation OVSDB or the kernel refused; the message says which."""


def vsctl(db: str, *args: str) -> str:
    cmd = ["ovs-vsctl", f"--db={db}", "--timeout=10", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PortError(f"{shlex.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def marks(instance: int, mac: str, ips: Iterable[IPv4Address]) -> list[str]:
    """The Interface external_ids that make a port a VM port of ``instance``; ValueError
    for an instance or MAC the agent would reject (the checks of dove_ryu.model)."""
    instance, mac = check_instance(instance), normalize_mac(mac)
    out = [f'external_ids:dove-instance="{instance}"', f'external_ids:attached-mac="{mac}"']
    addresses = ",".join(str(ip) for ip in ips)
    if addresses:
        out.append(f'external_ids:dove-ips="{addresses}"')
    return out


def attach(
    db: str, bridge: str, port: str, instance: int, mac: str, ips: list[IPv4Address]
) -> None:
    """Add ``port`` to ``bridge`` (or re-mark it if it is there) as a VM port."""
    vsctl(
        db, "--may-exist", "add-port", bridge, port,
        "--", "set", "Interface", port, *marks(instance, mac, ips),
    )  # fmt: skip


def detach(db: str, bridge: str, port: str) -> None:
    if port not in vsctl(db, "list-ports", bridge).split():
        raise PortError(f"{port}: no such port on {bridge}")
    vsctl(db, "del-port", bridge, port)


def _local(command: str) -> str:
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PortError(f"{command}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def in_netns(pid: int) -> Run:
    """Run command lines in the network namespace of process ``pid``."""
    return lambda command: _local(f"nsenter -t {pid} -n sh -c {shlex.quote(command)}")


def move_port(
    port: str,
    from_db: str,
    to_db: str,
    bridge: str,
    to_netns: int,
    run_here: Run = _local,
    run_there: Run | None = None,
    require_marks: bool = True,
) -> float:
    """Unplug ``port`` here, move the interface into the namespace of ``to_netns``
    and plug it there with the same marks.  Returns how long it was unplugged (s).

    NOTE: the device keeps its offload settings and NOARP flag across namespaces
    (Linux 6.x); its per-namespace sysctls start again from defaults and it arrives
    down."""
    run_there = run_there or in_netns(to_netns)
    current = vsctl(from_db, "--if-exists", "get", "Interface", port, "external_ids").strip()
    if not current or (require_marks and "dove-instance" not in current):
        raise PortError(f"{port}: not a marked VM port on this host's OVS")
    started = time.monotonic()
    vsctl(from_db, "--if-exists", "del-port", bridge, port)
    run_here(f"ip link set {port} netns {to_netns}")
    run_there(
        f"sysctl -qw net.ipv6.conf.{port}.disable_ipv6=1 "
        f"net.ipv4.conf.{port}.rp_filter=1; ip link set {port} up"
    )
    vsctl(
        to_db, "add-port", bridge, port, "--", "set", "Interface", port, f"external_ids={current}"
    )
    return time.monotonic() - started
