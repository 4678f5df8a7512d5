"""Rotating the deployment key under traffic (issue 13 point 5, docs/control-plane.md
section 5), on real agents in one shared emulation (the `dove` fixture: t1vm1@hv1,
t1vm2@hv2 in instance 5001; t2vm1@hv2, t2vm2@hv3 in 5002; a probe on the underlay).

The agents start on key 1 only (no key 0).  The tests run in file order, as an operator
would: key 2 added everywhere, the hosts switched one by one to sign with it while a ping
stream between hv1 and hv2 runs (and a first LEARN crosses the mixed deployment), key 1
retired; then a message signed with key 1 is refused and counted, and `dovectl peers`
shows key 2 for every peer.  Keys change through the agents' files and a reload
(`dovectl keys reload`, SIGHUP), never a restart.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from dove_ryu.config import HostConfig  # noqa: E402
from dove_ryu.protocol.messages import LearnRequest, encode  # noqa: E402
from mininet_topos.agents import ADMIN_SOCKET, admin  # noqa: E402
from mininet_topos.dove_agent import reload_agent_keys, set_agent_keys  # noqa: E402
from mininet_topos.dove_topo import PROBE  # noqa: E402
from mininet_topos.hypervisor import Hypervisor, wait_until  # noqa: E402
from tests.tools import netsend  # noqa: E402

K1, K2 = secrets.token_hex(16), secrets.token_hex(32)
# Read by conftest's `dove` fixture: every agent on key 1, and no key 0 at all.
DOVE_EXTRA = {"auth_key": None, "auth_keys": f"1:{K1}", "auth_key_id": 1}

PYTHON = sys.executable
DOVECTL = str(Path(PYTHON).parent / "dovectl")
NETSEND = str(Path(netsend.__file__).resolve())
PROBE_IP = "10.99.0.250"


def dovectl(hv: Hypervisor, *args: str) -> str:
    cmd = [DOVECTL, "--admin-socket", str(hv.in_rundir(ADMIN_SOCKET)), *args]
    out, err, rc = hv.pexec(cmd)
    assert rc == 0, f"{hv.name}: dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return str(out)


def peer_keys(hv: Hypervisor) -> dict[str, int]:
    """What `dovectl peers --json` says: each peer's address -> the key id it last used."""
    answer = json.loads(dovectl(hv, "peers", "--json"))
    return {p["address"]: p["key_id"] for p in answer["peers"]}


def others(dove: Any, hv: Hypervisor) -> set[str]:
    return {h.underlay_ip for h in dove.net.hypervisors if h is not hv}


def every_peer_on(dove: Any, key_id: int) -> None:
    """Until every agent has last heard each other one under ``key_id``."""
    for hv in dove.net.hypervisors:
        want = dict.fromkeys(others(dove, hv), key_id)
        wait_until(
            lambda hv=hv, want=want: {a: k for a, k in peer_keys(hv).items() if a in want} == want,
            10.0,
            f"{hv.name} hearing every peer under key {key_id}",
        )


def accepted(hv: Hypervisor, key_id: int) -> int:
    return int(admin(hv)["keys"]["accepted_messages"].get(str(key_id), 0))


def counters(hv: Hypervisor) -> dict[str, int]:
    return admin(hv, "counters")


