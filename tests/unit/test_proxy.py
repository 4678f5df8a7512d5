"""The VAN proxy where it is cheap to test: its settings, wire messages, ICMP
"fragmentation needed", the OpenFlow it sends (decoded by Open vSwitch's own parser),
and its behaviour on fake switches (tests.fakesites: two or three sites of hypervisor
and proxy cores, the test driving time): relaying, the datapath both ways, election,
failover as a host sees it, DOVE-layer fragmentation and ICMP mode. Only the public core
API is used: `make_core`, its handlers and `status`."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from ipaddress import IPv4Address
from typing import Any

import pytest

from dove_ryu.agent import make_core
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import Endpoint
from dove_ryu.openflow import cookies, flows
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import GroupCommand, OfMsg
from dove_ryu.openflow.packet import ETH_TYPE_IPV4, frag_needed
from dove_ryu.protocol.auth import AuthError
from dove_ryu.protocol.header import MalformedMessage
from dove_ryu.protocol.messages import (
    Announce,
    EndpointHere,
    FrameFragment,
    LearnReply,
    LearnRequest,
    ProxyRole,
    Unlearn,
    decode,
    encode,
)
from tests.fakesites import TUN, Sites, Spec, echo
from tests.fakeswitch import Delivery, pkt_to_bytes

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
        ({**PROXY, "role": "router"}, "role"),
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
    assert make_core(cfg, 0.0).status(0.0)["role"] == "proxy"


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


# ------------------------------------------------------------ on fake switches

S1HV1, S1HV2 = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2")
PX1, PX2 = IPv4Address("10.99.0.201"), IPv4Address("10.99.0.202")  # in every site
WAN11, WAN12 = IPv4Address("172.31.0.11"), IPv4Address("172.31.0.12")  # site 1's proxies
WAN21, WAN22 = IPv4Address("172.31.0.21"), IPv4Address("172.31.0.22")  # site 2's
WAN31 = IPv4Address("172.31.0.31")
_counter = [int(time.time() * 1_000_000)]


def started(spec: Spec = Spec(), **proxy_settings: str) -> Sites:  # noqa: B008 - frozen
    """The sites with every agent up, both proxies of each site started together."""
    sites = Sites(spec, proxy_settings=proxy_settings)
    sites.advance(3.0)
    return sites


def said(sites: Sites, kind: type) -> list[tuple[int, IPv4Address, IPv4Address, Any]]:
    """(site, sender, receiver, message) of every message of one kind, in order."""
    return [(x.site, x.src, x.dst, x.message) for x in sites.sent if isinstance(x.message, kind)]


def forge(sites: Sites, to: str, sender: IPv4Address, receiver: IPv4Address, msg: Any) -> None:
    """A message with the deployment's key, as ``sender`` would send it, to node ``to``."""
    # Anti-replay counters are wall-clock microseconds: taken now, not when the module
    # was imported (a long run of other tests would make them stale).
    _counter[0] = max(_counter[0] + 1, int(time.time() * 1_000_000))
    frame = encode(msg, sender=sender, counter=_counter[0], key=KEY, receiver=receiver)
    node = sites.node(to)
    sites.apply(node, node.core.control_message(sites.now, frame, sender))
    sites.settle()


def learned_at(sites: Sites, node: str, instance: int, mac: str) -> str | None:
    rows = sites.status(node)["instances"].get(str(instance), {}).get("learned", [])
    return next((str(r["host"]) for r in rows if r["mac"] == mac), None)


def tunnelled(deliveries: list[Delivery]) -> list[tuple[int | None, str | None]]:
    return sorted((d.tunnel_id, d.tun_dst) for d in deliveries if d.port == TUN)


