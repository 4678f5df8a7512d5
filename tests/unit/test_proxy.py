"""The pure parts of the VAN proxy: its settings, wire messages, DOVE-layer
reassembly, ICMP "fragmentation needed", and the OpenFlow it sends (decoded by
Open vSwitch's own parser, so a wrong encoding fails here, not on a switch)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from ipaddress import IPv4Address
from typing import Any

import pytest

from dove_ryu.agent.proxy import Reassembly, make_core
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import Endpoint
from dove_ryu.openflow import flows
from dove_ryu.openflow.ofmsg import GroupCommand, OfMsg
from dove_ryu.openflow.packet import ETH_TYPE_IPV4, frag_needed
from dove_ryu.protocol.auth import AuthError
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import (
    Announce,
    FrameFragment,
    LearnReply,
    ProxyRole,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)
A, B = IPv4Address("10.99.0.201"), IPv4Address("172.31.0.21")
PROXY = {
    "underlay_ip": "10.99.0.201",
    "auth_key": KEY_HEX,
    "role": "proxy",
    "site": "s1",
    "wan_ip": "172.31.0.11",
    "wan_peers": "172.31.0.11, 172.31.0.21",
    "peers": "10.99.0.1",
}


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({k: v for k, v in PROXY.items() if k != "site"}, "site"),
        ({k: v for k, v in PROXY.items() if k != "wan_ip"}, "wan_ip"),
        ({**PROXY, "wan_ip": "10.99.0.201"}, "wan_ip"),
        ({**PROXY, "site": "a site"}, "site"),
        ({**PROXY, "role": "gateway"}, "role"),
        ({**PROXY, "wan_mtu": "500"}, "wan_mtu"),
        ({**PROXY, "wan_oversize": "drop"}, "wan_oversize"),
        ({**PROXY, "wan_peers": "10.99.0.1"}, "wan_peers"),
        ({"underlay_ip": "10.99.0.1", "auth_key": KEY_HEX, "wan_ip": "172.31.0.1"}, "wan_ip"),
    ],
)
def test_proxy_settings_are_checked_and_named(values: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[dove\] {setting}:"):
        from_mapping(values)


def test_a_proxy_is_not_its_own_wan_peer_and_gets_the_proxy_core() -> None:
    cfg = from_mapping(PROXY)
    assert cfg.proxy.wan_peers == (B,)
    assert type(make_core(cfg, 0.0)).__name__ == "ProxyCore"


# ------------------------------------------------------------------ protocol


def test_announce_carries_the_proxy_role_and_old_announces_still_decode() -> None:
    role = ProxyRole("s1", active=True, priority=200)
    for message in (Announce(frozenset({5001}), role), Announce(frozenset({5001}))):
        frame = encode(message, sender=A, counter=1, key=KEY, receiver=B)
        assert decode(frame, key=KEY).message == message


def test_frame_fragments_round_trip_in_the_dove_header_and_are_authenticated() -> None:
    frag = FrameFragment(5001, frag_id=7, index=1, more=False, data=b"\x02" * 700)
    frame = encode(frag, sender=A, counter=9, key=KEY, receiver=B)
    assert frame[0] & 0x4  # the F flag of the DOVE header
    assert decode(frame, key=KEY).message == frag
    with pytest.raises(AuthError):
        decode(frame[:-1] + bytes([frame[-1] ^ 1]), key=KEY)


def test_only_frames_may_be_fragments() -> None:
    reply = LearnReply(5001, 1, "02:00:00:00:00:01", (), A, 1)
    frame = bytearray(encode(reply, sender=A, counter=1, key=KEY, receiver=B))
    frame[0] |= 0x4
    frame[8:10] = b"\x00\x01"
    with pytest.raises(MalformedMessage):
        decode(bytes(frame), key=KEY)


# ---------------------------------------------------------------- reassembly


def _pieces(data: bytes, size: int, frag_id: int = 1) -> list[FrameFragment]:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return [FrameFragment(5001, frag_id, i, i < len(chunks) - 1, c) for i, c in enumerate(chunks)]


def test_pieces_in_any_order_make_the_frame_once() -> None:
    data = bytes(range(256)) * 6
    pieces = _pieces(data, 500)
    r = Reassembly()
    results = [r.add(0.0, B, p) for p in reversed(pieces)]
    assert results[:-1] == ["pending"] * (len(pieces) - 1)
    assert results[-1] == data
    assert r.add(0.0, B, pieces[0]) == "pending"  # a late duplicate starts a new partial
    assert r.expire(10.0) == 1 and not r.partial


def test_partial_frames_are_bounded_and_inconsistent_ones_dropped() -> None:
    r = Reassembly()
    for frag_id in range(300):
        r.add(0.0, B, FrameFragment(5001, frag_id, 0, True, b"x"))
    assert len(r.partial) == 256
    assert r.add(0.0, B, FrameFragment(5001, 999, 0, True, b"x")) == "reassembly_full"
    r = Reassembly()
    assert r.add(0.0, B, FrameFragment(5001, 1, 3, False, b"x")) == "pending"
    assert r.add(0.0, B, FrameFragment(5001, 1, 5, True, b"x")) == "pending"
    assert r.add(0.0, B, FrameFragment(5001, 1, 0, True, b"x")) == "pending"
    assert r.add(0.0, B, FrameFragment(5001, 1, 1, True, b"x")) == "fragment_inconsistent"


# ---------------------------------------------------------------------- ICMP


def _ipv4_frame(df: bool, size: int = 1450, proto: int = 6) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        size,
        1,
        0x4000 if df else 0,
        64,
        proto,
        0,
        IPv4Address("10.0.0.11").packed,
        IPv4Address("10.0.0.21").packed,
    )
    eth = bytes.fromhex("020000000201020000000101") + struct.pack("!H", ETH_TYPE_IPV4)
    return eth + header + b"p" * (size - 20)


def _checksum_ok(data: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_frag_needed_answers_df_frames_as_their_destination() -> None:
    reply = frag_needed(_ipv4_frame(df=True), 1350)
    assert reply is not None
    assert reply[0:6] == bytes.fromhex("020000000101")  # back to the sender's MAC
    assert reply[6:12] == bytes.fromhex("020000000201")
    ip, icmp = reply[14:34], reply[34:]
    assert ip[12:16] == IPv4Address("10.0.0.21").packed
    assert ip[16:20] == IPv4Address("10.0.0.11").packed
    assert icmp[0:2] == b"\x03\x04" and struct.unpack("!H", icmp[6:8])[0] == 1350
    assert icmp[8:36] == _ipv4_frame(df=True)[14:42]  # quotes header + 8 bytes
    assert _checksum_ok(ip) and _checksum_ok(icmp)


def test_frag_needed_is_not_sent_without_df_or_for_errors() -> None:
    assert frag_needed(_ipv4_frame(df=False), 1350) is None
    error = bytearray(_ipv4_frame(df=True, proto=1))
    error[34] = 3
    assert frag_needed(bytes(error), 1350) is None
    assert frag_needed(b"\xff" * 60, 1350) is None


# ----------------------------------------------------------- proxy OpenFlow


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="needs ovs-ofctl")
def test_proxy_flows_decode_in_open_vswitch(tmp_path: object) -> None:
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from dove_ryu.adapters.of_osken import to_osken

    class Dp:
        ofproto, ofproto_parser, id = ofp, parser, 1

    remote = Endpoint(5001, "02:00:00:00:02:01", (), B, 5)
    site = Endpoint(5001, "02:00:00:00:01:01", (), IPv4Address("10.99.0.1"), 5)
    msgs: list[OfMsg] = [
        flows.proxied_flow(remote, True, 300, 1400),
        flows.proxied_flow(site, False, 300, 1400),
        *flows.proxy_groups(5001, [site.host], [B], GroupCommand.ADD),
    ]
    wire = b""
    for msg in msgs:
        os_msg = to_osken(Dp(), msg)
        os_msg.set_xid(1)
        os_msg.serialize()
        wire += bytes(os_msg.buf)
    path = f"{tmp_path}/flows.of"
    with open(path, "wb") as f:
        f.write(wire)
    text = subprocess.run(
        ["ovs-ofctl", "ofp-parse", path], capture_output=True, text=True, check=True
    ).stdout
    assert "check_pkt_larger(1364)->NXM_NX_REG0[0],goto_table:45" in text
    assert "metadata=0x1389/0x2ffffff" in text  # frames from the site, to the WAN
    assert "set_field:10.99.0.1->tun_dst,IN_PORT" in text
    assert "group_id=16782217,type=all,bucket=actions=set_field:0x1389->tun_id," in text


# ------------------------------------------------------- forged control messages

SITE_HOST = IPv4Address("10.99.0.1")
OWN_WAN = IPv4Address("172.31.0.11")


def _proxy_core() -> Any:
    core = make_core(from_mapping(PROXY), 0.0)
    core.wall_clock = lambda: 1_000.0
    return core


def _from(core: Any, sender: IPv4Address, receiver: IPv4Address, message: Any, n: int) -> None:
    frame = encode(message, sender=sender, counter=1_000_000_000 + n, key=KEY, receiver=receiver)
    core.control_message(1.0, frame, sender)


def test_a_proxy_refuses_messages_on_the_wrong_leg_and_fragments_from_strangers() -> None:
    core = _proxy_core()
    hello = Announce(frozenset({5001}))
    # A site host addressing the proxy's inter-site leg.
    _from(core, SITE_HOST, OWN_WAN, hello, 1)
    assert core.counters["drop_control_wrong_leg"] == 1
    # Frame pieces: from the site leg, and from a remote proxy that serves no instance.
    piece = FrameFragment(5001, 1, 0, False, b"\x02" * 60)
    _from(core, SITE_HOST, A, piece, 2)
    assert core.counters["drop_fragment_from_site"] == 1
    _from(core, B, OWN_WAN, piece, 3)
    assert core.counters["drop_fragment_nonmember"] == 1
    assert not core.reassembly.partial
    # None of it made anyone a member.
    assert not any(core.members.values())


def test_a_proxy_ignores_vm_ports_and_says_so() -> None:
    from dove_ryu.model import VmPort

    core = _proxy_core()
    out = core.ports_changed(1.0, [VmPort("tap0", 5, 5001, "02:00:00:00:00:01")])
    assert not out.ofmsgs and core.counters["drop_proxy_vm_ports"] == 1
