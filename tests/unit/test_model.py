"""The one MAC check and the one instance-id check (dove_ryu.model), and that every edge
that takes either in (control messages, OVSDB port marks, dovectl attach) refuses the
same bad inputs with them."""

from __future__ import annotations

import re
import struct
from ipaddress import IPv4Address
from typing import Any

import pytest

from dove_ryu.adapters.ovsdb import EXT_INSTANCE, EXT_MAC, parse_vm_port
from dove_ryu.ctl import dovectl
from dove_ryu.ctl import ports as ctl_ports
from dove_ryu.model import BFD_VNI, MAX_INSTANCE, check_instance, is_multicast, normalize_mac
from dove_ryu.protocol.auth import compute_mac
from dove_ryu.protocol.header import (
    FLAG_EXTENSIONS,
    FLAG_INSTANCE,
    DoveHeader,
    MalformedMessage,
    Tlv,
    pack_frame,
)
from dove_ryu.protocol.messages import EndpointHere, MsgType, TlvType, Unlearn, decode

pytestmark = pytest.mark.unit

KEY = bytes(16)
HOST = IPv4Address("10.99.0.1")
GOOD_MAC = "02:00:00:00:00:01"
GOOD_INSTANCE = 5001

# Not a MAC at all, in any of the spellings accepted.
MALFORMED_MACS = ("zz", "02:00:00:00:00", "02:00:00:00:00:0g", "02:00-00:00:00:01", "0200000000001")
# Well-formed, but a group address: never a VM's.
GROUP_MACS = ("01:00:5e:00:00:01", "33:33:00:00:00:01", "ff:ff:ff:ff:ff:ff", "03-00-00-00-00-00")
BAD_INSTANCES = (0, -1, MAX_INSTANCE + 1)


# --------------------------------------------------------------- the semantics, once


def test_a_mac_is_normalised_to_lowercase_colons() -> None:
    assert normalize_mac("02-AB-cd-00-00-0F") == "02:ab:cd:00:00:0f"
    assert normalize_mac(" 02:00:00:00:00:01\n") == "02:00:00:00:00:01"
    assert normalize_mac("FE:FF:FF:FF:FF:FF") == "fe:ff:ff:ff:ff:ff"  # locally administered


@pytest.mark.parametrize("bad", MALFORMED_MACS)
def test_what_is_not_a_mac_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        normalize_mac(bad)
    with pytest.raises(ValueError, match="not a MAC address"):
        normalize_mac(bad, multicast=True)


def test_a_mac_must_be_text() -> None:
    with pytest.raises(ValueError, match="string"):
        normalize_mac(b"\x02\x00\x00\x00\x00\x01")


@pytest.mark.parametrize("group", GROUP_MACS)
def test_a_vm_mac_is_unicast_unless_the_caller_names_a_destination(group: str) -> None:
    with pytest.raises(ValueError, match="multicast MAC, not a VM's"):
        normalize_mac(group)
    mac = normalize_mac(group, multicast=True)
    assert is_multicast(mac) and mac == group.lower().replace("-", ":")
    assert not is_multicast(normalize_mac(GOOD_MAC))


def test_instance_ids_are_1_to_2_to_the_24_minus_2() -> None:
    assert [check_instance(i) for i in (1, GOOD_INSTANCE, MAX_INSTANCE)] == [
        1,
        GOOD_INSTANCE,
        MAX_INSTANCE,
    ]
    # The VXLAN VNI and the DOVE header's field, less the last one: the BFD tunnels' VNI.
    assert MAX_INSTANCE == 2**24 - 2 and BFD_VNI == 2**24 - 1
    with pytest.raises(ValueError, match="not in 1.."):
        check_instance(BFD_VNI)
    for bad in (*BAD_INSTANCES, True, "5001", 5001.0, None):
        with pytest.raises(ValueError, match="not in 1.."):
            check_instance(bad)


# --------------------------------------------------------------- every edge agrees


