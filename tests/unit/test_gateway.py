"""The gateway role on the fake switch: what a host tunnels to it leaves the external
port with its router's source address, the reply finds its way back to the VM's host,
a new connection to a source-NAT address is dropped, a floating IP reaches its VM, two
tenants with the same inside addresses stay apart, and the two gateways elect one."""

from __future__ import annotations

import struct
import time
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from dove_ryu.agent.gateway import GatewayCore
from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import FloatingIp, Router, Subnet, router_mac
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose
from dove_ryu.openflow.ofmsg import CoreOutput, CtFlushZone, PacketIn, order_messages
from dove_ryu.openflow.packet import ARP_REPLY, ETH_TYPE_ARP, parse
from dove_ryu.protocol import messages as msgs
from dove_ryu.protocol.auth import MAC_LEN, compute_mac
from dove_ryu.protocol.header import TLV_HEADER_LEN
from tests.fakeswitch import Delivery, FakeSwitch, pkt_to_bytes

pytestmark = pytest.mark.unit

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)
GW1, GW2 = IPv4Address("10.99.0.201"), IPv4Address("10.99.0.202")
H1, H2 = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2")
TUNNEL, EXT_PORT = 1, 2
EXT_MAC = "02:ee:00:00:00:01"
NEXT_HOP, NEXT_HOP_MAC = "203.0.113.254", "02:ee:00:00:00:fe"
VM = "10.0.0.1"  # each tenant's vm1, with a floating IP
VM2 = "10.0.0.2"  # each tenant's vm2, behind its router's source NAT
VM_MAC = {
    (5001, VM): "02:00:00:00:01:01",
    (6001, VM): "02:00:00:00:02:01",
    (5001, VM2): "02:00:00:00:01:02",
    (6001, VM2): "02:00:00:00:02:02",
}


def router(t: int) -> Router:
    """Tenant t's router: the same subnets and inside addresses for every tenant."""
    return Router(
        t,
        (
            Subnet(t * 1000 + 4001, IPv4Interface("10.0.0.254/24")),
            Subnet(t * 1000 + 4002, IPv4Interface("10.0.1.254/24")),
        ),
        snat=IPv4Address(f"203.0.113.{10 + t}"),
        floating_ips=(FloatingIp(IPv4Address(f"203.0.113.{100 + t}"), IPv4Address(VM)),),
    )


ROUTERS = [router(1), router(2)]  # instances 5001/5002 and 6001/6002

_counter = [int(time.time() * 1e6)]


def frame(message: msgs.Message, sender: IPv4Address, receiver: IPv4Address = GW1) -> bytes:
    # A counter is a microsecond timestamp, checked against the receiver's clock: taken
    # now, not when the module was imported (a long suite runs Mininet tiers first).
    _counter[0] = max(_counter[0] + 1, int(time.time() * 1e6))
    return msgs.encode(message, sender=sender, counter=_counter[0], key=KEY, receiver=receiver)


def tcp(src: str, dst: str, sport: int, dport: int, eth_src: str, eth_dst: str) -> dict[str, Any]:
    """A TCP segment as the fake switch takes it: an Ethernet header and IPv4 bytes."""
    body = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        0,
        0,
        64,
        6,
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    )
    return {"eth_src": eth_src, "eth_dst": eth_dst, "eth_type": 0x0800, "payload": ip + body}


def ip_of(d: Delivery) -> tuple[str, str, int]:
    payload = d.pkt["payload"]
    return str(IPv4Address(payload[12:16])), str(IPv4Address(payload[16:20])), payload[8]


