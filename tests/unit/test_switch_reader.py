"""The take-over's read of the switch (`dove_ryu.adapters.switch_reader`): replies are
matched by request, and a read the switch does not answer in time ends incomplete."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dove_ryu.adapters.switch_reader import READ_TIMEOUT, SwitchReader

pytestmark = pytest.mark.unit


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def __init__(self) -> None:
        self.xid = 0
        self.sent: list[Any] = []

    def set_xid(self, msg: Any) -> int:
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)


@dataclass
class Reply:
    datapath: FakeDatapath
    xid: int
    flags: int = 0
    body: list[Any] = field(default_factory=list)


def requests(dp: FakeDatapath) -> tuple[int, int]:
    flows, groups = dp.sent[-2:]
    assert isinstance(flows, parser.OFPFlowStatsRequest)
    assert isinstance(groups, parser.OFPGroupDescStatsRequest)
    return flows.xid, groups.xid


def test_both_reads_in_every_part_make_the_state() -> None:
    dp, reader = FakeDatapath(), SwitchReader("h1", Counter())
    reader.start(dp, 0.0)
    flows, groups = requests(dp)
    assert not reader.flow_reply(Reply(dp, flows, ofp.OFPMPF_REPLY_MORE))
    assert not reader.flow_reply(Reply(dp, flows))
    assert reader.found is None
    assert reader.group_reply(Reply(dp, groups))
    found = reader.take()
    assert found is not None and found.complete
    assert reader.take() is None and not reader.reading(dp)


def test_a_late_reply_to_an_earlier_read_does_not_fill_the_new_one() -> None:
    """The first read timed out (or a resync read again): its answer, late, is not
    the new read's, which waits for its own."""
    dp, reader = FakeDatapath(), SwitchReader("h1", Counter())
    reader.start(dp, 0.0)
    old_flows, old_groups = requests(dp)
    reader.start(dp, 1.0)
    flows, groups = requests(dp)

    assert not reader.flow_reply(Reply(dp, old_flows))
    assert not reader.group_reply(Reply(dp, old_groups))
    assert reader.flows is None and reader.groups is None
    assert not reader.group_reply(Reply(dp, flows))  # not the group read's xid either
    assert not reader.flow_reply(Reply(dp, flows))
    assert reader.group_reply(Reply(dp, groups))
    # A repeated last part once the read is in changes nothing.
    assert not reader.flow_reply(Reply(dp, flows))
    found = reader.take()
    assert found is not None and found.complete


def test_another_switchs_reply_is_not_ours() -> None:
    dp, other, reader = FakeDatapath(), FakeDatapath(), SwitchReader("h1", Counter())
    reader.start(dp, 0.0)
    flows, _ = requests(dp)
    assert not reader.flow_reply(Reply(other, flows))
    assert reader.flows is None


def test_a_read_not_answered_in_time_ends_incomplete() -> None:
    counters: Counter[str] = Counter()
    dp, reader = FakeDatapath(), SwitchReader("h1", counters)
    reader.start(dp, 10.0)
    flows, groups = requests(dp)
    assert not reader.flow_reply(Reply(dp, flows))
    assert not reader.overdue(10.0 + READ_TIMEOUT - 0.1, dp)

    assert reader.overdue(10.0 + READ_TIMEOUT, dp)

    found = reader.take()
    assert found is not None and found.flows_read and not found.groups_read
    assert counters["takeover_read_timeouts"] == 1
    assert not reader.group_reply(Reply(dp, groups))  # too late: ignored
    assert not reader.overdue(20.0, dp)


def test_a_read_of_a_switch_that_went_is_dropped() -> None:
    counters: Counter[str] = Counter()
    dp, reader = FakeDatapath(), SwitchReader("h1", counters)
    reader.start(dp, 0.0)
    assert not reader.overdue(READ_TIMEOUT, None)
    assert not reader.reading(dp) and reader.take() is None
    assert counters["takeover_read_timeouts"] == 0
