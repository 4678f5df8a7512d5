"""Restarting a hypervisor's ovs-vswitchd under traffic, as an operator does.

``restart_vswitchd(hv)`` is ``ovs-ctl --no-ovsdb-server restart`` (OVS 3.1's ovs-lib
``restart``), step by step, with ovsdb-server left running:

1. ``ovs-save save-flows <every bridge>``: a script that puts back each bridge's TLV map,
   groups and flows (``add-tlv-map``, ``add-groups``, ``replace-flows``; cookies kept);
2. stop ovs-vswitchd (``ovs-appctl exit``, which leaves the datapath as it is);
3. ``other_config:flow-restore-wait=true``: the new daemon neither connects to its
   controllers nor touches the datapath's flows until the flag goes;
4. start ovs-vswitchd;
5. run the script, then remove the flag: the controllers connect (the agent takes over
   what it finds, docs/control-plane.md section 1; see the first NOTE below).

``restore=False`` is a plain stop and start: the daemon comes back with empty tables and
its controller (the agent, or ovn-controller) must reprogram it from nothing.

What the emulation adds, that a real host's network configuration does: with the userspace
(netdev) datapath a bridge's local port (br-phy, a proxy's br-wan) is a tap the daemon owns.
It vanishes with the daemon, and with it the underlay address on it and the kernel's route
through it; the daemon re-creates it down and bare. Its IPv4 addresses are read before the
stop and put back once the tap is there again (with tx checksum offload off, as at build).
With the kernel datapath internal ports outlive the daemon and this step is not needed.

NOTE (OVS 3.1.0): on a bridge with a primary controller (br-dove and the agent) the
replayed flows do not survive step 5: right after the flag is cleared the bridge is empty
(an ``ovs-ofctl dump-flows`` then shows none), and the agent, connecting a moment later,
finds nothing to take over and programs the switch from its own state. Under
flow-restore-wait a bridge gets no controllers, and OVS flushes a bridge's flows when it
gains or loses its primary controller (``del-controller`` and ``set-controller`` on a
running br-dove each leave it empty too). OVN's br-int keeps them: ovn-controller
connects through the bridge's management socket, a service connection.

NOTE (OVS 3.1.0, netdev): the datapath lives in the ovs-vswitchd process, so its flows die
with it whatever flow-restore-wait says: traffic stops from the exit until the new daemon
has its ports and (restored or reprogrammed) OpenFlow tables. OVS's tunnel neighbour cache
(``tnl/neigh``) starts empty as well: the first tunnelled packet to each peer waits for an
ARP exchange on br-phy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mininet_topos.hypervisor import Hypervisor, kill_pid, pid_alive, read_pidfile, wait_until

SAVE_FLOWS = "/usr/share/openvswitch/scripts/ovs-save"
RESTORE_SCRIPT = "restore-flows.sh"  # in the hypervisor's rundir
EXIT_TIMEOUT = 5.0  # seconds ovs-vswitchd gets to exit before it is killed


@dataclass
class Restart:
    """When each step of one restart happened (``time.time()``, comparable with
    ``ping -D``), and what was saved and re-applied."""

    hv: str
    restore: bool
    stopped: float = 0.0  # exit asked
    gone: float = 0.0  # the old daemon has exited
    started: float = 0.0  # the new daemon has applied the database (--detach returned)
    addressed: float = 0.0  # the bridges' local ports have their addresses back
    restored: float = 0.0  # saved flows and groups replayed (restore only)
    released: float = 0.0  # flow-restore-wait removed: controllers may connect
    addresses: dict[str, list[str]] = field(default_factory=dict)  # bridge -> CIDRs
    saved_flows: int = 0  # flow lines in the saved dumps


def bridges(hv: Hypervisor) -> list[str]:
    return hv.vsctl("--", "--real", "list-br").split()


def bridge_addresses(hv: Hypervisor, names: list[str]) -> dict[str, list[str]]:
    """The IPv4 addresses (CIDR) on each bridge's local port that has any."""
    found: dict[str, list[str]] = {}
    for name in names:
        out = hv.run("ip", "-j", "-4", "addr", "show", "dev", name, check=False)
        links = json.loads(out) if out.strip() else []
        cidrs = [
            f"{a['local']}/{a['prefixlen']}"
            for link in links
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]
        if cidrs:
            found[name] = cidrs
    return found


