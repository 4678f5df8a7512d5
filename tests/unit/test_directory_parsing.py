"""The directory client parses each row once, and a heartbeat costs no pass over the
endpoints: the endpoint list stays the same object, and the core skips its work."""

from __future__ import annotations

from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest

from dove_ryu.adapters.directory import ParsedTable, conditions, endpoint_row
from dove_ryu.agent.directory import DirectoryView, EndpointRow, HostRow, Published

pytestmark = pytest.mark.unit


def fake_idl(rows: dict[str, Any]) -> Any:
    return SimpleNamespace(tables={"Endpoint": SimpleNamespace(rows=rows)})


def endpoint(mac: str, seq: int = 1, instance: int = 5001) -> Any:
    return SimpleNamespace(instance=instance, mac=mac, ips=["10.0.0.1"], host="hv2", seq=seq)


def test_an_untouched_table_gives_the_same_list_and_parses_nothing() -> None:
    parsed: list[str] = []

    def parse(row: Any) -> EndpointRow:
        parsed.append(row.mac)
        return endpoint_row(row)

    rows = {"u1": endpoint("02:00:00:00:00:01"), "u2": endpoint("02:00:00:00:00:02")}
    table = ParsedTable("Endpoint", parse)
    first = table.rows(fake_idl(rows))
    assert len(first) == 2 and len(parsed) == 2

    assert table.rows(fake_idl(rows)) is first
    assert len(parsed) == 2


def test_a_touched_row_is_parsed_again_a_deleted_one_goes_a_bad_one_is_skipped() -> None:
    rows = {"u1": endpoint("02:00:00:00:00:01"), "u2": endpoint("02:00:00:00:00:02")}
    table = ParsedTable("Endpoint", endpoint_row)
    table.rows(fake_idl(rows))

    rows["u1"] = endpoint("02:00:00:00:00:01", seq=7)
    table.touched.add("u1")
    del rows["u2"]
    rows["u3"] = endpoint("not-a-mac")
    got = table.rows(fake_idl(rows))

    assert [(r.mac, r.seq) for r in got] == [("02:00:00:00:00:01", 7)]


def test_published_skips_its_pass_while_the_endpoints_and_live_hosts_stand() -> None:
    hosts = [HostRow("hv2", IPv4Address("10.99.0.2"), frozenset({5001}))]
    endpoints = [EndpointRow(5001, "02:00:00:00:00:02", (IPv4Address("10.0.0.2"),), "hv2", 1)]
    published = Published("hv1")
    published.update(DirectoryView(hosts, endpoints, {5001: "push"}))
    published.live({IPv4Address("10.99.0.2")})
    assert len(published.pushed()) == 1
    generation = published.generation

    # A Host row written again (the same), the same endpoint list.
    beat = [HostRow("hv2", IPv4Address("10.99.0.2"), frozenset({5001}))]
    published.update(DirectoryView(beat, endpoints, {5001: "push"}))
    published.live({IPv4Address("10.99.0.2")})
    assert published.generation == generation

    published.live(set())  # hv2 died
    assert published.generation == generation + 1
    assert published.pushed() == {}


def test_an_agent_monitors_the_endpoints_of_the_instances_the_directory_resolves_only() -> None:
    got = conditions("hv1", frozenset({5001, 5002, 5003}), resolved=frozenset({5002, 5009}))
    assert got["Endpoint"] == [["host", "==", "hv1"], ["instance", "==", 5002]]
    assert got["Instance"] == [["id", "==", i] for i in (5001, 5002, 5003)]
