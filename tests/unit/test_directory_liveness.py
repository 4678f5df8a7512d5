"""Liveness in directory mode: the reaper's judgement, the agent's members from the rows
marked alive, and what the directory's copy may answer for: only endpoints of live hosts.

A host whose heartbeat stood still is no member any more and the flows towards its
VMs go; its Endpoint rows may stay in the directory.  A miss for one of those VMs is
then not resolved from the copy (lookup, or push whose flows went), which would put
the flows to the dead host back."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dove_ryu.agent.directory import DirectoryView, HostRow, Liveness, LivenessRow, proxy_claim
from dove_ryu.config import ConfigError, from_mapping
from tests.unit.test_core import KEY_HEX, MAC_A, MAC_B, eth, ip, tunnelled
from tests.unit.test_directory import INTERVAL, directory_net, host_rows, push_view, show

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("mode", ["lookup", "push"])
def test_a_miss_is_not_resolved_to_a_host_whose_heartbeat_stopped(mode: str) -> None:
    net = directory_net()
    endpoints = push_view(net).endpoints
    h1 = net.hosts[1]

    def beat(n: int) -> None:
        """The directory at heartbeat ``n``; h2's stopped at 1 (it died)."""
        show(net, DirectoryView(host_rows(net, n, silent=(2,)), endpoints, {5001: mode}))

    beat(1)
    assert h1.core.p.members.serves(5001, ip(2))
    for n in range(2, 7):  # past 3.5 intervals
        net.advance(INTERVAL)
        beat(n)
    assert not h1.core.p.members.serves(5001, ip(2))
    assert h1.core.p.learned.get(5001, MAC_B) is None  # its flows went with it

    seen = net.send(1, 1, eth(MAC_A, MAC_B))

    assert tunnelled(seen) == [] and h1.core.p.learned.get(5001, MAC_B) is None
    assert h1.core.counters.get("resolved_from_directory", 0) == 0


# ------------------------------------------------- the reaper's judgement (pure)


def beats(**heartbeats: int) -> list[LivenessRow]:
    return [LivenessRow(name, n, INTERVAL) for name, n in heartbeats.items()]


def test_a_reaper_judges_dead_a_heartbeat_that_stood_still_three_and_a_half_intervals() -> None:
    judge, now = Liveness(), 100.0
    judge.rows(now, beats(h1=1, h2=1))
    for n in range(2, 5):  # h2's heartbeat stands still from 100 s
        now += INTERVAL
        judge.rows(now, beats(h1=n, h2=1))
        assert judge.dead(now) == set()
    assert judge.next_expiry(now) == 100.0 + 3.5 * INTERVAL
    now = 100.0 + 3.5 * INTERVAL + 0.01

    assert judge.dead(now) == {"h2"}
    judge.rows(now, beats(h1=5, h2=2))  # it came back: a fresh lifetime
    assert judge.dead(now + 3 * INTERVAL) == set()


def test_a_host_with_slower_heartbeats_gets_a_longer_lifetime() -> None:
    judge = Liveness()
    judge.rows(0.0, [LivenessRow("slow", 1, 10.0), LivenessRow("fast", 1, 1.0)])
    assert judge.dead(4.0) == {"fast"}
    assert judge.dead(34.0) == {"fast"} and judge.dead(35.1) == {"fast", "slow"}


def test_a_reaper_started_or_cut_off_gives_every_host_a_fresh_lifetime() -> None:
    judge = Liveness()
    assert judge.dead(1000.0) == set()  # nothing seen yet
    judge.rows(0.0, beats(h1=7))  # a heartbeat it never saw move: a lifetime from now
    assert judge.dead(3 * INTERVAL) == set()
    judge.unreachable()
    assert judge.dead(100.0) == set() and judge.next_expiry(100.0) == math.inf
    judge.rows(100.0, beats(h1=7))  # back, the same heartbeat: judged from now
    assert judge.dead(100.0 + 3 * INTERVAL) == set()
    assert judge.dead(100.0 + 4 * INTERVAL) == {"h1"}


def test_a_row_that_goes_is_not_judged() -> None:
    judge = Liveness()
    judge.rows(0.0, beats(h1=1, h2=1))
    judge.rows(1.0, beats(h1=2))
    assert judge.dead(100.0) == {"h1"}


# ------------------------------------------------- the agent: members from alive rows


def test_an_agent_takes_as_members_the_rows_that_say_alive_and_judges_no_time() -> None:
    net = directory_net()
    h1 = net.hosts[1]
    rows = host_rows(net, 1)
    show(net, DirectoryView(rows))
    net.advance(50 * INTERVAL)  # no heartbeat reaches an agent: nothing expires here
    assert h1.core.p.members.serves(5001, ip(2))

    dead = [r if r.name != "h2" else replace(r, alive=False) for r in rows]
    show(net, DirectoryView(dead))  # a reaper marked h2 dead
    assert not h1.core.p.members.serves(5001, ip(2))
    assert h1.core.status(net.now)["directory"]["alive"] == {str(ip(3)): "h3"}  # type: ignore[index]

    show(net, DirectoryView(rows))  # h2 came back and marked its row alive
    assert h1.core.p.members.serves(5001, ip(2))


def test_a_proxy_claims_above_its_sites_other_proxies_as_it_becomes_active() -> None:
    px1 = HostRow("px1", ip(201), frozenset({5001}), role="proxy", site="s1", claim=3)
    standby = HostRow("px2", ip(202), frozenset(), role="proxy", site="s1", claim=1)
    other_site = HostRow("px9", ip(209), frozenset({5001}), role="proxy", site="s2", claim=8)
    rows = [px1, standby, other_site]

    assert proxy_claim("px2", "s1", frozenset(), rows) == 1  # standby: unchanged
    assert proxy_claim("px2", "s1", frozenset({5001}), rows) == 4  # active now: above px1
    assert proxy_claim("px1", "s1", frozenset({5001, 5002}), rows) == 3  # still active
    assert proxy_claim("px3", "s1", frozenset({5001}), rows) == 4  # a new row, active at once


def test_the_heartbeat_interval_is_announce_intervals_unless_set() -> None:
    base = {"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX}
    directory = {**base, "discovery": "directory", "directory": "tcp:10.99.0.241:6641"}
    assert from_mapping(directory).heartbeat_interval == 2.0
    assert from_mapping({**directory, "announce_interval": "1"}).heartbeat_interval == 1.0
    slow = {**directory, "directory_heartbeat_interval": "10"}
    assert from_mapping(slow).heartbeat_interval == 10.0
    with pytest.raises(ConfigError, match="directory_heartbeat_interval: only with discovery"):
        from_mapping({**base, "directory_heartbeat_interval": "10"})
