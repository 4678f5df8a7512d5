"""A restarted agent takes over its predecessor's flows (docs/control-plane.md, section 1):
adopted state, the new cookie generation, stale state removed only once settled, and
nothing still wanted ever deleted.  On the fake switch, as the other core tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from dove_ryu.agent.endpoints import ADOPTED_IDLE_TIMEOUT
from dove_ryu.agent.host import HostCore
from dove_ryu.agent.takeover import SwitchState, Takeover, pick_generation
from dove_ryu.openflow import cookies
from dove_ryu.openflow.ofmsg import GroupCommand, GroupMod, Output, SetField, order_messages
from dove_ryu.openflow.pipeline import delete_generation_but_learned, group_mod
from dove_ryu.protocol.messages import Announce, decode, encode
from tests.fakeswitch import Flow
from tests.unit.test_core import (
    BROADCAST,
    KEY,
    MAC_A,
    MAC_B,
    TUN,
    Net,
    eth,
    ip,
    local,
    three_hosts,
    tunnelled,
)

pytestmark = pytest.mark.unit


def restart(
    net: Net, n: int, keep: set[str] | None = None, unread: frozenset[str] = frozenset()
) -> HostCore:
    """Host n's agent restarts: a new core over the same switch.  As the shell does, it
    hears OVSDB's ports (those named in ``keep``, or all) before the switch, then takes
    over what the switch holds, less the reads named in ``unread`` ("flows", "groups":
    the switch did not answer them in time).  Nothing is delivered yet."""
    host = net.hosts[n]
    old = host.core
    ports = [p for p in old.p.ports.by_name.values() if keep is None or p.name in keep]
    host.core = HostCore(old.p.cfg, net.now)
    net.apply(host, host.core.ports_changed(net.now, ports))
    found = host.switch.found()
    if "flows" in unread:
        found = replace(found, flows=(), flows_read=False)
    if "groups" in unread:
        found = replace(found, groups=(), groups_read=False)
    net.apply(host, host.core.switch_connected(net.now, TUN, found))
    return host.core


def generations(flows: list[Flow]) -> Counter[int]:
    return Counter(cookies.generation(f.cookie) for f in flows)


def learned_b(net: Net) -> None:
    """a (host 1) learns b (host 2): a learned flow on host 1."""
    net.send(1, 1, eth(MAC_A, MAC_B))
    net.deliver()
    assert net.hosts[1].core.p.learned.get(5001, MAC_B) is not None


def test_generations_pick_the_one_after_the_most_common_skipping_those_present() -> None:
    assert pick_generation(Counter()) == 0  # a fresh start: cookies as they always were
    assert pick_generation(Counter({0: 40})) == 1
    assert pick_generation(Counter({3: 40, 4: 2})) == 5  # a crash mid-sweep left 4
    assert pick_generation(Counter({15: 9})) == 0
    assert pick_generation(Counter({0: 1, 1: 30})) == 2


def test_generation_stays_out_of_decoding_and_targeted_deletes() -> None:
    cookie = cookies.Cookie(cookies.Purpose.LEARNED, 5001, 0x201)
    later = cookies.with_generation(cookie.value, 7)
    assert cookies.decode(later) == cookie and cookies.generation(later) == 7
    assert later & cookies.MASK_EXACT == cookie.value & cookies.MASK_EXACT
    assert cookies.generation(0xAB00000000000000) is None  # not ours


def test_a_restart_adopts_what_the_switch_knows_and_deletes_nothing() -> None:
    net = three_hosts()
    learned_b(net)
    h1 = net.hosts[1]
    before = len(h1.switch.flows())
    h1.switch.deleted.clear()

    core = restart(net, 1)

    assert core.p.takeover.generation == 1
    assert h1.switch.deleted == []  # replaced in place, never deleted
    assert len(h1.switch.flows()) == before
    assert set(generations(h1.switch.flows())) == {1}
    adopted = core.p.learned.get(5001, MAC_B)
    assert adopted is not None and adopted.endpoint.host == ip(2)
    assert set(core.p.members.hosts(5001)) == {ip(2)}
    # Forwarding and flooding are whole before any peer spoke: no packet-in.
    punted = len(net.packet_ins)
    assert [s.delivery.tun_dst for s in tunnelled(net.send(1, 1, eth(MAC_A, MAC_B)))] == [
        str(ip(2))
    ]
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(1, 2), (2, 1)]
    assert len(net.packet_ins) == punted


def test_peers_answer_a_new_incarnation_at_once() -> None:
    net = three_hosts()
    net.sent.clear()
    restart(net, 1)
    net.advance(0.1)  # the restarted host announces on its first tick

    answers = [s for s in net.sent if s.dst == ip(1) and isinstance(s.message, Announce)]
    assert {s.src for s in answers} == {ip(2), ip(3)}
    assert all(s.message.incarnation for s in answers)


def test_stale_flows_and_groups_go_only_once_settled() -> None:
    """x (the only VM of 5002 on host 1) and a2 went while the agent was away: their
    flows and 5002's group stay until every adopted member announced again."""
    net = three_hosts()
    learned_b(net)
    h1 = net.hosts[1]
    h1.switch.deleted.clear()

    core = restart(net, 1, keep={"a"})

    assert h1.switch.deleted == [] and 5002 in h1.switch.groups
    assert generations(h1.switch.flows())[0] > 0  # x's and a2's flows, still there
    assert core.p.takeover.settling

    net.advance(0.2)  # announcements both ways: every member heard

    assert not core.p.takeover.settling
    assert set(generations(h1.switch.flows())) == {1}
    assert 5002 not in h1.switch.groups and 5001 in h1.switch.groups
    wanted = {(f.table_id, f.priority, tuple(sorted(f.match.items()))) for f in h1.switch.flows()}
    for gone in h1.switch.deleted:
        assert cookies.generation(gone.cookie) == 0
        assert (gone.table_id, gone.priority, tuple(sorted(gone.match.items()))) not in wanted
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(2, 1)]


