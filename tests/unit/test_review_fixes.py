"""Fixes found by the review of issue 13: IPv6 addresses across sites, bounded address
marks, a config parse error that never echoes a key, restarted peers answered early."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace

import pytest

from dove_ryu.adapters.options import ConfigError, reload_keyring
from dove_ryu.adapters.ovsdb import MAX_ADDRESSES_PER_FAMILY, parse_vm_port
from dove_ryu.agent.membership import RESTART_ANSWER_INTERVAL, Membership
from dove_ryu.model import link_local
from tests.fakesites import reference_sites

pytestmark = pytest.mark.unit

MAC = "02:00:00:00:00:01"


def test_an_endpoint_in_another_site_keeps_its_ipv6_addresses_through_the_proxies() -> None:
    sites = reference_sites()
    hv = sites.nodes["s1hv1"]
    remote = [e.endpoint for e in hv.core.p.learned.entries() if e.endpoint.mac.endswith("02:01")]
    assert remote, "s1hv1 learned no VM of site 2"
    for ep in remote:
        assert link_local(ep.mac) in ep.ips6, ep


def test_a_mark_with_too_many_addresses_of_a_family_is_refused() -> None:
    many = ",".join(f"fd00::{i + 1}" for i in range(MAX_ADDRESSES_PER_FAMILY + 1))
    marks = {"dove-instance": "5001", "attached-mac": MAC, "dove-ips": many}
    with pytest.raises(ValueError, match="more than"):
        parse_vm_port("a-p", 2, marks)
    most = ",".join(f"10.0.0.{i + 1}" for i in range(MAX_ADDRESSES_PER_FAMILY))
    assert len(parse_vm_port("a-p", 2, {**marks, "dove-ips": most}).ips) == 8


def test_a_config_line_that_cannot_be_parsed_is_named_but_never_shown(tmp_path: Path) -> None:
    secret = "00112233445566778899aabbccddeeff"
    conf = tmp_path / "dove.ini"
    conf.write_text(f"[dove]\nauth_key_id = 1\n{secret}\n")
    with pytest.raises(ConfigError) as raised:
        reload_keyring(SimpleNamespace(config_file=[str(conf)], config_dir=None))  # type: ignore[arg-type]
    assert "line 3" in str(raised.value) and secret not in str(raised.value)


def test_a_restart_seen_while_answers_are_held_back_is_answered_later() -> None:
    members = Membership(announce_interval=1.0)
    peer = IPv4Address("10.99.0.2")
    assert not members.restarted(0.0, peer, 100)  # first heard: not a restart
    assert members.restarted(1.0, peer, 200)  # restarted: answered
    # It restarts again at once: held back, but owed.
    assert not members.restarted(1.2, peer, 300)
    assert members.restarted(1.0 + RESTART_ANSWER_INTERVAL, peer, 300)
    assert not members.restarted(5.0, peer, 300)  # the same incarnation again
    assert IPv6Address("fe80::1")  # (keeps the import honest for IPv6 helpers)
