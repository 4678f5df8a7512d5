"""Unit tests for the DOVE wire protocol: framing, control messages, MAC and anti-replay."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dove_ryu.model import MAX_INSTANCE, normalize_mac
from dove_ryu.protocol.auth import (
    AuthError,
    CounterSource,
    ReplayGuard,
    compute_mac,
    load_key,
)
from dove_ryu.protocol.header import (
    FLAG_EXTENSIONS,
    FLAG_FRAGMENT,
    FLAG_INSTANCE,
    MAX_FRAME_LEN,
    DoveHeader,
    MalformedMessage,
    Tlv,
    pack_frame,
    unpack_frame,
)
from dove_ryu.protocol.messages import (
    MAX_ANNOUNCE_INSTANCES,
    Announce,
    Envelope,
    LearnReply,
    LearnRequest,
    Message,
    MsgType,
    Requester,
    TlvType,
    Unlearn,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
SENDER = IPv4Address("10.0.0.1")
NOW = 1_700_000_000.0
NOW_US = int(NOW * 1_000_000)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ---------------------------------------------------------------------------

header_instances = st.integers(0, 2**24 - 1)  # the field: 0 when the I flag is clear
instances = st.integers(1, MAX_INSTANCE)  # what a message carries: an instance id
u32 = st.integers(0, 2**32 - 1)
ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
# A VM's MAC: any unicast address (the group bit of the first octet clear), upper case.
macs = st.binary(min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02X}" for x in bytes([b[0] & 0xFE]) + b[1:])
)

announces = st.builds(
    Announce, st.frozensets(instances, max_size=MAX_ANNOUNCE_INSTANCES).map(frozenset)
)
learn_requests = st.one_of(
    st.builds(LearnRequest, instances, u32, mac=macs),
    st.builds(LearnRequest, instances, u32, ip=ipv4),
)
learn_replies = st.builds(
    LearnReply,
    instance=instances,
    request_id=u32,
    mac=macs,
    ips=st.lists(ipv4, max_size=8, unique=True).map(tuple),
    host=ipv4,
    seq=u32,
)
unlearns = st.builds(Unlearn, instance=instances, mac=macs, host=ipv4, seq=u32)
messages = st.one_of(announces, learn_requests, learn_replies, unlearns)
counters = st.integers(0, 2**64 - 1)


def _sample_frame() -> bytes:
    reply = LearnReply(
        instance=5001,
        request_id=7,
        mac="02:00:00:00:00:0a",
        ips=(IPv4Address("192.168.1.10"),),
        host=IPv4Address("10.0.0.2"),
        seq=3,
    )
    return encode(reply, sender=SENDER, counter=NOW_US, key=KEY)


def _signed(header: DoveHeader, tlvs: list[Tlv], key: bytes = KEY) -> bytes:
    """Frame with a valid AUTH TLV appended, for crafting odd but authentic messages."""
    frame = pack_frame(header, [*tlvs, Tlv(TlvType.AUTH, bytes(16))])
    return frame[:-16] + compute_mac(key, frame[:-19])


def _common_tlvs() -> list[Tlv]:
    return [
        Tlv(TlvType.SENDER, SENDER.packed),
        Tlv(TlvType.COUNTER, struct.pack("!Q", NOW_US)),
    ]


def _unlearn_header() -> DoveHeader:
    return DoveHeader(
        flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=MsgType.UNLEARN, instance_id=42
    )


def _unlearn_tlvs() -> list[Tlv]:
    return [
        Tlv(TlvType.MAC, bytes.fromhex("020000000001")),
        Tlv(TlvType.HOST, IPv4Address("10.0.0.3").packed),
        Tlv(TlvType.SEQ, struct.pack("!Q", 9)),
    ]


# --- header -------------------------------------------------------------------------------


@given(
    instance=header_instances,
    frag_id=st.integers(0, 0xFFFF),
    frag_index=st.integers(0, 0x7FFF),
    more=st.booleans(),
    tlvs=st.lists(
        st.builds(Tlv, st.integers(0, 255), st.binary(max_size=20)), min_size=1, max_size=5
    ),
    payload=st.binary(max_size=64),
)
@FAST
def test_header_round_trip_with_fragment_fields(
    instance: int, frag_id: int, frag_index: int, more: bool, tlvs: list[Tlv], payload: bytes
) -> None:
    header = DoveHeader(
        flags=FLAG_INSTANCE | FLAG_FRAGMENT | FLAG_EXTENSIONS,
        msg_type=9,
        instance_id=instance,
        frag_id=frag_id,
        frag_index=frag_index,
        more_fragments=more,
    )
    assert unpack_frame(pack_frame(header, tlvs, payload)) == (header, tlvs, payload)


def test_header_layout_is_as_documented() -> None:
    header = DoveHeader(
        flags=FLAG_INSTANCE | FLAG_FRAGMENT | FLAG_EXTENSIONS,
        msg_type=3,
        instance_id=0x0A0B0C,
        frag_id=0x1234,
        frag_index=5,
        more_fragments=True,
    )
    frame = pack_frame(header, [Tlv(0x05, b"\x01\x02")], b"xy")
    assert frame == bytes.fromhex("1e 03 0005 0a0b0c 00 1234 8005 05 0002 0102") + b"xy"


def test_unknown_non_critical_tlv_skipped() -> None:
    header = DoveHeader(flags=FLAG_EXTENSIONS, msg_type=1)
    frame = pack_frame(header, [Tlv(0x10, b"zz"), Tlv(0x81, b"abcd")], b"p")
    parsed_header, tlvs, payload = unpack_frame(frame, known_tlvs={0x81})
    assert parsed_header == header
    assert tlvs == [Tlv(0x81, b"abcd")]
    assert payload == b"p"


def test_unknown_critical_tlv_rejected_by_header() -> None:
    frame = pack_frame(DoveHeader(flags=FLAG_EXTENSIONS, msg_type=1), [Tlv(0x90, b"")])
    with pytest.raises(MalformedMessage) as exc:
        unpack_frame(frame, known_tlvs={0x81})
    assert exc.value.reason == "unknown_critical_tlv"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f[:11], "truncated"),
        (lambda f: bytes([0x20 | (f[0] & 0xF)]) + f[1:], "bad_version"),
        (lambda f: bytes([f[0] | 0x1]) + f[1:], "reserved_bits"),
        (lambda f: f[:7] + b"\x01" + f[8:], "reserved_bits"),
        (lambda f: f[:9] + b"\x01" + f[10:], "reserved_bits"),
        (lambda f: f[:2] + b"\x00\x40" + f[4:], "truncated"),
        (lambda f: f[:2] + b"\x00\x04" + f[4:], "bad_tlv_length"),
        (lambda f: f + bytes(MAX_FRAME_LEN), "too_long"),
    ],
)
def test_header_rejects(mutate: object, reason: str) -> None:
    frame = pack_frame(DoveHeader(flags=FLAG_EXTENSIONS, msg_type=1), [Tlv(0x81, b"abcd")])
    with pytest.raises(MalformedMessage) as exc:
        unpack_frame(mutate(frame))  # type: ignore[operator]
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"msg_type": 1, "instance_id": 2**24, "flags": FLAG_INSTANCE},
        {"msg_type": 1, "instance_id": 5},  # I flag clear
        {"msg_type": 1, "frag_id": 1},  # F flag clear
        {"msg_type": 256},
        {"msg_type": 1, "flags": 0x1},
        {"msg_type": 1, "flags": FLAG_FRAGMENT, "frag_index": 0x8000},
    ],
)
def test_header_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DoveHeader(**kwargs)  # type: ignore[arg-type]


def test_pack_refuses_inconsistent_or_oversized_frames() -> None:
    with pytest.raises(ValueError):
        pack_frame(DoveHeader(msg_type=1), [Tlv(1, b"")])  # E flag clear
    with pytest.raises(ValueError):
        pack_frame(DoveHeader(msg_type=1), [], bytes(MAX_FRAME_LEN))


# --- messages -----------------------------------------------------------------------------


@given(message=messages, sender=ipv4, counter=counters)
@FAST
def test_message_round_trip(message: Message, sender: IPv4Address, counter: int) -> None:
    frame = encode(message, sender=sender, counter=counter, key=KEY)
    assert len(frame) <= MAX_FRAME_LEN
    assert decode(frame, key=KEY) == Envelope(sender, counter, message)


def test_mac_normalised() -> None:
    assert normalize_mac("AA-BB-CC-DD-EE-0F") == "aa:bb:cc:dd:ee:0f"
    assert LearnRequest(1, 2, mac="AA:BB:CC:DD:EE:FE").mac == "aa:bb:cc:dd:ee:fe"
    for bad in ("aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:fg", "aa:bb-cc:dd:ee:ff", "aabbccddeeff"):
        with pytest.raises(ValueError):
            normalize_mac(bad)
    for group in ("AB:BB:CC:DD:EE:FF", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"):
        with pytest.raises(ValueError, match="multicast"):
            LearnRequest(1, 2, mac=group)


def test_message_validation() -> None:
    with pytest.raises(ValueError):
        LearnRequest(1, 2)  # neither mac nor ip
    with pytest.raises(ValueError):
        LearnRequest(1, 2, mac="02:00:00:00:00:01", ip=IPv4Address("1.2.3.4"))
    with pytest.raises(ValueError):
        Unlearn(2**24, "02:00:00:00:00:01", SENDER, 1)
    with pytest.raises(ValueError):
        Announce(frozenset(range(MAX_ANNOUNCE_INSTANCES + 1)))
    with pytest.raises(ValueError):
        encode(Announce(frozenset()), sender=SENDER, counter=-1, key=KEY)


def test_encode_refuses_oversized_frame() -> None:
    ips = tuple(IPv4Address(i) for i in range(1, 300))
    reply = LearnReply(1, 1, "02:00:00:00:00:01", ips, SENDER, 1)
    with pytest.raises(ValueError):
        encode(reply, sender=SENDER, counter=1, key=KEY)


def test_full_announce_fits() -> None:
    announce = Announce(frozenset(range(1, MAX_ANNOUNCE_INSTANCES + 1)))
    frame = encode(announce, sender=SENDER, counter=1, key=KEY)
    assert len(frame) <= MAX_FRAME_LEN
    assert decode(frame, key=KEY).message == announce


def test_wrong_key_is_bad_mac() -> None:
    with pytest.raises(AuthError) as exc:
        decode(_sample_frame(), key=OTHER_KEY)
    assert exc.value.reason == "bad_mac"


def test_missing_auth_is_no_auth() -> None:
    frame = pack_frame(_unlearn_header(), [*_common_tlvs(), *_unlearn_tlvs()])
    with pytest.raises(AuthError) as exc:
        decode(frame, key=KEY)
    assert exc.value.reason == "no_auth"


def test_authentic_unknown_critical_tlv_rejected() -> None:
    frame = _signed(_unlearn_header(), [*_common_tlvs(), *_unlearn_tlvs(), Tlv(0x9A, b"x")])
    with pytest.raises(MalformedMessage) as exc:
        decode(frame, key=KEY)
    assert exc.value.reason == "unknown_critical_tlv"


def test_authentic_unknown_non_critical_tlv_skipped() -> None:
    frame = _signed(_unlearn_header(), [*_common_tlvs(), Tlv(0x1A, b"x"), *_unlearn_tlvs()])
    envelope = decode(frame, key=KEY)
    assert envelope.message == Unlearn(42, "02:00:00:00:00:01", IPv4Address("10.0.0.3"), 9)


@pytest.mark.parametrize(
    ("header", "tlvs", "reason"),
    [
        (_unlearn_header(), [*_common_tlvs(), *_unlearn_tlvs()[:2]], "missing_tlv"),
        (
            _unlearn_header(),
            [*_common_tlvs(), *_unlearn_tlvs(), _unlearn_tlvs()[2]],
            "bad_tlv_value",
        ),
        (
            _unlearn_header(),
            [*_common_tlvs(), Tlv(TlvType.MAC, b"\x02"), *_unlearn_tlvs()[1:]],
            "bad_tlv_value",
        ),
        (
            DoveHeader(flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=77, instance_id=1),
            [*_common_tlvs()],
            "bad_msg_type",
        ),
        (
            DoveHeader(flags=FLAG_EXTENSIONS, msg_type=MsgType.UNLEARN),
            [*_common_tlvs(), *_unlearn_tlvs()],
            "bad_instance",
        ),
        (
            _unlearn_header(),
            [*_common_tlvs(), *_unlearn_tlvs(), Tlv(TlvType.REQUEST_ID, bytes(4))],
            "unexpected_tlv",
        ),
        (
            DoveHeader(flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=MsgType.UNLEARN),
            [*_common_tlvs(), *_unlearn_tlvs()],
            "bad_instance",  # the I flag set but instance 0: no instance has that id
        ),
        (
            _unlearn_header(),
            [
                *_common_tlvs(),
                Tlv(TlvType.MAC, bytes.fromhex("01005e000001")),
                *_unlearn_tlvs()[1:],
            ],
            "bad_tlv_value",  # a multicast MAC is never a VM's
        ),
        (
            DoveHeader(flags=FLAG_EXTENSIONS, msg_type=MsgType.ANNOUNCE),
            [*_common_tlvs(), Tlv(TlvType.INSTANCES, bytes.fromhex("001389000000"))],
            "bad_tlv_value",  # 5001 and 0
        ),
        (
            DoveHeader(flags=FLAG_EXTENSIONS, msg_type=MsgType.ANNOUNCE),
            [*_common_tlvs(), Tlv(TlvType.INSTANCES, bytes(6))],
            "bad_tlv_value",
        ),
    ],
)
def test_authentic_but_invalid_messages(header: DoveHeader, tlvs: list[Tlv], reason: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        decode(_signed(header, tlvs), key=KEY)
    assert exc.value.reason == reason


def test_payload_after_auth_is_trailing_bytes() -> None:
    with pytest.raises(MalformedMessage) as exc:
        decode(_sample_frame() + b"x", key=KEY)
    assert exc.value.reason == "trailing_bytes"


def _decode_must_fail_cleanly(data: bytes) -> None:
    try:
        decode(data, key=KEY)
    except (MalformedMessage, AuthError):
        return
    raise AssertionError("corrupted frame decoded successfully")


@given(bit=st.integers(0, len(_sample_frame()) * 8 - 1))
@FAST
def test_flipped_bit_never_decodes(bit: int) -> None:
    frame = bytearray(_sample_frame())
    frame[bit // 8] ^= 1 << (bit % 8)
    _decode_must_fail_cleanly(bytes(frame))


@given(cut=st.integers(0, len(_sample_frame()) - 1))
@FAST
def test_truncated_frame_never_decodes(cut: int) -> None:
    _decode_must_fail_cleanly(_sample_frame()[:cut])


@given(
    data=st.one_of(
        st.binary(max_size=1500),
        st.binary(max_size=200).map(lambda b: b"\x12" + b),  # version 1, E flag
    )
)
@FAST
def test_random_bytes_never_decode(data: bytes) -> None:
    _decode_must_fail_cleanly(data)


# --- anti-replay --------------------------------------------------------------------------


def test_load_key() -> None:
    assert load_key(" 00112233445566778899AABBCCDDEEFF\n") == KEY
    for bad in ("", "0011", "zz112233445566778899aabbccddeeff", "0" * 33):
        with pytest.raises(ValueError):
            load_key(bad)


def test_counter_source_monotonic_when_clock_steps_back() -> None:
    source = CounterSource()
    first = source.next(NOW)
    assert first == NOW_US
    second = source.next(NOW - 100)
    third = source.next(NOW - 100)
    assert first < second < third
    assert source.next(NOW + 1) == NOW_US + 1_000_000


def test_replay_of_identical_frame_rejected() -> None:
    guard = ReplayGuard()
    frame = _sample_frame()
    envelope = decode(frame, key=KEY)
    guard.check(envelope.sender, envelope.counter, NOW)
    again = decode(frame, key=KEY)
    with pytest.raises(AuthError) as exc:
        guard.check(again.sender, again.counter, NOW)
    assert exc.value.reason == "replay"


def test_reordered_within_window_accepted() -> None:
    guard = ReplayGuard(window=8)
    counters = [NOW_US + i * 1000 for i in range(20)]
    order = [0, 2, 1, 5, 3, 4, 9, 6, 8, 7, 15, 10, 14, 11, 13, 12, 19, 16, 18, 17]
    for i in order:
        guard.check(SENDER, counters[i], NOW)
    for c in counters[12:]:
        with pytest.raises(AuthError):
            guard.check(SENDER, c, NOW)


def test_older_than_window_rejected() -> None:
    guard = ReplayGuard(window=4)
    for i in range(1, 6):
        guard.check(SENDER, NOW_US + i, NOW)
    with pytest.raises(AuthError) as exc:
        guard.check(SENDER, NOW_US, NOW)  # never seen, but below the window
    assert exc.value.reason == "replay"


def test_not_full_window_accepts_earlier_unseen_counter() -> None:
    guard = ReplayGuard(window=4)
    guard.check(SENDER, NOW_US + 10, NOW)
    guard.check(SENDER, NOW_US + 5, NOW)


def test_skewed_timestamp_rejected() -> None:
    guard = ReplayGuard(max_skew=30.0)
    for counter in (NOW_US - 31_000_000, NOW_US + 31_000_000):
        with pytest.raises(AuthError) as exc:
            guard.check(SENDER, counter, NOW)
        assert exc.value.reason == "stale_counter"
    assert SENDER not in guard
    guard.check(SENDER, NOW_US - 29_000_000, NOW)
    guard.check(SENDER, NOW_US + 29_000_000, NOW)
    with pytest.raises(AuthError) as exc:
        guard.check(SENDER, NOW_US + 31_000_000, NOW)  # far ahead even for a known sender
    assert exc.value.reason == "stale_counter"


def test_known_sender_with_slow_clock_accepted() -> None:
    guard = ReplayGuard(max_skew=30.0)
    guard.check(SENDER, NOW_US - 29_000_000, NOW)
    guard.check(SENDER, NOW_US - 28_000_000, NOW + 10)  # 38 s behind, but newer than last


def test_max_senders_bound() -> None:
    guard = ReplayGuard(max_senders=3)
    senders = [IPv4Address(f"10.0.1.{i}") for i in range(10)]
    for i, sender in enumerate(senders):
        guard.check(sender, NOW_US + i, NOW)
        assert len(guard) <= 3
    guard.check(senders[7], NOW_US + 100, NOW)  # refresh: 7 is now most recent
    guard.check(senders[0], NOW_US + 101, NOW)  # evicts least recently seen: 8
    assert senders[7] in guard and senders[8] not in guard and senders[9] in guard


def test_learn_request_carries_the_requester_for_gleaning() -> None:
    who = Requester("02:00:00:00:00:0A", (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.9")), 7)
    msg = LearnRequest(5001, 3, ip=IPv4Address("10.0.0.2"), requester=who)
    frame = encode(msg, sender=IPv4Address("10.99.0.1"), counter=1, key=KEY)
    assert decode(frame, key=KEY).message == msg
    assert decode(frame, key=KEY).message.requester.mac == "02:00:00:00:00:0a"


ROUTED_WHO = Requester("02:00:00:00:00:0a", (IPv4Address("10.0.0.1"),), 7, instance=5101)


def test_a_routed_requester_round_trips_with_its_own_instance_in_one_tlv() -> None:
    msg = LearnRequest(5001, 3, ip=IPv4Address("10.0.1.2"), requester=ROUTED_WHO)
    frame = encode(msg, sender=IPv4Address("10.99.0.1"), counter=1, key=KEY)
    assert decode(frame, key=KEY).message == msg
    _, tlvs, _ = unpack_frame(frame)
    types = [t.type for t in tlvs]
    # Not in the same-instance TLVs: an agent without ROUTED_REQUESTER skips it whole
    # instead of taking the requester for one of the request's instance.
    assert TlvType.ROUTED_REQUESTER in types and TlvType.REQUESTER_MAC not in types
    (value,) = [t.value for t in tlvs if t.type == TlvType.ROUTED_REQUESTER]
    assert value == bytes.fromhex("0013ed 02000000000a 0000000000000007 0a000001")
    no_ips = LearnRequest(
        5001, 4, mac="02:00:00:00:00:0b", requester=Requester("02:00:00:00:00:0c", (), 1, 5101)
    )
    assert decode(encode(no_ips, sender=SENDER, counter=2, key=KEY), key=KEY).message == no_ips


def test_a_requester_of_the_request_s_own_instance_names_no_instance() -> None:
    with pytest.raises(ValueError):
        LearnRequest(5101, 3, ip=IPv4Address("10.0.1.2"), requester=ROUTED_WHO)


def _routed_request(*extra: Tlv) -> bytes:
    header = DoveHeader(
        flags=FLAG_INSTANCE | FLAG_EXTENSIONS, msg_type=MsgType.LEARN_REQUEST, instance_id=5001
    )
    tlvs = [
        *_common_tlvs(),
        Tlv(TlvType.REQUEST_ID, bytes(4)),
        Tlv(TlvType.IPV4, IPv4Address("10.0.1.2").packed),
    ]
    return _signed(header, [*tlvs, *extra])


_WHO_VALUE = bytes.fromhex("0013ed 02000000000a 0000000000000007")


@pytest.mark.parametrize(
    "value",
    [
        b"",
        _WHO_VALUE[:-1],  # short
        _WHO_VALUE + b"\x0a\x00",  # a partial address
        bytes(3) + _WHO_VALUE[3:],  # instance 0
        bytes.fromhex("001389") + _WHO_VALUE[3:],  # the request's own instance
        _WHO_VALUE[:3] + bytes.fromhex("01005e000001") + _WHO_VALUE[9:],  # multicast MAC
        _WHO_VALUE + bytes.fromhex("0a000001 0a000001"),  # an address twice
    ],
)
def test_a_malformed_routed_requester_is_rejected(value: bytes) -> None:
    with pytest.raises(MalformedMessage) as exc:
        decode(_routed_request(Tlv(TlvType.ROUTED_REQUESTER, value)), key=KEY)
    assert exc.value.reason == "bad_tlv_value"


def test_a_routed_requester_with_a_plain_one_is_rejected() -> None:
    frame = _routed_request(
        Tlv(TlvType.REQUESTER_MAC, bytes.fromhex("02000000000c")),
        Tlv(TlvType.REQUESTER_SEQ, bytes(8)),
        Tlv(TlvType.ROUTED_REQUESTER, _WHO_VALUE),
    )
    with pytest.raises(MalformedMessage) as exc:
        decode(frame, key=KEY)
    assert exc.value.reason == "bad_tlv_value"
    good = decode(_routed_request(Tlv(TlvType.ROUTED_REQUESTER, _WHO_VALUE)), key=KEY).message
    assert isinstance(good, LearnRequest) and good.requester == Requester(
        "02:00:00:00:00:0a", (), 7, 5101
    )