def test_a_silent_member_holds_the_sweep_until_the_grace_time() -> None:
    net = three_hosts()
    h1 = net.hosts[1]
    silent = net.hosts.pop(2)  # host 2 hears nothing and says nothing
    core = restart(net, 1, keep={"a"})
    net.advance(1.0)
    assert core.p.takeover.settling and ip(2) in core.p.takeover.waiting_for
    net.advance(3.5)  # past 2 announce intervals (2 s each)
    assert not core.p.takeover.settling
    assert set(generations(h1.switch.flows())) == {1}
    net.hosts[2] = silent


def test_a_crash_mid_sweep_leaves_two_generations_the_next_start_sweeps_both() -> None:
    net = three_hosts()
    learned_b(net)
    h1 = net.hosts[1]
    restart(net, 1, keep={"a"})  # generation 1, stale generation-0 flows left
    # It dies before settling (or halfway through its deletes): two generations.
    assert set(generations(h1.switch.flows())) == {0, 1}
    h1.switch.deleted.clear()

    core = restart(net, 1, keep={"a"})

    assert core.p.takeover.generation == 2
    assert h1.switch.deleted == []
    net.advance(0.2)
    assert set(generations(h1.switch.flows())) == {2}
    punted = len(net.packet_ins)
    assert tunnelled(net.send(1, 1, eth(MAC_A, MAC_B)))
    assert len(net.packet_ins) == punted


def test_groups_that_exist_are_modified_not_added() -> None:
    net = three_hosts()
    h1 = net.hosts[1]
    core = HostCore(h1.core.p.cfg, net.now)
    net.apply(h1, core.ports_changed(net.now, list(h1.core.p.ports.by_name.values())))
    out = core.switch_connected(net.now, TUN, h1.switch.found())
    commands = {m.group_id: m.command.value for m in out.ofmsgs if hasattr(m, "group_id")}
    assert commands == {5001: "modify", 5002: "modify"}
    h1.switch.apply(order_messages(out.ofmsgs, core.p.takeover.generation))
    assert not h1.switch.errors


