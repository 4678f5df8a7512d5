"""``dovectl``: inspect and manage a DOVE agent (hypervisor or VAN proxy).

Reads go to the agent's admin socket (root only) and, for flows and traces, to
the local Open vSwitch; attach, detach and migrate change OVSDB, which the agent
watches, exactly as a hypervisor's tooling would; ``directory`` works on the
directory cluster (dove_ryu.ctl.directory).  Every read has ``--json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from ipaddress import IPv4Address
from typing import Any

from dove_ryu.adapters.admin import query
from dove_ryu.ctl import directory as ctl_directory
from dove_ryu.ctl import flows as ctl_flows
from dove_ryu.ctl import graph as ctl_graph
from dove_ryu.ctl import ports as ctl_ports
from dove_ryu.model import check_instance, normalize_mac

DEFAULT_SOCKET = "/var/run/dove-ryu/admin.sock"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"


class CtlError(Exception):
    """Something dovectl cannot do; the message says what and why."""


def _ask(args: argparse.Namespace, cmd: str = "status") -> dict[str, Any]:
    try:
        answer = query(args.admin_socket, {"cmd": cmd})
    except (OSError, ValueError) as e:
        raise CtlError(f"cannot reach the agent at {args.admin_socket}: {e}") from None
    if "error" in answer:
        raise CtlError(f"the agent says: {answer['error']}")
    return answer


def _instances(status: dict[str, Any], only: int | None) -> dict[str, Any]:
    items = status["instances"].items()
    return {k: v for k, v in items if only is None or int(k) == only}


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# ---------------------------------------------------------------- the reads


def cmd_status(args: argparse.Namespace) -> Any:
    status = _ask(args)
    if args.json:
        return status
    role = status.get("role", "host")
    if role == "vtep-controller":
        return cmd_vtep(args)
    line = f"{role} {status['host']} underlay {status['underlay_ip']}"
    if role == "proxy":
        state = status.get("state") or ("active" if status["active"] else "standby")
        line += f" wan {status['wan_ip']} site {status['site']} ({state})"
    if role == "gateway":
        line += f" ({status.get('state') or ('active' if status['active'] else 'standby')})"
    print(f"{line}, switch {'connected' if status['connected'] else 'DISCONNECTED'}")
    if "keys" in status:
        print(_keys_line(status["keys"]))
    takeover = status.get("takeover")
    if takeover:  # docs/control-plane.md, section 1
        print(f"take-over: {_takeover_line(takeover)}")
    args.json = False
    if role == "gateway":
        print()
        _print_gateway(status)
        return None
    for name in ("instances", "endpoints"):
        print()
        COMMANDS[name](args, status)
    return None


def _takeover_line(takeover: dict[str, Any]) -> str:
    """The cookie generation, and what a take-over still waits for before its sweep."""
    line = f"generation {takeover.get('generation', 0)}"
    if not takeover.get("settling"):
        return line + ", settled"
    stale = ",".join(str(g) for g in takeover.get("stale_generations", []))
    waiting = ", ".join(takeover.get("waiting_for", [])) or "the grace time"
    return line + f", settling (stale generations {stale or 'none'}; waiting for {waiting})"


def cmd_instances(args: argparse.Namespace, status: dict[str, Any] | None = None) -> Any:
    status = status or _ask(args)
    rows = [
        {
            "instance": int(k),
            "local": len(v["local"]),
            "learned": len(v["learned"]),
            "members": v["members"],
            "remote_proxies": v.get("remote_proxies", []),
        }
        for k, v in _instances(status, getattr(args, "instance", None)).items()
    ]
    if args.json:
        return rows
    _table(
        [
            [str(r["instance"]), str(r["local"]), str(r["learned"]), str(len(r["members"]))]
            + ([str(len(r["remote_proxies"]))] if status.get("role") == "proxy" else [])
            for r in rows
        ],
        ["INSTANCE", "LOCAL", "LEARNED", "MEMBERS"]
        + (["REMOTE-PROXIES"] if status.get("role") == "proxy" else []),
    )
    return None


def cmd_endpoints(args: argparse.Namespace, status: dict[str, Any] | None = None) -> Any:
    """Local endpoints (with the hosts that learned them) and learned ones (with their
    host, sequence number, age and the host that answered)."""
    status = status or _ask(args)
    rows = []
    for k, info in _instances(status, getattr(args, "instance", None)).items():
        for ep in info["local"]:
            rows.append(
                {
                    "instance": int(k),
                    "kind": "local",
                    "mac": ep["mac"],
                    "ips": ep["ips"],
                    "host": status["underlay_ip"],
                    "port": ep["port"],
                    "seq": ep["seq"],
                    "learned_by": ep.get("learned_by", []),
                }
            )
        for ep in info["learned"]:
            rows.append(
                {
                    "instance": int(k),
                    "kind": ep.get("side", "learned")
                    if status.get("role") == "proxy"
                    else "learned",
                    "mac": ep["mac"],
                    "ips": ep["ips"],
                    "host": ep["host"],
                    "seq": ep["seq"],
                    "age": ep["age"],
                    "answered_by": ep["answered_by"],
                }
            )
    mac = getattr(args, "mac", None)
    if mac:
        rows = [r for r in rows if r["mac"] == normalize_mac(mac)]
    if args.json:
        return rows
    _table(
        [
            [
                str(r["instance"]),
                r["kind"],
                r["mac"],
                ",".join(r["ips"]) or "-",
                f"port {r['port']}" if r["kind"] == "local" else r["host"],
                str(r["seq"]),
                f"{r['age']}s" if "age" in r else "-",
                ("learned by " + (",".join(r["learned_by"]) or "nobody"))
                if r["kind"] == "local"
                else f"answered by {r['answered_by']}",
            ]
            for r in rows
        ],
        ["INSTANCE", "KIND", "MAC", "IPS", "WHERE", "SEQ", "AGE", "WHO"],
    )
    return None


def cmd_members(args: argparse.Namespace) -> Any:
    status = _ask(args)
    rows = {
        int(k): {"members": v["members"], "remote_proxies": v.get("remote_proxies", [])}
        for k, v in _instances(status, args.instance).items()
    }
    if args.json:
        return rows
    proxies = status.get("proxies", {})
    for instance, info in rows.items():
        hosts = [f"{h} (proxy)" if h in proxies else h for h in info["members"]]
        line = f"instance {instance}: {', '.join(hosts) or '-'}"
        if info["remote_proxies"]:
            line += f"; other sites through {', '.join(info['remote_proxies'])}"
        print(line)
    return None


def cmd_proxies(args: argparse.Namespace) -> Any:
    """The VAN proxies this agent knows: for a host, its site's; for a proxy, its
    partner and the other sites'."""
    status = _ask(args)
    rows = []
    if status.get("role") == "proxy":
        rows.append(
            {
                "address": status["underlay_ip"],
                "wan_ip": status["wan_ip"],
                "site": status["site"],
                "active": status["active"],
                "relation": "this proxy",
            }
        )
        for addr, p in status["partners"].items():
            rows.append(
                {
                    "address": addr,
                    "site": status["site"],
                    "active": p["active"],
                    "relation": "partner",
                    "bfd": bool(p.get("bfd")),  # its datapath answers (agent/election.py)
                }
            )
        for addr, p in status["remote_proxies"].items():
            rows.append({"address": addr, **p, "relation": "other site"})
    else:
        for addr, p in status.get("proxies", {}).items():
            rows.append({"address": addr, **p, "relation": "this site's"})
    if args.json:
        return rows
    _table(
        [
            [r["address"], r["site"], "active" if r["active"] else "standby", r["relation"]]
            for r in rows
        ],
        ["ADDRESS", "SITE", "STATE", "RELATION"],
    )
    return None