def test_a_learn_crosses_the_sites_hop_by_hop_each_proxy_speaking_for_its_side() -> None:
    sites = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    sites.sent.clear()

    sites.send(a, a.arp_request(b.ip))
    sites.settle()

    assert a.neigh == {b.ip: b.mac}  # answered on s1hv1 once resolved
    requests = [(site, src, dst) for site, src, dst, _ in said(sites, LearnRequest)]
    assert (1, S1HV1, PX1) in requests  # the host asks its site's proxy, a member
    assert (1, WAN11, WAN21) in requests  # which asks the remote proxy from its WAN leg
    assert (2, PX1, S1HV1) in requests and (2, PX1, S1HV2) in requests  # which asks its site
    assert not [r for r in requests if WAN12 in r or WAN22 in r]  # standbys stay out of it
    replies = [(site, src, dst, m.host) for site, src, dst, m in said(sites, LearnReply)]
    assert replies == [
        (2, S1HV1, PX1, S1HV1),  # s2hv1 has b
        (2, WAN21, WAN11, WAN21),  # behind s2px1, as site 1 sees it
        (1, PX1, S1HV1, PX1),  # behind s1px1, as s1hv1 sees it
    ]
    assert learned_at(sites, "s1px1", 5001, b.mac) == str(WAN21)
    assert learned_at(sites, "s2px1", 5001, b.mac) == str(S1HV1)


def test_endpoint_and_unlearn_are_relayed_with_their_sequence_number() -> None:
    sites = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(b, a)
    sites.sent.clear()
    # a moves from s1hv1 to s1hv2.
    h1, h2 = sites.node("s1hv1"), sites.node("s1hv2")
    sites.apply(
        h1,
        h1.core.ports_changed(
            sites.now, [v.port for v in sites.vms if v.node is h1 and v is not a]
        ),
    )
    a.node, a.ofport = h2, max(h2.ports) + 1
    h2.ports[a.ofport] = f"{a.name}-p"
    sites.apply(h2, h2.core.ports_changed(sites.now, [v.port for v in sites.vms if v.node is h2]))
    sites.settle()

    for kind, origin in ((Unlearn, S1HV1), (EndpointHere, S1HV2)):
        hops = said(sites, kind)
        assert {m.seq for *_, m in hops} == {hops[0][3].seq}, kind  # one number, end to end
        assert {(site, src, dst, m.host) for site, src, dst, m in hops} >= {
            (1, origin, PX1, origin),
            (1, WAN11, WAN21, WAN11),
            (2, PX1, S1HV1, PX1),
            (2, PX1, S1HV2, PX1),
        }, kind
    assert learned_at(sites, "s1px1", 5001, a.mac) == str(S1HV2)
    assert sites.ping(b, a)


def test_the_proxy_datapath_forwards_each_way_and_floods_once_per_remote_site() -> None:
    sites = started(Spec(sites=3))
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b)
    px = sites.node("s1px1")
    frame = echo(a, b.mac, b.ip, 8)

    from_site = {"tunnel_id": 5001, "tun_ipv4_src": str(S1HV1), "tun_ipv4_dst": str(PX1)}
    assert tunnelled(px.switch.process(TUN, frame, from_site)) == [(5001, str(WAN21))]

    back = echo(b, a.mac, a.ip, 0)
    from_wan = {"tunnel_id": 5001, "tun_ipv4_src": str(WAN21), "tun_ipv4_dst": str(WAN11)}
    assert tunnelled(px.switch.process(TUN, back, from_wan)) == [(5001, str(S1HV1))]
    # A frame from the WAN never goes back out to the WAN, nor one from the site to it.
    stranger = {**from_wan, "tun_ipv4_src": "172.31.0.99"}
    assert px.switch.process(TUN, back, stranger) == []
    wrong_leg = {**from_wan, "tun_ipv4_dst": str(PX1)}
    assert px.switch.process(TUN, back, wrong_leg) == []

    # check_pkt_larger(1464): a frame of 1464 bytes fits the WAN, one byte more goes to
    # the agent (wan_oversize), which fragments it.
    fits = px.switch.process(TUN, echo(a, b.mac, b.ip, 8, size=1450), from_site)
    assert tunnelled(fits) == [(5001, str(WAN21))]
    (punted,) = px.switch.process(TUN, echo(a, b.mac, b.ip, 8, size=1451), from_site)
    decoded = cookies.decode(punted.cookie or 0)
    assert punted.controller and decoded is not None
    assert decoded.purpose is Purpose.WAN_OVERSIZE

    bcast = {**frame, "eth_dst": "ff:ff:ff:ff:ff:ff"}
    assert tunnelled(px.switch.process(TUN, bcast, from_site)) == [
        (5001, str(WAN21)),
        (5001, str(WAN31)),  # one copy per remote site: its active proxy only
    ]
    # From a remote proxy: to each site host serving the instance.
    assert tunnelled(px.switch.process(TUN, bcast, from_wan)) == [
        (5001, str(S1HV1)),
        (5001, str(S1HV2)),
    ]