def test_groups_not_read_are_added_or_modified_and_lose_their_stale_buckets() -> None:
    """The switch did not answer the group read in time: an add of a group it holds
    would fail (GROUP_EXISTS) and leave the predecessor's buckets flooding to a host
    that left; add-or-modify replaces them, and the flood flows stay."""
    net = three_hosts()
    h1 = net.hosts[1]
    stale = (SetField("tunnel_id", 5001), SetField("tun_ipv4_dst", "10.9.9.9"), Output(TUN))
    h1.switch.groups[5001] = (*h1.switch.groups[5001], stale)
    h1.switch.deleted.clear()

    core = restart(net, 1, unread=frozenset({"groups"}))

    assert not h1.switch.errors
    assert stale not in h1.switch.groups[5001]
    assert h1.switch.deleted == []
    assert core.p.takeover.generation == 1  # the flows were read: as ever
    seen = net.send(1, 1, eth(MAC_A, BROADCAST))
    assert local(seen) == [(1, 2)] and not tunnelled(seen)  # members come from the groups
    net.advance(0.2)  # announcements both ways: host 2 is a member again
    seen = net.send(1, 1, eth(MAC_A, BROADCAST))
    assert local(seen) == [(1, 2), (2, 1)]
    assert "10.9.9.9" not in {s.delivery.tun_dst for s in tunnelled(seen)}


def test_takeover_install_when_groups_were_not_read() -> None:
    takeover = Takeover(grace=4.0)
    takeover.begin(0.0, SwitchState(groups_read=False), [])
    out = takeover.install([group_mod(5001, GroupCommand.ADD), group_mod(7, GroupCommand.DELETE)])
    assert [m.command for m in out if isinstance(m, GroupMod)] == [
        GroupCommand.ADD_OR_MODIFY,
        GroupCommand.DELETE,
    ]
    takeover.begin(1.0, SwitchState(), [])  # the next take-over read them: plain adds again
    assert takeover.install([group_mod(5001, GroupCommand.ADD)]) == [
        group_mod(5001, GroupCommand.ADD)
    ]


def test_flows_not_read_make_every_other_generation_stale() -> None:
    """Which generation the predecessor used is unknown: the sweep deletes every
    generation but the new one, and the new one is not the one we had."""
    takeover = Takeover(grace=4.0)
    takeover.begin(0.0, SwitchState(), [])
    assert takeover.generation == 0
    takeover.begin(0.0, SwitchState(flows_read=False), [])
    assert takeover.generation == 1
    assert takeover.settling
    assert takeover.stale_generations == set(range(cookies.GENERATIONS)) - {1}
    assert takeover.sweep(4.0, ()) == [
        m for g in range(16) if g != 1 for m in delete_generation_but_learned(g)
    ]


def test_a_predecessor_generation_goes_though_its_flows_were_not_read() -> None:
    """Two restarts leave generation 2's flows; a third start that cannot read them
    installs under generation 1 (a new process's next) and, once settled, sweeps
    generation 2's leftovers: x's flows (its port went while the agent was away)."""
    net = three_hosts()
    learned_b(net)
    h1 = net.hosts[1]
    restart(net, 1)  # generation 1
    net.advance(0.2)
    restart(net, 1)  # generation 2
    net.advance(0.2)
    assert set(generations(h1.switch.flows())) == {2}

    core = restart(net, 1, keep={"a", "a2"}, unread=frozenset({"flows"}))

    assert core.p.takeover.generation == 1
    assert set(generations(h1.switch.flows())) == {1, 2}  # nothing deleted yet
    net.advance(4.5)  # past the grace time (the adopted members were never read)

    assert not core.p.takeover.settling
    assert set(generations(h1.switch.flows())) == {1}
    assert not h1.switch.errors
    decoded = [cookies.decode(f.cookie) for f in h1.switch.flows()]
    assert not [d for d in decoded if d is not None and d.instance == 5002]
    assert 5002 not in h1.switch.groups
    assert local(net.send(1, 1, eth(MAC_A, BROADCAST))) == [(1, 2), (2, 1)]