def _attach(monkeypatch: pytest.MonkeyPatch, instance: int, mac: str) -> int:
    """dovectl attach, with OVSDB out of reach: a refusal must come before it."""

    def no_ovsdb(*args: Any) -> None:
        raise AssertionError("dovectl reached OVSDB with a bad argument")

    monkeypatch.setattr(ctl_ports, "attach", no_ovsdb)
    argv = ["attach", "vm1-p", "--instance", str(instance), "--mac", mac]
    return dovectl.main(argv)


def _wire(instance: int, mac: bytes) -> bytes:
    """An authentic Unlearn frame with this header instance and MAC TLV."""
    header = DoveHeader(
        flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=MsgType.UNLEARN, instance_id=instance
    )
    tlvs = [
        Tlv(TlvType.SENDER, HOST.packed),
        Tlv(TlvType.COUNTER, struct.pack("!Q", 1)),
        Tlv(TlvType.MAC, mac),
        Tlv(TlvType.HOST, HOST.packed),
        Tlv(TlvType.SEQ, struct.pack("!Q", 1)),
        Tlv(TlvType.AUTH, bytes(16)),
    ]
    frame = pack_frame(header, tlvs)
    return frame[:-16] + compute_mac(KEY, frame[:-19])


def _marks(instance: int, mac: str) -> dict[str, str]:
    return {EXT_INSTANCE: str(instance), EXT_MAC: mac}


def test_good_input_passes_every_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    mac = bytes.fromhex(GOOD_MAC.replace(":", ""))
    assert decode(_wire(GOOD_INSTANCE, mac), key=KEY).message == Unlearn(
        GOOD_INSTANCE, GOOD_MAC, HOST, 1
    )
    port = parse_vm_port("vm1-p", 3, _marks(GOOD_INSTANCE, "02-00-00-00-00-01"))
    assert (port.instance, port.mac) == (GOOD_INSTANCE, GOOD_MAC)
    assert ctl_ports.marks(GOOD_INSTANCE, GOOD_MAC, []) == [
        f'external_ids:dove-instance="{GOOD_INSTANCE}"',
        f'external_ids:attached-mac="{GOOD_MAC}"',
    ]


@pytest.mark.parametrize("mac", MALFORMED_MACS + GROUP_MACS)
def test_every_edge_refuses_the_same_macs(
    mac: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError) as model:
        normalize_mac(mac)
    why = re.escape(str(model.value))
    with pytest.raises(ValueError, match=why):
        parse_vm_port("vm1-p", 3, _marks(GOOD_INSTANCE, mac))
    with pytest.raises(ValueError, match=why):
        ctl_ports.marks(GOOD_INSTANCE, mac, [])
    with pytest.raises(ValueError, match=why):
        EndpointHere(GOOD_INSTANCE, mac, (), HOST, 1)
    assert _attach(monkeypatch, GOOD_INSTANCE, mac) == 1
    assert "invalid MAC" in capsys.readouterr().err
    if mac in GROUP_MACS:  # only a well-formed address can be on the wire (six bytes)
        raw = bytes.fromhex(normalize_mac(mac, multicast=True).replace(":", ""))
        with pytest.raises(MalformedMessage) as wire:
            decode(_wire(GOOD_INSTANCE, raw), key=KEY)
        assert wire.value.reason == "bad_tlv_value" and "multicast" in str(wire.value)


@pytest.mark.parametrize("instance", BAD_INSTANCES)
def test_every_edge_refuses_the_same_instances(
    instance: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="not in 1.."):
        check_instance(instance)
    with pytest.raises(ValueError, match="not in 1.."):
        parse_vm_port("vm1-p", 3, _marks(instance, GOOD_MAC))
    with pytest.raises(ValueError, match="not in 1.."):
        ctl_ports.marks(instance, GOOD_MAC, [])
    with pytest.raises(ValueError, match="not in 1.."):
        Unlearn(instance, GOOD_MAC, HOST, 1)
    assert _attach(monkeypatch, instance, GOOD_MAC) == 1
    assert f"--instance {instance}" in capsys.readouterr().err
    if 0 <= instance < 1 << 24:  # what the header's 24 bits can carry (BFD_VNI too)
        with pytest.raises(MalformedMessage) as wire:
            decode(_wire(instance, bytes.fromhex("020000000001")), key=KEY)
        assert wire.value.reason == "bad_instance"
