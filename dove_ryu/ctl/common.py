"""What ``dovectl flows`` and ``dovectl trace`` share: reading a host (its agent over the
admin socket, its Open vSwitch with OVS's own tools) and checking the addresses an
operator types."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from dove_ryu.adapters import admin
from dove_ryu.ctl.flowdump import (
    DumpError,
    Flow,
    Group,
    parse_flows,
    parse_groups,
    parse_ports,
    tunnel_ofport,
)
from dove_ryu.ctl.flowstate import AgentView, Origin, origin_of
from dove_ryu.model import normalize_mac

DEFAULT_BRIDGE = "br-dove"
DEFAULT_SOCKET = "/var/run/dove-ryu/admin.sock"

Run = Callable[[Sequence[str], Mapping[str, str] | None], str]
Ask = Callable[[str, dict[str, Any]], dict[str, Any]]


class FlowsError(Exception):
    """What dovectl flows or trace cannot do; the message says what and why."""


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    error: type[Exception],
    detail: Callable[[str], str] = str.strip,
) -> str:
    """Run a tool; its stdout, or ``error`` naming the command and ``detail(stderr)``
    (its stdout, or its exit status, when that says nothing)."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except OSError as e:
        raise error(f"{argv[0]}: {e}") from None
    if proc.returncode != 0:
        said = detail(proc.stderr) or proc.stdout.strip() or f"exit status {proc.returncode}"
        raise error(f"{shlex.join(argv)}: {said}")
    return proc.stdout


def run_tool(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
    """Run an OVS tool; its stdout, or FlowsError with its stderr."""
    return run_command(argv, env, FlowsError)


def ask_agent(path: str, request: dict[str, Any]) -> dict[str, Any]:
    return admin.query(path, request)


@dataclass(frozen=True)
class Node:
    """A host dovectl reads: its agent's admin socket and how its OVS is reached
    (``env`` None: this process's environment)."""

    admin_socket: str
    bridge: str = DEFAULT_BRIDGE
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Snapshot:
    """One read of a host: the agent's view, the bridge's ports, flows and groups."""

    node: Node
    view: AgentView
    agent_error: str
    ports: Mapping[int, str]
    flows: tuple[Flow, ...]
    groups: tuple[Group, ...]

    @property
    def name(self) -> str:
        return self.view.host or self.node.admin_socket

    @property
    def tunnel(self) -> int | None:
        return tunnel_ofport(self.flows)

    def origin(self, flow: Flow) -> Origin:
        return origin_of(
            flow.cookie, flow.match, flow.actions, self.view, self.ports, flow.table, flow.priority
        )


def read_view(path: str, ask: Ask) -> tuple[AgentView, str]:
    """The agent's view, or an empty one and why it is missing."""
    try:
        status = ask(path, {"cmd": "status"})
    except (OSError, ValueError) as e:
        return AgentView(), f"cannot reach the agent at {path}: {e}"
    if "error" in status:
        return AgentView(), f"the agent says: {status['error']}"
    try:
        return AgentView.from_status(status), ""
    except DumpError as e:
        return AgentView(), str(e)


def snapshot(node: Node, run: Run, ask: Ask, groups: bool = True) -> Snapshot:
    view, error = read_view(node.admin_socket, ask)

    def ofctl(*args: str) -> str:
        return run(["ovs-ofctl", "-O", "OpenFlow13", *args], node.env)

    try:
        return Snapshot(
            node,
            view,
            error,
            parse_ports(ofctl("dump-ports-desc", node.bridge)),
            tuple(parse_flows(ofctl("dump-flows", node.bridge, "--no-names"))),
            tuple(parse_groups(ofctl("dump-groups", node.bridge, "--no-names"))) if groups else (),
        )
    except DumpError as e:
        raise FlowsError(str(e)) from None


def is_ip(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def check_ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise FlowsError(f"{text!r} is not an IPv4 address") from None


def looks_like_mac(text: str) -> bool:
    parts = text.replace("-", ":").split(":")
    return len(parts) == 6 and all(len(p) == 2 for p in parts)


def check_mac(text: str, multicast: bool = False) -> str:
    """dove_ryu.model.normalize_mac, failing with a FlowsError."""
    try:
        return normalize_mac(text, multicast=multicast)
    except ValueError as e:
        raise FlowsError(str(e)) from None


def socket_of(args: argparse.Namespace) -> str:
    """The admin socket given, before or after the command."""
    return str(getattr(args, "admin_socket", DEFAULT_SOCKET))


def bridge_of(args: argparse.Namespace) -> str:
    return str(getattr(args, "bridge", DEFAULT_BRIDGE))
