"""benchmarks.ofload: its OpenFlow encoding (checked with os-ken's parser) and its two
modes against a tiny in-process controller."""

from __future__ import annotations

import asyncio
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmarks import ofload
from benchmarks.ofload import LoadConfig, run_load

pytestmark = pytest.mark.unit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from os_ken.ofproto import ofproto_parser
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = None

    def set_xid(self, msg: Any) -> None:
        msg.xid = 1


def parse(buf: bytes) -> Any:
    version, msg_type, length, xid = ofproto_parser.header(buf)
    assert length == len(buf)
    return ofproto_parser.msg(FakeDatapath(), version, msg_type, length, xid, buf)


# ----------------------------------------------------------------- encoding


def test_packet_in_round_trips_through_os_ken() -> None:
    frame, offset = ofload.build_frame("02:00:00:00:00:01", "02:00:00:01:00:07", switch=3, seq=42)
    cookie = 0xD008001389000002
    msg = parse(ofload.pack_packet_in(9, frame, in_port=2, table_id=40, cookie=cookie))
    assert isinstance(msg, parser.OFPPacketIn)
    assert msg.xid == 9
    assert msg.buffer_id == ofp.OFP_NO_BUFFER
    assert msg.reason == ofp.OFPR_ACTION
    assert (msg.table_id, msg.cookie) == (40, cookie)
    assert msg.match["in_port"] == 2
    assert msg.total_len == len(frame) == ofload.MIN_FRAME
    assert bytes(msg.data) == frame
    assert ofload.frame_tag(msg.data, offset) == (3, 42)
    # The frame itself: Ethernet to the destination, IPv4/UDP.
    assert frame[0:6] == bytes.fromhex("020000010007")
    assert struct.unpack_from("!H", frame, 12)[0] == ofload.ETH_TYPE_IPV4


def test_arp_packet_in_carries_an_arp_request_with_the_tag_in_the_padding() -> None:
    frame, offset = ofload.build_frame(
        "02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", switch=1, seq=7, arp_target="10.0.0.9"
    )
    msg = parse(ofload.pack_packet_in(1, frame, in_port=5, reason=ofload.OFPR_NO_MATCH))
    assert msg.reason == ofp.OFPR_NO_MATCH and msg.match["in_port"] == 5
    from os_ken.lib.packet import arp, packet

    pkt = packet.Packet(bytes(msg.data))
    request = pkt.get_protocol(arp.arp)
    assert request.opcode == arp.ARP_REQUEST and request.dst_ip == "10.0.0.9"
    assert ofload.frame_tag(msg.data, offset) == (1, 7)


def test_handshake_replies_parse_with_os_ken() -> None:
    features = parse(ofload.pack_features_reply(5, 0xD0BE))
    assert isinstance(features, parser.OFPSwitchFeatures)
    assert (features.xid, features.datapath_id, features.n_tables) == (5, 0xD0BE, 254)
    ports = parse(ofload.pack_multipart_reply(6, ofp.OFPMP_PORT_DESC, ofload.port_desc_body(2)))
    assert isinstance(ports, parser.OFPPortDescStatsReply)
    assert [p.port_no for p in ports.body] == [1, 2]
    assert ports.body[0].name == b"s2-eth1" and ports.flags == 0
    desc = parse(ofload.pack_multipart_reply(7, ofp.OFPMP_DESC, ofload.desc_body(0xD0BE)))
    assert desc.body.serial_num == b"000000000000d0be"
    hello = parse(ofload.pack_hello())
    assert hello.elements[0].versions == [ofp.OFP_VERSION]


def test_packet_out_data_is_read_from_an_os_ken_packet_out() -> None:
    frame, offset = ofload.build_frame("02:00:00:00:00:01", "02:00:00:00:00:02", seq=11)
    out = parser.OFPPacketOut(
        FakeDatapath(),
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=2,
        actions=[parser.OFPActionOutput(ofp.OFPP_TABLE), parser.OFPActionOutput(3)],
        data=frame,
    )
    out.serialize()
    data = ofload.packet_out_data(bytes(out.buf))
    assert bytes(data) == frame
    assert ofload.frame_tag(data, offset) == (0, 11)


