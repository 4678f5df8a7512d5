"""A plain MAC-learning switch on os-ken, the behaviour of Ryu's simple_switch_13,
written here as the controller peer of the benchmarks.

    python -m benchmarks.learning_switch --ofp-tcp-listen-port 6653 [--log-file F]

Per switch it learns source MACs from packet-ins, installs (in_port, eth_dst) ->
output flows for known destinations, floods unknown ones, and sends every
punted packet back out with a packet-out.  No instances, no overlay logic.
"""

from __future__ import annotations

import logging
import signal
import struct
import sys
import warnings
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

LOG = logging.getLogger("learning_switch")


class LearningSwitch(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[bytes, int]] = {}
        self.packet_ins = 0

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[misc]
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        # Table-miss: everything unknown goes to the controller, whole.
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self._add_flow(dp, 0, parser.OFPMatch(), actions)

    def _add_flow(self, dp: Any, priority: int, match: Any, actions: list[Any]) -> None:
        parser, ofp = dp.ofproto_parser, dp.ofproto
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(
            parser.OFPFlowMod(datapath=dp, priority=priority, match=match, instructions=inst)
        )

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[misc]
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        self.packet_ins += 1
        data = bytes(msg.data)
        if len(data) < 14:
            return
        dst, src = data[0:6], data[6:12]
        (eth_type,) = struct.unpack_from("!H", data, 12)
        if eth_type == 0x88CC:  # LLDP is not forwarded
            return
        in_port = msg.match["in_port"]
        table = self.mac_to_port.setdefault(dp.id, {})
        table[src] = in_port
        out_port = table.get(dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=":".join(f"{b:02x}" for b in dst))
            self._add_flow(dp, 1, match, actions)
        dp.send_msg(
            parser.OFPPacketOut(
                datapath=dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=in_port,
                actions=actions,
                data=data,
            )
        )


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from os_ken import cfg, log

    log.early_init_log(logging.INFO)
    import os_ken.base.app_manager  # noqa: F401  the --ofp-* flags

    from dove_ryu.adapters.launcher import raise_keyboard_interrupt, run_apps

    conf = cfg.CONF
    conf.set_default("ofp_listen_host", "127.0.0.1")
    conf(
        args=sys.argv[1:] if argv is None else argv,
        project="dove-ryu",
        prog="learning-switch",
        default_config_files=[],
    )
    log.init_log()
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    return run_apps(["benchmarks.learning_switch", "os_ken.controller.ofp_handler"])


if __name__ == "__main__":
    sys.exit(main())
