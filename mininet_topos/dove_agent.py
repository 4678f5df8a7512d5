"""A dove-agent process on an emulated node: its command line, its dove.ini, its admin
socket and when it is ready.

Each hypervisor's agent gets a dove.ini naming its own underlay address, its private OVSDB
and admin socket, its peers (or the directory that lists them), the deployment key of this
emulation run, and its metrics port. The builders (dove_topo, sites) start agents with
these; tests and the demo ask them through ``admin``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dove_ryu.adapters.admin import query
from dove_ryu.ctl.dircluster import Pki
from mininet_topos.hypervisor import AGENT_OFP_PORT, TUNNEL_PORT, Hypervisor, wait_until

ADMIN_SOCKET = "admin/admin.sock"  # relative to the hypervisor's rundir
METRICS_PORT = 9479  # on the namespace's loopback: every hypervisor can use the same one


def agent_binary() -> str:
    """dove-agent from the same environment as this Python."""
    candidate = Path(sys.executable).parent / "dove-agent"
    if not candidate.exists():
        raise FileNotFoundError(f"{candidate} not found: run scripts/bootstrap.sh first")
    return str(candidate)


def agent_cmd() -> list[str]:
    # The agent runs with the hypervisor's rundir as its working directory.
    return [
        agent_binary(),
        "--config-file",
        "dove.ini",
        "--log-file",
        "agent.log",
        "--ofp-tcp-listen-port",
        str(AGENT_OFP_PORT),
    ]


def agent_config(
    hv: Hypervisor,
    peers: list[str],
    key: str,
    extra: dict[str, Any] | None = None,
    directory: str | None = None,
    ssl: Pki | None = None,
) -> str:
    """The agent's dove.ini.  With ``directory`` (the cluster's remotes,
    tcp:A:6641,tcp:B:6641,...) the agent finds its peers there (``discovery =
    directory``) and gets no ``peers`` line.  A setting of ``extra`` set to None is
    left out (``auth_key``: None for an agent given its keys by id only)."""
    found: dict[str, Any] = (
        {"discovery": "directory", "directory": directory}
        if directory
        else {"peers": ", ".join(p for p in peers if p != hv.underlay_ip)}
    )
    if ssl is not None:  # the host's identity for the directory's RBAC
        found |= {
            "directory_private_key": ssl.private_key,
            "directory_certificate": ssl.certificate,
            "directory_ca_cert": ssl.ca_cert,
        }
    settings: dict[str, Any] = {
        "host_name": hv.name,
        "underlay_ip": hv.underlay_ip,
        **found,
        "auth_key": key,
        "datapath_type": "netdev",
        "tunnel_port": TUNNEL_PORT,
        "ovsdb": f"unix:{hv.db_sock}",
        "admin_socket": str(hv.in_rundir(ADMIN_SOCKET)),
        "announce_interval": 1.0,
        "metrics_port": METRICS_PORT,
        **(extra or {}),
    }
    return "[dove]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items() if v is not None)


# --- the deployment keys (key rotation, docs/control-plane.md section 5) ---------------------

KEY_FILE = "dove.keys"  # in the hypervisor's rundir
_KEY_SETTINGS = ("auth_key", "auth_key_file", "auth_keys", "auth_keys_file", "auth_key_id")


def set_agent_keys(hv: Hypervisor, keys: Mapping[int, str], signing: int) -> None:
    """Give the agent's configuration these keys (id -> hex) in its key file, signing with
    ``signing``, as an operator edits them; the agent takes them at its next reload."""
    key_file = hv.in_rundir(KEY_FILE)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{key_id}:{key}\n" for key_id, key in sorted(keys.items())))
    ini = hv.in_rundir("dove.ini")
    kept = [
        line
        for line in ini.read_text().splitlines()
        if line.partition("=")[0].strip() not in _KEY_SETTINGS
    ]
    ini.write_text(
        "\n".join([*kept, f"auth_keys_file = {key_file}", f"auth_key_id = {signing}"]) + "\n"
    )


def reload_agent_keys(hv: Hypervisor, by_signal: bool = False) -> dict[str, Any]:
    """Have the agent read its keys again: ``dovectl keys reload`` over the admin socket,
    or SIGHUP (``by_signal``); returns its key ids once it holds what its files say."""
    if not by_signal:
        answer = admin(hv, "reload_keys")
        if "error" in answer:
            raise RuntimeError(f"{hv.name}: {answer['error']}")
        return answer
    assert hv.agent is not None, f"{hv.name}: no agent"
    wanted = _configured_key_ids(hv)
    hv.agent.send_signal(signal.SIGHUP)
    return wait_until(  # type: ignore[no-any-return]
        lambda: (k := admin(hv)["keys"]) and (k["signing"], k["accepted"]) == wanted and k,
        5.0,
        f"{hv.name} reloading its keys on SIGHUP",
    )


def _configured_key_ids(hv: Hypervisor) -> tuple[int, list[int]]:
    """(signing id, accepted ids) as `set_agent_keys` wrote them."""
    ids = [int(line.split(":")[0]) for line in hv.in_rundir(KEY_FILE).read_text().splitlines()]
    for line in hv.in_rundir("dove.ini").read_text().splitlines():
        if line.partition("=")[0].strip() == "auth_key_id":
            return int(line.partition("=")[2]), sorted(ids)
    return 0, sorted(ids)


def admin(hv: Hypervisor, cmd: str = "status") -> dict[str, Any]:
    """Ask a hypervisor's agent over its admin socket."""
    return query(str(Path(hv.rundir) / ADMIN_SOCKET), {"cmd": cmd})


def connected_status(hv: Hypervisor) -> dict[str, Any] | None:
    """The agent's status once it answers and is connected to its bridge, else None.

    Raises if the agent has exited, with the end of its output: waiting longer is useless."""
    if hv.agent is not None and hv.agent.poll() is not None:
        out = hv.in_rundir("agent.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{hv.name}: agent exited with {hv.agent.returncode}:\n{out}")
    try:
        status = admin(hv)
    except (OSError, ValueError):
        return None
    return status if status.get("connected") else None


def knows_members(status: dict[str, Any], members: Mapping[int, set[str]]) -> bool:
    """``status`` serves every instance of ``members`` and lists at least those members."""
    for instance, expected in members.items():
        info = status["instances"].get(str(instance))
        if info is None or not expected <= set(info["members"]):
            return False
    return True


def has_local(hv: Hypervisor, instance: int, mac: str) -> bool:
    """The agent lists ``mac`` among the local endpoints of ``instance``."""
    local = admin(hv)["instances"].get(str(instance), {}).get("local", [])
    return any(ep["mac"] == mac for ep in local)


def agent_ready(hv: Hypervisor, members: Mapping[int, set[str]]) -> bool:
    """The agent is connected and lists at least ``members`` (instance -> underlay IPs)."""
    status = connected_status(hv)
    return status is not None and knows_members(status, members)