def test_the_higher_priority_proxy_becomes_active_and_the_standby_takes_over() -> None:
    sites = started()
    assert sites.status("s1px1")["active"] and not sites.status("s1px2")["active"]
    assert sites.status("s2px1")["active"] and not sites.status("s2px2")["active"]
    hello = 0.2  # proxy_hello_interval's default; the active one is dead after 3.5 of them
    sites.stop("s1px1")
    stopped = sites.now
    sites.advance(2.5 * hello, step=0.05)
    assert not sites.status("s1px2")["active"]
    # 3.5 hellos after the last one heard (at most one interval before the stop).
    sites.advance_until(lambda: sites.status("s1px2")["active"], 1.5 * hello, step=0.05)
    assert sites.now - stopped <= 4 * hello
    assert sites.counters("s1px2")["proxy_became_active"] == 1


def test_a_proxy_that_comes_back_does_not_preempt_the_active_one() -> None:
    sites = started()
    sites.stop("s1px1")
    sites.advance(2.0)
    assert sites.status("s1px2")["active"]
    sites.start_proxy(1, 1)  # priority 200 against the active one's 100
    sites.advance(5.0)
    assert sites.status("s1px2")["active"] and not sites.status("s1px1")["active"]
    # and the remote site still sees site 1 through the one that stayed active
    remote = sites.status("s2px1")["remote_proxies"]
    assert remote[str(WAN12)]["active"] and not remote[str(WAN11)]["active"]


def test_after_a_failover_hosts_move_what_they_learned_to_the_new_proxy() -> None:
    sites = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b)
    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX1)
    assert learned_at(sites, "s2hv1", 5001, a.mac) == str(PX1)  # s2's own proxy

    sites.stop("s1px1")
    sites.advance(2.0)

    assert learned_at(sites, "s1hv1", 5001, b.mac) == str(PX2)
    assert learned_at(sites, "s2px1", 5001, a.mac) == str(WAN12)  # the remote proxy too
    assert learned_at(sites, "s2hv1", 5001, a.mac) == str(PX1)  # still its own site's proxy
    h1 = sites.node("s1hv1")
    out = h1.switch.process(a.ofport, echo(a, b.mac, b.ip, 8))
    assert tunnelled(out) == [(5001, str(PX2))]
    assert sites.ping(a, b) and sites.ping(b, a)


def test_an_oversize_frame_crosses_in_dove_fragments_and_comes_out_whole() -> None:
    sites = started()
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b)
    sites.sent.clear()
    big = echo(a, b.mac, b.ip, 8, size=1480)  # a 1494-byte frame: over 1464 for wan_mtu 1500
    before = len(b.received)

    sites.send(a, big)
    sites.settle()

    pieces = [(src, dst) for _, src, dst, _ in said(sites, FrameFragment)]
    assert pieces[:2] == [(WAN11, WAN21)] * 2  # two pieces there (and two for the reply)
    assert [p for p in b.received[before:] if p == big] == [big]  # the same frame, once
    assert a.echo_replies() == 2  # the ping's and the big one's, fragmented back
    assert sites.counters("s1px1")["wan_frames_fragmented"] == 1
    assert sites.counters("s2px1")["wan_frames_reassembled"] == 1


