"""Smoke test of the emulation itself (no agent): hypervisors, VMs, underlay, teardown.

Normal mode (NORMAL + fixed VXLAN mesh) proves the data path works end to end, ping and TCP
(TCP hangs while ping works if a veth misses `tx off`); dove mode proves the bridge the agent
will control is built and marked as design.md section 2 says. The benchmark peers ('learning',
'kernel', 'ovn') must forward too, keep tenants with the same addresses apart, and leave
nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mininet_topos import ovn  # noqa: E402
from mininet_topos.dove_topo import DoveNet, VmRecord, build_net  # noqa: E402
from mininet_topos.hypervisor import BR_DOVE, BR_PHY, TUNNEL_PORT  # noqa: E402
from mininet_topos.traffic import iperf3, mbits  # noqa: E402
from tests.tools.leftovers import live_pids_mentioning  # noqa: E402

IPERF_PORT = 5201


def _evidence(dnet: DoveNet) -> None:
    """Print what a red run needs to explain itself (pytest shows it on failure)."""
    for hv in dnet.hypervisors:
        print(f"==== {hv.name} rundir={hv.rundir}")
        if hv.rundir is None:  # kernel mode: no OVS
            for cmd in (["ip", "-d", "link"], ["bridge", "fdb", "show"]):
                print(hv.pexec(cmd)[0])
            continue
        for args in (
            ("vsctl", "show"),
            ("ofctl", "dump-flows", BR_DOVE),
            ("appctl", "tnl/neigh/show"),
            ("appctl", "ovs/route/show"),
        ):
            try:
                print(getattr(hv, args[0])(*args[1:], check=False))
            except Exception as exc:  # noqa: BLE001 - evidence is best effort
                print(f"{args}: {exc}")
        for log in ("ovs-vswitchd.log", "ovn-controller.log", "ls.out"):
            if (hv.rundir / log).exists():
                print(f"--- {log}\n" + (hv.rundir / log).read_text()[-3000:])
    if isinstance(dnet.probe, ovn.OvnCentral) and dnet.probe.rundir is not None:
        print(dnet.probe.nbctl("show", check=False))
        print(dnet.probe.sbctl("show", check=False))


@contextmanager
def running(**kwargs: object) -> Iterator[DoveNet]:
    """Build a net, show evidence if the body fails, always stop it and check the teardown."""
    dnet = build_net(**kwargs)  # type: ignore[arg-type]
    rundirs = [hv.rundir for hv in dnet.hypervisors if hv.rundir is not None]
    if isinstance(dnet.probe, ovn.OvnCentral) and dnet.probe.rundir is not None:
        rundirs.append(dnet.probe.rundir)
    try:
        yield dnet
    except BaseException:
        _evidence(dnet)
        raise
    finally:
        dnet.stop()
    # Kernel mode runs no daemon and has no rundir; every other mode has one per hypervisor.
    assert rundirs or kwargs.get("mode") == "kernel", "no rundir recorded"
    assert not any(d.exists() for d in rundirs), "rundir left behind"
    assert not live_pids_mentioning(rundirs), "OVS/OVN/controller processes left behind"


def test_normal_mode_ping_and_tcp_across_hypervisors() -> None:
    with running(hypervisors=2, tenants=1, vms_per_tenant=2, mode="normal") as dnet:
        a, b = dnet.vms
        assert a.hypervisor is not b.hypervisor

        out, err, rc = a.host.pexec(["ping", "-c1", "-W2", b.ip])
        assert rc == 0, out + err

        assert mbits(iperf3(a, b, seconds=1)) > 0


def test_normal_mode_rejects_several_tenants() -> None:
    with pytest.raises(ValueError):
        build_net(hypervisors=2, tenants=2, mode="normal")


def test_dove_mode_builds_marked_ports_and_flow_based_tunnel() -> None:
    with running(hypervisors=2, tenants=2, vms_per_tenant=2, mode="dove") as dnet:
        for hv in dnet.hypervisors:
            for br in (BR_PHY, BR_DOVE):
                hv.vsctl("br-exists", br)
            assert hv.vsctl("get", "Bridge", BR_DOVE, "fail_mode").strip() == "secure"
            assert hv.vsctl("get", "Bridge", BR_DOVE, "datapath_type").strip() == "netdev"
            assert "tcp:127.0.0.1:6653" in hv.vsctl("get-controller", BR_DOVE)
            dpid = hv.vsctl("get", "Bridge", BR_DOVE, "datapath_id").strip().strip('"')
            assert dpid == hv.dpid
            opts = hv.vsctl("get", "Interface", TUNNEL_PORT, "options")
            assert "remote_ip=flow" in opts and "key=flow" in opts, opts
            assert f'local_ip="{hv.underlay_ip}"' in opts, opts

        # Each tenant spans both hypervisors, with identical address plans.
        for tenant in (1, 2):
            assert {v.hypervisor.name for v in dnet.tenant_vms(tenant)} == {"hv1", "hv2"}
        for vm in dnet.vms:
            ext = vm.hypervisor.vsctl("get", "Interface", vm.port, "external_ids")
            assert f'dove-instance="{vm.instance}"' in ext, ext
            assert f'attached-mac="{vm.mac}"' in ext, ext
            assert f'dove-ips="{vm.ip}"' in ext, ext
            assert vm.host.intf().MAC() == vm.mac
            mtu = vm.host.cmd(f"cat /sys/class/net/{vm.host.intf().name}/mtu").strip()
            assert mtu == "1450"
        assert {v.instance for v in dnet.vms} == {5001, 5002}


def _in_echos(vm: VmRecord) -> int:
    """ICMP echo requests this VM's stack has received (its namespace's /proc/net/snmp)."""
    lines = [ln.split() for ln in vm.host.cmd("cat /proc/net/snmp").splitlines()]
    icmp = [ln for ln in lines if ln and ln[0] == "Icmp:"]
    return int(icmp[1][icmp[0].index("InEchos")])


@pytest.mark.parametrize(("mode", "tenants"), [("learning", 1), ("kernel", 2), ("ovn", 2)])
def test_peer_mode_ping_tcp_isolation(mode: str, tenants: int) -> None:
    with running(hypervisors=2, tenants=tenants, vms_per_tenant=2, mode=mode) as dnet:
        a, b = dnet.tenant_vms(1)
        assert a.hypervisor is not b.hypervisor

        out, err, rc = a.host.pexec(["ping", "-c1", "-W2", b.ip])
        assert rc == 0, out + err
        assert mbits(iperf3(a, b, seconds=1)) > 0

        if tenants > 1:
            # Tenant 2 has the same addresses: pings inside tenant 1 must not reach it.
            others = dnet.tenant_vms(2)
            before = [_in_echos(v) for v in others]
            target = _in_echos(b)
            for src, dst in ((a, b), (b, a)):
                out, err, rc = src.host.pexec(["ping", "-c3", "-i0.1", "-W2", dst.ip])
                assert rc == 0, out + err
            assert [_in_echos(v) for v in others] == before
            assert _in_echos(b) >= target + 3
            # And tenant 2 works on its own.
            c, d = others
            out, err, rc = c.host.pexec(["ping", "-c1", "-W2", d.ip])
            assert rc == 0, out + err


def test_learning_mode_rejects_several_tenants() -> None:
    with pytest.raises(ValueError):
        build_net(hypervisors=2, tenants=2, mode="learning")
