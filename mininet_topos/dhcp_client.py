"""A real DHCP client in a VM's namespace: busybox ``udhcpc``, as a tenant's VM runs one.

Used by the demo (``--routing``: VMs take their addresses from their hosts' agents) and
by the tests.  The dispatcher script configures the interface as busybox's
default.script does and records the lease; it never writes /etc/resolv.conf (Mininet
hosts share the machine's filesystem).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

UDHCPC = "/usr/sbin/udhcpc"
SCRIPT = """#!/bin/sh
# udhcpc dispatcher: configure as default.script does, record the lease.
case "$1" in
    deconfig)
        ip link set "$interface" up
        ip -4 addr flush dev "$interface"
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$subnet" dev "$interface"
        [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
        ip -4 route flush exact 0.0.0.0/0 dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        {
            echo "ip=$ip"; echo "subnet=$subnet"; echo "router=$router"; echo "dns=$dns"
            echo "mtu=$mtu"; echo "lease=$lease"; echo "serverid=$serverid"
        } > "LEASE_FILE"
        ;;
esac
exit 0
"""


def write_script(directory: Path) -> tuple[Path, Path]:
    """The dispatcher script in ``directory`` and the file it records the lease in."""
    lease = directory / "lease"
    script = directory / "udhcpc.script"
    script.write_text(SCRIPT.replace("LEASE_FILE", str(lease)))
    script.chmod(0o755)
    return script, lease


def udhcpc(vm: Any, script: Path, tries: int, timeout: int = 1) -> tuple[int, str]:
    """One run of the client on ``vm`` (a VmRecord), in the foreground, until it has a
    lease or gives up after ``tries`` DISCOVERs ``timeout`` s apart."""
    intf = vm.host.intf().name
    argv = [UDHCPC, "-i", intf, "-f", "-q", "-n", "-t", str(tries), "-T", str(timeout)]
    argv += ["-s", str(script), "-O", "mtu"]
    out, err, rc = vm.host.pexec(argv)
    return rc, out + err


def lease_of(path: Path) -> dict[str, str]:
    """What the dispatcher recorded: ip, subnet, router, dns, mtu, lease, serverid."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def take_address(vm: Any, tries: int = 3) -> dict[str, str]:
    """Flush ``vm``'s address and take one by DHCP; the lease, or {} if none came."""
    vm.host.cmd(f"ip -4 addr flush dev {vm.host.intf().name}")
    with tempfile.TemporaryDirectory(prefix="dove-dhcp-") as tmp:
        script, lease = write_script(Path(tmp))
        rc, _ = udhcpc(vm, script, tries)
        return lease_of(lease) if rc == 0 and lease.exists() else {}
