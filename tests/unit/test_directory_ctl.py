"""``dovectl directory`` against canned answers of ovs-appctl, ovsdb-client and
ovsdb-tool (OVS 3.1): what it runs, what it reads from the answers, what it prints,
and that a failure is one line naming what failed, with a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dove_ryu.ctl import directory, dovectl
from dove_ryu.ctl.dircluster import (
    DirectoryError,
    cluster_remotes,
    decode_rows,
    parse_cluster_status,
    schema_path,
)

pytestmark = pytest.mark.unit

FOLLOWER_STATUS = """\
351d
Name: DOVE_Directory
Cluster ID: 89b8 (89b807e7-9766-4857-abb4-40a7092c4257)
Server ID: 351d (351d091e-2798-46b5-986c-9ff0bc780b42)
Address: tcp:10.99.0.242:6643
Status: cluster member
Role: follower
Term: 3
Leader: 0020
Vote: unknown

Election timer: 1000
Log: [2, 5]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: ->0000 <-0020 <-b896 ->b896
Disconnections: 0
Servers:
    0020 (0020 at tcp:10.99.0.241:6643) last msg 326 ms ago
    351d (351d at tcp:10.99.0.242:6643) (self)
    b896 (b896 at tcp:10.99.0.243:6643)
"""

CID = "89b807e7-9766-4857-abb4-40a7092c4257"
SIDS = {
    "tcp:10.99.0.241:6641": "0020aaaa-0000-0000-0000-000000000001",
    "tcp:10.99.0.242:6641": "351d091e-2798-46b5-986c-9ff0bc780b42",
    "tcp:10.99.0.243:6641": "b896aaaa-0000-0000-0000-000000000003",
}
HOST_ROW = {
    "_uuid": ["uuid", "afd298e0-132a-49e3-8412-baa21d316b1d"],
    "_version": ["uuid", "712790f8-e563-49b2-b820-26b3b80fc1af"],
    "external_ids": ["map", [["owner", "hv1"]]],
    "alive": True,
    "claim": 0,
    "instances": ["set", [5001, 5002]],
    "name": "hv1",
    "role": "host",
    "site": "s1",
    "underlay_ip": "10.99.0.1",
    "wan_ip": ["set", []],
}
LIVENESS_ROW = {
    "_uuid": ["uuid", "bfd298e0-132a-49e3-8412-baa21d316b1d"],
    "name": "hv1",
    "heartbeat": 3,
    "heartbeat_interval": 1,
}
ENDPOINT_ROWS = [
    {
        "_uuid": ["uuid", f"00000000-0000-0000-0000-00000000000{i}"],
        "instance": inst,
        "mac": mac,
        "ips": ips,
        "host": host,
        "seq": seq,
        "external_ids": ["map", []],
    }
    for i, (inst, mac, ips, host, seq) in enumerate(
        [
            (5002, "02:00:00:00:00:01", "10.0.0.1", "10.99.0.2", 7),
            (5001, "02:00:00:00:00:02", ["set", ["10.0.0.2", "10.0.0.12"]], "10.99.0.1", 9),
        ]
    )
]


class FakeTools:
    """ovs-appctl, ovsdb-client and ovsdb-tool as OVS 3.1 answers them; records argv."""

    def __init__(self, leader: str = "tcp:10.99.0.241:6641", down: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.leader, self.down = leader, set(down)

    def __call__(self, argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "ovs-appctl":
            if "missing" in argv[2]:
                raise DirectoryError(f"ovs-appctl -t {argv[2]} cluster/status: cannot connect")
            return FOLLOWER_STATUS
        if argv[0] == "ovsdb-tool":
            return ""
        assert argv[0] == "ovsdb-client" and argv[2] == "transact", argv
        remote, (db, op, *_) = argv[3], json.loads(argv[4])
        if remote in self.down:
            raise DirectoryError(f"ovsdb-client transact {remote}: Connection refused")
        if db == "_Server":
            return json.dumps([{"rows": [self._server_row(remote)]}])
        if op["table"] == "Host":  # with Host_Liveness, in one transaction
            return json.dumps([{"rows": [HOST_ROW]}, {"rows": [LIVENESS_ROW]}])
        rows = [r for r in ENDPOINT_ROWS if all(r[c] == v for c, _, v in op["where"])]
        return json.dumps([{"rows": rows}])

    def _server_row(self, remote: str) -> dict[str, Any]:
        return {
            "name": "DOVE_Directory",
            "model": "clustered",
            "connected": True,
            "leader": remote == self.leader,
            "index": 12,
            "cid": ["uuid", CID],
            "sid": ["uuid", SIDS[remote]],
        }


def dovectl_run(tools: FakeTools, *argv: str) -> int:
    args = dovectl.build_parser().parse_args(list(argv))
    return directory.run(args, tools)


REMOTES = cluster_remotes(["10.99.0.241", "10.99.0.242", "10.99.0.243"])


def test_the_agents_remotes_and_the_shipped_schema() -> None:
    assert REMOTES == "tcp:10.99.0.241:6641,tcp:10.99.0.242:6641,tcp:10.99.0.243:6641"
    schema = json.loads(schema_path().read_text())
    assert (schema["name"], schema["version"]) == ("DOVE_Directory", "1.3.0")
    # 1.3.0: a Host row's role may be vtep (a VTEP controller's switch).
    assert "vtep" in schema["tables"]["Host"]["columns"]["role"]["type"]["key"]["enum"][1]
    # 1.2.0: the heartbeat left Host for Host_Liveness, which agents do not monitor.
    assert "heartbeat" not in schema["tables"]["Host"]["columns"]
    assert set(schema["tables"]["Host_Liveness"]["columns"]) == {
        "name",
        "heartbeat",
        "heartbeat_interval",
    }


def test_cluster_status_text_is_read_into_role_leader_term_and_members() -> None:
    status = parse_cluster_status(FOLLOWER_STATUS)
    assert (status.role, status.term, status.leader) == ("follower", 3, "0020")
    assert status.leader_address == "tcp:10.99.0.241:6643"
    roles = {m["sid"]: (m["role"], m["self"]) for m in status.to_json()["members"]}
    assert roles == {
        "0020": ("leader", False),
        "351d": ("follower", True),
        "b896": ("follower", False),
    }
    with pytest.raises(DirectoryError, match="without"):
        parse_cluster_status("ovs-appctl: no such database")


def test_status_with_a_control_socket_uses_cluster_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tools = FakeTools()
    assert dovectl_run(tools, "directory", "status", "--ctl", "/run/m2.ctl", "--json") == 0
    assert tools.calls == [["ovs-appctl", "-t", "/run/m2.ctl", "cluster/status", "DOVE_Directory"]]
    report = json.loads(capsys.readouterr().out)
    assert report["term"] == 3 and report["leader"] == "0020" and len(report["members"]) == 3
    assert dovectl_run(tools, "directory", "status", "--ctl", "/run/m2.ctl") == 0
    text = capsys.readouterr().out
    assert "term 3, leader 0020 at tcp:10.99.0.241:6643" in text
    assert "follower (this server)" in text


def test_status_without_a_control_socket_asks_every_members_server_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tools = FakeTools(leader="tcp:10.99.0.242:6641")
    assert dovectl_run(tools, "--json", "directory", "status", "--db", REMOTES) == 0
    asked = [c[3] for c in tools.calls]
    assert asked == REMOTES.split(",")
    assert all(json.loads(c[4])[0] == "_Server" for c in tools.calls)
    report = json.loads(capsys.readouterr().out)
    assert report["leader"] == "351d" and report["leader_address"] == "tcp:10.99.0.242:6641"
    assert [m["role"] for m in report["members"]] == ["follower", "leader", "follower"]


def test_status_shows_a_member_down_and_fails_only_if_none_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down = FakeTools(down=["tcp:10.99.0.241:6641"], leader="")
    assert dovectl_run(down, "directory", "status", "--db", REMOTES) == 0
    out = capsys.readouterr()
    assert "leader none" in out.out and "unreachable" in out.out
    assert "Connection refused" in out.err
    dead = FakeTools(down=REMOTES.split(","))
    assert dovectl_run(dead, "directory", "status", "--db", REMOTES) == 1
    err = capsys.readouterr().err
    assert err.startswith("dovectl directory status: no member answered: ")


def test_hosts_are_decoded_with_the_schema_and_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tools = FakeTools()
    assert dovectl_run(tools, "directory", "hosts", "--db", REMOTES, "--json") == 0
    (call,) = tools.calls
    assert call[:4] == ["ovsdb-client", "--timeout=5", "transact", REMOTES]
    (row,) = json.loads(capsys.readouterr().out)
    assert row["instances"] == [5001, 5002] and row["wan_ip"] == []
    assert row["external_ids"] == {"owner": "hv1"} and row["_uuid"].startswith("afd298e0")
    assert row["alive"] is True and (row["heartbeat"], row["heartbeat_interval"]) == (3, 1)
    assert dovectl_run(tools, "directory", "hosts", "--db", REMOTES) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "UNDERLAY",
        "SITE",
        "ROLE",
        "INSTANCES",
        "ALIVE",
        "HEARTBEAT",
        "INTERVAL",
    ]
    assert lines[1].split() == ["hv1", "10.99.0.1", "s1", "host", "5001,5002", "yes", "3", "1s"]


def test_endpoints_filtered_by_instance_in_the_query(capsys: pytest.CaptureFixture[str]) -> None:
    tools = FakeTools()
    assert dovectl_run(tools, "directory", "endpoints", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["instance"] for r in rows] == [5001, 5002]  # sorted
    assert rows[0]["ips"] == ["10.0.0.12", "10.0.0.2"] and rows[1]["ips"] == ["10.0.0.1"]
    assert tools.calls[0][3] == directory.DEFAULT_DB
    assert dovectl_run(tools, "directory", "endpoints", "--instance", "5002") == 0
    assert json.loads(tools.calls[-1][4])[1]["where"] == [["instance", "==", 5002]]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split() == [
        "5002",
        "02:00:00:00:00:01",
        "10.0.0.1",
        "10.99.0.2",
        "7",
    ]


def test_create_and_join_wrap_ovsdb_tool_with_the_shipped_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = FakeTools()
    db = str(tmp_path / "dir1.db")
    assert (
        dovectl_run(tools, "directory", "create", "--address", "10.99.0.241", "--db-file", db) == 0
    )
    assert tools.calls[-1] == [
        "ovsdb-tool",
        "create-cluster",
        db,
        str(schema_path()),
        "tcp:10.99.0.241:6643",
    ]
    out = capsys.readouterr().out
    assert "--remote=ptcp:6641:10.99.0.241" in out
    assert "dovectl directory status --ctl /var/run/dove-ryu/directory/ovsdb-server.ctl" in out
    db2 = str(tmp_path / "dir2.db")
    argv = ["directory", "join", "--address", "10.99.0.242", "--db-file", db2]
    assert dovectl_run(tools, *argv, "--leader", "10.99.0.241", "--leader", "10.99.0.243") == 0
    assert tools.calls[-1] == [
        "ovsdb-tool",
        "join-cluster",
        db2,
        "DOVE_Directory",
        "tcp:10.99.0.242:6643",
        "tcp:10.99.0.241:6643",
        "tcp:10.99.0.243:6643",
    ]


def test_bad_input_and_failed_tools_are_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = FakeTools()
    existing = tmp_path / "d.db"
    existing.write_text("")
    cases = [
        (["create", "--address", "10.99.0.x", "--db-file", str(tmp_path / "n.db")], "IPv4"),
        (["create", "--address", "10.99.0.1", "--db-file", str(existing)], "exists"),
        (["status", "--ctl", "/run/missing.ctl"], "cannot connect"),
    ]
    for argv, what in cases:
        assert dovectl_run(tools, "directory", *argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"dovectl directory {argv[0]}: ") and what in err
        assert err.count("\n") == 1
    assert not any(c[0] == "ovsdb-tool" for c in tools.calls)


def test_a_real_tool_failure_names_the_command() -> None:
    with pytest.raises(DirectoryError, match=r"^ovsdb-tool-nonexistent: "):
        directory.run_tool(["ovsdb-tool-nonexistent", "x"])
    with pytest.raises(DirectoryError, match=r"^sh -c 'echo boom >&2; exit 3': boom$"):
        directory.run_tool(["sh", "-c", "echo boom >&2; exit 3"])


def test_decode_rows_refuses_what_the_schema_does_not_allow() -> None:
    with pytest.raises(DirectoryError, match="Endpoint.seq"):
        decode_rows("Endpoint", [{**ENDPOINT_ROWS[0], "seq": "seven"}])


def test_every_directory_read_takes_json() -> None:
    parser = dovectl.build_parser()
    for cmd in ("status", "hosts", "endpoints"):
        assert parser.parse_args(["directory", cmd, "--json"]).json is True
        assert parser.parse_args(["--json", "directory", cmd]).json is True
        assert parser.parse_args(["directory", cmd]).json is False


class InstanceTools(FakeTools):
    """An Instance table: update answers how many rows it changed."""

    def __init__(self, existing: Sequence[int] = ()) -> None:
        super().__init__()
        self.rows = {i: "learn" for i in existing}

    def __call__(self, argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        self.calls.append(list(argv))
        _, op = json.loads(argv[4])
        if op["op"] == "update":
            ((_, _, instance),) = op["where"]
            if instance in self.rows:
                self.rows[instance] = op["row"]["resolution"]
                return json.dumps([{"count": 1}])
            return json.dumps([{"count": 0}])
        if op["op"] == "insert":
            self.rows[op["row"]["id"]] = op["row"]["resolution"]
            return json.dumps([{"uuid": ["uuid", CID]}])
        return json.dumps([{"rows": []}])


def test_resolution_updates_an_instance_row_or_makes_it(capsys: pytest.CaptureFixture[str]) -> None:
    tools = InstanceTools(existing=[5001])
    assert (
        dovectl_run(tools, "directory", "resolution", "--instance", "5001", "--mode", "push") == 0
    )
    assert tools.rows == {5001: "push"} and len(tools.calls) == 1
    assert (
        dovectl_run(tools, "directory", "resolution", "--instance", "5002", "--mode", "push") == 0
    )
    assert tools.rows == {5001: "push", 5002: "push"}
    assert json.loads(tools.calls[-1][4])[1]["row"]["name"] == "instance-5002"
    assert "instance 5002: resolution push" in capsys.readouterr().out
    assert dovectl_run(tools, "directory", "resolution", "--instance", "0", "--mode", "push") == 1
    with pytest.raises(SystemExit):
        dovectl_run(tools, "directory", "resolution", "--instance", "1", "--mode", "guess")


class RbacTools(FakeTools):
    def __call__(self, argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        self.calls.append(list(argv))
        _, *ops = json.loads(argv[4])
        return json.dumps(
            [{"count": 0} if op["op"] == "delete" else {"uuid": ["uuid", CID]} for op in ops]
        )


def test_rbac_makes_the_agents_role_and_ssl_remote(capsys: pytest.CaptureFixture[str]) -> None:
    tools = RbacTools()
    assert dovectl_run(tools, "directory", "rbac", "--db", REMOTES) == 0
    db, *ops = json.loads(tools.calls[0][4])
    assert db == "DOVE_Directory"
    (role,) = [op["row"] for op in ops if op["op"] == "insert" and op["table"] == "RBAC_Role"]
    assert role["name"] == "dove-host"
    assert {t for t, _ in role["permissions"][1]} == {"Host", "Host_Liveness", "Endpoint"}
    (remote,) = [op["row"] for op in ops if op["op"] == "insert" and op["table"] == "Connection"]
    assert remote == {"target": "pssl:6642", "role": "dove-host", "read_only": False}
    assert "ssl:<member>:6642" in capsys.readouterr().out
