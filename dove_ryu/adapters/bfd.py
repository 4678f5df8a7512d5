"""BFD tunnel ports towards a proxy's (or a gateway's) HA partners.

An agent's hellos say that the agent is there; whether its datapath still forwards is
told by BFD, which ovs-vswitchd runs itself, so a restarting agent does not stop it
(agent/election.py).  Each partner gets one VXLAN port on the bridge:

    type=vxlan options:remote_ip=<partner> options:key=BFD_VNI bfd:enable=true ...

marked ``external_ids:dove-bfd=<partner>``.  OVS gives a tunnel packet to the port that
matches it most closely: a port with a fixed key wins over the flow-based tunnel port, so
only the partner's packets under BFD_VNI (a VNI no instance may use, model.BFD_VNI) reach
this port, and every other tunnel packet still arrives on the flow-based one.  OVS
consumes the BFD control packets itself (they never reach an OpenFlow table); nothing
else is ever sent under BFD_VNI.  The watcher (adapters/ovsdb.py) reads each port's
``bfd_status:state``.

Ports are added and removed from a worker thread (``ovs-vsctl`` may take a while on a
big database), never while the core is still listening after a start: removing a port a
partner's session runs over would bring BFD down and fail the site over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address

from dove_ryu.config import DoveConfig
from dove_ryu.model import BFD_VNI

LOG = logging.getLogger("dove_ryu.adapters.bfd")

EXT_BFD = "dove-bfd"
VXLAN_UDP_PORT = 4789
# BFD every 100 ms each way, down after 3 missed (BFD's default multiplier): a dead
# datapath is seen in 0.3 s, well inside the 0.7 s dead interval of the default hellos.
BFD_MIN_TX_MS = 100
BFD_MIN_RX_MS = 100
RETRY_SECONDS = 1.0  # the same change is not tried again sooner


def port_name(partner: IPv4Address) -> str:
    """``dbfd`` and the address in hex: 12 characters, within any interface name limit."""
    return f"dbfd{int(partner):08x}"


def port_args(cfg: DoveConfig, partner: IPv4Address) -> list[str]:
    """ovs-vsctl arguments that make (or leave) the BFD port towards ``partner``."""
    name = port_name(partner)
    # A proxy has two legs: the source is the route's, as for its flow-based port.
    local = [] if cfg.role == "proxy" else [f"options:local_ip={cfg.host.underlay_ip}"]
    return [
        "--", "--may-exist", "add-port", cfg.host.bridge, name,
        "--", "set", "Interface", name, "type=vxlan",
        f"options:remote_ip={partner}", f"options:key={BFD_VNI}",
        f"options:dst_port={VXLAN_UDP_PORT}", *local,
        "bfd:enable=true", f"bfd:min_tx={BFD_MIN_TX_MS}", f"bfd:min_rx={BFD_MIN_RX_MS}",
        f"external_ids:{EXT_BFD}={partner}",
    ]  # fmt: skip


def change_args(
    cfg: DoveConfig, want: frozenset[IPv4Address], have: Mapping[IPv4Address, str]
) -> list[str]:
    """One transaction that adds the missing ports and removes those of partners gone."""
    args: list[str] = []
    for partner in sorted(want - set(have)):
        args += port_args(cfg, partner)
    for partner in sorted(set(have) - want):
        args += ["--", "--if-exists", "del-port", cfg.host.bridge, have[partner]]
    return args


class BfdPorts:
    """Keeps the bridge's BFD ports on the partners the core names (`ha_partners`)."""

    def __init__(self, cfg: DoveConfig, vsctl: Callable[..., str]) -> None:
        self.cfg = cfg
        self.vsctl = vsctl  # adapters.ovsdb's ovs-vsctl runner: (cfg, *args) -> str
        self.busy = threading.Lock()
        self.tried: tuple[frozenset[IPv4Address], frozenset[IPv4Address]] | None = None
        self.tried_at = 0.0

    def reconcile(
        self, want: frozenset[IPv4Address] | None, have: Mapping[IPv4Address, str]
    ) -> None:
        """Start a change if the bridge's ports are not those wanted (None: leave them)."""
        if want is None:
            return
        args = change_args(self.cfg, want, have)
        if not args:
            return
        key = (want, frozenset(have))
        now = time.monotonic()
        if key == self.tried and now < self.tried_at + RETRY_SECONDS:
            return  # applied, the watcher has not reported it yet (or it failed: retry)
        if not self.busy.acquire(blocking=False):
            return
        self.tried, self.tried_at = key, now
        threading.Thread(target=self._apply, args=(want, have, args), daemon=True).start()

    def _apply(
        self, want: frozenset[IPv4Address], have: Mapping[IPv4Address, str], args: list[str]
    ) -> None:
        try:
            self.vsctl(self.cfg, *args)
            added = sorted(map(str, want - set(have)))
            removed = sorted(map(str, set(have) - want))
            LOG.info("%s: BFD ports: added %s, removed %s", self.cfg.name, added, removed)
        except Exception as e:  # noqa: BLE001 - an OVSDB hiccup: tried again
            LOG.error("%s: BFD ports: %s", self.cfg.name, e)
        finally:
            self.busy.release()
