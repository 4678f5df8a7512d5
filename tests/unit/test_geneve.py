"""Geneve and two encapsulations at once (docs/interop.md section 1): the choice of
encapsulation per peer, TLV ENCAPSULATIONS, the DOVE option set on send and checked in
classify, split-horizon flooding with two tunnel ports, and the settings."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu.config import ConfigError, from_mapping
from dove_ryu.model import Endpoint, VmPort
from dove_ryu.openflow import flows
from dove_ryu.openflow import ofmsg as of
from dove_ryu.openflow.tunnels import (
    FLAG_ROUTED,
    OPTION_FIELD,
    Tunnels,
    encapsulation_bits,
    encapsulations_of,
    mtu,
    option_value,
)
from dove_ryu.protocol.messages import Announce, decode, encode
from tests.fakeswitch import FakeSwitch

pytestmark = pytest.mark.unit

VX, GE = 1, 2
ME, PEER, OLD = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2"), IPv4Address("10.99.0.3")
VTEP = IPv4Address("10.99.0.50")
INSTANCE = 5001
VM = VmPort("vm1", 5, INSTANCE, "02:00:00:00:01:01", (IPv4Address("10.0.0.11"),))
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def _tunnels(own: str = "geneve", accepted: tuple[str, ...] = ("vxlan", "geneve")) -> Tunnels:
    tunnels = Tunnels(own, accepted)
    ports = {"vxlan": VX, "geneve": GE}
    tunnels.ports = {t: ports[t] for t in tunnels.accepted}
    return tunnels


def test_own_type_when_the_peer_accepts_it_else_the_first_in_common() -> None:
    counted: list[str] = []
    tunnels = _tunnels()
    tunnels.count = counted.append
    # An older agent (no TLV): VXLAN only, so VXLAN although we send Geneve.
    assert tunnels.path(OLD).encapsulation == "vxlan" and tunnels.path(OLD).port == VX
    assert tunnels.peer_accepts(PEER, frozenset({"vxlan", "geneve"}))
    assert tunnels.path(PEER).encapsulation == "geneve" and tunnels.path(PEER).port == GE
    assert not tunnels.peer_accepts(PEER, frozenset({"geneve"}))  # the same way: no change
    # A VXLAN sender that accepts both prefers its own type.
    vx = _tunnels("vxlan")
    vx.peer_accepts(PEER, frozenset({"vxlan", "geneve"}))
    assert vx.path(PEER).encapsulation == "vxlan"
    # Nothing in common: our own, counted.
    only = _tunnels("vxlan", ("vxlan",))
    only.count = counted.append
    assert only.peer_accepts(PEER, frozenset({"geneve"})) is False  # still vxlan: no change
    geneve_only = _tunnels("geneve", ("geneve",))
    geneve_only.count = counted.append
    assert geneve_only.path(OLD).encapsulation == "geneve"
    assert geneve_only.peer_accepts(PEER, frozenset({"geneve"})) is False
    geneve_only.peer_accepts(PEER, frozenset({"geneve"}))
    assert counted == ["no_common_encapsulation"]  # only (vxlan) and PEER (geneve)
    tunnels.peer_accepts(PEER, frozenset({"vxlan"}))  # back to the default
    assert tunnels.path(PEER).encapsulation == "vxlan"


def test_no_common_encapsulation_is_counted() -> None:
    counted: list[str] = []
    tunnels = _tunnels("geneve", ("geneve",))
    tunnels.count = counted.append
    tunnels.peer_accepts(PEER, frozenset({"geneve"}))
    tunnels.peer_accepts(PEER, frozenset({"vxlan"}))
    assert counted == ["no_common_encapsulation"]
    assert tunnels.path(PEER).encapsulation == "geneve"  # we keep our own


def test_geneve_actions_carry_the_dove_option_and_vxlan_none() -> None:
    tunnels = _tunnels()
    tunnels.peer_accepts(PEER, frozenset({"geneve"}))
    assert flows.tunnel_actions(tunnels, INSTANCE, PEER, FLAG_ROUTED) == (
        of.SetField("tunnel_id", INSTANCE),
        of.SetField("tun_ipv4_dst", str(PEER)),
        of.SetField(OPTION_FIELD, 0x01010000),
        of.Output(GE),
    )
    assert flows.tunnel_actions(tunnels, INSTANCE, OLD) == (
        of.SetField("tunnel_id", INSTANCE),
        of.SetField("tun_ipv4_dst", str(OLD)),
        of.Output(VX),
    )
    # The old form (one VXLAN port's number) still builds what it built.
    assert flows.tunnel_actions(7, INSTANCE, OLD)[-1] == of.Output(7)


def test_a_declared_address_keeps_its_encapsulation_without_the_option() -> None:
    tunnels = _tunnels()
    tunnels.declare(VTEP, "geneve", dove=False)
    actions = tunnels.actions(INSTANCE, VTEP)
    assert of.Output(GE) in actions and not any(
        isinstance(a, of.SetField) and a.field == OPTION_FIELD for a in actions
    )
    assert tunnels.receive_matches(VTEP) == [{"in_port": GE}]
    tunnels.declare(VTEP, "vxlan")
    assert tunnels.receive_matches(VTEP) == [{"in_port": VX}]
    tunnels.undeclare(VTEP)
    assert len(tunnels.receive_matches(VTEP)) == 2


def test_encapsulations_tlv_round_trip_and_absent_means_vxlan() -> None:
    bits = encapsulation_bits(["vxlan", "geneve"])
    assert bits == 3
    msg = Announce(frozenset({INSTANCE}), incarnation=5, encapsulations=bits)
    env = decode(encode(msg, sender=ME, counter=1, key=KEY), key=KEY)
    assert env.message == msg
    plain = decode(encode(Announce(frozenset()), sender=ME, counter=2, key=KEY), key=KEY)
    assert plain.message.encapsulations is None  # type: ignore[union-attr]
    assert encapsulations_of(None) == frozenset({"vxlan"})
    assert encapsulations_of(2) == frozenset({"geneve"})


def _host_switch(tunnels: Tunnels) -> FakeSwitch:
    switch = FakeSwitch(tunnel_port=GE)
    switch.apply(
        of.order_messages(
            [
                *flows.pipeline_defaults(tunnels),
                *flows.local_port_flows(VM),
                *flows.instance_flows(INSTANCE, split_horizon=tunnels.mixed),
                flows.flood_group(INSTANCE, [VM.ofport], [PEER, OLD], tunnels, of.GroupCommand.ADD),
                *(
                    [flows.local_flood_group(INSTANCE, [VM.ofport], of.GroupCommand.ADD)]
                    if tunnels.mixed
                    else []
                ),
                *flows.member_flows(INSTANCE, PEER, tunnels),
                *flows.member_flows(INSTANCE, OLD, tunnels),
                *flows.learned_flows(
                    Endpoint(INSTANCE, "02:00:00:00:02:01", (), PEER, 1), tunnels, 300
                ),
            ]
        )
    )
    assert not switch.errors, switch.errors
    return switch


BCAST = {"eth_src": "02:00:00:00:02:01", "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0800}
SRC = {"ipv4_src": "10.0.0.11", "ipv4_dst": "10.0.0.21"}
TO_VM = {"eth_src": "02:00:00:00:02:01", "eth_dst": VM.mac, "eth_type": 0x0800}


def test_classify_takes_a_dove_peers_geneve_only_with_version_1() -> None:
    tunnels = _tunnels()
    switch = _host_switch(tunnels)
    tun = {"tunnel_id": INSTANCE, "tun_ipv4_src": str(PEER)}
    ok = switch.process(GE, TO_VM, {**tun, OPTION_FIELD: option_value(0x02)})
    assert [d.port for d in ok] == [VM.ofport]
    for bad in (0x02000000, None):  # another version; no option at all
        extra = {OPTION_FIELD: bad} if bad is not None else {}
        assert switch.process(GE, TO_VM, {**tun, **extra}) == []
    # VXLAN from the same peer (a rolling change): taken too.
    assert [d.port for d in switch.process(VX, TO_VM, tun)] == [VM.ofport]


def test_to_a_geneve_peer_the_option_goes_with_version_1() -> None:
    tunnels = _tunnels()
    tunnels.peer_accepts(PEER, frozenset({"geneve"}))
    switch = _host_switch(tunnels)
    from_vm = {**TO_VM, "eth_src": VM.mac, "eth_dst": "02:00:00:00:02:01", **SRC}
    out = switch.process(VM.ofport, from_vm)
    assert [(d.port, d.tun_dst, d.tun_metadata0) for d in out] == [(GE, str(PEER), option_value(0))]


def test_with_two_tunnel_ports_tunnel_broadcast_floods_only_locally() -> None:
    tunnels = _tunnels()
    tunnels.peer_accepts(PEER, frozenset({"geneve"}))
    switch = _host_switch(tunnels)
    tun = {"tunnel_id": INSTANCE, "tun_ipv4_src": str(OLD)}
    assert [d.port for d in switch.process(VX, BCAST, tun)] == [VM.ofport]
    # From the VM: to both peers, each by its own encapsulation.
    from_vm = {**BCAST, "eth_src": VM.mac, **SRC}
    assert sorted(d.port for d in switch.process(VM.ofport, from_vm)) == [VX, GE]


BASE = {"underlay_ip": "10.99.0.1", "auth_key": KEY.hex()}


def test_settings() -> None:
    host = from_mapping({**BASE, "tunnel_type": "geneve"}).host
    assert (host.tunnel_port, host.accept_tunnel_types) == ("dove-geneve", ("geneve",))
    both = from_mapping({**BASE, "accept_tunnel_types": "geneve, vxlan"}).host
    assert both.tunnel_ports == {"vxlan": "dove-vxlan", "geneve": "dove-geneve"}
    assert from_mapping(BASE).host.tunnel_ports == {"vxlan": "dove-vxlan"}
    with pytest.raises(ConfigError, match="accept_tunnel_types"):
        from_mapping({**BASE, "accept_tunnel_types": "geneve"})
    with pytest.raises(ConfigError, match="accept_tunnel_types"):
        from_mapping({**BASE, "accept_tunnel_types": "gre"})
    assert (mtu("vxlan"), mtu("geneve")) == (1450, 1442)


def test_dhcp_tells_the_mtu_of_the_encapsulation() -> None:
    from dove_ryu.agent.dhcp import DhcpServer
    from dove_ryu.agent.stats import Stats

    cfg = from_mapping({**BASE, "tunnel_type": "geneve"})
    stats = Stats("h", __import__("logging").getLogger("test"))
    assert DhcpServer(stats, cfg.dhcp).mtu == 1450  # VXLAN (the default)
    assert DhcpServer(stats, cfg.dhcp, encapsulations=("geneve",)).mtu == 1442
    offer = DhcpServer(stats, cfg.dhcp, encapsulations=("vxlan", "geneve")).offer(VM)
    assert offer is not None and offer.lease.mtu == 1442


def test_hosts_with_tunnel_type_geneve_learn_and_forward_with_the_option() -> None:
    from tests.unit.test_core import MAC_A, MAC_B, eth, ip, local, three_hosts, tunnelled

    net = three_hosts(tunnel_type="geneve")
    assert net.hosts[1].core.p.members.encapsulations(ip(2)) == frozenset({"geneve"})
    net.send(1, 1, eth(MAC_A, MAC_B))
    released = net.deliver()
    out = tunnelled(released)
    assert [(s.delivery.tun_dst, s.delivery.tun_metadata0) for s in out] == [
        (str(ip(2)), option_value(0))
    ]
    assert local(released) == [(2, 1)]


def test_a_peers_new_encapsulations_rebuild_what_tunnels_to_it() -> None:
    from tests.unit.test_core import MAC_A, MAC_B, eth, ip, three_hosts, tunnelled

    net = three_hosts(tunnel_type="geneve", accept_tunnel_types="vxlan, geneve")
    h1 = net.hosts[1]
    net.send(1, 1, eth(MAC_A, MAC_B))
    net.deliver()
    before = h1.core.counters["peer_encapsulation_changed"]  # hosts 2, 3: Geneve at start
    msgs = h1.core.members.encapsulations(ip(2), 0x01)  # host 2 now says: VXLAN only
    assert msgs and h1.core.counters["peer_encapsulation_changed"] == before + 1
    net.apply(h1, of.CoreOutput(ofmsgs=msgs))
    # Host 1 has one tunnel port here (the fake switch's): VXLAN falls back to it, unmarked.
    again = tunnelled(net.send(1, 1, eth(MAC_A, MAC_B)))
    assert [s.delivery.tun_metadata0 for s in again] == [None]


def test_a_gateway_and_a_proxy_take_their_own_type_and_check_the_option() -> None:
    from dove_ryu.openflow import gateway_flows as gw

    tunnels = _tunnels("geneve", ("geneve",))
    member = gw.member_flow(INSTANCE, PEER, tunnels)
    assert member.match["in_port"] == GE and member.match[OPTION_FIELD] == (0x01000000, 0xFF000000)
    proxy = flows.proxy_member_flow(INSTANCE, PEER, ME, False, tunnels)
    assert proxy.match[OPTION_FIELD] == (0x01000000, 0xFF000000)
    relayed = flows.proxy_groups(INSTANCE, [PEER], [], of.GroupCommand.ADD, tunnels)[0]
    assert of.SetField(OPTION_FIELD, option_value(0x02)) in relayed.buckets[0]
    assert relayed.buckets[0][-1] == of.Output(of.OFPP_IN_PORT)
    for role in ("gateway", "proxy"):
        with pytest.raises(ConfigError, match="accepts its tunnel_type only"):
            from_mapping({**BASE, "role": role, "accept_tunnel_types": "vxlan, geneve"})


def test_a_tunnel_port_that_went_away_is_forgotten() -> None:
    """OVSDB no longer shows the Geneve port: it is no receive port any more (a kept
    one made every bridge view look changed, and flooding split-horizon for nothing)."""
    from dove_ryu.agent.link import SwitchLink

    link = SwitchLink(Tunnels("vxlan", ("vxlan", "geneve")))
    link.tunnel_ofport = 1
    link.other_ports({"vxlan": 1, "geneve": 2})
    assert link.tunnels.mixed
    link.other_ports({"vxlan": 1})
    assert link.tunnels.ports == {"vxlan": 1} and not link.tunnels.mixed