def save_flows(hv: Hypervisor, names: list[str]) -> int:
    """``ovs-save save-flows``: write the restore script into the rundir; the number of
    flow lines it will replay."""
    script = hv.run(SAVE_FLOWS, "save-flows", *names)
    path = hv.in_rundir(RESTORE_SCRIPT)
    path.write_text(script)
    path.chmod(0o755)
    flows = 0
    for line in script.splitlines():
        if "replace-flows" in line:
            dump = line.split('"')[1]
            flows += sum(1 for row in open(dump) if row.strip())  # noqa: SIM115 - read once
    return flows


def stop_vswitchd(hv: Hypervisor) -> None:
    """``ovs-appctl exit`` (ovs-ctl's graceful stop), then TERM/KILL if it lingers."""
    pid = read_pidfile(hv.in_rundir("ovs-vswitchd.pid"))
    if pid is None or not pid_alive(pid):
        return
    hv.appctl("exit", check=False)
    try:
        wait_until(lambda: not pid_alive(pid), EXIT_TIMEOUT, f"{hv.name}: ovs-vswitchd to exit")
    except TimeoutError:
        kill_pid(pid)


def readdress(hv: Hypervisor, addresses: dict[str, list[str]], timeout: float = 10.0) -> None:
    """Put the saved addresses back on the bridges' re-created local ports."""
    for bridge, cidrs in addresses.items():
        wait_until(
            lambda b=bridge: hv.pexec(["test", "-e", f"/sys/class/net/{b}"])[2] == 0,
            timeout,
            f"{hv.name}: {bridge} re-created",
        )
        for cidr in cidrs:
            hv.address_bridge(bridge, cidr)


def restart_vswitchd(
    hv: Hypervisor, restore: bool = True, while_down: Callable[[], None] | None = None
) -> Restart:
    """Restart ``hv``'s ovs-vswitchd (ovsdb-server keeps running); with ``restore`` as
    ``ovs-ctl restart`` does, flows saved and replayed under flow-restore-wait, without it
    a plain stop and start.  ``while_down`` runs between the stop and the start (a test
    changes the database there).  Returns the times of each step."""
    names = bridges(hv)
    done = Restart(hv.name, restore, addresses=bridge_addresses(hv, names))
    if restore:
        done.saved_flows = save_flows(hv, names)
    done.stopped = time.time()
    stop_vswitchd(hv)
    done.gone = time.time()
    if while_down is not None:
        while_down()
    if restore:
        # ovs-lib's ovs_vsctl: --no-wait, the daemon is not there to apply it
        hv.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:flow-restore-wait=true")
    hv.start_vswitchd()
    done.started = time.time()
    readdress(hv, done.addresses)
    done.addressed = time.time()
    if restore:
        hv.run(str(hv.in_rundir(RESTORE_SCRIPT)))
        done.restored = time.time()
        hv.vsctl(
            "--no-wait", "--if-exists", "remove", "Open_vSwitch", ".", "other_config",
            "flow-restore-wait",
        )  # fmt: skip
    done.released = time.time()
    return done


def restart_ovsdb(hv: Hypervisor) -> float:
    """Restart ``hv``'s ovsdb-server on the same database and socket (ovs-vswitchd and the
    agent reconnect to it); returns when it was stopped (``time.time()``)."""
    pid = read_pidfile(hv.in_rundir("ovsdb-server.pid"))
    stopped = time.time()
    if pid is not None:
        kill_pid(pid)
    hv.start_ovsdb()
    return stopped
