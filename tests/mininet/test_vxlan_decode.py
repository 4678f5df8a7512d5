"""The VXLAN counterpart of test_geneve's decoding check (issue 14): on the underlay,
tshark decodes every data packet between two hypervisors as standard VXLAN with the
instance's VNI."""

from __future__ import annotations

from typing import Any

from tests.mininet.test_geneve import ping_ok, underlay_capture, wait
from tests.tools.capture import settle


def test_every_data_packet_is_vxlan_with_the_vni(dove: Any) -> None:
    a, b = dove.net.vm("t1vm1"), dove.net.vm("t1vm2")
    wait(lambda: ping_ok(a, b.ip, 1), 10, "t1vm1 reaches t1vm2")
    with underlay_capture(dove.net.hv("hv1"), 4) as seen:
        settle()
        assert ping_ok(a, b.ip, 5)
    assert seen, "nothing captured"
    for dstport, geneve_vni, _, vni in seen:
        assert dstport == "4789" and not geneve_vni and int(vni, 0) == a.instance, seen
