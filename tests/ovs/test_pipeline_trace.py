"""Real OVS, no Mininet: one agent on a private ovsdb-server + ovs-vswitchd (netdev)
in a network namespace; the pipeline is checked with ``ofproto/trace``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dove_ryu.adapters.admin import query
from dove_ryu.protocol.messages import Announce, encode

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, OVS)"),
]

NS = "dove-ovs-test"
UNDERLAY = "10.98.0.1"
KEY = "00112233445566778899aabbccddeeff"
MEMBER = "10.98.0.2"
STRANGER = "10.98.0.9"


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd + dove-agent in a namespace, with a private run dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dove-ovs-test-"))
        self.env = {
            **os.environ,
            "OVS_RUNDIR": str(self.dir),
            "OVS_DBDIR": str(self.dir),
            "OVS_LOGDIR": str(self.dir),
        }
        self.db = f"unix:{self.dir}/db.sock"
        self.agent: subprocess.Popen[bytes] | None = None

    def ns(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", NS, *cmd],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr}")
        return proc.stdout

    def start(self) -> None:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "add", NS], check=True)
        self.ns("ip", "link", "set", "lo", "up")
        # The underlay address, on a veth (the kernel has no dummy module here).
        self.ns("ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
        self.ns("ip", "addr", "add", f"{UNDERLAY}/24", "dev", "ul0")
        self.ns("ip", "link", "set", "ul0", "up")
        self.ns("ip", "link", "set", "ul1", "up")
        subprocess.run(
            [
                "ovsdb-tool",
                "create",
                f"{self.dir}/conf.db",
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
            check=True,
        )
        self.ns(
            "ovsdb-server",
            f"{self.dir}/conf.db",
            f"--remote=punix:{self.dir}/db.sock",
            "--pidfile",
            "--detach",
            "--log-file",
        )
        self.ns("ovs-vsctl", f"--db={self.db}", "--no-wait", "init")
        self.ns("ovs-vswitchd", self.db, "--pidfile", "--detach", "--log-file")
        (self.dir / "dove.ini").write_text(
            "[dove]\n"
            f"underlay_ip = {UNDERLAY}\nauth_key = {KEY}\npeers = {MEMBER}\n"
            f"datapath_type = netdev\novsdb = {self.db}\nhost_name = ovstest\n"
            f"admin_socket = {self.dir}/admin.sock\n"
        )
        agent = str(Path(sys.executable).parent / "dove-agent")
        self.agent = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                NS,
                agent,
                "--config-file",
                str(self.dir / "dove.ini"),
                "--log-file",
                str(self.dir / "agent.log"),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait(lambda: self.status().get("connected"), "agent connected")

    def status(self) -> dict:
        try:
            return query(f"{self.dir}/admin.sock", {"cmd": "status"})
        except (OSError, ValueError):
            return {}

    def wait(self, cond, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.agent and self.agent.poll() is not None:
                raise RuntimeError(f"agent exited: {(self.dir / 'agent.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.05)

    def vsctl(self, *args: str) -> str:
        return self.ns("ovs-vsctl", f"--db={self.db}", *args)

    def add_vm_port(self, name: str, instance: int, mac: str, ip: str) -> int:
        self.ns("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}-vm")
        self.ns("ip", "link", "set", name, "up")
        self.vsctl(
            "add-port",
            "br-dove",
            name,
            "--",
            "set",
            "Interface",
            name,
            f"external_ids:dove-instance={instance}",
            f"external_ids:attached-mac={mac}",
            f"external_ids:dove-ips={ip}",
        )
        self.wait(
            lambda: any(
                ep["port"] == name
                for info in self.status()["instances"].values()
                for ep in info["local"]
            ),
            f"{name} known to the agent",
        )
        return int(self.vsctl("get", "Interface", name, "ofport").strip())

    def odp_port(self, name: str) -> str:
        """The datapath port number of an interface ("Datapath actions" use these)."""
        found = re.search(rf"\b{name} \d+/(\d+)", self.ns("ovs-appctl", "dpif/show"))
        assert found, name
        return found.group(1)

    def trace(self, flow: str) -> str:
        return self.ns("ovs-appctl", "ofproto/trace", "br-dove", flow)

    def stop(self) -> None:
        if self.agent:
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self.ns("ovs-appctl", "-t", daemon, "exit", check=False)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
        if os.environ.get("DOVE_KEEP_RUNDIR") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ovs() -> Iterator[PrivateOvs]:
    if not shutil.which("ovs-vswitchd"):
        pytest.skip("openvswitch-switch is not installed")
    node = PrivateOvs()
    try:
        node.start()
        yield node
    finally:
        node.stop()


def datapath_actions(trace: str) -> str:
    found = re.search(r"^Datapath actions: (.*)$", trace, re.M)
    assert found, trace
    return found.group(1)


def test_bridge_is_set_up_with_named_tables_and_one_flow_based_tunnel(ovs: PrivateOvs) -> None:
    tunnel_options = ovs.vsctl("get", "Interface", "dove-vxlan", "options")
    assert "remote_ip=flow" in tunnel_options and "key=flow" in tunnel_options
    names = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove", "--names")
    for table in ("classify", "port_security", "arp_nd", "l2_forward", "flood", "egress_check"):
        assert f"table={table}" in names or f'table="{table}"' in names


def test_unknown_destination_is_punted_and_own_mac_enforced(ovs: PrivateOvs) -> None:
    port = ovs.add_vm_port("vmport1", 5001, "02:00:00:00:00:01", "10.0.0.1")
    miss = ovs.trace(f"in_port={port},dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:77")
    assert "controller" in datapath_actions(miss) or "userspace" in datapath_actions(miss)
    spoofed = ovs.trace(f"in_port={port},dl_src=02:00:00:00:00:66,dl_dst=02:00:00:00:00:77")
    assert datapath_actions(spoofed) == "drop"


def announce_from(ovs: PrivateOvs, sender: str, instances: set[int]) -> None:
    """Send an authenticated announcement from ``sender`` (an address in the namespace)."""
    payload = encode(
        Announce(instances=frozenset(instances)),
        sender=IPv4Address(sender),
        counter=int(time.time() * 1e6),
        key=bytes.fromhex(KEY),
        receiver=IPv4Address(UNDERLAY),
    )
    script = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{sender}', 0)); s.sendto(bytes.fromhex(sys.argv[1]), ('{UNDERLAY}', 4799))"
    )
    ovs.ns(sys.executable, "-c", script, payload.hex())


def test_tunnel_accepted_only_from_members(ovs: PrivateOvs) -> None:
    ovs.add_vm_port("vmport2", 5002, "02:00:00:00:00:02", "10.0.0.2")
    tunnel = int(ovs.vsctl("get", "Interface", "dove-vxlan", "ofport").strip())
    packet = "dl_src=02:00:00:00:00:09,dl_dst=02:00:00:00:00:02"
    stranger = ovs.trace(
        f"in_port={tunnel},tun_id=5002,tun_src={STRANGER},tun_dst={UNDERLAY}," + packet
    )
    assert datapath_actions(stranger) == "drop"
    assert "0xd009" in stranger  # the DROP_NONMEMBER flow, counted

    ovs.ns("ip", "addr", "add", f"{MEMBER}/24", "dev", "ul1")
    announce_from(ovs, MEMBER, {5002})
    ovs.wait(lambda: MEMBER in ovs.status()["instances"]["5002"]["members"], "member joined")
    member = ovs.trace(
        f"in_port={tunnel},tun_id=5002,tun_src={MEMBER},tun_dst={UNDERLAY}," + packet
    )
    assert datapath_actions(member) == ovs.odp_port("vmport2")
    # Membership is per instance: the member's packets with another VNI are still dropped.
    other_vni = ovs.trace(
        f"in_port={tunnel},tun_id=5001,tun_src={MEMBER},tun_dst={UNDERLAY}," + packet
    )
    assert datapath_actions(other_vni) == "drop"


def flows_of_port(ovs: PrivateOvs, name: str) -> list[str]:
    dump = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove", "--names")
    return [
        line
        for line in dump.splitlines()
        if f"in_port={name}" in line or f'output:"{name}"' in line or f"output:{name}" in line
    ]


def test_port_change_and_removal_follow_ovsdb(ovs: PrivateOvs) -> None:
    port = ovs.add_vm_port("vmport3", 5003, "02:00:00:00:00:03", "10.0.0.3")
    assert flows_of_port(ovs, "vmport3")
    # The VM's MAC changes in OVSDB: the old MAC is refused, the new one passes.
    ovs.vsctl("set", "Interface", "vmport3", "external_ids:attached-mac=02:00:00:00:00:33")
    ovs.wait(
        lambda: any(
            ep["mac"] == "02:00:00:00:00:33" for ep in ovs.status()["instances"]["5003"]["local"]
        ),
        "mac changed",
    )
    old = ovs.trace(f"in_port={port},dl_src=02:00:00:00:00:03,dl_dst=ff:ff:ff:ff:ff:ff")
    new = ovs.trace(f"in_port={port},dl_src=02:00:00:00:00:33,dl_dst=ff:ff:ff:ff:ff:ff")
    # The only port of 5003 has nowhere to flood, so both end in drop; what differs is why.
    assert "0xd00a" in old  # dropped by port security (DROP_SPOOF)
    assert "0xd00a" not in new and "group:5003" in new
    # The port goes: its flows and its instance (the last port of 5003) go with it.
    ovs.vsctl("del-port", "br-dove", "vmport3")
    ovs.wait(lambda: "5003" not in ovs.status().get("instances", {"5003": 0}), "port removed")
    ovs.wait(lambda: not flows_of_port(ovs, "vmport3"), "flows removed")
    groups = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-dove")
    assert "group_id=5003" not in groups


def test_marks_that_are_wrong_are_rejected_and_counted(ovs: PrivateOvs) -> None:
    ovs.ns("ip", "link", "add", "badport", "type", "veth", "peer", "name", "badport-vm")
    ovs.vsctl(
        "add-port",
        "br-dove",
        "badport",
        "--",
        "set",
        "Interface",
        "badport",
        "external_ids:dove-instance=notanumber",
        "external_ids:attached-mac=02:00:00:00:00:04",
    )
    ovs.wait(lambda: ovs.status().get("counters", {}).get("ports_rejected") == 1, "rejected")
    assert "badport" in (ovs.dir / "agent.log").read_text()
    assert ovs.agent is not None and ovs.agent.poll() is None


def test_another_switch_connecting_is_not_programmed(ovs: PrivateOvs) -> None:
    ovs.vsctl(
        "add-br",
        "br-other",
        "--",
        "set",
        "Bridge",
        "br-other",
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
        "--",
        "set-controller",
        "br-other",
        "tcp:127.0.0.1:6653",
    )
    ovs.wait(lambda: ovs.status()["counters"].get("switch_foreign", 0) >= 1, "foreign switch seen")
    other = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-other")
    assert "cookie=0xd0" not in other
    ours = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove")
    assert "cookie=0xd0" in ours and ovs.status()["connected"]
    ovs.vsctl("del-br", "br-other")


def test_agent_stops_cleanly_on_sigterm(ovs: PrivateOvs) -> None:
    """Last in this module: the agent exits promptly with status 0 and removes its socket."""
    assert ovs.agent is not None
    ovs.agent.terminate()
    assert ovs.agent.wait(10) == 0
    assert not (ovs.dir / "admin.sock").exists()
    assert "agent stopped" in (ovs.dir / "agent.log").read_text()
