"""What the emulation writes into an agent's dove.ini with and without a directory, and
the remotes it gives: the contract with the agent side (tcp:<member>:6641, three of them,
``discovery = directory``, no peers list)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mininet_topos.dove_agent import agent_config
from mininet_topos.dove_topo import TopoSpec, directory_remotes

pytestmark = pytest.mark.unit


@dataclass
class FakeHv:
    name: str = "hv1"
    underlay_ip: str = "10.99.0.1"
    db_sock: str = "/tmp/dove-hv1-x/db.sock"

    def in_rundir(self, name: str) -> Path:
        return Path("/tmp/dove-hv1-x") / name


def settings(text: str) -> dict[str, str]:
    lines = text.splitlines()
    assert lines[0] == "[dove]"
    return dict(line.split(" = ", 1) for line in lines[1:])


PEERS = ["10.99.0.1", "10.99.0.2", "10.99.0.3"]


def test_the_emulation_directory_is_three_members_on_the_client_port() -> None:
    assert directory_remotes() == "tcp:10.99.0.241:6641,tcp:10.99.0.242:6641,tcp:10.99.0.243:6641"
    assert TopoSpec().directory is False


def test_with_a_directory_the_agent_discovers_there_and_gets_no_peers() -> None:
    hv: Any = FakeHv()
    ini = settings(agent_config(hv, PEERS, "00" * 16, directory=directory_remotes()))
    assert ini["discovery"] == "directory"
    assert ini["directory"] == directory_remotes()
    assert "peers" not in ini
    assert ini["underlay_ip"] == "10.99.0.1" and ini["host_name"] == "hv1"


def test_without_a_directory_the_config_is_as_before() -> None:
    hv: Any = FakeHv()
    ini = settings(agent_config(hv, PEERS, "00" * 16))
    assert ini["peers"] == "10.99.0.2, 10.99.0.3"
    assert "discovery" not in ini and "directory" not in ini
