"""The control plane at size with real agents (issue 13 point 4): a host serving 2,000
instances and a proxy relaying 5,000 keep full membership at their peers.

No Mininet: one private ovsdb-server and ovs-vswitchd (``--enable-dummy``: a VM port is a
``dummy`` interface, a real OpenFlow port with no device behind it), one bridge per
agent, and four real dove-agent processes talking over loopback addresses (127.0.0.0/8
needs no address configured).  Site 1: hosts A (2,000 instances) and B (3,000 more)
and proxy P1; site 2: proxy P2 alone.  P1 hears A's and B's split announcements and
relays all 5,000 instances to P2 in split announcements of its own; ``dovectl`` on
each proxy (its admin socket) must list every instance with the right member.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="needs Open vSwitch"),
]

KEY = "00112233445566778899aabbccddeeff"
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
A_COUNT, B_COUNT = 2000, 3000


def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class World:
    """The private OVS and the agents, in one temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dove-scale-"))
        self.db = self.dir / "db.sock"
        self.env = {**os.environ, "OVS_RUNDIR": str(self.dir), "OVS_DBDIR": str(self.dir)}
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.control_port = random.randint(20000, 40000)
        self.of_port = random.randint(40001, 50000)

    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, check=False)
        assert done.returncode == 0, f"{argv[:4]}: {done.stderr}"
        return done.stdout

    def vsctl(self, *args: str) -> str:
        return self.run("ovs-vsctl", f"--db=unix:{self.db}", "--timeout=60", *args)

    def start_ovs(self) -> None:
        d = self.dir
        self.run("ovsdb-tool", "create", str(d / "conf.db"), VSWITCH_SCHEMA)
        self.run(
            "ovsdb-server", str(d / "conf.db"), f"--remote=punix:{self.db}",
            f"--pidfile={d / 'ovsdb-server.pid'}", f"--log-file={d / 'ovsdb-server.log'}",
            f"--unixctl={d / 'ovsdb-server.ctl'}", "--detach", "--no-chdir",
        )  # fmt: skip
        self.vsctl("--no-wait", "init")
        self.run(
            "ovs-vswitchd", f"unix:{self.db}", "--enable-dummy",
            f"--pidfile={d / 'ovs-vswitchd.pid'}", f"--log-file={d / 'ovs-vswitchd.log'}",
            f"--unixctl={d / 'ovs-vswitchd.ctl'}", "--detach", "--no-chdir",
        )  # fmt: skip

    def add_bridge(self, bridge: str) -> None:
        self.vsctl("add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=dummy")

    def add_vm_ports(self, bridge: str, prefix: str, instances: range) -> None:
        """One dummy port per instance, marked as a VM of it; 200 ports per transaction
        (ovs-vsctl's cost grows faster than the size of one transaction)."""
        args: list[str] = []
        for n, instance in enumerate(instances):
            name = f"{prefix}{n}"
            low = n.to_bytes(3, "big").hex(":")
            mac = f"02:{ord(prefix[0]):02x}:00:{low}"
            args += ["--", "add-port", bridge, name, "--", "set", "Interface", name,
                     "type=dummy", f"external_ids:dove-instance={instance}",
                     f"external_ids:attached-mac={mac}"]  # fmt: skip
            if (n + 1) % 200 == 0:
                self.vsctl("--no-wait", *args)
                args = []
        if args:
            self.vsctl("--no-wait", *args)

    def start_agent(self, name: str, settings: dict[str, Any]) -> None:
        n = len(self.agents)
        conf = {
            "host_name": name,
            "auth_key": KEY,
            "datapath_type": "dummy",  # --enable-dummy: no tap device, nothing shared
            "bridge": f"br-{name}",
            "tunnel_port": f"vx-{name}",
            "control_port": self.control_port,
            "ovsdb": f"unix:{self.db}",
            "admin_socket": str(self.dir / f"{name}.sock"),
            # Members live 3.5 rounds: 2 s rounds ride out a busy 2-core machine.
            "announce_interval": 2.0,
            **settings,
        }
        (self.dir / f"{name}.ini").write_text(
            "[dove]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())
        )
        agent = str(Path(sys.executable).parent / "dove-agent")
        cmd = [agent, "--config-file", f"{name}.ini", "--log-file", f"{name}.log",
               "--ofp-tcp-listen-port", str(self.of_port + n)]  # fmt: skip
        out = open(self.dir / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        self.agents[name] = subprocess.Popen(
            cmd, cwd=self.dir, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()

    def dovectl(self, name: str, command: str) -> dict[str, Any]:
        """``dovectl <command> --json`` at agent ``name`` ({} while it does not answer)."""
        agent = self.agents[name]
        assert agent.poll() is None, (self.dir / f"{name}.out").read_text()[-3000:]
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dovectl"),
             "--admin-socket", str(self.dir / f"{name}.sock"), command, "--json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def stop(self, evidence: Path | None) -> None:
        for agent in self.agents.values():
            agent.terminate()
        for agent in self.agents.values():
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.dir / f"{daemon}.pid"
            if pidfile.exists():
                subprocess.run(["kill", pidfile.read_text().strip()], check=False)
        if evidence is not None:
            shutil.copytree(self.dir, evidence, dirs_exist_ok=True, ignore=_sockets)
        shutil.rmtree(self.dir, ignore_errors=True)


def _sockets(directory: str, names: list[str]) -> list[str]:
    # Sockets cannot be copied, and pid files go as their daemons stop.
    return [n for n in names if n.endswith((".sock", ".ctl", ".db", ".mgmt", ".snoop", ".pid"))]


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    w = World()
    failed = request.session.testsfailed
    w.start_ovs()
    yield w
    keep = Path("test-evidence") / "scale" if request.session.testsfailed > failed else None
    w.stop(keep)


A, B = "127.0.0.41", "127.0.0.42"
P1, P1_WAN, P2, P2_WAN = "127.0.0.51", "127.0.1.51", "127.0.0.61", "127.0.1.61"


def _members(rows: dict[str, Any], key: str = "members") -> dict[int, list[str]]:
    """``dovectl members --json``: instance -> its members (or remote proxies)."""
    return {int(i): v.get(key, []) for i, v in rows.items()}


@pytest.fixture
def site2(world: World, request: pytest.FixtureRequest) -> Iterator[World]:
    """Site 2's own OVS: two proxies' flow-based tunnel ports (both without local_ip,
    since a proxy has two legs) would clash in one ovs-vswitchd, as they never share
    one in a deployment."""
    w = World()
    w.control_port, w.of_port = world.control_port, world.of_port + 10
    failed = request.session.testsfailed
    w.start_ovs()
    yield w
    keep = Path("test-evidence") / "scale-site2" if request.session.testsfailed > failed else None
    w.stop(keep)


def test_a_host_of_2000_instances_and_a_proxy_relaying_5000_keep_full_membership(
    world: World, site2: World
) -> None:
    a_instances = range(100_000, 100_000 + A_COUNT)
    b_instances = range(200_000, 200_000 + B_COUNT)
    for name in ("a", "b", "p1"):
        world.add_bridge(f"br-{name}")
    site2.add_bridge("br-p2")
    world.add_vm_ports("br-a", "a", a_instances)
    world.add_vm_ports("br-b", "b", b_instances)
    site1 = f"{A}, {B}, {P1}"
    world.start_agent("a", {"underlay_ip": A, "peers": site1})
    world.start_agent("b", {"underlay_ip": B, "peers": site1})
    proxy = {"role": "proxy", "proxy_priority": 200, "wan_mtu": 1400}
    world.start_agent(
        "p1",
        {"underlay_ip": P1, "peers": site1, "site": "s1", "wan_ip": P1_WAN,
         "wan_peers": P2_WAN, **proxy},
    )  # fmt: skip
    site2.start_agent(
        "p2",
        {"underlay_ip": P2, "peers": P2, "site": "s2", "wan_ip": P2_WAN,
         "wan_peers": P1_WAN, **proxy},
    )  # fmt: skip

    def p1_full() -> bool:
        members = _members(world.dovectl("p1", "members"))
        return all(A in members.get(i, []) for i in a_instances) and all(
            B in members.get(i, []) for i in b_instances
        )

    def p2_full() -> bool:
        remote = _members(site2.dovectl("p2", "members"), "remote_proxies")
        return all(remote.get(i) == [P1_WAN] for i in (*a_instances, *b_instances))

    wait_until("the site's proxy to hear all 5,000 instances", p1_full, timeout=120)
    # The proxy relays once it is active, which it becomes once it has taken its switch
    # over: its view of a bridge database of 5,000 ports takes a while on a busy machine.
    wait_until("the other site's proxy to hear all 5,000 relayed", p2_full, timeout=120)
    # Several rounds later (2 s each, members live 7 s): still whole, nothing dropped.
    time.sleep(5)
    assert p1_full() and p2_full()
    for name in ("a", "b", "p1"):
        counters = world.dovectl(name, "status")["counters"]
        assert not any("truncated" in c for c in counters), counters
        assert counters.get("announce_parts_sent", 0) > counters.get("announce_sent", 0)
