"""The impairment relay on real namespaces: two hosts joined only through a relay namespace
(imp1 -- relay -- imp2, no switch). A ping sees the set delay, the relay drops about the
set share, and a stream of numbered UDP datagrams arrives out of order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mininet.net import Mininet
from mininet.topo import Topo

from mininet_topos.emulation import address_probe, new_mininet
from mininet_topos.hypervisor import wait_until
from mininet_topos.impair import Impairment
from mininet_topos.relays import (
    RelayHandle,
    add_relayed_link,
    new_rundir,
    start_relay,
    stop_relays,
)

A, B = "10.77.0.1", "10.77.0.2"
RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777))
s.settimeout(3.0)
seen = []
try:
    while True:
        seen.append(int(s.recv(100).split()[1]))
except socket.timeout:
    pass
print(" ".join(map(str, seen)))
"""
SENDER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(400):
    s.sendto(b"seq %d" % i, ("10.77.0.2", 7777))
    time.sleep(0.002)
"""


class Pair(Topo):
    """imp1's -eth0 through relay imp1r0 to imp2: the relay's far side plays the switch."""

    def build(self) -> None:
        self.addHost("imp1", ip=None)
        self.addHost("imp2", ip=None)
        add_relayed_link(self, "imp1", "imp2", "imp1-eth0")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Mininet, RelayHandle]]:
    net = new_mininet(Pair())
    rundir = new_rundir()
    relays: dict[str, RelayHandle] = {}
    try:
        net.build()
        net.start()
        h1, h2 = net.get("imp1"), net.get("imp2")
        address_probe(h1, f"{A}/24")
        address_probe(h2, f"{B}/24")
        relay = start_relay(net.get("imp1r0"), "imp1", "imp1-eth0", 1500, 13, rundir)
        relays[relay.target] = relay
        assert " 0% packet loss" in h1.cmd(f"ping -c 3 -i 0.2 -W 2 {B}")
        yield net, relay
    finally:
        stop_relays(relays, rundir)
        net.stop()


def test_ping_sees_the_delay(pair: tuple[Mininet, RelayHandle]) -> None:
    net, relay = pair
    relay.set(Impairment(delay_ms=50, jitter_ms=5))
    try:
        out = net.get("imp1").cmd(f"ping -c 5 -i 0.2 -W 2 {B}")
    finally:
        relay.set(Impairment())
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", out)
    assert rtt, out
    assert float(rtt.group(1)) >= 90.0, out  # 50 +- 5 ms each way
    assert float(rtt.group(3)) < 150.0, out


def test_loss_near_the_set_rate(pair: tuple[Mininet, RelayHandle]) -> None:
    net, relay = pair
    before = relay.counts()["ab"]
    relay.set(Impairment(loss=0.2), "ab")
    try:
        out = net.get("imp1").cmd(f"ping -c 300 -i 0.01 -W 1 -q {B}")
    finally:
        after = relay.set(Impairment(), "ab")["ab"]
    dropped = after["dropped"] - before["dropped"]
    offered = dropped + after["forwarded"] - before["forwarded"]
    assert 0.12 < dropped / offered < 0.28, (dropped, offered)
    got = re.search(r"(\d+) received", out)
    assert got, out
    assert 300 - int(got.group(1)) >= dropped * 0.8, out  # the pings really were lost


def test_reordered_stream(pair: tuple[Mininet, RelayHandle], tmp_path: Path) -> None:
    net, relay = pair
    h1, h2 = net.get("imp1"), net.get("imp2")
    (tmp_path / "rx.py").write_text(RECEIVER)
    (tmp_path / "tx.py").write_text(SENDER)
    before = relay.counts()["ab"]["reordered"]
    relay.set(Impairment(delay_ms=5, reorder=0.25, reorder_ms=20), "ab")
    try:
        rx = h2.popen(["python3", str(tmp_path / "rx.py")], text=True)
        wait_until(lambda: ":7777" in h2.cmd("ss -uln"), 5.0, "the receiver bound")
        h1.cmd(f"python3 {tmp_path / 'tx.py'}")
        out, _ = rx.communicate(timeout=30)
    finally:
        after = relay.set(Impairment(), "ab")["ab"]["reordered"]
    seen = [int(x) for x in out.split()]
    assert sorted(seen) == list(range(400))  # nothing lost, nothing twice
    overtaken = sum(1 for k, i in enumerate(seen) if i < max(seen[:k], default=-1))
    assert overtaken >= 40, seen
    assert after - before >= overtaken
