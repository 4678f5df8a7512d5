"""The directory cluster as OVSDB's own tools see it: its names and ports, the command
lines that create, join and serve a member, and what ``ovs-appctl cluster/status``,
``_Server`` and a ``select`` answer, read into small values.

Pure: nothing here runs a command. ``dovectl directory`` (dove_ryu.ctl.directory) and
the emulation (mininet_topos.directory) both build their command lines here, so an
operator's member and an emulated one are started the same way.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from ipaddress import IPv4Address
from pathlib import Path
from types import ModuleType
from typing import Any

DB_NAME = "DOVE_Directory"
CLIENT_PORT = 6641  # operators' tools (OVSDB clients, no role: not for agents)
AGENT_PORT = 6642  # agents, over SSL with per-host certificates, role dove-host (RBAC)
HOST_ROLE = "dove-host"
RAFT_PORT = 6643  # members among themselves
SCHEMA_FILE = "dove-directory.ovsschema"  # shipped in dove_ryu.adapters (setup.cfg package_data)
TABLES = ("Host", "Host_Liveness", "Endpoint", "Instance", "RBAC_Role", "RBAC_Permission")


class DirectoryError(Exception):
    """What the directory tools cannot do; the message says what failed."""


def schema_path() -> Path:
    """The schema file shipped with the installed package."""
    return Path(str(resources.files("dove_ryu.adapters").joinpath(SCHEMA_FILE)))


def check_address(text: str) -> str:
    """A member's IPv4 address, normalised; DirectoryError if it is not one."""
    try:
        return str(IPv4Address(text.strip()))
    except ValueError:
        raise DirectoryError(f"{text!r} is not an IPv4 address") from None


def client_remote(address: str) -> str:
    return f"tcp:{address}:{CLIENT_PORT}"


def raft_remote(address: str) -> str:
    return f"tcp:{address}:{RAFT_PORT}"


def cluster_remotes(addresses: Iterable[str]) -> str:
    """What agents get as ``directory =``: every member's client remote, comma-separated."""
    return ",".join(client_remote(a) for a in addresses)


def split_remotes(db: str) -> list[str]:
    """``tcp:A:6641,tcp:B:6641`` -> its remotes (OVSDB's comma syntax for a cluster)."""
    remotes = [r.strip() for r in db.split(",") if r.strip()]
    if not remotes:
        raise DirectoryError("no database remote given")
    return remotes


# ---------------------------------------------------------------- command lines


def create_argv(db_file: str, address: str, schema: str | None = None) -> list[str]:
    """The first member: a new one-server cluster of the DOVE schema."""
    return [
        "ovsdb-tool",
        "create-cluster",
        db_file,
        schema or str(schema_path()),
        raft_remote(address),
    ]


def join_argv(db_file: str, address: str, members: Sequence[str]) -> list[str]:
    """Another member: joins through any of ``members`` (addresses) once it is served."""
    if not members:
        raise DirectoryError("joining needs the address of at least one member")
    return [
        "ovsdb-tool",
        "join-cluster",
        db_file,
        DB_NAME,
        raft_remote(address),
        *(raft_remote(m) for m in members),
    ]


@dataclass(frozen=True)
class ServerFiles:
    """Where one member's ovsdb-server keeps its socket, pid, log and control socket."""

    rundir: Path

    @property
    def sock(self) -> Path:
        return self.rundir / "db.sock"

    @property
    def pidfile(self) -> Path:
        return self.rundir / "ovsdb-server.pid"

    @property
    def log(self) -> Path:
        return self.rundir / "ovsdb-server.log"

    @property
    def ctl(self) -> Path:
        return self.rundir / "ovsdb-server.ctl"


@dataclass(frozen=True)
class Pki:
    """A member's SSL files: its key and certificate, and the CA every peer is signed by."""

    private_key: Path
    certificate: Path
    ca_cert: Path


def server_argv(
    db_file: str, address: str, files: ServerFiles, pki: Pki | None = None
) -> list[str]:
    """ovsdb-server for one member: clients on ``address``:6641 and a local unix socket;
    with ``pki``, also the remotes the database's Directory row lists (agents over SSL
    on 6642, role dove-host, see `rbac_txn`).

    The Raft port is not a flag: it is in the database file (create or join)."""
    ssl = (
        [
            f"--remote=db:{DB_NAME},Directory,connections",
            f"--private-key={pki.private_key}",
            f"--certificate={pki.certificate}",
            f"--ca-cert={pki.ca_cert}",
        ]
        if pki is not None
        else []
    )
    return [
        "ovsdb-server",
        db_file,
        f"--remote=punix:{files.sock}",
        f"--remote=ptcp:{CLIENT_PORT}:{address}",
        *ssl,
        f"--pidfile={files.pidfile}",
        f"--log-file={files.log}",
        f"--unixctl={files.ctl}",
        "--detach",
        "--no-chdir",
    ]