def cmd_routers(args: argparse.Namespace) -> Any:
    """The tenant routers declared on the bridge (docs/routing.md): subnets, gateway
    MACs, the way out, and the marks rejected with why."""
    status = _ask(args)
    if status.get("role") == "gateway":
        if args.json:
            return _gateway_json(status)
        _print_gateway(status)
        return None
    routing = status.get("routing", {})
    if args.json:
        return routing
    rows = []
    for router_id, r in routing.get("routers", {}).items():
        out = ", ".join(
            ([f"snat {r['snat']}"] if r.get("snat") else [])
            + [f"fip {e}={i}" for e, i in r.get("floating_ips", {}).items()]
        )
        for s in r["subnets"]:
            here = "here" if s["local"] else ("routed" if r["served"] else "-")
            rows.append([router_id, str(s["instance"]), s["gateway"], s["mac"], here, out or "-"])
    _table(rows, ["ROUTER", "INSTANCE", "GATEWAY", "GATEWAY MAC", "VMS", "WAY OUT"])
    gateways = routing.get("gateways", [])
    active = routing.get("active_gateway")
    print(f"gateways: {', '.join(gateways) or 'none'}; active: {active or 'none'}")
    for bad in routing.get("rejected", []):
        print(f"rejected {bad['mark']}: {bad['why']}")
    return None


