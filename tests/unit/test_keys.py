"""Deployment keys by id and their rotation (issue 13 point 5, docs/control-plane.md 3, 5):
the key settings, KEY_ID on the wire, acceptance and refusal by key id, a live reload,
and a rotation across three hosts on the fake switches."""

from __future__ import annotations

import json
import logging
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.adapters import metrics, options
from dove_ryu.agent.channel import ControlChannel
from dove_ryu.agent.stats import Stats
from dove_ryu.config import ConfigError, from_mapping, keyring_from_mapping
from dove_ryu.ctl import dovectl
from dove_ryu.protocol.auth import AuthError, KeyRing
from dove_ryu.protocol.header import MalformedMessage, Tlv, pack_frame, unpack_frame
from dove_ryu.protocol.messages import LearnRequest, TlvType, decode, encode
from tests.unit.test_core import MAC_A, MAC_B, eth, ip, local, three_hosts
from tests.unit.test_options import NoWatcher, free_udp_port, ini, parsed

pytestmark = pytest.mark.unit

K0 = "00112233445566778899aabbccddeeff"
K1 = "11" * 16
K2 = "22" * 24
BASE = {"underlay_ip": "10.99.0.1"}


def ring(signing: int, *ids: int) -> KeyRing:
    return KeyRing.of({i: bytes.fromhex({0: K0, 1: K1, 2: K2}[i]) for i in ids}, signing)


# --------------------------------------------------------------------------- config


def test_auth_key_alone_is_key_0_and_signs() -> None:
    cfg = from_mapping({**BASE, "auth_key": K0})
    assert cfg.host.keyring == ring(0, 0)
    assert cfg.host.auth_key == bytes.fromhex(K0)  # what existing configs and code read


def test_keys_by_id_inline_and_from_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "dove.keys"
    keys.write_text(f"# the deployment keys\n\n2:{K2}   # new\n")
    cfg = from_mapping(
        {**BASE, "auth_key": K0, "auth_keys": f"1:{K1}", "auth_keys_file": str(keys)}
        | {"auth_key_id": "2"}
    )
    assert cfg.host.keyring == ring(2, 0, 1, 2)
    assert cfg.host.keyring.signing_key == bytes.fromhex(K2)
    assert K2 not in repr(cfg.host.keyring) and K1 not in repr(cfg.host.keyring)


@pytest.mark.parametrize(
    ("values", "named", "says"),
    [
        ({"auth_keys": f"256:{K1}"}, "auth_keys", "'256' is not a key id (0-255)"),
        ({"auth_keys": f"x:{K1}"}, "auth_keys", "not a key id"),
        ({"auth_keys": K1}, "auth_keys", "not ID:HEX"),
        ({"auth_keys": f"1:{K1},1:{K2}"}, "auth_keys", "key id 1 is given twice"),
        ({"auth_keys": "1:abcd"}, "auth_keys", "32 to 128 hex digits"),
        ({"auth_key": K0, "auth_keys": f"0:{K1}"}, "auth_keys", "key id 0 is auth_key's"),
        ({"auth_keys": f"1:{K1}"}, "auth_key_id", "key 0 is not among the keys (1)"),
        ({"auth_key": K0, "auth_key_id": "3"}, "auth_key_id", "key 3 is not among"),
        ({"auth_key": K0, "auth_key_id": "-1"}, "auth_key_id", "not a key id"),
        ({"auth_key_id": "1"}, "auth_key", "missing"),
        ({"auth_keys_file": "/nonexistent/keys"}, "auth_keys_file", "cannot read"),
    ],
)
def test_bad_key_settings_say_which_and_never_show_a_key(
    values: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        from_mapping({**BASE, **values})
    message = str(raised.value)
    assert message.startswith(f"[dove] {named}: ") and says in message, message
    assert K1 not in message and K2 not in message and K0 not in message


def test_a_key_id_in_the_file_and_inline_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"1:{K2}\n")
    with pytest.raises(ConfigError, match=r"auth_keys_file: key id 1 is in auth_keys too"):
        from_mapping({**BASE, "auth_keys": f"1:{K1}", "auth_keys_file": str(keys)})
    keys.write_text(f"1:{K1}\n1:{K2}\n")
    with pytest.raises(ConfigError, match=r"key id 1 is given twice"):
        from_mapping({**BASE, "auth_keys_file": str(keys), "auth_key_id": "1"})


