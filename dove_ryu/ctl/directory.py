"""``dovectl directory``: create, join and inspect the directory cluster (issue 11).

Everything goes through OVSDB's own tools, so what dovectl shows an operator can check
by hand: ``ovsdb-tool create-cluster`` / ``join-cluster`` with the schema shipped in the
package, ``ovs-appctl cluster/status`` (with ``--ctl``) or each member's ``_Server``
database, and ``ovsdb-client transact`` selects for the tables.  Every read takes
``--json``.  dovectl registers the commands with `add_commands` and hands them to `run`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dove_ryu.agent.directory import RESOLUTIONS
from dove_ryu.ctl.common import run_command
from dove_ryu.ctl.dircluster import (
    AGENT_PORT,
    DB_NAME,
    HOST_ROLE,
    ClusterStatus,
    DirectoryError,
    MemberView,
    ServerFiles,
    check_address,
    cluster_status_argv,
    create_argv,
    decode_rows,
    join_argv,
    member_view,
    parse_cluster_status,
    rbac_txn,
    select_txn,
    server_argv,
    split_remotes,
    transact_argv,
    transact_result,
)
from dove_ryu.model import check_instance

DEFAULT_RUNDIR = "/var/run/dove-ryu/directory"
DEFAULT_DB = f"unix:{DEFAULT_RUNDIR}/db.sock"  # the local member's socket (server_argv)
DEFAULT_TIMEOUT = 5.0

Run = Callable[[Sequence[str], Mapping[str, str] | None], str]


def run_tool(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run an OVSDB tool; its stdout, or DirectoryError naming the command and its error."""
    return run_command(argv, env, DirectoryError, _last_error)