class Gateway:
    """One gateway core on a fake switch, its time driven by the test."""

    def __init__(self, me: IPv4Address = GW1, priority: int = 200) -> None:
        self.cfg = from_mapping(
            {
                "underlay_ip": str(me),
                "auth_key": KEY_HEX,
                "role": "gateway",
                "peers": f"{H1},{H2}",
                "external_port": "gw-ext",
                "external_ip": "203.0.113.2",
                "external_nexthop": NEXT_HOP,
                "gateway_priority": str(priority),
                "host_name": f"gw{me}",
            }
        )
        self.now = 100.0
        self.core = GatewayCore(self.cfg, self.now)
        self.switch = FakeSwitch(tunnel_port=TUNNEL)
        self.sent: list[tuple[str, msgs.Message]] = []
        self.do(self.core.routers_changed(self.now, ROUTERS, [GW1, GW2]))
        self.do(self.core.external_port(self.now, EXT_PORT, EXT_MAC))
        self.do(self.core.switch_connected(self.now, TUNNEL))

    def do(self, out: CoreOutput) -> list[Delivery]:
        for d in out.datagrams:
            env = msgs.decode(d.payload, key=KEY)
            self.sent.append((d.dst, env.message))
        # In the shell's order, stamped with the agent's cookie generation.
        delivered = self.switch.apply(order_messages(out.ofmsgs, self.core.p.takeover.generation))
        assert not self.switch.errors
        return delivered

    def later(self, seconds: float) -> list[Delivery]:
        out: list[Delivery] = []
        end = self.now + seconds
        while self.now < end:
            self.now += 0.05
            out += self.do(self.core.tick(self.now))
        return out

    def hear(self, message: msgs.Message, sender: IPv4Address) -> list[Delivery]:
        return self.do(
            self.core.control_message(self.now, frame(message, sender, self.core.p.me), sender)
        )

    def send(
        self, in_port: int, pkt: dict[str, Any], tun: dict[str, Any] | None = None
    ) -> list[Delivery]:
        """A packet into the switch; what it punts goes to the agent, whose answer is
        applied too.  Returns everything the switch emitted on a port."""
        emitted = []
        for d in self.switch.process(in_port, pkt, tun):
            if d.controller:
                punted = PacketIn(d.cookie or 0, d.in_port, d.data, d.metadata)
                emitted += self.do(self.core.packet_in(self.now, punted))
            else:
                emitted.append(d)
        return emitted

    def learns(self, instance: int, host: IPv4Address, vm: str = VM2) -> list[Delivery]:
        """Answer the LEARN the gateway sent for the VM; returns what it released."""
        request = next(m for _, m in reversed(self.sent) if isinstance(m, msgs.LearnRequest))
        assert request.instance == instance and request.ip == IPv4Address(vm)
        mac = VM_MAC[(instance, vm)]
        reply = msgs.LearnReply(instance, request.request_id, mac, (IPv4Address(vm),), host, 1)
        return self.hear(reply, host)


def started() -> Gateway:
    """An active gateway whose next hop is resolved and whose routers' instances have
    members: tenant 1's VM on H1 (instance 5001), tenant 2's on H2 (6001)."""
    g = Gateway()
    g.later(2.0)  # no other gateway heard: it becomes active
    assert g.core.active
    g.hear(msgs.Announce(frozenset({5001})), H1)
    g.hear(msgs.Announce(frozenset({6001})), H2)
    # The next hop answers the gateway's ARP request.
    answer = {
        "eth_src": NEXT_HOP_MAC, "eth_dst": EXT_MAC, "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REPLY, "arp_sha": NEXT_HOP_MAC, "arp_spa": NEXT_HOP,
        "arp_tha": EXT_MAC, "arp_tpa": "203.0.113.2",
    }  # fmt: skip
    g.send(EXT_PORT, answer)
    return g


def out_of(g: Gateway, t: int, sport: int = 40000, vm: str = VM2) -> list[Delivery]:
    """Tenant t's VM sends to the internet host: its host routed it to the gateway MAC
    of its subnet and tunnelled it here with the source instance as VNI."""
    instance, host = t * 1000 + 4001, (H1 if t == 1 else H2)
    pkt = tcp(vm, NEXT_HOP, sport, 80, VM_MAC[(instance, vm)], router_mac(instance))
    return g.send(TUNNEL, pkt, {"tunnel_id": instance, "tun_ipv4_src": str(host)})


def back_in(g: Gateway, dst: str, sport: int = 80, dport: int = 40000) -> list[Delivery]:
    return g.send(EXT_PORT, tcp(NEXT_HOP, dst, sport, dport, NEXT_HOP_MAC, EXT_MAC))


def test_outbound_leaves_the_external_port_from_the_routers_snat_address() -> None:
    g = started()
    (sent,) = out_of(g, 1)
    assert sent.port == EXT_PORT
    assert sent.pkt["eth_src"] == EXT_MAC and sent.pkt["eth_dst"] == NEXT_HOP_MAC
    assert ip_of(sent) == ("203.0.113.11", NEXT_HOP, 63)  # source NAT, TTL down by one