def _gateway_json(status: dict[str, Any]) -> dict[str, Any]:
    """A gateway's side of `dovectl routers`: its state, external leg, next hop and the
    routers it serves with their external addresses."""
    keys = ("active", "state", "external", "external_ip", "next_hop", "partners", "routers")
    return {k: status[k] for k in keys if k in status}


def _print_gateway(status: dict[str, Any]) -> None:
    ext = status.get("external") or {}
    state = status.get("state") or ("active" if status.get("active") else "standby")
    port = ext.get("port") or f"ofport {status.get('external_port')}"
    where = f"{ext.get('ip', status.get('external_ip'))}"
    if ext.get("network"):
        where += f" in {ext['network']}"
    print(f"gateway {status['host']}: {state}")
    print(
        f"external port: {port} (ofport {ext.get('ofport', status.get('external_port'))}, "
        f"MAC {ext.get('mac') or '?'}), address {where}"
    )
    hop = status.get("next_hop") or {}
    print(f"next hop: {hop.get('ip', '?')} at {hop.get('mac') or 'not resolved yet'}")
    for addr, p in sorted(status.get("partners", {}).items()):
        other = "active" if p.get("active") else "standby"
        bfd = "BFD up" if p.get("bfd") else "BFD down"
        held = ", silent: failover held back" if p.get("held") else ""
        print(f"partner: {addr} ({other}, priority {p.get('priority')}, {bfd}{held})")
    rows = []
    for rid, r in sorted(status.get("routers", {}).items(), key=lambda kv: int(kv[0])):
        instances = ",".join(str(i) for i in r.get("instances", [])) or "-"
        fips = ", ".join(f"{e}->{i}" for e, i in sorted(r.get("floating_ips", {}).items()))
        rows.append([rid, instances, r.get("snat") or "-", fips or "-"])
    print()
    _table(rows, ["ROUTER", "INSTANCES", "SNAT", "FLOATING IPS"])


def _keys_line(keys: dict[str, Any]) -> str:
    """The key ids (never the keys) the agent signs with, accepts and has retired."""
    line = f"keys: signing with {keys['signing']}, accepting {_ids(keys['accepted'])}"
    if keys.get("retired"):
        line += f", retired {_ids(keys['retired'])}"
    return line


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "none"


def cmd_peers(args: argparse.Namespace) -> Any:
    """Each peer this agent heard from: the key id it last signed with, when, its role."""
    answer = _ask(args, "peers")
    if args.json:
        return answer
    print(_keys_line(answer["keys"]))
    print()
    _table(
        [
            [
                p["address"],
                p["role"],
                str(p["key_id"]),
                f"{p['last_heard']:.1f}s",
                str(p["messages"]),
            ]
            for p in answer["peers"]
        ],
        ["PEER", "ROLE", "KEY", "LAST HEARD", "MESSAGES"],
    )
    return None


def cmd_vteps(args: argparse.Namespace, run_ovs: Any = None) -> Any:
    """The external VTEPs declared on this host: address, encapsulation, instances
    (those served here), the MACs learned behind them in the datapath (read from the
    bridge: the agent never sees them) against the bound, the MACs declared behind them;
    the agent's VTEP counters."""
    answer = _ask(args, "vteps")
    node = ctl_flows.Node(args.admin_socket, ctl_flows.bridge_of(args))
    try:
        counts = ctl_flows.learned_behind_vteps(node, run_ovs or ctl_flows.run_tool)
    except (ctl_flows.FlowsError, ctl_flows.DumpError) as e:
        print(f"dovectl vteps: the learned MACs are not counted: {e}", file=sys.stderr)
        counts = None
    for v in answer["vteps"]:
        v["learned"] = (
            None if counts is None else {str(i): counts[(i, v["tag"])] for i in v["served_here"]}
        )
    if args.json:
        return answer

    def learned(v: dict[str, Any]) -> str:
        if v["learned"] is None:
            return "?"
        limit = v["max_macs"]
        shown = [
            f"{i}: {n}/{limit}" + (" (full)" if n >= limit else "") for i, n in v["learned"].items()
        ]
        return ", ".join(shown) or "-"

    def macs(v: dict[str, Any]) -> str:
        shown = [
            f"{m['instance']}/{m['mac']}" + (f"={m['ip']}" if m["ip"] else "")
            for m in v["static_macs"]
        ]
        return ", ".join(shown) or "-"

    _table(
        [
            [
                v["name"],
                v["address"],
                v["encapsulation"],
                ",".join(map(str, v["instances"])),
                ",".join(map(str, v["served_here"])) or "-",
                learned(v),
                macs(v),
                v["source"],
            ]
            for v in answer["vteps"]
        ],
        [
            "VTEP",
            "ADDRESS",
            "ENCAP",
            "INSTANCES",
            "SERVED HERE",
            "LEARNED",
            "STATIC MACS",
            "FROM",
        ],
    )
    if answer["counters"]:
        print()
        for name, value in answer["counters"].items():
            print(f"{name}: {value}")
    return None