def _last_error(stderr: str) -> str:
    """The tool's own message: ovsdb-client logs reconnect lines before the real error."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, run: Run) -> Any:
    if args.ctl:
        status = parse_cluster_status(run(cluster_status_argv(args.ctl), None))
        report = status.to_json()
        if not args.json:
            _print_ctl_status(status)
        return report if args.json else None
    views: list[MemberView] = []
    errors: dict[str, str] = {}
    for remote in split_remotes(args.db):
        try:
            answer = run(
                transact_argv(remote, select_txn("_Server", "Database"), args.timeout), None
            )
            views.append(member_view(remote, transact_result(answer, f"{remote} _Server")))
        except DirectoryError as e:
            errors[remote] = str(e)
    if not views:
        raise DirectoryError("no member answered: " + "; ".join(errors.values()))
    clusters = {v.cluster_id for v in views}
    if len(clusters) > 1:
        raise DirectoryError(f"the remotes serve different clusters: {', '.join(sorted(clusters))}")
    leader = next((v for v in views if v.leader), None)
    report = {
        "source": "_Server",
        "name": DB_NAME,
        "cluster_id": views[0].cluster_id,
        "term": None,  # only cluster/status (--ctl) says
        "leader": leader.sid if leader else None,
        "leader_address": leader.remote if leader else None,
        "members": [
            {
                "remote": v.remote,
                "sid": v.sid,
                "server_id": v.server_id,
                "role": v.role,
                "connected": v.connected,
                "index": v.index,
            }
            for v in views
        ]
        + [{"remote": r, "role": "unreachable", "error": e} for r, e in errors.items()],
    }
    if args.json:
        return report
    leader_text = f"{report['leader']} at {report['leader_address']}" if leader else "none"
    print(f"{DB_NAME} cluster {report['cluster_id'][:4]}, leader {leader_text}")
    _table(
        [
            [m["remote"], m.get("sid", "-"), m["role"], str(m.get("index", "-"))]
            for m in report["members"]
        ],
        ["REMOTE", "SID", "ROLE", "INDEX"],
    )
    for remote, error in errors.items():
        print(f"{remote}: {error}", file=sys.stderr)
    return None


def _print_ctl_status(status: ClusterStatus) -> None:
    report = status.to_json()
    leader = f"{status.leader} at {status.leader_address}" if status.leader else "none"
    term = "?" if status.term is None else str(status.term)
    print(
        f"{status.name} cluster {status.cluster_id}, term {term}, leader {leader}; "
        f"this server {status.server_id} ({status.status}, {status.role})"
    )
    _table(
        [
            [m["sid"], m["address"], m["role"] + (" (this server)" if m["self"] else "")]
            for m in report["members"]
        ],
        ["SID", "ADDRESS", "ROLE"],
    )


# ---------------------------------------------------------------- tables


def _select(args: argparse.Namespace, run: Run, table: str, where: list[Any]) -> list[dict]:
    answer = run(transact_argv(args.db, select_txn(DB_NAME, table, where), args.timeout), None)
    return decode_rows(table, transact_result(answer, f"{args.db} {table}"))


def cmd_hosts(args: argparse.Namespace, run: Run) -> Any:
    """The Host rows, each with its Host_Liveness row's heartbeat and interval (None
    while it has none)."""
    txn = [DB_NAME, *(select_txn(DB_NAME, t)[1] for t in ("Host", "Host_Liveness"))]
    answer = json.loads(run(transact_argv(args.db, txn, args.timeout), None))
    if not isinstance(answer, list) or len(answer) < 2:
        raise DirectoryError(f"{args.db} Host: unexpected answer {str(answer)[:200]!r}")
    hosts, beating = (
        decode_rows(t, transact_result(json.dumps([a]), f"{args.db} {t}"))
        for t, a in zip(("Host", "Host_Liveness"), answer[:2], strict=True)
    )
    beats = {r["name"]: r for r in beating}
    rows = sorted(hosts, key=lambda r: (r["site"], r["name"]))
    for r in rows:
        beat = beats.get(r["name"], {})
        r["heartbeat"] = beat.get("heartbeat")
        r["heartbeat_interval"] = beat.get("heartbeat_interval")
    if args.json:
        return rows
    _table(
        [
            [
                r["name"],
                r["underlay_ip"],
                r["site"] or "-",
                r["role"],
                ",".join(str(i) for i in r["instances"]) or "-",
                "yes" if r["alive"] else "no",
                "-" if r["heartbeat"] is None else str(r["heartbeat"]),
                "-" if r["heartbeat_interval"] is None else f"{r['heartbeat_interval']:g}s",
            ]
            for r in rows
        ],
        ["NAME", "UNDERLAY", "SITE", "ROLE", "INSTANCES", "ALIVE", "HEARTBEAT", "INTERVAL"],
    )
    return None


def cmd_endpoints(args: argparse.Namespace, run: Run) -> Any:
    where = [] if args.instance is None else [["instance", "==", args.instance]]
    rows = sorted(
        _select(args, run, "Endpoint", where), key=lambda r: (r["instance"], r["mac"], r["host"])
    )
    if args.json:
        return rows
    _table(
        [
            [str(r["instance"]), r["mac"], ",".join(r["ips"]) or "-", r["host"], str(r["seq"])]
            for r in rows
        ],
        ["INSTANCE", "MAC", "IPS", "HOST", "SEQ"],
    )
    return None


def cmd_instances(args: argparse.Namespace, run: Run) -> Any:
    rows = sorted(_select(args, run, "Instance", []), key=lambda r: r["id"])
    if args.json:
        return rows
    _table(
        [[str(r["id"]), r["name"] or "-", r["resolution"]] for r in rows],
        ["INSTANCE", "NAME", "RESOLUTION"],
    )
    return None


def cmd_resolution(args: argparse.Namespace, run: Run) -> Any:
    """Set how an instance's addresses are resolved: its Instance row, made if absent."""
    instance = check_instance(args.instance)
    where = [["id", "==", instance]]
    update = [DB_NAME, {"op": "update", "table": "Instance", "where": where,
                        "row": {"resolution": args.mode}}]  # fmt: skip
    answer = json.loads(run(transact_argv(args.db, update, args.timeout), None))
    if not isinstance(answer, list) or not answer or "error" in answer[0]:
        raise DirectoryError(f"{args.db} Instance: {answer}")
    if answer[0].get("count", 0) == 0:
        row = {"id": instance, "name": args.name or f"instance-{instance}", "resolution": args.mode}
        insert = [DB_NAME, {"op": "insert", "table": "Instance", "row": row}]
        answer = json.loads(run(transact_argv(args.db, insert, args.timeout), None))
        if not isinstance(answer, list) or not answer or "error" in answer[0]:
            raise DirectoryError(f"{args.db} Instance: {answer}")
    print(f"instance {instance}: resolution {args.mode}")
    return None


def cmd_rbac(args: argparse.Namespace, run: Run) -> Any:
    """The agents' SSL remote and their RBAC role, in the cluster (once, after create)."""
    answer = json.loads(run(transact_argv(args.db, rbac_txn(), args.timeout), None))
    errors = [r for r in answer if isinstance(r, dict) and "error" in r] if answer else [answer]
    if errors:
        raise DirectoryError(f"{args.db}: {errors[0]}")
    print(
        f"agents connect with ssl:<member>:{AGENT_PORT} and their own certificates "
        f"(role {HOST_ROLE}: each writes only its own Host, Host_Liveness and Endpoint rows)"
    )
    return None


def cmd_reap(args: argparse.Namespace, run: Run) -> Any:
    """Judge the hosts' heartbeats and mark dead the rows of those that stopped, until
    killed (one beside each member; they are idempotent)."""
    import logging
    import warnings

    with warnings.catch_warnings():  # NOTE: see dircluster._ovs_db (ovs imports eventlet)
        warnings.simplefilter("ignore")
        from dove_ryu.adapters.directory import Reaper

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout
    )
    print(f"reaper: judging the heartbeats of {args.db}", flush=True)
    reaper = Reaper(args.db)
    try:
        reaper.run()
    except KeyboardInterrupt:
        pass
    return None


