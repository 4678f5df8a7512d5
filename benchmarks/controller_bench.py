"""Controller benchmark: packet-in rate and latency of dove-ryu's cache-hit path
against a plain MAC-learning switch, under `benchmarks.ofload` (cbench's method).

    sudo .venv/bin/python -m benchmarks.controller_bench [--quick] [--out results.json]

Everything runs in a private network namespace ``dove-ofload-<pid>``, deleted at
the end; no OVS switch runs, the emulated switches of `benchmarks.ofload` stand in
for it.

* learning switch: one ``benchmarks.learning_switch`` process serves all N
  emulated switches.  Each switch first sends one packet-in *from* every
  destination MAC (port 3), so the app knows where they are; then each packet-in
  src -> dst (port 2) makes it install a flow and send a packet-out: its
  cache-hit path.
* dove-ryu: one agent serves one bridge by design, so N switches are N agents
  (one ``dove-agent`` process each, own bridge ``brd<i>`` in one private
  ``ovsdb-server`` without ovs-vswitchd, own underlay address and OpenFlow port);
  the figures are the aggregate over the N agents.  Each bridge's rows (datapath
  id, tunnel port ofport 1, VM port ``vm<i>`` ofport 2 of instance 5001 with MAC
  02:00:00:00:00:01) are written with ``ovsdb-client transact``, since only
  vswitchd writes ``ofport`` and ``datapath_id``.  A peer in this process
  (10.97.0.2, authenticated with the deployment key) announces instance 5001 and
  answers LEARN requests for the destination MACs.  Each emulated switch first
  sends every destination once (the agent misses, asks the peer, installs,
  re-injects: reported as ``prime``); then each packet-in of the L2-miss flow's
  cookie for a learned destination is answered with flow-mods, a barrier and a
  packet-out: the cache-hit path.

Per switch count (1, 4, 16) and mode (latency: one packet-in outstanding per
switch; throughput: a window of 64), each repetition runs both controllers, in
alternating order.  The output is JSON (every sample, and per figure the median
with min and max over the repetitions, and dove/learning-switch ratios); progress
and a table go to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from benchmarks.stats import fmt, summary
from dove_ryu.adapters.admin import query
from dove_ryu.openflow.cookies import Cookie, Purpose
from dove_ryu.openflow.flows import TAG_L2_MISS
from dove_ryu.openflow.pipeline import L2_FORWARD
from dove_ryu.protocol.auth import CounterSource
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import Announce, LearnReply, LearnRequest, decode, encode

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

KEY_HEX = "0badc0ffee0ddf00d0badc0ffee0ddf0"
INSTANCE = 5001
VM_MAC = "02:00:00:00:00:01"
VM_IP = "10.0.0.1"
PEER_IP = IPv4Address("10.97.0.2")
CONTROL_PORT = 4799
TUNNEL_OFPORT = 1
VM_OFPORT = 2
TEACH_PORT = 3
LS_OF_PORT = 16690
DOVE_OF_PORT = 16700  # agent i listens on DOVE_OF_PORT + i
LS_DPID_BASE = 0x0000_0000_00AA_0001
DOVE_DPID_BASE = 0x0000_0000_00DD_0001
L2_MISS_COOKIE = Cookie(Purpose.INSTANCE, INSTANCE, TAG_L2_MISS).value
# ovs-vsctl waits until ovs-vswitchd has applied its change (Open_vSwitch cur_cfg
# reaches next_cfg); there is no vswitchd here, so cur_cfg is set beyond any
# next_cfg the agents' ensure_bridge will reach.
CUR_CFG_ALWAYS_APPLIED = 1 << 40

FIGURES = ("rate_per_s", "reply_p50_ms", "reply_p99_ms", "done_p50_ms", "done_p99_ms")


def log(text: str) -> None:
    print(f"[controller_bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def agent_ip(i: int) -> IPv4Address:
    return IPv4Address(f"10.97.0.{10 + i}")


def dst_macs(m: int) -> list[str]:
    return [f"02:00:00:01:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, m + 1)]


def dst_ip(mac: str) -> IPv4Address:
    """The address the peer reports for a destination MAC."""
    raw = bytes.fromhex(mac.replace(":", ""))
    return IPv4Address(f"10.0.{raw[4]}.{raw[5] + 1}")


# ------------------------------------------------------------------ namespace


_LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def socket_in_netns(netns: str, family: int, kind: int) -> socket.socket:
    """A socket created inside ``netns`` (it stays there; this thread comes back)."""
    with (
        open("/proc/thread-self/ns/net", "rb") as own,
        open(f"/var/run/netns/{netns}", "rb") as target,
    ):
        if _LIBC.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
        try:
            return socket.socket(family, kind)
        finally:
            if _LIBC.setns(own.fileno(), CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Bench:
    """The namespace, the processes in it, and the peer; `close` undoes all."""

    netns: str
    dir: Path
    agents: int
    destinations: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    peer: Peer | None = None

    @property
    def db(self) -> str:
        return f"unix:{self.dir}/db.sock"

    def ns(self, *cmd: str) -> str:
        return run(["ip", "netns", "exec", self.netns, *cmd])

    def spawn(self, name: str, cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *cmd],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    # -------------------------------------------------------------- set-up

    def start(self) -> None:
        run(["ip", "netns", "add", self.netns])
        self.ns("ip", "link", "set", "lo", "up")
        # Underlay addresses on a veth pair inside the namespace: agents on ul0,
        # the peer on ul1.  Nothing in the root namespace gets an address.
        self.ns("ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
        for i in range(self.agents):
            self.ns("ip", "addr", "add", f"{agent_ip(i)}/24", "dev", "ul0")
        self.ns("ip", "addr", "add", f"{PEER_IP}/24", "dev", "ul1")
        self.ns("ip", "link", "set", "ul0", "up")
        self.ns("ip", "link", "set", "ul1", "up")
        self._start_ovsdb()
        self.peer = Peer(self.netns, self.agents, dst_macs(self.destinations))
        self.peer.start()
        self._start_agents()
        self.spawn(
            "learning_switch",
            [
                PYTHON,
                "-m",
                "benchmarks.learning_switch",
                "--ofp-tcp-listen-port",
                str(LS_OF_PORT),
            ],
            self.dir / "learning_switch.log",
        )
        self._wait_agents_ready()
        self._wait_listening(LS_OF_PORT)

    def _start_ovsdb(self) -> None:
        run(["ovsdb-tool", "create", f"{self.dir}/conf.db", VSWITCH_SCHEMA])
        self.spawn(
            "ovsdb-server",
            [
                "ovsdb-server",
                f"{self.dir}/conf.db",
                f"--remote=punix:{self.dir}/db.sock",
                f"--unixctl={self.dir}/ovsdb-server.ctl",
                f"--log-file={self.dir}/ovsdb-server.log",
            ],
            self.dir / "ovsdb-server.out",
        )
        wait_for(lambda: (self.dir / "db.sock").exists(), "ovsdb-server socket", 10)
        self.ns("ovs-vsctl", f"--db={self.db}", "--no-wait", "init")
        self.ns(
            "ovsdb-client", "transact", self.db, json.dumps(ovsdb_rows(self.agents))
        )  # fmt: skip

    def _start_agents(self) -> None:
        agent = str(Path(PYTHON).parent / "dove-agent")
        for i in range(self.agents):
            ini = self.dir / f"agent{i}.ini"
            ini.write_text(
                "[dove]\n"
                f"underlay_ip = {agent_ip(i)}\n"
                f"auth_key = {KEY_HEX}\n"
                f"peers = {PEER_IP}\n"
                f"bridge = brd{i}\n"
                f"tunnel_port = dvx{i}\n"
                "datapath_type = netdev\n"
                f"ovsdb = {self.db}\n"
                f"admin_socket = {self.dir}/admin/agent{i}.sock\n"
                f"host_name = bench{i}\n"
                f"control_port = {CONTROL_PORT}\n"
            )
            self.spawn(
                f"agent{i}",
                [
                    agent,
                    "--config-file",
                    str(ini),
                    "--ofp-tcp-listen-port",
                    str(DOVE_OF_PORT + i),
                    "--log-file",
                    str(self.dir / f"agent{i}.log"),
                ],
                self.dir / f"agent{i}.out",
            )

    def admin(self, i: int, cmd: str) -> dict[str, Any]:
        return query(f"{self.dir}/admin/agent{i}.sock", {"cmd": cmd})

    def _agent_ready(self, i: int) -> bool:
        try:
            info = self.admin(i, "status")["instances"][str(INSTANCE)]
        except (OSError, ValueError, KeyError):
            return False
        return bool(info["local"]) and str(PEER_IP) in info["members"]

    def _wait_agents_ready(self) -> None:
        def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.dir / f"{name}.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {tail}")
            return all(self._agent_ready(i) for i in range(self.agents))

        wait_for(ready, "agents up with their VM port and the peer as member", 60)

    def _wait_listening(self, port: int) -> None:
        def listening() -> bool:
            sock = socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, f"a controller on port {port}", 30)

    def counters(self, n: int) -> Counter[str]:
        total: Counter[str] = Counter()
        for i in range(n):
            total.update({k: v for k, v in self.admin(i, "counters").items() if isinstance(v, int)})
        return total

    # -------------------------------------------------------------- runs

    def ofload(self, args: list[str], timeout: float) -> dict[str, Any]:
        cmd = ["ip", "netns", "exec", self.netns, PYTHON, "-m", "benchmarks.ofload", *args]
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        try:
            result: dict[str, Any] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            result = {"error": f"ofload exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}
        return result

    # -------------------------------------------------------------- tear-down

    def close(self) -> None:
        if self.peer is not None:
            self.peer.stop()
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it")
                proc.kill()
                proc.wait(5)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


def wait_for(cond: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ovsdb_rows(agents: int) -> list[Any]:
    """One transaction: per agent a bridge with its datapath id, the tunnel port and
    a marked VM port with their ofports (what ovs-vswitchd would have written)."""
    ops: list[Any] = ["Open_vSwitch"]
    bridges = []
    for i in range(agents):
        ext = [
            ["dove-instance", str(INSTANCE)],
            ["attached-mac", VM_MAC],
            ["dove-ips", VM_IP],
        ]
        for name, ofport, row in (
            (f"dvx{i}", TUNNEL_OFPORT, {"type": "vxlan"}),
            (f"vm{i}", VM_OFPORT, {"external_ids": ["map", ext]}),
        ):
            ops.append(
                {
                    "op": "insert",
                    "table": "Interface",
                    "row": {"name": name, "ofport": ofport, **row},
                    "uuid-name": f"if_{name}",
                }
            )
            ops.append(
                {
                    "op": "insert",
                    "table": "Port",
                    "row": {"name": name, "interfaces": ["named-uuid", f"if_{name}"]},
                    "uuid-name": f"port_{name}",
                }
            )
        ops.append(
            {
                "op": "insert",
                "table": "Bridge",
                "row": {
                    "name": f"brd{i}",
                    "datapath_id": f"{DOVE_DPID_BASE + i:016x}",
                    "ports": [
                        "set",
                        [["named-uuid", f"port_dvx{i}"], ["named-uuid", f"port_vm{i}"]],
                    ],
                },
                "uuid-name": f"br{i}",
            }
        )
        bridges.append(["named-uuid", f"br{i}"])
    ops.append(
        {
            "op": "mutate",
            "table": "Open_vSwitch",
            "where": [],
            "mutations": [["bridges", "insert", ["set", bridges]]],
        }
    )
    ops.append(
        {
            "op": "update",
            "table": "Open_vSwitch",
            "where": [],
            "row": {"cur_cfg": CUR_CFG_ALWAYS_APPLIED},
        }
    )
    return ops


# ------------------------------------------------------------------ the peer


class Peer:
    """A remote DOVE host for the agents: announces the instance, answers LEARNs."""

    def __init__(self, netns: str, agents: int, macs: list[str], interval: float = 1.0) -> None:
        self.key = bytes.fromhex(KEY_HEX)
        self.agents = [agent_ip(i) for i in range(agents)]
        self.endpoints = {mac: dst_ip(mac) for mac in macs}
        self.by_ip = {ip: mac for mac, ip in self.endpoints.items()}
        self.interval = interval
        self.sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((str(PEER_IP), CONTROL_PORT))
        self.sock.settimeout(0.2)
        self.counter = CounterSource()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.stats: Counter[str] = Counter()
        self.threads = [
            threading.Thread(target=self._receive, name="peer-rx", daemon=True),
            threading.Thread(target=self._announce, name="peer-announce", daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()

    def _send(self, msg: Announce | LearnReply, to: IPv4Address) -> None:
        with self.lock:
            counter = self.counter.next(time.time())
        payload = encode(msg, sender=PEER_IP, receiver=to, counter=counter, key=self.key)
        try:
            self.sock.sendto(payload, (str(to), CONTROL_PORT))
        except OSError:
            self.stats["send_errors"] += 1

    def _announce(self) -> None:
        # More often than the agents' announce interval (2 s): a member missing for
        # 3.5 intervals is dropped, and its learned endpoints with it.
        msg = Announce(instances=frozenset({INSTANCE}))
        while not self.stopping.is_set():
            for host in self.agents:
                self._send(msg, host)
            self.stats["announces_sent"] += len(self.agents)
            self.stopping.wait(self.interval)

    def _receive(self) -> None:
        while not self.stopping.is_set():
            try:
                data, (addr, _) = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                env = decode(data, key=self.key)
            except (MalformedMessage, ValueError) as e:
                self.stats[f"bad_{type(e).__name__}"] += 1
                continue
            msg = env.message
            if isinstance(msg, Announce):
                self.stats["announces_received"] += 1
            elif isinstance(msg, LearnRequest):
                self.stats["learn_requests"] += 1
                mac = msg.mac if msg.mac is not None else self.by_ip.get(msg.ip)  # type: ignore[arg-type]
                if msg.instance != INSTANCE or mac not in self.endpoints:
                    self.stats["learn_unknown"] += 1
                    continue
                reply = LearnReply(
                    instance=INSTANCE,
                    request_id=msg.request_id,
                    mac=mac,
                    ips=(self.endpoints[mac],),
                    host=PEER_IP,
                    seq=1,
                )
                self._send(reply, IPv4Address(addr))
                self.stats["learn_replies"] += 1


# ------------------------------------------------------------------ runs


def ofload_args(controller: str, n: int, mode: str, cfg: argparse.Namespace) -> list[str]:
    common = [
        "--switches", str(n), "--mode", mode, "--seconds", str(cfg.seconds),
        "--warmup", str(cfg.warmup), "--window", str(cfg.window),
        "--in-port", str(VM_OFPORT), "--src", VM_MAC, "--dst", *dst_macs(cfg.destinations),
    ]  # fmt: skip
    if controller == "learning":
        return [
            *common, "--port", str(LS_OF_PORT), "--dpid-base", hex(LS_DPID_BASE),
            "--cookie", "0", "--table-id", "0", "--teach-port", str(TEACH_PORT),
        ]  # fmt: skip
    return [
        *common, "--port", str(DOVE_OF_PORT), "--port-per-switch",
        "--dpid-base", hex(DOVE_DPID_BASE), "--cookie", hex(L2_MISS_COOKIE),
        "--table-id", str(L2_FORWARD.table_id), "--prime",
    ]  # fmt: skip


def flatten(result: dict[str, Any]) -> dict[str, float | None]:
    def get(key: str, stat: str) -> float | None:
        part = result.get(key)
        return part.get(stat) if isinstance(part, dict) else None

    return {
        "rate_per_s": result.get("rate_per_s"),
        "reply_p50_ms": get("reply_ms", "p50"),
        "reply_p99_ms": get("reply_ms", "p99"),
        "done_p50_ms": get("done_ms", "p50"),
        "done_p99_ms": get("done_ms", "p99"),
    }


def spread(values: list[float]) -> dict[str, Any] | None:
    """Median and min-max of a figure's repetitions (None when there are none)."""
    return summary(values) if values else None