# ---------------------------------------------------------------------------- codec

ME, PEER = IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2")
REQUEST = LearnRequest(instance=5001, request_id=7, mac=MAC_B)


def frame(
    key_id: int, counter: int = 1, key: str | None = None, sender: IPv4Address = PEER
) -> bytes:
    secret = bytes.fromhex(key or {0: K0, 1: K1, 2: K2}[key_id])
    return encode(REQUEST, sender=sender, receiver=ME, counter=counter, key=secret, key_id=key_id)


def test_key_0_is_not_named_on_the_wire_and_others_are() -> None:
    _, tlvs, _ = unpack_frame(frame(0))
    assert TlvType.KEY_ID not in [t.type for t in tlvs]
    assert frame(0) == encode(
        REQUEST, sender=PEER, receiver=ME, counter=1, key=bytes.fromhex(K0)
    )  # byte for byte what an agent before key ids sends
    _, tlvs, _ = unpack_frame(frame(2))
    assert [t.value for t in tlvs if t.type == TlvType.KEY_ID] == [b"\x02"]
    assert tlvs[-1].type == TlvType.AUTH  # KEY_ID is covered by the MAC


def test_the_receiver_picks_the_key_the_message_names() -> None:
    for key_id in (0, 1, 2):
        env = decode(frame(key_id), key=ring(0, 0, 1, 2))
        assert (env.key_id, env.message) == (key_id, REQUEST)
    # One key given as bytes is key 0, as before.
    assert decode(frame(0), key=bytes.fromhex(K0)).key_id == 0


def test_an_unknown_key_id_is_refused_before_the_mac() -> None:
    with pytest.raises(AuthError) as raised:
        decode(frame(2), key=ring(1, 1))
    assert (raised.value.reason, raised.value.key_id) == ("unknown_key", 2)
    # An agent holding key 0 only (the old world) refuses a key-2 message the same way.
    with pytest.raises(AuthError, match="unknown_key"):
        decode(frame(2), key=bytes.fromhex(K0))


def test_a_message_naming_another_key_than_its_signer_fails_the_mac() -> None:
    forged = frame(1, key=K2)  # says key 1, signed with key 2
    with pytest.raises(AuthError, match="bad_mac"):
        decode(forged, key=ring(1, 1, 2))


def test_key_id_twice_or_of_the_wrong_size_is_malformed() -> None:
    header, tlvs, _ = unpack_frame(frame(1))
    for bad in ([Tlv(TlvType.KEY_ID, b"\x01")], [Tlv(TlvType.KEY_ID, b"\x00\x01")]):
        body = [t for t in tlvs if t.type != TlvType.KEY_ID] if len(bad[0].value) > 1 else tlvs
        data = pack_frame(header, [*body[:-1], *bad, body[-1]])
        with pytest.raises(MalformedMessage, match="KEY_ID"):
            decode(data, key=ring(1, 1))


# -------------------------------------------------------------------------- channel


def channel(keys: KeyRing) -> ControlChannel:
    ch = ControlChannel(keys, (ME,), Stats("h1", logging.getLogger("test")))
    ch.wall_clock = lambda: 1000.0
    return ch


NOW_US = 1000 * 1_000_000


def test_accepted_per_key_and_each_peer_with_its_last_key() -> None:
    ch = channel(ring(1, 1, 2))
    assert ch.receive(5.0, frame(1, NOW_US), PEER) is not None
    assert ch.receive(6.0, frame(2, NOW_US + 1), PEER) is not None
    assert ch.accepted_by_key == {1: 1, 2: 1}
    assert ch.peers_status(8.0) == [
        {"address": str(PEER), "key_id": 2, "last_heard": 2.0, "role": "unknown", "messages": 2}
    ]
    assert ch.key_status() == {
        "signing": 1,
        "accepted": [1, 2],
        "retired": [],
        "accepted_messages": {"1": 1, "2": 1},
    }


