"""Real OVS, no Mininet: an agent that sends Geneve and takes VXLAN too, on a private
ovsdb-server + ovs-vswitchd (netdev): both tunnel ports, the DOVE option mapped to
tun_metadata0, and classify taking a member's Geneve packet only with version 1."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.protocol.messages import Announce, encode
from tests.ovs.test_pipeline_trace import (
    KEY,
    MEMBER,
    UNDERLAY,
    PrivateOvs,
    announce_from,
    datapath_actions,
)

pytestmark = pytest.mark.ovs

GENEVE_SETTINGS = "tunnel_type = geneve\naccept_tunnel_types = vxlan, geneve\n"


class GeneveOvs(PrivateOvs):
    def start(self) -> None:
        write_text = Path.write_text

        def with_geneve(path: Path, text: str, *args: Any, **kwargs: Any) -> int:
            if path.name == "dove.ini":
                text += GENEVE_SETTINGS
            return write_text(path, text, *args, **kwargs)

        Path.write_text = with_geneve  # type: ignore[method-assign]
        try:
            super().start()
        finally:
            Path.write_text = write_text  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def ovs() -> Iterator[GeneveOvs]:
    if not shutil.which("ovs-vswitchd"):
        pytest.skip("openvswitch-switch is not installed")
    node = GeneveOvs()
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_geneve_member_needs_the_dove_option_version_1(ovs: GeneveOvs) -> None:
    assert ovs.vsctl("get", "Interface", "dove-geneve", "type").strip() == "geneve"
    tlv = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-tlv-map", "br-dove")
    assert re.search(r"0xff0d\s+0x1\s+4\s+tun_metadata0", tlv), tlv
    ovs.add_vm_port("vmport2", 5002, "02:00:00:00:00:02", "10.0.0.2")
    geneve = int(ovs.vsctl("get", "Interface", "dove-geneve", "ofport").strip())
    vxlan = int(ovs.vsctl("get", "Interface", "dove-vxlan", "ofport").strip())
    ovs.ns("ip", "addr", "add", f"{MEMBER}/24", "dev", "ul1")
    announce_from(ovs, MEMBER, {5002})
    ovs.wait(lambda: MEMBER in ovs.status()["instances"]["5002"]["members"], "member joined")
    packet = "dl_src=02:00:00:00:00:09,dl_dst=02:00:00:00:00:02"
    tun = f"tun_id=5002,tun_src={MEMBER},tun_dst={UNDERLAY}"
    good = ovs.trace(f"in_port={geneve},{tun},tun_metadata0=0x01020000,{packet}")
    assert datapath_actions(good) == ovs.odp_port("vmport2"), good
    for bad in ("tun_metadata0=0x02000000,", ""):
        trace = ovs.trace(f"in_port={geneve},{tun},{bad}{packet}")
        assert datapath_actions(trace) == "drop", trace
    # VXLAN from the same member: taken as well (a rolling change).
    assert datapath_actions(ovs.trace(f"in_port={vxlan},{tun},{packet}")) == ovs.odp_port("vmport2")
    dump = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove")
    assert "tun_metadata0=0x1000000/0xff000000" in dump, dump


def restart_agent(ovs: GeneveOvs) -> None:
    assert ovs.agent is not None
    ovs.agent.terminate()
    ovs.agent.wait(10)
    args = ovs.agent.args
    ovs.agent = subprocess.Popen(
        args, env=ovs.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ovs.wait(lambda: ovs.status().get("connected"), "agent connected again")


def test_a_restarted_agent_finds_the_mapping_and_goes_on(ovs: GeneveOvs) -> None:
    restart_agent(ovs)
    announce_from(ovs, MEMBER, {5002})
    ovs.wait(lambda: MEMBER in ovs.status()["instances"]["5002"]["members"], "member again")
    tlv = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-tlv-map", "br-dove")
    assert tlv.count("tun_metadata0") == 1, tlv
    geneve = int(ovs.vsctl("get", "Interface", "dove-geneve", "ofport").strip())
    tun = f"tun_id=5002,tun_src={MEMBER},tun_dst={UNDERLAY}"
    packet = "dl_src=02:00:00:00:00:09,dl_dst=02:00:00:00:00:02"
    good = ovs.trace(f"in_port={geneve},{tun},tun_metadata0=0x01000000,{packet}")
    assert datapath_actions(good) == ovs.odp_port("vmport2"), good
    log = (ovs.dir / "agent.log").read_text()
    print([line for line in log.splitlines() if "OpenFlow error" in line])


def dump(ovs: GeneveOvs) -> str:
    flows = ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-dove")
    return flows + ovs.ns("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-dove")


def announce_geneve(ovs: GeneveOvs, sender: str, instances: set[int]) -> None:
    """An announcement that says the sender takes VXLAN and Geneve (ENCAPSULATIONS 3)."""
    payload = encode(
        Announce(instances=frozenset(instances), encapsulations=3),
        sender=IPv4Address(sender),
        counter=int(time.time() * 1e6),
        key=bytes.fromhex(KEY),
        receiver=IPv4Address(UNDERLAY),
    )
    script = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{sender}', 0)); s.sendto(bytes.fromhex(sys.argv[1]), ('{UNDERLAY}', 4799))"
    )
    ovs.ns(sys.executable, "-c", script, payload.hex())


def dovectl(ovs: GeneveOvs, *args: str) -> str:
    cmd = str(Path(sys.executable).parent / "dovectl")
    return ovs.ns(cmd, "--admin-socket", f"{ovs.dir}/admin.sock", *args)


def test_dovectl_reads_the_geneve_flows_and_traces_into_the_geneve_tunnel(
    ovs: GeneveOvs,
) -> None:
    announce_geneve(ovs, MEMBER, {5002})  # the member takes Geneve now
    ovs.wait(lambda: MEMBER in ovs.status()["instances"]["5002"]["members"], "member")
    geneve = ovs.vsctl("get", "Interface", "dove-geneve", "ofport").strip()
    ovs.wait(
        lambda: f"set_field:0x1000000->tun_metadata0,output:{geneve}" in dump(ovs),
        "the flood bucket towards the member turns Geneve",
    )
    flows = dovectl(ovs, "flows", "--instance", "5002")
    assert "tun_metadata0" in flows and "accepts tunnels from" in flows, flows
    # Broadcast from the VM: into the Geneve tunnel towards the member, with the option.
    port = int(ovs.vsctl("get", "Interface", "vmport2", "ofport").strip())
    spec = f"in_port={port},dl_src=02:00:00:00:00:02,dl_dst=ff:ff:ff:ff:ff:ff"
    out = dovectl(ovs, "--json", "trace", "--flow", spec)
    hops = json.loads(out)
    outcomes = [o for hop in hops["hops"] for o in hop["outcomes"]]
    assert any(o["kind"] == "tunnel" and o["next_hop"] == MEMBER for o in outcomes), out
