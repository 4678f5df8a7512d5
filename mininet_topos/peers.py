"""Benchmark peers that need a process or a report: the learning switch, and describe().

The 'learning' mode is the NORMAL baseline's bridge (full VXLAN mesh, protected ports) made
``fail_mode=secure`` and handed to ``benchmarks.learning_switch``, a plain MAC-learning os-ken
app, on 127.0.0.1:6653 in each hypervisor namespace: the cost of a reactive controller with
no overlay logic, next to dove-ryu's. ``describe()`` records what a benchmark report needs to
be read correctly (versions, MTU, offloads), since those figures move a lot with them.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mininet_topos import kernel_vxlan, ovn
from mininet_topos.hypervisor import AGENT_OFP_PORT, BR_DOVE, Hypervisor, wait_until

if TYPE_CHECKING:
    from mininet_topos.dove_topo import DoveNet

REPO = Path(__file__).resolve().parents[1]
LEARNING_LOG = "ls.log"
LEARNING_OUT = "ls.out"
OFFLOAD_FEATURES = (
    "rx-checksumming",
    "tx-checksumming",
    "scatter-gather",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
)


def learning_switch_cmd(hv: Hypervisor) -> list[str]:
    """The learning switch, with this Python (the venv's), logging into the rundir."""
    return [
        sys.executable,
        "-m",
        "benchmarks.learning_switch",
        "--ofp-tcp-listen-port",
        str(AGENT_OFP_PORT),
        "--log-file",
        str(hv._dir() / LEARNING_LOG),
    ]


def start_learning_switch(hv: Hypervisor) -> None:
    """Run the learning switch as this hypervisor's agent (stopped with it on teardown).

    It runs with the rundir as cwd, so ``benchmarks`` is found through PYTHONPATH.
    """
    hv.start_agent(None, learning_switch_cmd(hv), out=LEARNING_OUT, env={"PYTHONPATH": str(REPO)})


def _connected(hv: Hypervisor) -> bool:
    if hv.agent is not None and hv.agent.poll() is not None:
        out = (hv._dir() / LEARNING_OUT).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{hv.name}: learning switch exited ({hv.agent.returncode}):\n{out}")
    return "actions=CONTROLLER" in hv.ofctl("dump-flows", BR_DOVE)


def wait_learning_connected(hypervisors: list[Hypervisor], timeout: float = 30.0) -> None:
    """Until the app has programmed every br-dove (its table-miss flow is in).

    NOTE (OVS 3.1.0): the Controller row's ``is_connected`` is refreshed only every few
    seconds; it turned true about 2 s after the app had connected and installed its
    table-miss flow, so the flow is both the earlier and the stronger readiness signal.
    """
    for hv in hypervisors:
        wait_until(lambda hv=hv: _connected(hv), timeout, f"{hv.name} learning switch connected")


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError as exc:
        return f"unavailable: {exc}"
    return out.splitlines()[0] if out else ""


def offloads(host: Any, intf: str) -> dict[str, str]:
    """The main offload flags of an interface, from ``ethtool -k`` in the host's namespace."""
    out, _, _ = host.pexec(["ethtool", "-k", intf])
    flags = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in OFFLOAD_FEATURES:
            flags[name.strip()] = value.strip()
    return flags


def describe(dnet: DoveNet) -> dict[str, Any]:
    """Versions and settings that the figures of a run depend on, for the report."""
    mode = dnet.spec.mode
    info: dict[str, Any] = {
        "mode": mode,
        "kernel": platform.release(),
        "hypervisors": dnet.spec.hypervisors,
        "tenants": dnet.spec.tenants,
        "vms_per_tenant": dnet.spec.vms_per_tenant,
    }
    if mode == "kernel":
        info["datapath"] = "linux bridge + kernel vxlan"
        info["encap"] = "vxlan"
        info["vm_tx_off"] = kernel_vxlan.VM_TX_OFF
    else:
        info["datapath"] = "ovs netdev (userspace)"
        info["encap"] = "geneve" if mode == "ovn" else "vxlan"
        info["ovs"] = _first_line(["ovs-vswitchd", "--version"])
    if mode == "ovn":
        info["ovn"] = ovn.versions()
        info["ovn_controller_restarts"] = sum(
            getattr(hv, "ovn_restarts", 0) for hv in dnet.hypervisors
        )
    if dnet.vms:
        vm = dnet.vms[0]
        intf = vm.host.intf().name
        info["vm_mtu"] = int(vm.host.cmd(f"cat /sys/class/net/{intf}/mtu").strip())
        info["vm_offloads"] = offloads(vm.host, intf)
        info["hv_port_offloads"] = offloads(vm.hypervisor, vm.port)
    return info