def test_a_retired_key_is_refused_and_counted_apart_from_an_unknown_one() -> None:
    ch = channel(ring(1, 1))
    ch.rekey(1.0, ring(2, 1, 2))
    ch.rekey(2.0, ring(2, 2))
    assert ch.key_status()["retired"] == [1]
    assert ch.receive(3.0, frame(1, NOW_US), PEER) is None
    assert ch.receive(3.0, frame(0, NOW_US + 1), PEER) is None
    assert ch.stats.counters["drop_control_retired_key"] == 1
    assert ch.stats.counters["drop_control_unknown_key"] == 1
    assert ch.peers == {}  # refused messages teach nothing about a peer
    # A key brought back is no longer retired.
    ch.rekey(4.0, ring(2, 1, 2))
    assert ch.key_status()["retired"] == []


def test_anti_replay_holds_across_a_key_change() -> None:
    ch = channel(ring(1, 1, 2))
    assert ch.receive(1.0, frame(1, NOW_US), PEER) is not None
    ch.rekey(2.0, ring(2, 1, 2))
    # The same counter again, now under key 2: a replay, whatever the key.
    assert ch.receive(3.0, frame(2, NOW_US), PEER) is None
    assert ch.stats.counters["drop_control_replay"] == 1
    assert ch.receive(3.0, frame(2, NOW_US + 1), PEER) is not None


def test_the_signing_key_follows_a_rekey() -> None:
    ch = channel(ring(1, 1, 2))
    first = ch.datagram(PEER, REQUEST).payload
    assert decode(first, key=ring(1, 1)).key_id == 1
    ch.rekey(1.0, ring(2, 1, 2))
    second = ch.datagram(PEER, REQUEST).payload
    assert decode(second, key=ring(2, 2)).key_id == 2


# ------------------------------------------------------------ rotation, three hosts


def keys_of(*ids: int) -> str:
    return ",".join(f"{i}:{ {0: K0, 1: K1, 2: K2}[i] }" for i in ids)


def test_rotation_host_by_host_keeps_learning_and_then_refuses_the_old_key() -> None:
    net = three_hosts(auth_key_id="1", auth_keys=keys_of(1))
    cores = [h.core for h in net.hosts.values()]
    # The settings hold no auth_key: three_hosts gives one (key 0); retire it first.
    for core in cores:
        core.p.channel.rekey(net.now, ring(1, 1))
    for core in cores:  # 1. the new key everywhere, accepted and not used yet
        core.p.channel.rekey(net.now, ring(1, 1, 2))
    net.advance(2.0)
    assert all(set(c.p.channel.accepted_by_key) <= {0, 1} for c in cores)
    # 2. host by host to key 2; after host 1 switched, a first LEARN works both ways.
    cores[0].p.channel.rekey(net.now, ring(2, 1, 2))
    assert net.send(1, 1, eth(MAC_A, MAC_B)) == []  # held for the LEARN
    seen = net.deliver()
    assert local(seen) == [(2, 1)]
    for core in cores[1:]:
        core.p.channel.rekey(net.now, ring(2, 1, 2))
    net.advance(2.0)
    peers = {p["address"]: p["key_id"] for p in cores[0].p.channel.peers_status(net.now)}
    assert peers == {str(ip(2)): 2, str(ip(3)): 2}
    before = {n: h.core.p.channel.accepted_by_key[1] for n, h in net.hosts.items()}
    net.advance(2.0)
    assert {n: h.core.p.channel.accepted_by_key[1] for n, h in net.hosts.items()} == before
    # 3. retire key 1: a message under it is refused and counted.
    for core in cores:
        core.p.channel.rekey(net.now, ring(2, 2))
    stale = frame(1, int(time.time() * 1_000_000), sender=ip(2))  # to ip(1) == ME
    h1 = net.hosts[1].core
    out = h1.control_message(net.now, stale, ip(2))
    assert out.datagrams == [] and h1.p.stats.counters["drop_control_retired_key"] == 1
    net.advance(2.0)  # and everything else still flows under key 2
    assert h1.p.stats.counters["drop_control_retired_key"] == 1


