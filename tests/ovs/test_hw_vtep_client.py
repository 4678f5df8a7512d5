"""The hardware_vtep client against a real ovsdb-server serving the VTEP schema (standalone,
on a unix socket, no emulator): it reads the switch, writes what the core asks, skips and
counts a malformed row without stopping, and writes again after the server comes back."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dove_ryu.adapters.hw_vtep import HwVtepClient
from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow
from dove_ryu.agent.vtep_controller import SwitchState, VtepController
from dove_ryu.config import VtepBinding

VTEP_SCHEMA = Path("/usr/share/openvswitch/vtep.ovsschema")

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(shutil.which("ovsdb-server") is None, reason="needs ovsdb-server"),
    pytest.mark.skipif(not VTEP_SCHEMA.exists(), reason="needs openvswitch-vtep"),
]

HV1, HV2 = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2")
VIEW = DirectoryView(
    [HostRow("hv1", HV1, frozenset({5001})), HostRow("hv2", HV2, frozenset({5001}))],
    [
        EndpointRow(5001, "02:00:00:00:00:01", (IPv4Address("10.0.0.1"),), "hv1", 1),
        EndpointRow(5001, "02:00:00:00:00:02", (), "hv2", 1),
    ],
)


def wait_until(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Switch:
    """An ovsdb-server with a hardware_vtep database: physical switch tor1, port p1."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dove-hwvtep-test-"))
        self.db = self.dir / "vtep.db"
        self.sock = self.dir / "db.sock"
        subprocess.run(["ovsdb-tool", "create", str(self.db), str(VTEP_SCHEMA)], check=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ovsdb-server", str(self.db), f"--remote=punix:{self.sock}",
             f"--unixctl={self.dir / 'ctl'}", "--no-chdir"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until("the switch's socket", self.sock.exists)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        self.sock.unlink(missing_ok=True)

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            ["vtep-ctl", f"--db={self.remote}", "--timeout=10", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"vtep-ctl {' '.join(args)}: {out.stderr}"
        return out.stdout


@pytest.fixture
def switch() -> Iterator[Switch]:
    s = Switch()
    s.start()
    s.ctl("add-ps", "tor1", "--", "set", "Physical_Switch", "tor1", "tunnel_ips=10.99.0.60")
    s.ctl("add-port", "tor1", "p1")
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


@pytest.fixture
def client(switch: Switch) -> Iterator[tuple[HwVtepClient, VtepController]]:
    core = VtepController("tor1", [VtepBinding("p1", 0, 5001)])
    core.directory_view(VIEW)

    def on_state(state: SwitchState) -> None:
        core.switch_state(state)

    c = HwVtepClient(switch.remote, "tor1", on_state, core.changes)
    c.start()
    try:
        yield c, core
    finally:
        c.stop()
        c.thread.join(5)


def remote_macs(switch: Switch) -> str:
    try:
        return switch.ctl("list-remote-macs", "dove-5001")
    except AssertionError:  # no such logical switch yet
        return ""


WRITTEN = (
    "  02:00:00:00:00:01 -> vxlan_over_ipv4/10.99.0.1",
    "  02:00:00:00:00:02 -> vxlan_over_ipv4/10.99.0.2",
    "  unknown-dst -> vxlan_over_ipv4/10.99.0.1",
    "  unknown-dst -> vxlan_over_ipv4/10.99.0.2",
)


def test_the_client_reads_the_switch_and_writes_the_core_changes(
    switch: Switch, client: tuple[HwVtepClient, VtepController]
) -> None:
    c, core = client
    wait_until("the remote MACs", lambda: all(w in remote_macs(switch) for w in WRITTEN))
    assert core.state.tunnel_ip == IPv4Address("10.99.0.60")
    assert core.state.ports == frozenset({"p1"})
    assert "dove-5001" in switch.ctl("list-bindings", "tor1", "p1")
    mode = switch.ctl("get", "Logical_Switch", "dove-5001", "replication_mode").strip()
    assert mode == "source_node"
    assert switch.ctl("get", "Logical_Switch", "dove-5001", "tunnel_key").strip() == "5001"
    wait_until("nothing more to write", lambda: core.changes().empty())


def test_a_malformed_row_is_counted_and_the_rest_still_works(
    switch: Switch, client: tuple[HwVtepClient, VtepController]
) -> None:
    c, core = client
    wait_until("the remote MACs", lambda: all(w in remote_macs(switch) for w in WRITTEN))
    # A local MAC whose locator is no address, then a good one.
    switch.ctl("add-ucast-local", "dove-5001", "02:00:00:00:05:09", "not-an-address")
    switch.ctl("add-ucast-local", "dove-5001", "02:00:00:00:05:01", "10.99.0.60")
    wait_until(
        "the good local MAC", lambda: ("dove-5001", "02:00:00:00:05:01") in core.state.ucast_local
    )
    assert c.malformed == 0  # a local MAC's locator is not read: it is the switch's own
    # A remote MAC someone else pointed at no address: skipped, counted, logged once.
    switch.ctl("add-ucast-remote", "dove-5001", "02:00:00:00:09:09", "not-an-address")
    wait_until("the malformed row counted", lambda: c.malformed >= 1)
    assert c.thread.is_alive() and c.connected
    # The controller still works: it removes that row (not an endpoint of the instance).
    wait_until("the stray remote MAC removed", lambda: "09:09" not in remote_macs(switch))


def test_the_client_writes_again_after_the_switch_comes_back(
    switch: Switch, client: tuple[HwVtepClient, VtepController]
) -> None:
    c, core = client
    wait_until("the remote MACs", lambda: all(w in remote_macs(switch) for w in WRITTEN))
    switch.stop()
    wait_until("the client sees the switch gone", lambda: not c.connected)
    switch.start()
    wait_until("the client back", lambda: c.connected)
    switch.ctl("del-ucast-remote", "dove-5001", "02:00:00:00:00:01")
    wait_until("the remote MAC written again", lambda: WRITTEN[0] in remote_macs(switch))