def test_sequence_numbers_keep_growing_across_a_restart() -> None:
    net = three_hosts()
    before = net.hosts[1].core.p.ports.seq(5001, MAC_A)
    core = restart(net, 1)
    assert core.p.ports.seq(5001, MAC_A) > before


def test_incarnation_travels_in_an_announcement() -> None:
    msg = Announce(frozenset({5001}), incarnation=1_700_000_000_123_456)
    data = encode(msg, receiver=ip(2), sender=ip(1), counter=1, key=KEY)
    assert decode(data, key=KEY).message == msg
    plain = encode(Announce(frozenset({5001})), receiver=ip(2), sender=ip(1), counter=2, key=KEY)
    assert decode(plain, key=KEY).message.incarnation is None  # type: ignore[union-attr]


def test_an_adopted_endpoint_ages_out_soon_unless_its_host_confirms_it() -> None:
    """Its VM may have stopped or moved while no agent listened: adopted, it is kept
    only while traffic uses it; an announcement from its host makes it learned again."""
    net = three_hosts()
    learned_b(net)
    h1 = net.hosts[1]
    core = restart(net, 1)
    learned = [f for f in h1.switch.flows() if f.match.get("eth_dst") == MAC_B]
    assert [f.idle_timeout for f in learned] == [ADOPTED_IDLE_TIMEOUT]
    assert core.p.learned.get(5001, MAC_B).adopted  # type: ignore[union-attr]

    (flow,) = h1.switch.expire(lambda f: f.match.get("eth_dst") == MAC_B)
    net.apply(h1, core.flow_removed(net.now, flow.cookie, dict(flow.match), True, 0.0))
    assert core.p.learned.get(5001, MAC_B) is None  # forgotten: the next packet asks
    learned_b(net)
    entry = core.p.learned.get(5001, MAC_B)
    assert entry is not None and not entry.adopted
    learned = [f for f in h1.switch.flows() if f.match.get("eth_dst") == MAC_B]
    assert [f.idle_timeout for f in learned] == [core.p.cfg.learning.learn_idle_timeout]


def test_a_restarted_host_announces_nothing_before_it_knows_its_ports() -> None:
    """Announcing "no instances" before OVSDB spoke made peers drop it for a moment."""
    net = three_hosts()
    old = net.hosts[2].core
    core = HostCore(old.p.cfg, net.now)
    assert core.tick(net.now).datagrams == []
    sent = core.ports_changed(net.now, list(old.p.ports.by_name.values())).datagrams
    sent += core.tick(net.now).datagrams
    assert sent and all(decode(d.payload, key=KEY).message.instances for d in sent)  # type: ignore[union-attr]


def test_a_vm_back_before_the_sweep_finds_its_instance_group_without_an_error() -> None:
    """A VM left while its agent restarted and comes back before the sweep: its instance's
    group is still the predecessor's, so the group is added or modified (a plain add
    failed with GROUP_EXISTS and kept the old buckets until the next change)."""
    net = three_hosts()
    h1 = net.hosts[1]
    ports = list(h1.core.p.ports.by_name.values())
    alone = next(p for p in ports if sum(q.instance == p.instance for q in ports) == 1)
    core = restart(net, 1, keep={p.name for p in ports if p is not alone})
    assert core.p.takeover.settling
    assert alone.instance in h1.switch.groups  # the predecessor's, not yet swept

    net.apply(h1, core.ports_changed(net.now, ports))

    assert not h1.switch.errors
    assert core.p.takeover.settling