def cmd_keys(args: argparse.Namespace) -> Any:
    """``keys``: the agent's key ids and messages accepted under each; ``keys reload``:
    read the key settings again from its configuration files and take them."""
    if args.action == "reload":
        answer = _ask(args, "reload_keys")
        added, removed = _ids(answer["added"]), _ids(answer["removed"])
        print(f"keys reloaded: {_keys_line(answer)[6:]} (added {added}, removed {removed})")
        return None
    keys = _ask(args)["keys"]
    if args.json:
        return keys
    print(_keys_line(keys))
    for key_id, n in keys["accepted_messages"].items():
        print(f"key {key_id}: {n} messages accepted")
    return None


def cmd_vtep(args: argparse.Namespace) -> Any:
    """A VTEP controller's switch: bindings, remote MACs written, local MACs read."""
    status = _ask(args, "vtep")
    if args.json:
        return status
    state = "connected" if status["connected"] else "DISCONNECTED"
    directory = "connected" if status["directory_connected"] else "DISCONNECTED"
    print(f"vtep-controller {status['host']}: switch {status['switch']} ({state}), "
          f"tunnel IP {status['tunnel_ip']}, directory {directory}")  # fmt: skip
    missing = status["missing_ports"]
    print(f"bindings: {', '.join(status['bindings'])}"
          + (f" (no such port: {', '.join(missing)})" if missing else ""))  # fmt: skip
    for ls, locators in status["flood"].items():
        print(f"{ls} unknown-dst -> {', '.join(locators)}")
    print()
    _table(
        [[m["switch"], m["mac"], m["ip"], m["locator"]] for m in status["remote_macs"]],
        ["SWITCH", "REMOTE MAC", "IP", "LOCATOR"],
    )
    print()
    _table(
        [[m["switch"], m["mac"], m["ip"]] for m in status["local_macs"]],
        ["SWITCH", "LOCAL MAC", "IP"],
    )
    return None


def cmd_counters(args: argparse.Namespace) -> Any:
    counters = _ask(args, "counters")
    if args.json:
        return counters
    for name, value in sorted(counters.items()):
        print(f"{name:36} {value}")
    return None


def cmd_graph(args: argparse.Namespace) -> Any:
    sockets = list(args.admin_sockets or [])
    for pattern in args.glob or []:
        sockets += sorted(glob.glob(pattern))
    sockets = sockets or [args.admin_socket]
    statuses = []
    for path in sockets:
        try:
            statuses.append(query(path, {"cmd": "status"}))
        except (OSError, ValueError) as e:
            raise CtlError(f"cannot reach the agent at {path}: {e}") from None
    dot = ctl_graph.to_dot(statuses)
    if args.json:
        return ctl_graph.deployment(statuses)
    if args.out is None or args.out.endswith(".dot"):
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(dot)
        else:
            print(dot)
        return None
    ctl_graph.render(dot, args.out)
    print(f"wrote {args.out} ({len(statuses)} agents)")
    return None


# ---------------------------------------------------------------- the writes


def cmd_attach(args: argparse.Namespace) -> Any:
    try:
        instance = check_instance(args.instance)
    except ValueError as e:
        raise CtlError(f"--instance {args.instance}: {e}") from None
    try:
        mac = normalize_mac(args.mac)
    except ValueError as e:
        raise CtlError(f"--mac {args.mac}: invalid MAC address: {e}") from None
    ips = [IPv4Address(ip) for ip in args.ip or []]
    ctl_ports.attach(args.ovsdb, args.bridge, args.port, instance, mac, ips)
    ofport = _wait_local(args, args.port, present=True)
    print(f"{args.port} attached to instance {instance} ({mac}), ofport {ofport}")
    return None


def cmd_detach(args: argparse.Namespace) -> Any:
    ctl_ports.detach(args.ovsdb, args.bridge, args.port)
    _wait_local(args, args.port, present=False)
    print(f"{args.port} detached")
    return None


def cmd_migrate(args: argparse.Namespace) -> Any:
    took = ctl_ports.move_port(args.port, args.ovsdb, args.to_ovsdb, args.bridge, args.to_netns)
    print(f"{args.port} moved to netns of pid {args.to_netns} in {took * 1000:.0f} ms")
    return None


