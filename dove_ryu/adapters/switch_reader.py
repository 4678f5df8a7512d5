"""Reading what the switch holds before the core takes it over (docs/control-plane.md,
section 1): our flows (the cookie marker) and the groups, each over one or more
replies, or what did come once the switch has not answered in READ_TIMEOUT.

The shell's os-ken handlers hand the replies here (the `@set_ev_cls` decorators stay
on the app); this module uses only what the datapath object carries (its ofproto and
parser) and `of_osken`'s converters.  Call everything with the app's lock.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from dove_ryu.adapters.of_osken import found_flow, found_group
from dove_ryu.agent.takeover import FoundFlow, FoundGroup, SwitchState
from dove_ryu.openflow import cookies

LOG = logging.getLogger("dove_ryu.adapters.switch_reader")

READ_TIMEOUT = 3.0  # seconds the take-over waits for the switch's flows and groups


class SwitchReader:
    """One read of a switch at a time; ``found`` holds the result until taken.

    Replies are matched by datapath and transaction id: a late reply to an earlier
    read (one that timed out, or was superseded by a resync) never fills this one."""

    def __init__(self, name: str, counters: MutableMapping[str, int]) -> None:
        self.name = name
        self.counters = counters
        self.dp: Any = None  # the datapath being read
        self.since = 0.0
        self.flows_xid: int | None = None
        self.groups_xid: int | None = None
        self.flows: list[FoundFlow] | None = None  # None: not (wholly) answered yet
        self.groups: list[FoundGroup] | None = None
        self._flows_part: list[FoundFlow] = []
        self._groups_part: list[FoundGroup] = []
        self.found: SwitchState | None = None

    def reading(self, dp: Any) -> bool:
        return self.dp is not None and self.dp is dp

    def start(self, dp: Any, now: float) -> None:
        """Ask ``dp`` for our flows and its groups; the take-over waits for both."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.dp, self.since, self.found = dp, now, None
        self.flows, self.groups = None, None
        self._flows_part, self._groups_part = [], []
        flows = parser.OFPFlowStatsRequest(
            dp,
            0,
            ofp.OFPTT_ALL,
            ofp.OFPP_ANY,
            ofp.OFPG_ANY,
            cookies.MARKER << cookies.MARKER_SHIFT,
            cookies.MASK_OURS,
            parser.OFPMatch(),
        )
        groups = parser.OFPGroupDescStatsRequest(dp, 0)
        self.flows_xid = dp.set_xid(flows)
        self.groups_xid = dp.set_xid(groups)
        dp.send_msg(flows)
        dp.send_msg(groups)

    def _ours(self, msg: Any, xid: int | None) -> bool:
        if self.dp is None or msg.datapath is not self.dp:
            return False
        if msg.xid != xid:
            LOG.debug("%s: a reply to an earlier read (xid %d) ignored", self.name, msg.xid)
            return False
        return True

    def flow_reply(self, msg: Any) -> bool:
        """A part of the flow stats reply; True once the whole read is in."""
        if not self._ours(msg, self.flows_xid) or self.flows is not None:
            return False
        self._flows_part += [found_flow(s) for s in msg.body]
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return False
        self.flows = self._flows_part
        return self._done()

    def group_reply(self, msg: Any) -> bool:
        """A part of the group description reply; True once the whole read is in."""
        if not self._ours(msg, self.groups_xid) or self.groups is not None:
            return False
        self._groups_part += [found_group(g) for g in msg.body]
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return False
        self.groups = self._groups_part
        return self._done()

    def overdue(self, now: float, current: Any) -> bool:
        """Has the switch not answered in READ_TIMEOUT?  Then settle for what did come
        (True: ``found`` is set, marked incomplete): the core adds-or-modifies groups it
        could not read and sweeps every other generation when flows went unread, and
        flushes nothing."""
        if self.dp is None or now - self.since < READ_TIMEOUT:
            return False
        if self.dp is not current:  # that switch went: nothing to program
            self.dp = None
            return False
        self.counters["takeover_read_timeouts"] += 1
        LOG.error(
            "%s: the switch did not answer the take-over's reads in %.0f s (flows %s, "
            "groups %s): programming it from our own state, no flush",
            self.name,
            READ_TIMEOUT,
            "read" if self.flows is not None else "unanswered",
            "read" if self.groups is not None else "unanswered",
        )
        return self._done(timed_out=True)

    def _done(self, timed_out: bool = False) -> bool:
        if not timed_out and (self.flows is None or self.groups is None):
            return False
        self.found = SwitchState(
            tuple(self.flows or ()),
            tuple(self.groups or ()),
            flows_read=self.flows is not None,
            groups_read=self.groups is not None,
        )
        self.dp = None
        self.flows_xid = self.groups_xid = None
        LOG.info(
            "%s: the switch holds %d of our flows and %d groups",
            self.name,
            len(self.found.flows),
            len(self.found.groups),
        )
        return True

    def take(self) -> SwitchState | None:
        """What was read, once (None: the read is not in)."""
        found, self.found = self.found, None
        return found
