"""dovectl flows and dovectl trace against three live hypervisors (the `dove` fixture):
run in a hypervisor's namespace with its OVS environment, as an operator would, and
checked against what real packets do.

Layout: t1vm1@hv1, t1vm2@hv2 (instance 5001), t2vm1@hv2, t2vm2@hv3 (instance 5002);
both tenants use MACs 02:00:00:00:00:0N and IPs 10.0.0.N. One more VM of tenant 2,
t2vm9 (02:00:00:00:00:09, 10.0.0.9) on hv3, has a MAC no VM of tenant 1 has.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mininet_topos.agents import ADMIN_SOCKET  # noqa: E402
from mininet_topos.dove_topo import VmRecord, plug_vm  # noqa: E402
from mininet_topos.hypervisor import Hypervisor  # noqa: E402

DOVECTL = str(Path(sys.executable).parent / "dovectl")
OTHER_MAC, OTHER_IP = "02:00:00:00:00:09", "10.0.0.9"


def sock(hv: Hypervisor) -> str:
    return str(Path(str(hv.rundir)) / ADMIN_SOCKET)


def dovectl(hv: Hypervisor, *args: str) -> str:
    """dovectl in ``hv``'s namespace, against its agent and its OVS."""
    cmd = [DOVECTL, "--admin-socket", sock(hv), *args]
    out, err, rc = hv.pexec(cmd, env=hv.ovs_env())
    assert rc == 0, f"dovectl {' '.join(args)}: rc {rc}\n{out}{err}"
    return str(out)


def peers(dove: Any) -> list[str]:
    """--peer for every hypervisor: underlay address, admin socket, OVS run directory."""
    out = []
    for hv in dove.net.hypervisors:
        out += ["--peer", f"{hv.underlay_ip}={sock(hv)}:{hv.rundir}"]
    return out


def ping(vm: VmRecord, ip: str) -> int:
    _, _, rc = vm.host.pexec(["ping", "-n", "-c1", "-W2", ip])
    return int(rc)


def add_vm(dove: Any, name: str, hv: Hypervisor, tenant: int, mac: str, ip: str) -> VmRecord:
    """Plug one more VM of ``tenant`` into ``hv`` and wait until its agent has it."""
    return plug_vm(dove.net, name, hv, tenant, mac, f"{ip}/24")


def test_flows_of_one_instance_show_only_that_instance(dove: Any) -> None:
    hv2 = dove.net.hv("hv2")  # serves both instances
    report = json.loads(dovectl(hv2, "flows", "--instance", "5001", "--json"))
    assert report["host"] == "hv2" and report["filter"] == {"instance": 5001}
    assert [i["instance"] for i in report["instances"]] == [5001]
    flows = report["instances"][0]["flows"]
    assert flows and {f["origin"]["instance"] for f in flows} == {5001}
    assert any(f["origin"]["port"] == "t1vm2-p" for f in flows)
    assert [g["group_id"] for g in report["instances"][0]["groups"]] == [5001]
    everything = json.loads(dovectl(hv2, "flows", "--json"))
    assert [i["instance"] for i in everything["instances"]] == [5001, 5002, None]
    text = dovectl(hv2, "flows", "--instance", "5001")
    assert "instance 5001" in text and "instance 5002" not in text
    assert "local_port 5001: VM port t1vm2-p" in text and "n_packets=" in text


def test_trace_to_a_vm_on_another_hypervisor_follows_the_learned_flow(dove: Any) -> None:
    a, b = dove.net.tenant_vms(1)  # t1vm1@hv1, t1vm2@hv2
    assert ping(a, b.ip) == 0  # hv1 has learned t1vm2
    hv1 = a.hypervisor
    args = ["trace", "--from", a.port, "--to", b.ip, "--instance", "5001", "--follow"]
    report = json.loads(dovectl(hv1, *args, *peers(dove), "--json"))
    first, second = report["hops"]
    learned = [s for s in first["steps"] if s["origin"] and s["origin"]["purpose"] == "learned"]
    assert len(learned) == 1 and learned[0]["table_name"] == "l2_forward"
    assert learned[0]["origin"]["host"] == b.hypervisor.underlay_ip
    assert learned[0]["origin"]["mac"] == b.mac
    assert [(o["kind"], o["next_hop"]) for o in first["outcomes"]] == [
        ("tunnel", b.hypervisor.underlay_ip)
    ]
    assert (second["node"], second["via"]) == ("hv2", b.hypervisor.underlay_ip)
    assert [(v["node"], v["kind"], v["port"]) for v in report["verdict"]] == [
        ("hv2", "delivered", b.port)
    ]
    text = dovectl(hv1, *args, *peers(dove))
    assert f"next hop: {b.hypervisor.underlay_ip} (VNI 5001" in text
    # Its addresses: the IPv4 one, then (comma-separated) its link-local IPv6 one.
    assert re.search(rf"learned {b.mac} {b.ip}(,\S+)? at {b.hypervisor.underlay_ip}", text)
    assert f"hv2: delivered to {b.port}" in text


def test_trace_to_another_tenants_mac_is_dropped_and_says_why(dove: Any) -> None:
    hv3 = dove.net.hv("hv3")  # serves tenant 2 only
    other = add_vm(dove, "t2vm9", hv3, 2, OTHER_MAC, OTHER_IP)
    a = dove.net.tenant_vms(1)[0]
    args = ["trace", "--from", a.port, "--to", OTHER_MAC, "--instance", "5001", *peers(dove)]
    report = json.loads(dovectl(a.hypervisor, *args, "--json"))
    [verdict] = report["verdict"]
    assert verdict["kind"] == "dropped", verdict
    assert f"no member of instance 5001 (10.99.0.2) has {OTHER_MAC}" in verdict["reason"]
    notes = " ".join(report["hops"][0]["notes"])
    assert f"instance 5002's, on hv3 port {other.port}" in notes
    text = dovectl(a.hypervisor, *args)
    assert "dropped: no member of instance 5001" in text
    # And so it is: tenant 1 never reaches the tenant-2 VM.
    assert ping(a, OTHER_IP) != 0