# What an agent (role dove-host) may do: write its own Host and Host_Liveness rows
# (their name is its certificate's CN) and its own Endpoint rows (host = its name);
# read everything.  It may mark its own row alive, never another's; the reapers, which
# mark rows dead, use the members' unix sockets (no role).
HOST_PERMISSIONS = {
    "Host": {
        "authorization": ["name"],
        "insert_delete": True,
        "update": ["underlay_ip", "site", "role", "wan_ip", "instances", "alive", "claim",
                   "external_ids"],
    },
    "Host_Liveness": {
        "authorization": ["name"],
        "insert_delete": True,
        "update": ["heartbeat", "heartbeat_interval"],
    },
    "Endpoint": {
        "authorization": ["host"],
        "insert_delete": True,
        "update": ["ips", "seq", "external_ids"],
    },
}  # fmt: skip


def rbac_txn() -> list[Any]:
    """The RBAC role of agents and the SSL remote they use: one transaction, run once
    when the cluster is made (it replaces any earlier Directory row and role)."""
    ops: list[Any] = [
        {"op": "delete", "table": "RBAC_Role", "where": [["name", "==", HOST_ROLE]]},
        {"op": "delete", "table": "Directory", "where": []},
    ]
    perms = {}
    for n, (table, perm) in enumerate(HOST_PERMISSIONS.items()):
        row = {
            "table": table,
            "authorization": ["set", perm["authorization"]],
            "insert_delete": perm["insert_delete"],
            "update": ["set", perm["update"]],
        }
        ops.append({"op": "insert", "table": "RBAC_Permission", "row": row, "uuid-name": f"p{n}"})
        perms[table] = f"p{n}"
    role = {
        "name": HOST_ROLE,
        "permissions": ["map", [[t, ["named-uuid", u]] for t, u in perms.items()]],
    }
    ops.append({"op": "insert", "table": "RBAC_Role", "row": role})
    target = {"target": f"pssl:{AGENT_PORT}", "role": HOST_ROLE, "read_only": False}
    ops.append({"op": "insert", "table": "Connection", "row": target, "uuid-name": "c"})
    row = {"connections": ["set", [["named-uuid", "c"]]]}
    ops.append({"op": "insert", "table": "Directory", "row": row})
    return [DB_NAME, *ops]


def agent_remotes(addresses: Iterable[str]) -> str:
    """What agents get as ``directory =`` with SSL: ssl:A:6642,ssl:B:6642,..."""
    return ",".join(f"ssl:{a}:{AGENT_PORT}" for a in addresses)


def cluster_status_argv(ctl: str) -> list[str]:
    return ["ovs-appctl", "-t", ctl, "cluster/status", DB_NAME]


def transact_argv(db: str, txn: Sequence[Any], timeout: float) -> list[str]:
    """ovsdb-client transact; with several remotes it finds the leader itself."""
    return ["ovsdb-client", f"--timeout={max(1, round(timeout))}", "transact", db, json.dumps(txn)]


def select_txn(database: str, table: str, where: Sequence[Any] = ()) -> list[Any]:
    return [database, {"op": "select", "table": table, "where": list(where)}]


# ---------------------------------------------------------------- cluster/status


@dataclass(frozen=True)
class Server:
    """A member as one server's cluster/status lists it."""

    sid: str  # the 4-hex-digit prefix OVS prints
    address: str  # its Raft remote
    is_self: bool


@dataclass(frozen=True)
class ClusterStatus:
    """One member's ``cluster/status`` (OVS 3.1 text)."""

    name: str
    cluster_id: str
    server_id: str
    address: str
    status: str
    role: str
    term: int | None
    leader: str | None  # the leader's sid, None while there is none
    servers: tuple[Server, ...]

    @property
    def leader_address(self) -> str | None:
        return next((s.address for s in self.servers if s.sid == self.leader), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "cluster/status",
            "name": self.name,
            "cluster_id": self.cluster_id,
            "server_id": self.server_id,
            "address": self.address,
            "status": self.status,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "leader_address": self.leader_address,
            "members": [
                {
                    "sid": s.sid,
                    "address": s.address,
                    "self": s.is_self,
                    "role": self._role_of(s),
                }
                for s in self.servers
            ],
        }

    def _role_of(self, server: Server) -> str:
        if server.is_self:
            return self.role
        if self.leader is None:
            return "unknown"
        return "leader" if server.sid == self.leader else "follower"


_SERVER_LINE = re.compile(r"^\s+(\w+) \((\w+) at (\S+)\)(?P<self> \(self\))?")