def test_the_reply_reaches_the_vms_host_and_the_first_one_is_not_lost() -> None:
    g = started()
    out_of(g, 1)
    assert back_in(g, "203.0.113.11") == []  # held while the gateway asks where 10.0.0.1 is
    (released,) = g.learns(5001, H1)
    assert (released.tunnel_id, released.tun_dst) == (5001, str(H1))
    assert released.pkt["eth_dst"] == VM_MAC[(5001, VM2)]
    assert released.pkt["eth_src"] == router_mac(5001)
    assert ip_of(released)[:2] == (NEXT_HOP, VM2)  # un-NATed
    (second,) = back_in(g, "203.0.113.11")  # now straight through the datapath
    assert (second.tunnel_id, second.tun_dst, ip_of(second)[1]) == (5001, str(H1), VM2)


def test_two_tenants_with_the_same_addresses_get_distinct_snat_and_their_own_replies() -> None:
    g = started()
    (one,) = out_of(g, 1)
    (two,) = out_of(g, 2)  # the same inside address and port
    assert ip_of(one)[0] == "203.0.113.11" and ip_of(two)[0] == "203.0.113.12"
    back_in(g, "203.0.113.11")
    g.learns(5001, H1)
    back_in(g, "203.0.113.12")
    g.learns(6001, H2)
    (to_one,) = back_in(g, "203.0.113.11")
    (to_two,) = back_in(g, "203.0.113.12")
    assert (to_one.tunnel_id, to_one.tun_dst) == (5001, str(H1))
    assert (to_two.tunnel_id, to_two.tun_dst) == (6001, str(H2))


def test_a_new_connection_to_a_snat_address_is_dropped_and_counted() -> None:
    g = started()
    out_of(g, 1)
    dropped = g.switch.hits(lambda f: _purpose(f.cookie) is Purpose.DROP_EXTERNAL)
    assert back_in(g, "203.0.113.11", sport=22, dport=2222) == []
    assert back_in(g, "203.0.113.77") == []  # an address nobody has
    assert g.switch.hits(lambda f: _purpose(f.cookie) is Purpose.DROP_EXTERNAL) == dropped + 2
    assert not any(isinstance(m, msgs.LearnRequest) for _, m in g.sent)


def test_a_floating_ip_reaches_its_vm_and_its_replies_leave_from_it() -> None:
    g = started()
    assert back_in(g, "203.0.113.101", sport=50000, dport=22) == []
    (inbound,) = g.learns(5001, H1, VM)
    assert (inbound.tunnel_id, inbound.tun_dst, ip_of(inbound)[1]) == (5001, str(H1), VM)
    reply = tcp(VM, NEXT_HOP, 22, 50000, VM_MAC[(5001, VM)], router_mac(5001))
    (out,) = g.send(TUNNEL, reply, {"tunnel_id": 5001, "tun_ipv4_src": str(H1)})
    assert ip_of(out)[:2] == ("203.0.113.101", NEXT_HOP)
    (sent,) = out_of(g, 1, sport=41000, vm=VM)  # the VM's own connections leave from it too
    assert ip_of(sent)[0] == "203.0.113.101"


def test_only_a_member_of_a_router_instance_may_send_through_the_gateway() -> None:
    g = started()
    pkt = tcp(VM2, NEXT_HOP, 40000, 80, VM_MAC[(5001, VM2)], router_mac(5001))
    assert g.send(TUNNEL, pkt, {"tunnel_id": 5001, "tun_ipv4_src": "10.99.0.9"}) == []
    assert g.send(TUNNEL, pkt, {"tunnel_id": 6001, "tun_ipv4_src": str(H1)}) == []


def test_arp_for_external_addresses_is_answered_only_while_active() -> None:
    g = started()
    asked = {
        "eth_src": NEXT_HOP_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": ETH_TYPE_ARP,
        "arp_op": 1, "arp_sha": NEXT_HOP_MAC, "arp_spa": NEXT_HOP,
        "arp_tha": "00:00:00:00:00:00", "arp_tpa": "203.0.113.101",
    }  # fmt: skip
    g.switch.process(EXT_PORT, asked)
    assert g.switch.in_port_drops == 0  # answered back out its in_port (IN_PORT)
    answers = [f for f in g.switch.flows(24) if _purpose(f.cookie) is Purpose.EXTERNAL]
    assert any(f.match.get("arp_tpa") == "203.0.113.101" for f in answers)
    # Another gateway of higher priority, active too: we step down and stop answering.
    g.hear(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 250)), GW2)
    assert not g.core.active
    answers = [f for f in g.switch.flows(24) if f.match.get("arp_tpa") == "203.0.113.101"]
    assert answers == []