def summarize(samples: list[dict[str, Any]], switches: list[int], modes: list[str]) -> list[Any]:
    rows = []
    for n in switches:
        for mode in modes:
            row: dict[str, Any] = {"switches": n, "mode": mode}
            for controller in ("learning", "dove"):
                mine = [
                    s
                    for s in samples
                    if s["controller"] == controller
                    and s["switches"] == n
                    and s["mode"] == mode
                    and "error" not in s["result"]
                ]
                row[controller] = {
                    fig: spread([v for s in mine if (v := s["figures"][fig]) is not None])
                    for fig in FIGURES
                }
                row[controller]["lost"] = sum(s["result"].get("lost", 0) for s in mine)
                row[controller]["errors"] = sum(
                    1
                    for s in samples
                    if s["controller"] == controller
                    and s["switches"] == n
                    and s["mode"] == mode
                    and "error" in s["result"]
                )
            ratios = {}
            for fig in FIGURES:
                a, b = row["dove"].get(fig), row["learning"].get(fig)
                if a and b and b["median"]:
                    ratios[fig] = round(a["median"] / b["median"], 3)
            row["dove_over_learning"] = ratios
            rows.append(row)
    return rows


def targets(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets: cache-hit rate >= 5x the learning switch's; p99 < 2 ms."""
    rate, p99 = [], []
    for row in summary:
        ratio = row["dove_over_learning"].get("rate_per_s")
        if row["mode"] == "throughput":
            rate.append(
                {"switches": row["switches"], "ratio": ratio, "met": bool(ratio and ratio >= 5)}
            )
        if row["mode"] == "latency":
            fig = row["dove"].get("reply_p99_ms")
            done = row["dove"].get("done_p99_ms")
            p99.append(
                {
                    "switches": row["switches"],
                    "reply_p99_ms": fig["median"] if fig else None,
                    "done_p99_ms": done["median"] if done else None,
                    "met": bool(fig and fig["median"] < 2.0),
                }
            )
    return {
        "rate_at_least_5x_learning_switch (throughput mode)": rate,
        "p99_under_2ms (latency mode, dove, first reply)": p99,
    }


def table(summary: list[dict[str, Any]]) -> str:
    def cell(part: dict[str, Any], fig: str, digits: int) -> str:
        s = part.get(fig)
        return fmt(s, digits) if s else "-"

    lines = [
        f"{'N':>3} {'mode':<10} {'controller':<9} {'rate/s':<26} {'reply p50 ms':<22} "
        f"{'reply p99 ms':<22} {'done p50 ms':<24} {'done p99 ms':<24}"
    ]
    for row in summary:
        for c in ("learning", "dove"):
            part = row[c]
            lines.append(
                f"{row['switches']:>3} {row['mode']:<10} {c:<9} {cell(part, 'rate_per_s', 0):<26} "
                f"{cell(part, 'reply_p50_ms', 3):<22} {cell(part, 'reply_p99_ms', 3):<22} "
                f"{cell(part, 'done_p50_ms', 3):<24} {cell(part, 'done_p99_ms', 3):<24}"
            )
        ratios = ", ".join(f"{k} {v}" for k, v in row["dove_over_learning"].items())
        lines.append(f"{'':>3} {'':<10} {'dove/ls':<9} {ratios}")
    return "\n".join(lines)


@contextmanager
def bench_environment(agents: int, destinations: int, keep: bool) -> Iterator[Bench]:
    netns = f"dove-ofload-{os.getpid()}"
    directory = Path(tempfile.mkdtemp(prefix=f"{netns}-"))
    bench = Bench(netns, directory, agents, destinations)
    try:
        bench.start()
        yield bench
    finally:
        bench.close()
        if keep:
            log(f"kept logs in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="controller_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 reps of short phases (< 90 s)")
    p.add_argument("--reps", type=int, help="repetitions (default 5; quick 3)")
    p.add_argument("--seconds", type=float, help="timed phase (default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="warm-up (default 1; quick 0.3)")
    p.add_argument("--switches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--modes", nargs="+", choices=("latency", "throughput"),
                   default=["latency", "throughput"])  # fmt: skip
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--destinations", type=int, help="learned destination MACs (default 8; quick 4)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    a = p.parse_args(argv)
    quick = a.quick
    a.reps = a.reps or (3 if quick else 5)
    a.seconds = a.seconds or (1.0 if quick else 3.0)
    a.warmup = a.warmup if a.warmup is not None else (0.3 if quick else 1.0)
    a.destinations = a.destinations or (4 if quick else 8)
    return a


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if os.geteuid() != 0:
        print("controller_bench: needs root (network namespace, ovsdb-server)", file=sys.stderr)
        return 2
    for tool in ("ovsdb-server", "ovsdb-tool", "ovsdb-client", "ovs-vsctl", "ip"):
        if shutil.which(tool) is None:
            print(f"controller_bench: {tool} is not installed", file=sys.stderr)
            return 2
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    agents = max(cfg.switches)
    log(f"setting up: namespace, ovsdb-server, {agents} dove agents, learning switch")
    with bench_environment(agents, cfg.destinations, cfg.keep) as bench:
        log(f"ready after {time.monotonic() - started:.1f} s")
        timeout = cfg.warmup + cfg.seconds + 60
        for n in cfg.switches:
            for rep in range(cfg.reps):
                for mode in cfg.modes:
                    order = ("learning", "dove") if rep % 2 == 0 else ("dove", "learning")
                    for controller in order:
                        before = bench.counters(n) if controller == "dove" else None
                        result = bench.ofload(ofload_args(controller, n, mode, cfg), timeout)
                        sample: dict[str, Any] = {
                            "controller": controller,
                            "switches": n,
                            "mode": mode,
                            "rep": rep,
                            "figures": flatten(result),
                            "result": result,
                        }
                        if before is not None:
                            delta = bench.counters(n)
                            delta.subtract(before)
                            keys = ("packet_in", "learn_requests_sent", "packets_released",
                                    "learned", "openflow_errors", "packet_in_l2_miss")  # fmt: skip
                            sample["agent_counters"] = {k: delta[k] for k in keys}
                        samples.append(sample)
                        f = sample["figures"]
                        log(
                            f"N={n:<2} rep {rep + 1}/{cfg.reps} {mode:<10} {controller:<8} "
                            + (
                                f"ERROR {result['error']}"
                                if "error" in result
                                else f"{f['rate_per_s']:>8.0f}/s reply p50/p99 "
                                f"{f['reply_p50_ms'] or 0:.3f}/{f['reply_p99_ms'] or 0:.3f} ms "
                                f"done p50/p99 {f['done_p50_ms']:.3f}/{f['done_p99_ms']:.3f} ms "
                                f"lost {result.get('lost', 0)}"
                            )
                        )
        peer_stats = dict(bench.peer.stats) if bench.peer else {}
    summary = summarize(samples, cfg.switches, cfg.modes)
    output = {
        "benchmark": "controller packet-in handling (ofload, cbench method)",
        "config": {
            "reps": cfg.reps,
            "seconds": cfg.seconds,
            "warmup": cfg.warmup,
            "switches": cfg.switches,
            "modes": cfg.modes,
            "window_per_switch": cfg.window,
            "destinations": cfg.destinations,
            "cpus": os.cpu_count(),
            "quick": cfg.quick,
        },
        "notes": [
            "dove: one agent per emulated switch (one agent serves one bridge); figures are "
            "the aggregate over N agent processes",
            "learning: one benchmarks.learning_switch process serves all N switches",
            "reply = first flow-mod or packet-out after a packet-in (latency mode only); "
            "done = the packet-out carrying its data",
            "no ovs-vswitchd: OVS's controller_rate_limit (dove's packet_in_rate_limit) "
            "does not apply; the controller alone is measured",
            "generator, controllers and peer share the machine's CPUs",
        ],
        "summary": summary,
        "targets": targets(summary),
        "peer": peer_stats,
        "samples": samples,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(table(summary), file=sys.stderr)
    text = json.dumps(output, indent=1)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    print(text)
    errors = sum(1 for s in samples if "error" in s["result"])
    log(f"done in {output['elapsed_s']} s, {len(samples)} samples, {errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