def parse_cluster_status(text: str) -> ClusterStatus:
    """Read ``ovs-appctl cluster/status DOVE_Directory``; DirectoryError if it is not that."""
    fields: dict[str, str] = {}
    servers: list[Server] = []
    in_servers = False
    for line in text.splitlines():
        if in_servers:
            m = _SERVER_LINE.match(line)
            if m:
                servers.append(Server(m.group(1), m.group(3), bool(m.group("self"))))
                continue
            in_servers = False
        if line.startswith("Servers:"):
            in_servers = True
        elif ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    missing = [k for k in ("Name", "Server ID", "Role") if k not in fields]
    if missing:
        raise DirectoryError(f"cluster/status without {', '.join(missing)}: {text[:200]!r}")
    sid = fields["Server ID"].split()[0]
    leader = fields.get("Leader", "unknown")
    term = fields.get("Term", "")
    return ClusterStatus(
        name=fields["Name"],
        cluster_id=fields.get("Cluster ID", "").split()[0] if fields.get("Cluster ID") else "",
        server_id=sid,
        address=fields.get("Address", ""),
        status=fields.get("Status", ""),
        role=fields["Role"],
        term=int(term) if term.isdigit() else None,
        leader=sid if leader == "self" else (None if leader == "unknown" else leader),
        servers=tuple(servers),
    )


# ---------------------------------------------------------------- _Server and rows


@dataclass(frozen=True)
class MemberView:
    """A member as its own ``_Server`` database describes it (no term, no peers: OVSDB
    keeps those in cluster/status only)."""

    remote: str
    server_id: str  # full uuid
    cluster_id: str
    connected: bool
    leader: bool
    index: int | None

    @property
    def sid(self) -> str:
        return self.server_id[:4]

    @property
    def role(self) -> str:
        if self.leader:
            return "leader"
        return "follower" if self.connected else "disconnected"


def transact_result(answer: str, what: str) -> list[dict[str, Any]]:
    """The rows of the one select in an ``ovsdb-client transact`` answer."""
    try:
        results = json.loads(answer)
    except ValueError:
        raise DirectoryError(f"{what}: not JSON: {answer[:200]!r}") from None
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise DirectoryError(f"{what}: unexpected answer {answer[:200]!r}")
    first = results[0]
    if "error" in first:
        raise DirectoryError(f"{what}: {first['error']}: {first.get('details', '')}".rstrip(": "))
    rows = first.get("rows")
    if not isinstance(rows, list):
        raise DirectoryError(f"{what}: no rows in {answer[:200]!r}")
    return rows


def _uuid(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid":
        return str(value[1])
    return ""


def member_view(remote: str, rows: Sequence[Mapping[str, Any]]) -> MemberView:
    """The DOVE_Directory row of a server's ``_Server.Database``."""
    row = next((r for r in rows if r.get("name") == DB_NAME), None)
    if row is None:
        raise DirectoryError(f"{remote} serves no {DB_NAME} database")
    if row.get("model") != "clustered":
        raise DirectoryError(f"{remote} serves {DB_NAME} as {row.get('model')}, not clustered")
    index = row.get("index")
    return MemberView(
        remote=remote,
        server_id=_uuid(row.get("sid")),
        cluster_id=_uuid(row.get("cid")),
        connected=bool(row.get("connected")),
        leader=bool(row.get("leader")),
        index=index if isinstance(index, int) else None,
    )


@cache
def _ovs_db() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``ovs.db``'s data, error and schema modules, imported when a table is read.

    NOTE (ovs 4.0.0): importing ovs imports eventlet when it is installed (os-ken 4.2
    depends on it), and eventlet and the dnspython it pulls in warn on import; we never
    use either, and every other dovectl command would print the warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ovs.db import data, error, schema
    return data, error, schema


@cache
def _schema() -> Any:
    schema = _ovs_db()[2]
    return schema.DbSchema.from_json(json.loads(schema_path().read_text()))


def decode_rows(table: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a DOVE_Directory table from OVSDB's wire JSON into plain Python, with the
    ``ovs`` library's typed decoding (sets and optional values as lists, maps as dicts)."""
    ovs_data, ovs_error, _ = _ovs_db()
    columns = _schema().tables[table].columns
    out = []
    for row in rows:
        plain: dict[str, Any] = {"_uuid": _uuid(row.get("_uuid"))}
        for name, value in row.items():
            if name.startswith("_"):
                continue
            column = columns.get(name)
            if column is None:  # a newer schema's column: shown as OVSDB sent it
                plain[name] = value
                continue
            try:
                datum = ovs_data.Datum.from_json(column.type, value)
            except ovs_error.Error as e:
                raise DirectoryError(f"{table}.{name}: {e}") from None
            plain[name] = _jsonable(datum.to_python(lambda v, _t: v))
        out.append(plain)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # uuid.UUID