# ---------------------------------------------------------------- create and join


def _refuse_existing(db_file: str) -> None:
    if Path(db_file).exists():
        raise DirectoryError(f"{db_file} exists; remove it or choose another --db-file")


def _next_step(args: argparse.Namespace, address: str) -> None:
    files = ServerFiles(Path(args.rundir))
    print("serve it with:")
    print(f"  mkdir -p {shlex.quote(args.rundir)}")
    print(f"  {shlex.join(server_argv(args.db_file, address, files))}")
    print(
        "  and, for agents over SSL with RBAC, --remote=db:DOVE_Directory,Directory,connections"
        " --private-key=KEY --certificate=CERT --ca-cert=CA"
    )
    print(f"then: dovectl directory status --ctl {files.ctl}")
    print("and once for the cluster: dovectl directory rbac (the agents' remote and role)")


def cmd_create(args: argparse.Namespace, run: Run) -> Any:
    address = check_address(args.address)
    _refuse_existing(args.db_file)
    run(create_argv(args.db_file, address, args.schema), None)
    print(f"created {args.db_file}: a new {DB_NAME} cluster with {address} as its only member")
    _next_step(args, address)
    return None


def cmd_join(args: argparse.Namespace, run: Run) -> Any:
    address = check_address(args.address)
    members = [check_address(m) for m in args.leader]
    _refuse_existing(args.db_file)
    run(join_argv(args.db_file, address, members), None)
    print(
        f"created {args.db_file}: {address} joins the {DB_NAME} cluster through "
        f"{', '.join(members)} once it is served"
    )
    _next_step(args, address)
    return None


COMMANDS: dict[str, Callable[[argparse.Namespace, Run], Any]] = {
    "status": cmd_status,
    "hosts": cmd_hosts,
    "endpoints": cmd_endpoints,
    "instances": cmd_instances,
    "resolution": cmd_resolution,
    "rbac": cmd_rbac,
    "reap": cmd_reap,
    "create": cmd_create,
    "join": cmd_join,
}


def add_commands(subparsers: Any) -> None:
    """Register ``directory`` and its subcommands on dovectl's subparsers."""
    text = "create, join and inspect the directory cluster (OVSDB, Raft)"
    top = subparsers.add_parser("directory", help=text, description=text)
    sub = top.add_subparsers(dest="dircmd", required=True, metavar="COMMAND")

    def read(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--db", default=DEFAULT_DB, help=f"a member or tcp:A:6641,tcp:B:6641,... ({DEFAULT_DB})"
        )
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per query")
        p.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts"
        )
        return p

    p = read("status", "role, leader, term and members of the cluster")
    p.add_argument("--ctl", help="a member's ovsdb-server control socket: use cluster/status")
    read("hosts", "the Host rows: name, underlay, site, role, instances, alive, heartbeat")
    read("endpoints", "the Endpoint rows: instance, MAC, IPs, host, seq").add_argument(
        "--instance", type=int
    )
    read("instances", "the Instance rows: how each instance's addresses are resolved")
    p = read("resolution", "set an instance's resolution: learn, lookup or push")
    p.add_argument("--instance", type=int, required=True)
    p.add_argument("--mode", required=True, choices=RESOLUTIONS)
    p.add_argument("--name", help="the instance's name, if its row is made now")
    read("rbac", "make the agents' SSL remote (port 6642) and their RBAC role, dove-host")
    text = "judge the hosts' heartbeats; mark dead the rows of those that stopped (runs on)"
    p = sub.add_parser("reap", help=text, description=text)
    p.add_argument(
        "--db", default=DEFAULT_DB, help=f"the member beside it, or several ({DEFAULT_DB})"
    )

    def write(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--address", required=True, help="this member's IPv4 address")
        p.add_argument("--db-file", required=True, help="the clustered database file to make")
        p.add_argument(
            "--rundir", default=DEFAULT_RUNDIR, help=f"for the printed command ({DEFAULT_RUNDIR})"
        )
        return p

    write(
        "create", "make the first member's database file (ovsdb-tool create-cluster)"
    ).add_argument("--schema", help="default: the schema shipped with dove-ryu")
    write("join", "make another member's database file (ovsdb-tool join-cluster)").add_argument(
        "--leader",
        action="append",
        required=True,
        metavar="ADDRESS",
        help="an existing member's address (repeat for several)",
    )


def run(args: argparse.Namespace, run_ovsdb: Run = run_tool) -> int:
    """Dispatch ``args.dircmd``; print errors, return the exit status."""
    args.json = getattr(args, "json", False)
    try:
        result = COMMANDS[args.dircmd](args, run_ovsdb)
    except (DirectoryError, ValueError) as e:
        print(f"dovectl directory {args.dircmd}: {e}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
