"""Save what a failed Mininet test needs to explain itself."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mininet_topos.agents import admin
from mininet_topos.dove_topo import DoveNet
from mininet_topos.hypervisor import BR_DOVE
from mininet_topos.sites import SitesNet


def _write(path: Path, produce: Any) -> None:
    try:
        text = produce()
    except Exception as exc:  # noqa: BLE001 - evidence is best effort
        text = f"could not collect: {exc!r}\n"
    path.write_text(text if isinstance(text, str) else json.dumps(text, indent=2, sort_keys=True))


def save(dnet: DoveNet | SitesNet, directory: Path, more_nodes: Iterable[Any] = ()) -> Path:
    """Per hypervisor and proxy (and ``more_nodes``: gateways): flows, groups, agent
    status, agent log; per VM and probe: addresses and neighbours."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for hv in [*dnet.nodes, *more_nodes]:
        d = directory / hv.name
        d.mkdir()
        _write(d / "flows.txt", lambda hv=hv: hv.ofctl("dump-flows", BR_DOVE, "--names"))
        _write(d / "groups.txt", lambda hv=hv: hv.ofctl("dump-groups", BR_DOVE))
        _write(d / "status.json", lambda hv=hv: admin(hv, "status"))
        _write(d / "vsctl-show.txt", lambda hv=hv: hv.vsctl("show"))
        _write(d / "tnl-neigh.txt", lambda hv=hv: hv.appctl("tnl/neigh/show"))
        if hv.rundir is not None:
            for name in ("agent.log", "agent.out", "ovs-vswitchd.log"):
                src = Path(hv.rundir) / name
                if src.exists():
                    shutil.copy(src, d / name)
            ini = Path(hv.rundir) / "dove.ini"
            if ini.exists():  # without the deployment key
                lines = ini.read_text().splitlines(keepends=True)
                (d / "dove.ini").write_text(
                    "".join(line for line in lines if not line.startswith("auth_key"))
                )
    hosts = [(vm.name, vm.host) for vm in dnet.vms] + [(p.name, p) for p in dnet.probes()]
    for name, host in hosts:
        _write(
            directory / f"{name}.txt",
            lambda host=host: host.cmd("ip -s link; ip addr; ip neigh; ip -d link show type vxlan"),
        )
    return directory