def _wait_local(args: argparse.Namespace, port: str, present: bool) -> int | None:
    """Until the agent has (or no longer has) the port as a local endpoint."""
    deadline = time.monotonic() + args.wait
    while True:
        try:
            status = query(args.admin_socket, {"cmd": "status"})
        except (OSError, ValueError):
            status = None
        if status is not None:
            found = [
                ep
                for info in status["instances"].values()
                for ep in info["local"]
                if ep["port"] == port
            ]
            if bool(found) == present:
                return found[0]["ofport"] if found else None
        if time.monotonic() >= deadline:
            what = "taken the port" if present else "let the port go"
            raise CtlError(f"OVSDB changed, but the agent has not {what} within {args.wait}s")
        time.sleep(0.05)


COMMANDS: dict[str, Any] = {
    "status": cmd_status,
    "vtep": cmd_vtep,
    "instances": cmd_instances,
    "endpoints": cmd_endpoints,
    "members": cmd_members,
    "proxies": cmd_proxies,
    "routers": cmd_routers,
    "counters": cmd_counters,
    "peers": cmd_peers,
    "vteps": cmd_vteps,
    "keys": cmd_keys,
    "graph": cmd_graph,
    "attach": cmd_attach,
    "detach": cmd_detach,
    "migrate": cmd_migrate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dovectl", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-socket", default=DEFAULT_SOCKET, help=f"the agent's (default {DEFAULT_SOCKET})"
    )
    parser.add_argument("--ovsdb", default=DEFAULT_OVSDB, help=f"default {DEFAULT_OVSDB}")
    parser.add_argument("--bridge", default="br-dove")
    parser.add_argument("--json", action="store_true", help="JSON for scripts (reads)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def read(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        return p

    read("status", "the agent, its instances and endpoints")
    read("instances", "instances with local and learned endpoint and member counts").add_argument(
        "--instance", type=int
    )
    p = read("endpoints", "local and learned endpoints: MAC, IPs, host, seq, age, who learned")
    p.add_argument("--instance", type=int)
    p.add_argument("--mac")
    read("members", "member hosts per instance").add_argument("--instance", type=int)
    read("proxies", "the VAN proxies this agent knows")
    read("routers", "tenant routers: subnets, gateway MACs, snat and floating IPs, rejected")
    read("counters", "the agent's counters")
    read("vtep", "a VTEP controller's switch: bindings, remote and local MACs")
    read("peers", "the peers heard from: role, the key id each last signed with, when")
    read("vteps", "external VTEPs: address, encapsulation, instances served here, static MACs")
    p = read("keys", "the deployment key ids: signing, accepted, retired; or reload them")
    p.add_argument(
        "action",
        nargs="?",
        choices=("show", "reload"),
        default="show",
        help="reload: read the key settings again from the agent's config files (as SIGHUP)",
    )
    p = read("graph", "draw the deployment (Graphviz): hosts, proxies, sites, instances")
    p.add_argument(
        "--agent", dest="admin_sockets", action="append", help="an agent's admin socket (repeat)"
    )
    p.add_argument("--glob", action="append", help="admin sockets by pattern (repeat)")
    p.add_argument("--out", help="image file: .png, .svg, .pdf or .dot (default: DOT to stdout)")
    p = sub.add_parser("attach", help="plug a port into an instance (OVSDB marks)")
    p.add_argument("port")
    p.add_argument("--instance", type=int, required=True)
    p.add_argument("--mac", required=True)
    p.add_argument("--ip", action="append", help="an IPv4 address of the VM (repeat)")
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the agent")
    p = sub.add_parser("detach", help="unplug a port")
    p.add_argument("port")
    p.add_argument("--wait", type=float, default=5.0)
    p = sub.add_parser(
        "migrate",
        help="move a VM's port to another OVS on this machine (the emulation's live migration)",
    )
    p.add_argument("port")
    p.add_argument("--to-netns", type=int, required=True, help="a pid in the target namespace")
    p.add_argument("--to-ovsdb", required=True, help="the target hypervisor's OVSDB")
    ctl_flows.add_commands(sub)
    COMMANDS["flows"] = COMMANDS["trace"] = ctl_flows.run
    ctl_directory.add_commands(sub)
    COMMANDS["directory"] = ctl_directory.run
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.cmd](args)
    except (CtlError, ctl_ports.PortError, ctl_graph.GraphError, ValueError) as e:
        print(f"dovectl {args.cmd}: {e}", file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