def test_summary_percentiles_are_nearest_rank() -> None:
    summary = ofload.summarize([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert summary is not None
    assert (summary["n"], summary["p50"], summary["p99"]) == (100, 50.0, 99.0)
    assert (summary["min"], summary["max"], summary["mean"]) == (1.0, 100.0, 50.5)
    assert ofload.summarize([]) is None


# ----------------------------------------------------------------- a fake controller


@dataclass
class FakeController:
    """Says hello, asks for features and port descriptions, answers each packet-in
    with (optionally a flow-mod and) a packet-out carrying the packet."""

    flow_mod: bool = True
    packet_out: bool = True
    dpids: list[int] = field(default_factory=list)
    packet_ins: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(ofload.pack_hello())
        writer.write(ofload.pack_message(ofload.OFPT_FEATURES_REQUEST, 100))
        try:
            while True:
                head = await reader.readexactly(ofload.HEADER_LEN)
                _, msg_type, length, xid = ofload.HEADER.unpack(head)
                body = await reader.readexactly(length - ofload.HEADER_LEN)
                if msg_type == ofload.OFPT_FEATURES_REPLY:
                    self.dpids.append(struct.unpack_from("!Q", body)[0])
                    request = struct.pack("!HH4x", ofload.OFPMP_PORT_DESC, 0)
                    writer.write(ofload.pack_message(ofload.OFPT_MULTIPART_REQUEST, 101, request))
                    # And an echo and a barrier, which must be answered.
                    writer.write(ofload.pack_message(ofload.OFPT_ECHO_REQUEST, 102, b"hi"))
                    writer.write(ofload.pack_message(ofload.OFPT_BARRIER_REQUEST, 103))
                elif msg_type == ofload.OFPT_PACKET_IN:
                    self.packet_ins += 1
                    writer.write(self._answer(head + body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, msg: bytes) -> bytes:
        (match_len,) = struct.unpack_from("!H", msg, 26)
        in_port = struct.unpack_from("!I", msg, 32)[0]
        data = msg[24 + (match_len + 7) // 8 * 8 + 2 :]
        out = b""
        if self.flow_mod:
            out += ofload.pack_message(ofload.OFPT_FLOW_MOD, 0, bytes(48))
        if self.packet_out:
            action = struct.pack("!HHIH6x", 0, 16, ofp.OFPP_TABLE, 0xFFFF)
            fixed = struct.pack("!IIH6x", ofp.OFP_NO_BUFFER, in_port, len(action))
            out += ofload.pack_message(ofload.OFPT_PACKET_OUT, 0, fixed + action + data)
        return out


def run_against(controller: FakeController, **kwargs: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        port = await controller.start()
        try:
            cfg = LoadConfig(
                port=port,
                seconds=0.3,
                warmup=0.1,
                quiet=0.05,
                dpid_base=0x10,
                dsts=("02:00:00:00:00:02", "02:00:00:00:00:03"),
                **kwargs,
            )
            return await run_load(cfg)
        finally:
            await controller.stop()

    return asyncio.run(go())


def test_latency_mode_gets_replies_and_sane_numbers() -> None:
    controller = FakeController()
    result = run_against(controller, switches=2, mode="latency", teach_port=3, prime=True)
    assert "error" not in result, result
    assert sorted(controller.dpids) == [0x10, 0x11]
    assert result["answered"] > 50 and result["lost"] == 0
    assert all(n > 0 for n in result["per_switch_answered"])
    assert sum(result["per_switch_answered"]) == result["answered"]
    assert result["rate_per_s"] == pytest.approx(result["answered"] / result["seconds"], rel=0.01)
    reply, done = result["reply_ms"], result["done_ms"]
    assert reply["n"] == done["n"] == result["answered"]
    assert 0 < reply["p50"] <= done["p50"] <= done["p99"] < 100
    assert reply["min"] <= reply["p50"] <= reply["p99"] <= reply["max"]
    assert result["messages_per_answer"] == {"flow_mod": 1.0, "packet_out": 1.0}
    assert result["teach"]["failed"] == 0 and result["teach"]["ms"]["n"] == 4
    assert result["prime"]["failed"] == 0 and result["prime"]["ms"]["n"] == 4
    assert result["startup_messages"]["echo_request"] == 2


def test_throughput_mode_counts_replies_with_a_full_window() -> None:
    controller = FakeController()
    result = run_against(controller, switches=2, mode="throughput", window=8)
    assert "error" not in result, result
    assert result["window"] == 8
    assert result["answered"] > 50 and result["lost"] == 0
    assert result["reply_ms"] is None and result["done_ms"]["n"] == result["answered"]
    # Every answered packet-in had its packet-out; a few more may land just after the end.
    assert result["messages"]["packet_out"] >= result["answered"]
    # Warm-up and the window still in flight at the end were sent too.
    assert controller.packet_ins > result["answered"]


def test_first_reply_mode_for_controllers_that_only_send_flow_mods() -> None:
    controller = FakeController(packet_out=False)
    result = run_against(controller, switches=1, mode="latency", reply="first")
    assert "error" not in result, result
    assert result["answered"] > 50 and result["lost"] == 0
    assert result["messages_per_answer"] == {"flow_mod": 1.0}


def test_unanswered_packet_ins_are_lost_not_hung() -> None:
    controller = FakeController(flow_mod=False, packet_out=False)
    result = run_against(controller, switches=1, mode="throughput", window=4, timeout=0.1)
    assert "error" not in result, result
    assert result["answered"] == 0 and result["lost"] >= 4
    assert result["done_ms"] is None