def test_duplicate_inconsistent_and_late_fragments_are_dropped_and_counted() -> None:
    sites = started()
    b = sites.vm("t1s2vm1")
    frame = pkt_to_bytes(echo(sites.vm("t1s1vm1"), b.mac, b.ip, 8, size=1480))

    def piece(frag_id: int, index: int, more: bool, data: bytes = frame[:700]) -> None:
        forge(sites, "s2px1", WAN11, WAN21, FrameFragment(5001, frag_id, index, more, data))

    piece(1, 0, True)
    piece(1, 0, True)
    assert sites.counters("s2px1")["drop_fragment_duplicate"] == 1
    piece(2, 3, False)
    piece(2, 5, True)
    piece(2, 0, True)
    piece(2, 1, True)
    assert sites.counters("s2px1")["drop_fragment_inconsistent"] == 1
    sites.advance(2.5)  # frame 1 never got its last piece
    assert sites.counters("s2px1")["drop_reassembly_timeout"] == 1
    # Pieces in any order make the frame once.
    before = len(b.received)
    piece(3, 1, False, frame[700:])
    piece(3, 0, True)
    got = [pkt_to_bytes(p) for p in b.received[before:] if p["eth_type"] == ETH_TYPE_IPV4]
    assert got == [frame]  # (b then asks for a's MAC, to answer)
    assert sites.counters("s2px1")["wan_frames_reassembled"] == 1


def test_partial_frames_are_bounded() -> None:
    sites = started()
    for frag_id in range(300):
        forge(sites, "s2px1", WAN11, WAN21, FrameFragment(5001, frag_id, 0, True, b"x"))
    assert sites.counters("s2px1")["drop_reassembly_full"] == 300 - 256


def test_in_icmp_mode_an_oversize_df_frame_is_answered_with_fragmentation_needed() -> None:
    sites = started(wan_oversize="icmp")
    a, b = sites.vm("t1s1vm1"), sites.vm("t1s2vm1")
    assert sites.ping(a, b)
    before_a, before_b = len(a.received), len(b.received)

    sites.send(a, echo(a, b.mac, b.ip, 8, size=1480, df=True))
    sites.settle()

    assert len(b.received) == before_b  # not carried
    (answer,) = a.received[before_a:]
    ip, icmp = answer["payload"][:20], answer["payload"][20:]
    assert answer["eth_src"] == b.mac and ip[12:16] == IPv4Address(b.ip).packed
    assert icmp[0:2] == b"\x03\x04" and struct.unpack("!H", icmp[6:8])[0] == 1450
    assert sites.counters("s1px1")["wan_icmp_frag_needed_sent"] == 1
    # Without DF the frame is fragmented as in the default mode.
    sites.send(a, echo(a, b.mac, b.ip, 8, size=1480))
    sites.settle()
    assert sites.counters("s1px1")["wan_frames_fragmented"] == 1


def test_a_proxy_refuses_messages_on_the_wrong_leg_and_fragments_from_strangers() -> None:
    sites = started()
    hello = Announce(frozenset({5001}))
    # A site host addressing the proxy's inter-site leg.
    forge(sites, "s1px1", S1HV1, WAN11, hello)
    assert sites.counters("s1px1")["drop_control_wrong_leg"] == 1
    # Frame pieces: from the site leg, and from a remote proxy that serves no instance.
    piece = FrameFragment(5001, 1, 0, False, b"\x02" * 60)
    forge(sites, "s1px1", S1HV1, PX1, piece)
    assert sites.counters("s1px1")["drop_fragment_from_site"] == 1
    forge(sites, "s1px1", WAN22, WAN11, piece)  # the standby of site 2 serves nothing
    assert sites.counters("s1px1")["drop_fragment_nonmember"] == 1
    # None of it made anyone a member.
    instances = sites.status("s1px1")["instances"]
    assert str(WAN22) not in instances["5001"]["remote_proxies"]


def test_a_proxy_ignores_vm_ports_and_says_so() -> None:
    from dove_ryu.model import VmPort

    core = make_core(from_mapping(PROXY), 0.0)
    out = core.ports_changed(1.0, [VmPort("tap0", 5, 5001, "02:00:00:00:00:01")])
    assert not out.ofmsgs and core.status(1.0)["counters"]["drop_proxy_vm_ports"] == 1
