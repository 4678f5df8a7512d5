"""The benchmark peers' report: describe() records what a benchmark report needs to be
read correctly (versions, MTU, offloads), since those figures move a lot with them.

The learning switch (mode 'learning') lives in mininet_topos.learning, beside the other
peers' node modules (kernel_vxlan, ovn); its names stay importable from here.
"""

from __future__ import annotations

import platform
import subprocess
from typing import Any

from mininet_topos import kernel_vxlan, ovn
from mininet_topos.dove_topo import DoveNet
from mininet_topos.learning import (
    LEARNING_LOG,
    LEARNING_OUT,
    REPO,
    learning_switch_cmd,
    start_learning_switch,
    wait_learning_connected,
)

__all__ = [
    "LEARNING_LOG",
    "LEARNING_OUT",
    "OFFLOAD_FEATURES",
    "REPO",
    "describe",
    "learning_switch_cmd",
    "offloads",
    "start_learning_switch",
    "wait_learning_connected",
]

OFFLOAD_FEATURES = (
    "rx-checksumming",
    "tx-checksumming",
    "scatter-gather",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
)


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