def delta(after: dict[str, int], before: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def ping_summary(output: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    for line in output.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise AssertionError(f"no ping summary in:\n{output}")


# --------------------------------------------------------------------------------- tests


def test_the_agents_start_on_key_1_and_see_each_other_under_it(dove: Any) -> None:
    for hv in dove.net.hypervisors:
        keys = admin(hv)["keys"]
        assert (keys["signing"], keys["accepted"]) == (1, [1]), keys
        assert K1 not in json.dumps(admin(hv)) and K1 not in dovectl(hv, "status")
    every_peer_on(dove, 1)
    text = dovectl(dove.net.hypervisors[0], "peers")
    assert "keys: signing with 1, accepting 1" in text, text


def test_a_rotation_host_by_host_under_traffic(dove: Any) -> None:
    hvs = dove.net.hypervisors
    hv1, hv2, hv3 = hvs
    t1a, t1b = dove.net.tenant_vms(1)
    t2a, t2b = dove.net.tenant_vms(2)
    assert (t1a.hypervisor, t1b.hypervisor, t2a.hypervisor, t2b.hypervisor) == (hv1, hv2, hv2, hv3)
    out, err, rc = t1a.host.pexec(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", t1b.ip])
    assert rc == 0, out + err
    # A ping stream between hv1 and hv2 for the whole rollout.
    stream = t1a.host.popen(
        ["ping", "-n", "-i", "0.02", "-W", "2", t1b.ip],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # 1. Key 2 on every agent, accepted and not used yet.
        for hv in hvs:
            set_agent_keys(hv, {1: K1, 2: K2}, signing=1)
            assert "added 2" in dovectl(hv, "keys", "reload")
            assert admin(hv)["keys"]["accepted"] == [1, 2]
        # 2. Host by host to signing with key 2: by the admin socket, dovectl, SIGHUP.
        set_agent_keys(hv1, {1: K1, 2: K2}, signing=2)
        assert reload_agent_keys(hv1)["signing"] == 2
        set_agent_keys(hv2, {1: K1, 2: K2}, signing=2)
        dovectl(hv2, "keys", "reload")
        # Mid-rollout (hv3 still signs with key 1): a first LEARN between hv2 and hv3.
        assert t2b.mac not in _learned(hv2, t2a.instance)
        before = counters(hv2)
        out, err, rc = t2a.host.pexec(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", t2b.ip])
        assert rc == 0, f"no first contact across keys 2 and 1:\n{out}{err}"
        assert delta(counters(hv2), before, "learn_requests_sent") >= 1
        assert t2b.mac in _learned(hv2, t2a.instance)
        assert peer_keys(hv3)[hv2.underlay_ip] == 2 and peer_keys(hv2)[hv3.underlay_ip] == 1
        set_agent_keys(hv3, {1: K1, 2: K2}, signing=2)
        reload_agent_keys(hv3, by_signal=True)
        every_peer_on(dove, 2)
        # Key 1 is no longer used: its count stops while key 2's keeps rising.
        used = {hv.name: (accepted(hv, 1), accepted(hv, 2)) for hv in hvs}
        for hv in hvs:
            wait_until(
                lambda hv=hv: accepted(hv, 2) >= used[hv.name][1] + 4,
                10.0,
                f"{hv.name}: more messages under key 2",
            )
            assert accepted(hv, 1) == used[hv.name][0], f"{hv.name} still hears key 1"
        # 3. Key 1 retired everywhere.
        for hv in hvs:
            set_agent_keys(hv, {2: K2}, signing=2)
            keys = reload_agent_keys(hv, by_signal=True)
            assert (keys["accepted"], keys["retired"]) == ([2], [1]), keys
    finally:
        stream.send_signal(signal.SIGINT)
        output, _ = stream.communicate(timeout=10)
    sent, got = ping_summary(output)
    assert sent > 50, output
    # An interrupted ping may count its last request, still in flight, as lost.
    assert sent - got <= 1, f"the rollout lost pings:\n{output}"
    for x, y in ((t1a, t1b), (t2b, t2a)):
        out, err, rc = x.host.pexec(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", y.ip])
        assert rc == 0, out + err


def test_a_message_under_the_retired_key_is_refused_and_counted(dove: Any) -> None:
    hv = dove.net.hypervisors[0]
    a = dove.net.tenant_vms(1)[0]
    probe = dove.net.net.get(PROBE)
    now_us = int(time.time() * 1_000_000)
    # The probe is no member and unknown to hv1: what matters is the key id, which is
    # looked at before anything else (a valid key-2 message from it is answered below).
    msg = LearnRequest(instance=a.instance, request_id=301, mac=a.mac)
    fields: dict[str, Any] = {
        "sender": IPv4Address(PROBE_IP),
        "receiver": IPv4Address(hv.underlay_ip),
    }
    old = encode(msg, **fields, counter=now_us, key=bytes.fromhex(K1), key_id=1)
    current = encode(msg, **fields, counter=now_us + 1, key=bytes.fromhex(K2), key_id=2)
    before = counters(hv)
    out, err, rc = probe.pexec(
        [PYTHON, NETSEND, "udp", "--dst", hv.underlay_ip,
         "--port", str(HostConfig.control_port), "--hex", old.hex(), "--hex", current.hex()]
    )  # fmt: skip
    assert rc == 0, out + err
    wait_until(lambda: delta(counters(hv), before, "control_received") >= 2, 5.0, "both messages")
    after = counters(hv)
    assert delta(after, before, "drop_control_retired_key") == 1, after
    assert delta(after, before, "learn_requests_received") == 1, after  # key 2's only
    for peer in dove.net.hypervisors:
        keys = peer_keys(peer)
        assert all(keys[addr] == 2 for addr in others(dove, peer)), (peer.name, keys)
    assert peer_keys(hv)[PROBE_IP] == 2  # the probe was heard under key 2 only
    text = dovectl(hv, "keys")
    assert "keys: signing with 2, accepting 2, retired 1" in text, text


def _learned(hv: Hypervisor, instance: int) -> set[str]:
    info = admin(hv)["instances"].get(str(instance), {})
    return {e["mac"] for e in info.get("learned", [])}