# ------------------------------------------------------------------- reload, shell


def test_reload_reads_the_key_settings_again(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"1:{K1}\n")
    conf_file = ini(tmp_path, {**BASE, "auth_keys_file": str(keys), "auth_key_id": "1"})
    conf = parsed(conf_file)
    assert options.dove_config(conf).host.keyring == ring(1, 1)
    keys.write_text(f"1:{K1}\n2:{K2}\n")
    assert options.reload_keyring(conf) == ring(1, 1, 2)
    conf_file.write_text(conf_file.read_text().replace("auth_key_id = 1", "auth_key_id = 2"))
    assert options.reload_keyring(conf) == ring(2, 1, 2)
    assert keyring_from_mapping({"auth_key": K0}) == ring(0, 0)


def test_the_agent_reloads_its_keys_live_and_keeps_them_on_a_bad_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os_ken.cfg
    from os_ken.base.app_manager import AppManager

    from dove_ryu.adapters import shell

    manager = AppManager()
    manager.load_apps(["dove_ryu.adapters.shell"])
    settings = {
        "underlay_ip": "127.0.0.1",
        "auth_keys": keys_of(1),
        "auth_key_id": "1",
        "control_port": str(free_udp_port()),
        "admin_socket": str(tmp_path / "admin.sock"),
    }
    conf_file = ini(tmp_path, settings)
    monkeypatch.setattr(os_ken.cfg, "CONF", parsed(conf_file))
    monkeypatch.setattr(shell, "PortWatcher", NoWatcher)
    app = manager.applications_cls["dove_ryu.adapters.shell"]()
    try:
        conf_file.write_text(ini(tmp_path, {**settings, "auth_keys": keys_of(1, 2)}).read_text())
        answer = app._admin({"cmd": "reload_keys"})
        assert answer["accepted"] == [1, 2] and answer["added"] == [2], answer
        conf_file.write_text(
            ini(tmp_path, {**settings, "auth_keys": keys_of(2), "auth_key_id": "1"}).read_text()
        )
        answer = app._admin({"cmd": "reload_keys"})
        assert "auth_key_id: key 1 is not among the keys (2)" in answer["error"]
        assert app._admin({"cmd": "status"})["keys"]["accepted"] == [1, 2]  # kept
        assert app.core.counters["keys_reload_failed"] == 1
        peers = app._admin({"cmd": "peers"})
        assert peers == {"keys": app.core.p.channel.key_status(), "peers": []}
        json.dumps(peers)  # the admin socket's answer is JSON
        text = metrics.render(metrics.snapshot(app.core, {}))
        assert "dove_auth_key_signing 1.0" in text
        assert 'dove_auth_key_accepted{key_id="2"} 1.0' in text
        assert 'dove_control_accepted_total{key_id="2"} 0.0' in text
        assert K1 not in text and K2 not in text
    finally:
        app.close()


# ------------------------------------------------------------------------- dovectl


def test_dovectl_peers_and_keys_show_ids_never_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {"signing": 2, "accepted": [1, 2], "retired": [0], "accepted_messages": {"2": 9}}
    answers: dict[str, Any] = {
        "peers": {
            "keys": keys,
            "peers": [
                {
                    "address": "10.99.0.2",
                    "key_id": 2,
                    "last_heard": 0.4,
                    "role": "host",
                    "messages": 9,
                }
            ],
        },
        "status": {"keys": keys},
        "reload_keys": {**keys, "added": [2], "removed": [0]},
    }
    monkeypatch.setattr(dovectl, "query", lambda path, request: answers[request["cmd"]])
    assert dovectl.main(["peers"]) == 0
    out = capsys.readouterr().out
    assert "keys: signing with 2, accepting 1, 2, retired 0" in out
    assert out.splitlines()[-1].split() == ["10.99.0.2", "host", "2", "0.4s", "9"]
    assert dovectl.main(["peers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answers["peers"]
    assert dovectl.main(["keys", "reload"]) == 0
    assert "added 2, removed 0" in capsys.readouterr().out
    assert dovectl.main(["keys", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signing"] == 2
