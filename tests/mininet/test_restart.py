"""Hitless agent restart (issue 13, docs/control-plane.md section 1), with real agents.

A 5 ms ping stream between VMs on two hypervisors loses nothing, either way, while
the agent of either end's host is stopped (SIGTERM) or killed (SIGKILL) and started
again; afterwards the predecessor's flows are gone and none was deleted in between.
Layout (conftest's `dove`): t1vm1@hv1, t1vm2@hv2.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from mininet_topos.hypervisor import wait_until

INTERVAL = 0.005
COUNT = 1600  # 8 s of pings: the restart happens inside
GEN = re.compile(r"cookie=0xd([0-9a-f])")


def settled(hv: Any) -> bool:
    from mininet_topos.agents import admin

    try:
        st = admin(hv)
    except Exception:  # the agent is still starting
        return False
    return bool(st["connected"]) and not st["takeover"]["settling"]


def restart(dove: Any, hv: Any, kill: bool) -> None:
    from mininet_topos.agents import agent_cmd

    if kill:
        assert hv.agent is not None
        hv.agent.kill()
        hv.agent.wait(5)
    hv.stop_agent()  # SIGTERM (a killed agent is only reaped)
    hv.start_agent(None, agent_cmd())  # its dove.ini is still in the run directory


def generations(hv: Any) -> set[str]:
    return set(GEN.findall(hv.ofctl("dump-flows", "br-dove")))


def port_flow(hv: Any, ofport: int) -> tuple[float, int]:
    """(duration, n_packets) of the classify flow of a VM port (in_port=N, table 0)."""
    for line in hv.ofctl("dump-flows", "br-dove", f"table=0,in_port={ofport}").splitlines():
        m = re.search(r"duration=([\d.]+)s.*n_packets=(\d+)", line)
        if m and "priority=100" in line:
            return float(m.group(1)), int(m.group(2))
    raise AssertionError(f"no classify flow for port {ofport} on {hv.name}")


def stream_through_restart(dove: Any, where: str, kill: bool) -> str:
    net = dove.net
    src, dst = net.vm("t1vm1"), net.vm("t1vm2")
    hv = src.hypervisor if where == "source" else dst.hypervisor
    assert "0% packet loss" in src.host.cmd(f"ping -c3 -i0.1 -W1 {dst.ip}")
    ping = src.host.popen(["ping", "-n", "-q", "-i", str(INTERVAL), "-c", str(COUNT), dst.ip])
    time.sleep(1.0)
    restart(dove, hv, kill)
    wait_until(lambda: settled(hv), 30, f"{hv.name}'s agent back and settled", step=0.1)
    out, _ = ping.communicate(timeout=60)
    return out.decode()


@pytest.mark.parametrize("where", ["destination", "source"])
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_ping_stream_loses_nothing_while_an_agent_restarts(
    dove: Any, where: str, kill: bool
) -> None:
    out = stream_through_restart(dove, where, kill)
    assert f"{COUNT} packets transmitted, {COUNT} received" in out, out


def test_after_a_restart_only_the_new_generation_remains_and_no_flow_was_reset(dove: Any) -> None:
    net = dove.net
    src, dst = net.vm("t1vm1"), net.vm("t1vm2")
    hv = dst.hypervisor
    wait_until(lambda: settled(hv), 30, f"{hv.name} settled", step=0.1)
    before_gen = generations(hv)
    assert len(before_gen) == 1
    ofport = int(hv.vsctl("get", "Interface", dst.port, "ofport").strip())
    src.host.cmd(f"ping -c20 -i0.01 -W1 {dst.ip}")
    _, before = port_flow(hv, ofport)

    out = stream_through_restart(dove, "destination", kill=False)

    # The loss itself is the parametrized test's (zero); this one is about the sweep.
    # NOTE: under the whole suite's load one ping in about twenty restarts was lost
    # here. One cause was found and fixed (a restarted host announced "no instances"
    # before OVSDB told it its ports, so its peers dropped it as a member for a moment);
    # until more runs show it was the only one, a single loss is tolerated here.
    received = re.search(r"(\d+) received", out)
    assert received and int(received.group(1)) >= COUNT - 1, out
    after_gen = generations(hv)
    assert len(after_gen) == 1 and after_gen != before_gen  # the old generation swept
    # The VM port's flow was replaced in place, never deleted: its counter went on from
    # where it was (OVS keeps a replaced rule's statistics, though it restarts its
    # duration, and may lose the last datapath statistics of the old rule: a few
    # packets' worth, not the packets).
    _, after = port_flow(hv, ofport)
    assert after >= before + COUNT * 0.9
