"""What the directory's copy may answer for: only endpoints of live hosts.

A host whose heartbeat stood still is no member any more and the flows towards its
VMs go; its Endpoint rows may stay in the directory.  A miss for one of those VMs is
then not resolved from the copy (lookup, or push whose flows went), which would put
the flows to the dead host back."""

from __future__ import annotations

import pytest

from dove_ryu.agent.directory import DirectoryView, HostRow
from tests.unit.test_core import MAC_A, MAC_B, eth, ip, tunnelled
from tests.unit.test_directory import INTERVAL, directory_net, push_view, show

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("mode", ["lookup", "push"])
def test_a_miss_is_not_resolved_to_a_host_whose_heartbeat_stopped(mode: str) -> None:
    net = directory_net()
    endpoints = push_view(net).endpoints
    h1 = net.hosts[1]

    def beat(n: int) -> None:
        """The directory at heartbeat ``n``; h2's stopped at 1 (it died)."""
        rows = [
            HostRow(f"h{k}", ip(k), h.core.served(), 1 if k == 2 else n, INTERVAL)
            for k, h in net.hosts.items()
        ]
        show(net, DirectoryView(rows, endpoints, {5001: mode}))

    beat(1)
    assert h1.core.p.members.serves(5001, ip(2))
    for n in range(2, 7):  # past 3.5 intervals
        net.advance(INTERVAL)
        beat(n)
    assert not h1.core.p.members.serves(5001, ip(2))
    assert h1.core.p.learned.get(5001, MAC_B) is None  # its flows went with it

    seen = net.send(1, 1, eth(MAC_A, MAC_B))

    assert tunnelled(seen) == [] and h1.core.p.learned.get(5001, MAC_B) is None
    assert h1.core.counters.get("resolved_from_directory", 0) == 0
