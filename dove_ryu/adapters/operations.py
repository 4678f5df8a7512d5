"""What the operator asks of a running agent: the admin socket's commands, a live key
reload (``dovectl keys reload``, SIGHUP) and the metrics scrape, with the per-table
flow counts it asks the switch for.

The shell owns the threads and the os-ken handlers; this module does their work, with
the app's lock, and uses only what the datapath object carries (its ofproto and parser).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dove_ryu.adapters import metrics, options
from dove_ryu.adapters.directory import DirectoryClient
from dove_ryu.config import ConfigError
from dove_ryu.openflow import cookies
from dove_ryu.openflow.pipeline import BY_NAME, tables_of

LOG = logging.getLogger("dove_ryu.adapters.operations")

TABLE_FLOWS_MAX_AGE = 5.0  # seconds a scrape may show the same per-table flow counts
TABLE_FLOWS_WAIT = 1.0  # seconds a scrape waits for fresh ones (else shows the last)


class Operations:
    def __init__(
        self,
        conf: Any,
        name: str,
        lock: threading.RLock,
        core: Any,
        directory: DirectoryClient | None,
        datapath: Callable[[], Any],
    ) -> None:
        self.conf = conf  # os-ken's parsed configuration: the key settings are read again
        self.name = name
        self.lock = lock
        self.core = core
        self.directory = directory
        self.datapath = datapath  # our bridge's connected switch, or None
        self.table_flows = metrics.TableFlows(TABLE_FLOWS_MAX_AGE)
        self.table_flows_fresh = threading.Event()

    # --------------------------------------------------------------- admin

    def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "reload_keys":
            return self.reload_keys()
        with self.lock:
            if cmd == "status":
                return self.core.status(time.monotonic())  # type: ignore[no-any-return]
            if cmd == "counters":
                counts = dict(self.directory.counts) if self.directory is not None else {}
                return {**self.core.counters, **counts}
            if cmd == "vteps":  # external VTEPs (a host's; docs/interop.md section 2)
                vteps = getattr(self.core.p, "vteps", None)
                counters = self.core.counters
                return {
                    "vteps": vteps.status() if vteps is not None else [],
                    "counters": {k: v for k, v in sorted(counters.items()) if "vtep" in k},
                }
            if cmd == "peers":
                channel = self.core.p.channel
                return {
                    "keys": channel.key_status(),
                    "peers": channel.peers_status(time.monotonic()),
                }
        return {"error": f"unknown command {cmd!r}"}

    # ---------------------------------------------------------------- keys

    def reload_keys(self) -> dict[str, Any]:
        """Read the key settings again from the configuration files and take them
        (``dovectl keys reload``, SIGHUP); a bad key set is refused and the agent keeps
        the keys it has.  The other settings are not re-read: they need a restart."""
        try:
            ring = options.reload_keyring(self.conf)  # file I/O: outside the lock
        except ConfigError as e:
            with self.lock:
                self.core.counters["keys_reload_failed"] += 1
            LOG.error("%s: keys not reloaded (the old ones stay): %s", self.name, e)
            return {"error": f"keys not reloaded (the old ones stay): {e}"}
        with self.lock:
            return self.core.p.channel.rekey(time.monotonic(), ring)  # type: ignore[no-any-return]

    def reload_keys_later(self) -> None:
        """A reload from a signal handler: on a thread of its own, as the handler may
        run while this thread holds the lock."""
        threading.Thread(target=self.reload_keys, name="reload-keys", daemon=True).start()

    # ------------------------------------------------------------- metrics

    def metrics(self) -> metrics.Snapshot:
        """One scrape (on the metrics server's thread): fresh flow counts when due, the
        core's numbers copied under the lock (the collector builds the families outside it)."""
        with self.lock:
            asked = self._ask_table_flows(time.monotonic())
        if asked:
            self.table_flows_fresh.wait(TABLE_FLOWS_WAIT)
        with self.lock:
            return metrics.snapshot(self.core, self.table_flows.counts, self.table_flows.packets)

    def _ask_table_flows(self, now: float) -> bool:
        """Ask the switch how many of our flows each table of the role holds, and how many
        packets the flows of each datapath count handled (call with the lock)."""
        dp = self.datapath()
        if dp is None or not self.table_flows.due(now):
            return False
        ofp, parser = dp.ofproto, dp.ofproto_parser
        questions: list[tuple[metrics.Question, int, int, int]] = [
            (t.name, t.table_id, cookies.OURS << cookies.OURS_SHIFT, cookies.MASK_OURS)
            for t in tables_of(self.core.role)
        ]
        for counted in metrics.counted_for(self.core.role):
            purpose = cookies.Cookie(counted.purpose).value
            mask = cookies.MASK_OURS | cookies.MASK_PURPOSE
            questions.append((counted, BY_NAME[counted.table].table_id, purpose, mask))
        xids: dict[int, metrics.Question] = {}
        for question, table_id, cookie, mask in questions:
            request = parser.OFPAggregateStatsRequest(
                dp,
                flags=0,
                table_id=table_id,
                out_port=ofp.OFPP_ANY,
                out_group=ofp.OFPG_ANY,
                cookie=cookie,
                cookie_mask=mask,
                match=parser.OFPMatch(),
            )
            dp.send_msg(request)  # sets request.xid
            xids[request.xid] = question
        self.table_flows_fresh.clear()
        self.table_flows.asked(now, xids)
        return True

    def aggregate_reply(self, msg: Any) -> None:
        """An answer to one of the scrape's questions (our switch's)."""
        with self.lock:
            last = self.table_flows.answered(msg.xid, msg.body.flow_count, msg.body.packet_count)
        if last:
            self.table_flows_fresh.set()