def test_becoming_active_announces_it_and_sends_gratuitous_arps() -> None:
    g = Gateway()
    emitted = g.later(2.0)
    garps = [parse(d.data).arp for d in emitted if d.port == EXT_PORT]
    said = {str(a.spa) for a in garps if a is not None and a.spa == a.tpa}
    assert said == {"203.0.113.11", "203.0.113.101", "203.0.113.12", "203.0.113.102"}
    roles = [(dst, m.gateway) for dst, m in g.sent if isinstance(m, msgs.Announce)]
    assert (str(H1), msgs.GatewayRole(True, 200)) in roles


def test_the_standby_takes_over_when_the_active_ones_hellos_stop() -> None:
    g = Gateway(GW2, priority=100)
    g.hear(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 200)), GW1)
    g.later(0.5)
    assert not g.core.active
    g.later(2.0)  # GW1 silent
    assert g.core.active


def test_a_bad_gateway_tlv_is_refused_and_counted() -> None:
    g = Gateway()
    good = frame(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 7)), GW2)
    tlv = bytes([0x0D, 0x00, 0x02, 0x01, 0x07])  # type, length 2, active, priority
    assert good.count(tlv) == 1
    tampered = good.replace(tlv, bytes([0x0D, 0x00, 0x02, 0x05, 0x07]))  # "active" 5
    auth = TLV_HEADER_LEN + MAC_LEN
    bad = tampered[:-MAC_LEN] + compute_mac(KEY, tampered[:-auth])  # signed anew
    g.do(g.core.control_message(g.now, bad, GW2))
    assert g.core.counters.get("drop_control_bad_tlv_value") == 1
    assert GW2 not in g.core.p.election.partners


def _purpose(cookie: int) -> Purpose | None:
    decoded = cookies.decode(cookie)
    return decoded.purpose if decoded else None


def test_the_fake_switch_sends_its_arp_requests_from_the_gateway() -> None:
    g = Gateway()
    asked = [d for d in g.later(1.0) if d.port == EXT_PORT and parse(d.data).arp is not None]
    arps = [parse(d.data).arp for d in asked]
    assert any(a is not None and str(a.tpa) == NEXT_HOP for a in arps)
    assert pkt_to_bytes(asked[0].pkt)[:6] == b"\xff" * 6


def test_a_vm_reaches_the_internet_through_its_host_and_the_gateway_and_back() -> None:
    """The whole way on fake switches: a host routes tenant 1's VM's packet to the active
    gateway it heard of, the gateway NATs it out; the reply comes back to the VM."""
    from tests.unit.test_core import TUN, Net, ip, vm

    mac = VM_MAC[(5001, VM2)]
    net = Net({1: [vm("vm2", 3, 5001, mac, VM2)]})
    host = net.hosts[1]
    net.apply(host, host.core.routers_changed(net.now, [router(1)], [GW1, GW2]))
    said = frame(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 200)), GW1, ip(1))
    net.apply(host, host.core.control_message(net.now, said, GW1))
    assert host.core.p.routers.active_gateway == GW1
    g = started()

    seen = net.send(1, 3, tcp(VM2, NEXT_HOP, 40000, 80, mac, router_mac(5001)))
    (tunnelled,) = [s.delivery for s in seen if s.port == TUN]
    assert (tunnelled.tun_dst, tunnelled.tunnel_id) == (str(GW1), 5001)
    tun = {"tunnel_id": tunnelled.tunnel_id, "tun_ipv4_src": str(ip(1))}
    (out,) = g.send(TUNNEL, tunnelled.pkt, tun)
    assert out.port == EXT_PORT and ip_of(out)[0] == "203.0.113.11"

    back_in(g, "203.0.113.11")
    (released,) = g.learns(5001, ip(1))
    tun = {"tunnel_id": released.tunnel_id, "tun_ipv4_src": str(GW1)}
    arrived = host.switch.process(TUN, released.pkt, tun)
    assert [(d.port, ip_of(d)[:2]) for d in arrived] == [(3, (NEXT_HOP, VM2))]


def test_a_restarted_active_gateway_takes_its_place_back_before_its_standby_misses_it() -> None:
    g = Gateway()  # just (re)started: listening, and saying nothing that would hand over
    g.later(0.3)
    assert not g.core.active and not [m for _, m in g.sent if isinstance(m, msgs.Announce)]
    g.hear(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(False, 150)), GW2)
    assert g.core.active  # the standby's hello: we are preferred, so we claim at once
    said = [(d, m.gateway) for d, m in g.sent if isinstance(m, msgs.Announce)]
    assert (str(GW2), msgs.GatewayRole(True, 200)) in said


