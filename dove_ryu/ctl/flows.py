"""``dovectl flows`` and ``dovectl trace``: a host's flow table, and a packet's way
through it and on through the hosts it is tunnelled to, each flow tied back to the
agent state that made it.

Both read Open vSwitch with its own tools (``ovs-ofctl -O OpenFlow13``,
``ovs-appctl``), which find the switch through the environment (OVS_RUNDIR), and
the agent through its admin socket; without the agent, cookies are still decoded
but their tags stay raw.  dovectl registers the commands with `add_commands` and
hands them to `run`; ``trace`` lives in dove_ryu.ctl.trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, TextIO

from dove_ryu.ctl.common import (
    DEFAULT_BRIDGE,
    DEFAULT_SOCKET,
    Ask,
    FlowsError,
    Node,
    Run,
    Snapshot,
    ask_agent,
    bridge_of,
    check_ip,
    check_mac,
    run_tool,
    snapshot,
    socket_of,
)
from dove_ryu.ctl.flowdump import DumpError, Flow, parse_flows, table_id, table_name
from dove_ryu.ctl.flowstate import FlowFilter
from dove_ryu.ctl.trace import cmd_trace
from dove_ryu.openflow import cookies
from dove_ryu.openflow.cookies import Purpose

COMMANDS = ("flows", "trace")

# ------------------------------------------------------------------ dovectl flows


def flow_json(snap: Snapshot, flow: Flow) -> dict[str, Any]:
    match, actions = flow.render(snap.ports)
    origin = snap.origin(flow)
    return {
        "table": flow.table,
        "table_name": flow.table_name,
        "priority": flow.priority,
        "cookie": f"{flow.cookie:#018x}",
        "match": match,
        "actions": actions,
        "n_packets": flow.n_packets,
        "n_bytes": flow.n_bytes,
        "idle_timeout": flow.idle_timeout,
        "origin": origin.to_json(),
        "explained": origin.text(),
    }


def flows_report(snap: Snapshot, keep: FlowFilter) -> dict[str, Any]:
    """The flows and groups ``keep`` selects, grouped by instance (None: no instance)."""
    by_instance: dict[int | None, dict[str, Any]] = {}

    def bucket(instance: int | None) -> dict[str, Any]:
        if instance not in by_instance:
            by_instance[instance] = {
                "instance": instance,
                "members": list(snap.view.members.get(instance, ()))
                if instance and snap.view.known
                else None,
                "flows": [],
                "groups": [],
            }
        return by_instance[instance]

    for flow in sorted(snap.flows, key=lambda f: (f.table, -f.priority, f.render(snap.ports))):
        origin = snap.origin(flow)
        if keep.keep(flow, origin):
            bucket(origin.instance)["flows"].append(flow_json(snap, flow))
    for group in snap.groups:
        if keep.keep_group(group):
            bucket(group.instance)["groups"].append(
                {
                    "group_id": group.group_id,
                    "text": group.render(snap.ports),
                    "explained": group.describe(snap.view.role),
                }
            )
    order = sorted(by_instance, key=lambda i: (i is None, i or 0))
    return {
        "host": snap.view.host or None,
        "role": snap.view.role if snap.view.known else None,
        "addresses": list(snap.view.addresses),
        "agent_error": snap.agent_error or None,
        "bridge": snap.node.bridge,
        "filter": {
            k: (table_name(v) if k == "table" else v)
            for k, v in asdict(keep).items()
            if v is not None
        },
        "total_flows": len(snap.flows),
        "total_groups": len(snap.groups),
        "instances": [by_instance[i] for i in order],
    }


def print_flows(report: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    who = report["host"] or "this host"
    role = f"{report['role']} {', '.join(report['addresses'])}" if report["role"] else "no agent"
    shown = sum(len(i["flows"]) for i in report["instances"])
    line = (
        f"{who} ({role}), bridge {report['bridge']}: {_count(report['total_flows'], 'flow')}, "
        f"{_count(report['total_groups'], 'group')}"
    )
    if report["filter"]:
        given = " ".join(f"--{k} {v}" for k, v in report["filter"].items())
        line += f"; {_count(shown, 'flow')} shown ({given})"
    print(line, file=out)
    if report["agent_error"]:
        print(f"  (tags not resolved: {report['agent_error']})", file=out)
    width = max(
        (len(str(f["n_packets"])) for i in report["instances"] for f in i["flows"]), default=1
    )
    for info in report["instances"]:
        print(file=out)
        if info["instance"] is None:
            print("no instance: the pipeline's fixed flows and drops", file=out)
        else:
            members = "unknown" if info["members"] is None else ", ".join(info["members"]) or "none"
            print(f"instance {info['instance']}  (members: {members})", file=out)
        table = None
        for f in info["flows"]:
            if f["table_name"] != table:
                table = f["table_name"]
                print(f"  {table} ({f['table']})", file=out)
            print(
                f"    n_packets={f['n_packets']:<{width}}  {f['match']} actions={f['actions']}",
                file=out,
            )
            print(f"    {'':{width + 12}}{f['explained']}", file=out)
        if info["groups"]:
            print("  groups", file=out)
            for g in info["groups"]:
                print(f"    {g['text']}", file=out)
                print(f"    {'':{width + 12}}{g['explained']}", file=out)


def reference_text(snap: Snapshot, header: Iterable[str]) -> str:
    """The flow table as flows/ keeps it: no counters or ages, ports and tables by
    name, sorted, each cookie decoded in a trailing comment (without seqs or ages)."""
    lines = [f"# {h}" if h else "#" for h in header]
    rows = []
    for flow in snap.flows:
        match, actions = flow.render(snap.ports)
        info = [f"cookie={flow.cookie:#x}", f"table={flow.table_name}"]
        if flow.idle_timeout:
            info.append(f"idle_timeout={flow.idle_timeout}")
        if flow.hard_timeout:
            info.append(f"hard_timeout={flow.hard_timeout}")
        text = ", ".join(info + list(flow.flags)) + f" {match} actions={actions}"
        rows.append(((flow.table, -flow.priority, match, actions), text, snap.origin(flow)))
    for _, text, origin in sorted(rows, key=lambda r: r[0]):
        lines.append(f"{text}  # {origin.text(volatile=False)}")
    for group in snap.groups:
        lines.append(f"{group.render(snap.ports)}  # {group.describe(snap.view.role)}")
    return "\n".join(lines) + "\n"


def learned_behind_vteps(node: Node, run_ovs: Run = run_tool) -> Counter[tuple[int, int]]:
    """The MACs the datapath learned behind external VTEPs, counted by (instance, the
    VTEP's cookie tag), from the bridge's flows: the agent never sees them."""
    text = run_ovs(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", node.bridge, "--no-names"], node.env
    )
    counts: Counter[tuple[int, int]] = Counter()
    for flow in parse_flows(text):
        decoded = cookies.decode(flow.cookie)
        if decoded is not None and decoded.purpose is Purpose.VTEP_LEARNED:
            counts[(decoded.instance, decoded.tag)] += 1
    return counts


def cmd_flows(args: argparse.Namespace, run: Run, ask: Ask) -> int:
    keep = FlowFilter(
        instance=args.instance,
        mac=check_mac(args.mac) if args.mac else None,
        ip=str(check_ip(args.ip)) if args.ip else None,
        table=_table(args.table) if args.table else None,
    )
    node = Node(socket_of(args), bridge_of(args))
    report = flows_report(snapshot(node, run, ask), keep)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_flows(report)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``flows`` and ``trace`` on dovectl's subparsers.

    Options dovectl also has globally (``--json``, ``--bridge``, ``--admin-socket``)
    default to SUPPRESS here, so a value given before the command is kept."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bridge", default=argparse.SUPPRESS, help="default br-dove")
        p.add_argument("--admin-socket", default=argparse.SUPPRESS, help="the agent's admin socket")
        p.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts"
        )

    text = "this host's flows and groups by instance, each cookie decoded"
    p = subparsers.add_parser("flows", help=text, description=text)
    p.add_argument("--instance", type=int, help="only flows of this instance")
    p.add_argument("--mac", help="only flows matching, writing or made for this MAC")
    p.add_argument("--ip", help="only flows matching, writing or made for this IPv4 address")
    p.add_argument("--table", help="only this table (name or number)")
    common(p)
    text = "trace a packet through the pipeline and explain every flow it hits"
    p = subparsers.add_parser("trace", help=text, description=text)
    p.add_argument(
        "--from", dest="source", metavar="PORT|MAC|IP", help="the sending VM, local here"
    )
    p.add_argument(
        "--to",
        dest="target",
        metavar="MAC|IP",
        help="a MAC, or an IP: its MAC from the agent's state, else the ARP request for it",
    )
    p.add_argument("--instance", type=int, help="the sender's instance (needed if ambiguous)")
    p.add_argument("--flow", metavar="SPEC", help="instead of --from/--to: an ofproto/trace flow")
    p.add_argument(
        "--follow", action="store_true", help="trace on at each next hop a --peer reaches"
    )
    p.add_argument(
        "--peer",
        action="append",
        metavar="[SITE/]IP=ADMIN_SOCKET:OVS_RUNDIR",
        help="another host's underlay address and how to read it (repeat)",
    )
    common(p)


def run(args: argparse.Namespace, run_ovs: Run = run_tool, ask: Ask = ask_agent) -> int:
    """Dispatch ``args.cmd`` ('flows' or 'trace'); print errors, return the exit status."""
    try:
        if args.cmd == "flows":
            return cmd_flows(args, run_ovs, ask)
        if args.cmd == "trace":
            return cmd_trace(args, run_ovs, ask)
        raise FlowsError(f"unknown command {args.cmd!r}")
    except (FlowsError, DumpError, ValueError) as e:
        print(f"dovectl {args.cmd}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """The two commands on their own, with dovectl's global options."""
    parser = argparse.ArgumentParser(prog="dovectl", description=__doc__.splitlines()[0])
    parser.add_argument("--admin-socket", default=DEFAULT_SOCKET)
    parser.add_argument("--bridge", default=DEFAULT_BRIDGE)
    parser.add_argument("--json", action="store_true")
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    return run(parser.parse_args(argv))


# ------------------------------------------------------------------ small checks


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _table(text: str) -> int:
    number = table_id(text)
    if table_name(number) == str(number):
        raise FlowsError(f"--table {text}: the pipeline has no such table")
    return number


if __name__ == "__main__":
    sys.exit(main())
