"""The directory client against a real ovsdb-server serving the DOVE_Directory schema
(standalone, on a unix socket: no network): registration, heartbeats that reach no
other agent, conditional monitoring, the directory going away and coming back, and the
reaper marking a stopped host dead."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dove_ryu.adapters.directory import SCHEMA, DirectoryClient, Reaper
from dove_ryu.agent.directory import DirectoryView, HostRow
from dove_ryu.config import DoveConfig, from_mapping

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(shutil.which("ovsdb-server") is None, reason="needs ovsdb-server"),
]

KEY = "00112233445566778899aabbccddeeff"


def wait_until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """One ovsdb-server with the directory's database, in a private directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dove-directory-test-"))
        self.db = self.dir / "directory.db"
        self.sock = self.dir / "db.sock"
        subprocess.run(["ovsdb-tool", "create", str(self.db), str(SCHEMA)], check=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "ovsdb-server",
                str(self.db),
                f"--remote=punix:{self.sock}",
                f"--unixctl={self.dir / 'ctl'}",
                "--no-chdir",
            ],
            stderr=subprocess.DEVNULL,
        )
        wait_until("the directory's socket", self.sock.exists)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        self.sock.unlink(missing_ok=True)

    def hosts(self, table: str = "Host") -> list[dict[str, object]]:
        out = subprocess.run(
            ["ovsdb-client", "-f", "json", "dump", self.remote, "DOVE_Directory", table],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"ovsdb-client dump {table}: {out.stderr}"
        dump = json.loads(out.stdout)
        return [dict(zip(dump["headings"], row, strict=True)) for row in dump["data"]]

    def heartbeats(self) -> dict[str, int]:
        return {str(r["name"]): int(r["heartbeat"]) for r in self.hosts("Host_Liveness")}  # type: ignore[call-overload]


class Reaping:
    """A reaper (``dovectl directory reap``'s loop) in a thread."""

    def __init__(self, remote: str) -> None:
        self.dead: list[str] = []
        self.reaper = Reaper(remote, self.dead.append)
        self.thread = threading.Thread(target=self.reaper.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.reaper.stop()
        self.thread.join(timeout=5)


class Agent:
    """A directory client as an agent runs it, with what it serves set by the test."""

    def __init__(self, n: int, remote: str, served: set[int]) -> None:
        self.cfg: DoveConfig = from_mapping(
            {
                "underlay_ip": f"10.99.0.{n}",
                "auth_key": KEY,
                "host_name": f"h{n}",
                "discovery": "directory",
                "directory": remote,
                "announce_interval": "0.2",
            }
        )
        self.serving = frozenset(served)
        self.rows: list[HostRow] = []
        self.lost = threading.Event()
        self.client = DirectoryClient(
            self.cfg, lambda: (self.serving, []), self._view, self.lost.set
        )

    def _view(self, view: DirectoryView) -> None:
        self.rows = view.hosts
        self.lost.clear()

    def seen(self) -> set[str]:
        return {r.name for r in self.rows}


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


def test_agents_register_beat_and_see_only_hosts_serving_what_they_serve(server: Server) -> None:
    agents = [
        Agent(1, server.remote, {5001}),
        Agent(2, server.remote, {5001, 5002}),
        Agent(3, server.remote, {5002}),
    ]
    for a in agents:
        a.client.start()
    try:
        wait_until("three Host rows", lambda: len(server.hosts()) == 3)
        wait_until("h1 to see h2", lambda: agents[0].seen() == {"h1", "h2"})
        wait_until("h2 to see everyone", lambda: agents[1].seen() == {"h1", "h2", "h3"})
        wait_until("h3 to see h2", lambda: agents[2].seen() == {"h2", "h3"})
        row = {r.name: r for r in agents[1].rows}["h3"]
        assert row.instances == frozenset({5002}) and row.alive
        # The heartbeats move in the directory, and reach no agent: not even the
        # sender's own counts a change.
        updates = [a.client.counts["directory_updates"] for a in agents]
        first = server.heartbeats()
        assert {r["name"]: r["heartbeat_interval"] for r in server.hosts("Host_Liveness")} == {
            "h1": 0.2,
            "h2": 0.2,
            "h3": 0.2,
        }
        wait_until(
            "every heartbeat to move three times",
            lambda: all(n > first[h] + 2 for h, n in server.heartbeats().items()),
        )
        assert [a.client.counts["directory_updates"] for a in agents] == updates
        # What an agent serves changes its row, and what it watches.
        agents[0].serving = frozenset({5002})
        wait_until("h1 to see h3", lambda: agents[0].seen() == {"h1", "h2", "h3"})
        wait_until(
            "h1's row to say 5002",
            lambda: any(h["name"] == "h1" and h["instances"] == 5002 for h in server.hosts()),
        )
    finally:
        for a in agents:
            a.client.stop()


def test_the_directory_going_away_is_reported_and_its_return_resumes(server: Server) -> None:
    agent = Agent(1, server.remote, {5001})
    agent.client.start()
    try:
        wait_until("h1's own row", lambda: agent.seen() == {"h1"})
        server.stop()
        wait_until("the loss to be reported", agent.lost.is_set)
        server.start()
        wait_until("rows again", lambda: not agent.lost.is_set() and agent.seen() == {"h1"})
        beat = server.heartbeats()["h1"]
        wait_until("the heartbeat to go on", lambda: server.heartbeats()["h1"] > beat)
    finally:
        agent.client.stop()


def test_a_reaper_marks_a_stopped_host_dead_and_it_comes_back_alive(server: Server) -> None:
    h1, h2 = Agent(1, server.remote, {5001}), Agent(2, server.remote, {5001})
    h1.client.start()
    h2.client.start()
    reaping = Reaping(server.remote)
    try:
        wait_until("h1 to see h2 alive", lambda: any(r.name == "h2" and r.alive for r in h1.rows))
        h2.client.stop()
        wait_until("h2 marked dead", lambda: any(r.name == "h2" and not r.alive for r in h1.rows))
        assert reaping.dead == ["h2"]
        # Killed and restarted, a reaper judges nothing it has not watched stand still.
        reaping.stop()
        reaping = Reaping(server.remote)
        beat = server.heartbeats()["h1"]
        wait_until("h1 to beat five times", lambda: server.heartbeats()["h1"] > beat + 4)
        assert reaping.dead == [] and {r.name: r.alive for r in h1.rows} == {
            "h1": True,
            "h2": False,
        }
        # A fresh agent on h2 marks its row alive again.
        h2 = Agent(2, server.remote, {5001})
        h2.client.start()
        wait_until("h2 alive again", lambda: any(r.name == "h2" and r.alive for r in h1.rows))
    finally:
        reaping.stop()
        h1.client.stop()
        h2.client.stop()