def test_hosts_keep_the_elected_gateway_over_mark_changes_and_leave_one_that_steps_down() -> None:
    from tests.unit.test_core import Net, ip, vm

    net = Net({1: [vm("vm2", 3, 5001, VM_MAC[(5001, VM2)], VM2)]})
    host = net.hosts[1]
    net.apply(host, host.core.routers_changed(net.now, [router(1)], [GW1, GW2]))

    def hear(sender: IPv4Address, active: bool) -> None:
        said = frame(
            msgs.Announce(frozenset(), gateway=msgs.GatewayRole(active, 100)), sender, ip(1)
        )
        net.apply(host, host.core.control_message(net.now, said, sender))

    hear(GW2, True)  # GW1 failed; GW2 took over
    assert host.core.p.routers.active_gateway == GW2
    # An operator adds a floating IP: the marks change, the elected gateway stays.
    changed = Router(1, router(1).subnets, router(1).snat, router(1).floating_ips[:0])
    net.apply(host, host.core.routers_changed(net.now, [changed], [GW1, GW2]))
    assert host.core.p.routers.active_gateway == GW2
    hear(GW2, False)  # GW2 steps down (a partition healed): the other one, not GW2
    assert host.core.p.routers.active_gateway == GW1


# --- what the external network and other peers may not do (review of issue 12) ---------


def test_an_unsolicited_arp_reply_cannot_take_the_next_hops_place() -> None:
    g = started()
    impostor = "02:ee:00:00:00:66"
    for spa in (NEXT_HOP, "203.0.113.77"):  # the next hop's address, and one never asked
        forged = {
            "eth_src": impostor, "eth_dst": EXT_MAC, "eth_type": ETH_TYPE_ARP,
            "arp_op": ARP_REPLY, "arp_sha": impostor, "arp_spa": spa,
            "arp_tha": EXT_MAC, "arp_tpa": "203.0.113.2",
        }  # fmt: skip
        g.send(EXT_PORT, forged)
    assert g.core.counters.get("drop_external_arp_unsolicited") == 2
    assert g.core.p.external.macs == {IPv4Address(NEXT_HOP): NEXT_HOP_MAC}
    out = out_of(g, 1)
    assert [d.pkt["eth_dst"] for d in out if d.port == EXT_PORT] == [NEXT_HOP_MAC]


def test_only_a_declared_gateway_takes_part_in_the_election() -> None:
    g = started()
    # H1 is an authenticated peer, but the dove-gateways mark does not name it.
    g.hear(msgs.Announce(frozenset(), gateway=msgs.GatewayRole(True, 255)), H1)
    g.later(1.0)
    assert g.core.active
    assert g.core.counters.get("drop_gateway_undeclared") == 1
    assert H1 not in g.core.p.election.partners


def test_a_gateway_refuses_directory_discovery_it_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"\[dove\] discovery: a gateway"):
        from_mapping(
            {
                "underlay_ip": str(GW1),
                "auth_key": KEY_HEX,
                "role": "gateway",
                "discovery": "directory",
                "directory": "ssl:10.99.0.241:6641",
                "external_port": "gw-ext",
                "external_ip": "203.0.113.2",
            }
        )


def test_a_router_that_loses_an_external_address_forgets_its_connections() -> None:
    """A floating IP taken from tenant 1's router (it may be tenant 2's next): the
    connections of router 1's zone go, so no reply to that address is un-NATed into
    tenant 1 any more; tenant 2's connections stay."""
    g = started()
    out_of(g, 1, vm=VM)  # through the floating IP, zone 1
    out_of(g, 2)  # through router 2's SNAT, zone 2
    assert g.switch.conntrack.zones() == {1, 2}
    without_fip = Router(1, router(1).subnets, router(1).snat)
    out = g.core.routers_changed(g.now, [without_fip, router(2)], [GW1, GW2])
    assert [m for m in out.ofmsgs if isinstance(m, CtFlushZone)] == [CtFlushZone(1)]
    g.do(out)
    assert g.switch.conntrack.zones() == {2}
    # A change that takes no address away (the same routers again) flushes nothing.
    again = g.core.routers_changed(g.now, [without_fip, router(2)], [GW1, GW2])
    assert not [m for m in again.ofmsgs if isinstance(m, CtFlushZone)]
