"""Routing and the gateway (issue 12): what a tenant router costs next to one subnet,
dove-ryu next to OVN's distributed logical router, and the way out through the gateway.

Per repetition, one fresh build per system with two subnets of one tenant router:

- a VM ``a`` pings and sends iperf3 to ``b`` in its own subnet and to ``c`` in the other
  subnet, ``b`` and ``c`` on the same hypervisor, another one than ``a``'s: the routed
  path and the same-subnet path cross the same pair of hypervisors;
- before anything else, the first ping from ``a`` to ``c`` (nothing has resolved ``c``
  yet): the first routed packet;
- through the gateway: iperf3 from a VM to the internet host (SNAT), and a 5 ms ping
  stream to it while the active gateway stops (agent and datapath): the gap until the
  standby carries it.

The routed/same-subnet ratios are taken within each build (the same hypervisors, the
same moment), then summarised over the repetitions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Interface, ip_interface
from typing import Any

from benchmarks.stats import ratio, summary
from mininet_topos.emulation import RunningNet, VmRecord
from mininet_topos.gateway import INTERNET_IP
from mininet_topos.hypervisor import wait_until
from mininet_topos.traffic import (
    TrafficError,
    came_back,
    gap_ms,
    iperf3,
    mbits,
    parse_stream,
    ping_stream,
    read_so_far,
    stop_stream,
)

RTT = re.compile(r"time=([\d.]+) ms")
RECOVERY_TIMEOUT = 15.0  # seconds a failover may take before the sample says "never"
PATH_SYSTEMS = ("dove", "ovn")
# The emulation's gateways hello at the agent's default, 0.2 s (BFD keeps an agent
# restart from failing over); "dove-hello-0.2" sets that interval explicitly.
GATEWAY_SYSTEMS = ("dove", "ovn", "dove-hello-0.2")
# OVN's router on the external network (dove's routers use 203.0.113.(10 + tenant)).
OVN_EXTERNAL = IPv4Interface("203.0.113.31/24")

Progress = Callable[[str], None]


# ------------------------------------------------------------------- pure parts


def subnet_of(vm: VmRecord) -> str:
    """The VM's subnet, from its address and prefix."""
    return str(ip_interface(vm.ip_cidr).network)


def pick_triple(vms: Sequence[VmRecord]) -> tuple[VmRecord, VmRecord, VmRecord]:
    """``(a, b, c)``: ``b`` in ``a``'s subnet, ``c`` in another one, ``b`` and ``c`` on
    the same hypervisor and ``a`` on another, so both paths cross the same two hosts."""
    for a in vms:
        for b in vms:
            if b.hypervisor is a.hypervisor or subnet_of(b) != subnet_of(a):
                continue
            for c in vms:
                if c.hypervisor is b.hypervisor and subnet_of(c) != subnet_of(a):
                    return a, b, c
    raise ValueError("no VM pair in one subnet with a VM of another subnet beside it")


def rtts(output: str) -> list[float]:
    return [float(x) for x in RTT.findall(output)]


def per_sample_ratio(samples: Sequence[dict[str, Any]], num: str, den: str) -> list[float | None]:
    """``num / den`` within each sample (one build), None where either is missing."""
    out: list[float | None] = []
    for s in samples:
        a, b = s.get(num), s.get(den)
        out.append(a / b if a is not None and b else None)
    return out


PATH_KEYS = (
    "first_routed_ms",
    "first_same_ms",
    "same_rtt_ms",
    "routed_rtt_ms",
    "same_mbits",
    "routed_mbits",
    "build_s",
)


def summarize_paths(samples: Sequence[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    """Per system: medians and spreads of each figure and of the per-build ratios
    (routed over same-subnet); and dove over OVN for each."""
    out: dict[str, Any] = {}
    for system in systems:
        rows = [s for s in samples if s["system"] == system and "error" not in s]
        got: dict[str, Any] = {key: summary([r.get(key) for r in rows]) for key in PATH_KEYS}
        got["routed_over_same_mbits"] = summary(
            per_sample_ratio(rows, "routed_mbits", "same_mbits")
        )
        got["routed_over_same_rtt"] = summary(
            per_sample_ratio(rows, "routed_rtt_ms", "same_rtt_ms")
        )
        got["first_routed_lost"] = sum(1 for r in rows if r.get("first_routed_lost"))
        got["errors"] = sum(1 for s in samples if s["system"] == system and "error" in s)
        if system == "dove":
            got["packet_ins_during_routed_iperf"] = [
                r.get("packet_ins_during_routed_iperf") for r in rows
            ]
        out[system] = got
    dove, ovn = out.get("dove"), out.get("ovn")
    if dove and ovn:
        out["dove_over_ovn"] = {
            key: ratio(dove[key], ovn[key])
            for key in ("routed_mbits", "routed_rtt_ms", "first_routed_ms", "same_mbits")
        }
    return out


def summarize_gateway(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per system: SNAT throughput, the failover gaps, how many failovers came back."""
    out: dict[str, Any] = {}
    for system in sorted({s["system"] for s in samples}):
        runs = [f for f in samples if f["system"] == system]
        good = [f for f in runs if "error" not in f]
        out[system] = {
            "snat_mbits": summary([s.get("mbits") for s in good]),
            "failover_gap_ms": summary([f.get("gap_ms") for f in good]),
            "failover_recovered": sum(1 for f in good if f.get("gap_ms") is not None),
            "failover_runs": len(runs),
            "failover_failed": len(runs) - len(good),
        }
    return out


# --------------------------------------------------------------- the emulations


def build_routed(system: str) -> tuple[RunningNet, list[VmRecord]]:
    """A fresh emulation of ``system`` with two subnets of one tenant router, and the VMs
    the samples may use."""
    if system == "dove":
        return build_dove_routed()
    if system == "ovn":
        return build_ovn_routed()
    raise ValueError(f"no routed build for {system!r}")


def build_dove_routed() -> tuple[RunningNet, list[VmRecord]]:
    """dove-ryu agents, three hypervisors, tenant 1's four VMs in two subnets joined by a
    router (the routing helper's layout: VM i in subnet (i-1) % 2)."""
    from mininet_topos.dove_topo import build_dove_net

    dnet, _ = build_dove_net(3, 1, 4, subnets=2, routers=True)
    return dnet, dnet.tenant_vms(1)


def tenant_router(vms: Sequence[VmRecord]) -> Any:
    """Tenant 1's router as the dove emulation declares it (router id 1, gateway
    10.0.<subnet>.254 on each of its instances), as a ``dove_ryu.model.Router``."""
    from dove_ryu.model import Router, Subnet
    from mininet_topos.routing import gateway_cidr

    subnets = sorted({(vm.instance, ip_interface(vm.ip_cidr).ip.packed[2]) for vm in vms})
    return Router(1, tuple(Subnet(i, IPv4Interface(gateway_cidr(s))) for i, s in subnets))


def build_ovn_routed(hypervisors: int = 3) -> tuple[RunningNet, list[VmRecord]]:
    """OVN with dove's two-subnet plan (the same VMs on the same hypervisors), its two
    switches joined by a distributed logical router with dove's gateway addresses and
    MACs; the VMs' default route through it."""
    from mininet_topos import ovn
    from mininet_topos.dove_topo import build_net

    dnet = build_net(hypervisors, 1, 4, mode="ovn", subnets=2)
    try:
        central = dnet.probe
        assert isinstance(central, ovn.OvnCentral)
        router = tenant_router(dnet.vms)
        ovn.add_router(central, router)
        central.nbctl("--wait=hv", "sync")
        for vm in dnet.vms:
            subnet = router.subnet_of(vm.instance)
            out, err, rc = vm.host.pexec(
                ["ip", "route", "replace", "default", "via", str(subnet.gateway.ip)]
            )
            if rc != 0:
                raise RuntimeError(f"{vm.name}: default route: {err or out}")
    except BaseException:
        dnet.stop()
        raise
    return dnet, list(dnet.vms)


def dove_packet_ins(vms: Sequence[VmRecord]) -> int:
    from mininet_topos.agents import admin

    hvs = {vm.hypervisor.name: vm.hypervisor for vm in vms}
    return sum(admin(hv)["counters"].get("packet_in", 0) for hv in hvs.values())


# ----------------------------------------------------------------------- samples


def path_sample(system: str, seconds: int, rep: int) -> dict[str, Any]:
    """One build: the first routed ping, then RTT and iperf3 on the routed and the
    same-subnet path (in an order that alternates with ``rep``)."""
    started = time.monotonic()
    net, vms = build_routed(system)
    build_s = time.monotonic() - started
    try:
        a, b, c = pick_triple(vms)
        first = rtts(a.host.cmd(f"ping -c1 -W2 {c.ip}"))
        first_same = rtts(a.host.cmd(f"ping -c1 -W2 {b.ip}"))
        sample: dict[str, Any] = {
            "system": system,
            "rep": rep,
            "build_s": build_s,
            "pair": [a.name, b.name, c.name],
            "hosts": [a.hypervisor.name, b.hypervisor.name],
            "first_routed_ms": first[0] if first else None,
            "first_routed_lost": not first,
            "first_same_ms": first_same[0] if first_same else None,
        }
        order = (("same", b), ("routed", c)) if rep % 2 == 0 else (("routed", c), ("same", b))
        for label, dst in order:
            steady = rtts(a.host.cmd(f"ping -c20 -i0.05 -W2 {dst.ip}"))
            sample[f"{label}_rtt_ms"] = sorted(steady)[len(steady) // 2] if steady else None
        for label, dst in order:
            before = dove_packet_ins(vms) if system == "dove" else None
            try:
                sample[f"{label}_mbits"] = mbits(iperf3(a, dst, seconds))
            except TrafficError as e:
                sample[f"{label}_mbits"] = None
                sample[f"{label}_iperf_error"] = str(e)[-300:]
            if before is not None and label == "routed":
                sample["packet_ins_during_routed_iperf"] = dove_packet_ins(vms) - before
        return sample
    finally:
        net.stop()


def run_paths(
    reps: int, seconds: int, progress: Progress, systems: Sequence[str] = PATH_SYSTEMS
) -> list[dict[str, Any]]:
    """Repetitions interleaved across systems, so drift hits all of them alike."""
    samples = []
    for rep in range(reps):
        for system in systems if rep % 2 == 0 else list(reversed(systems)):
            progress(f"routing: paths rep {rep + 1}/{reps}: {system}")
            try:
                sample = path_sample(system, seconds, rep)
            except Exception as e:  # a peer failing must not lose the other figures
                sample = {"system": system, "rep": rep, "error": f"{type(e).__name__}: {e}"[-500:]}
            samples.append(sample)
            progress(f"  {str({k: v for k, v in sample.items() if k != 'rep'})[:240]}")
    return samples


def run_routing(
    reps: int,
    seconds: int,
    progress: Progress,
    parts: Sequence[str] = ("paths", "gateway"),
) -> dict[str, Any]:
    """The whole section, or ``parts`` of it: paths (dove and OVN, routed next to
    same-subnet), gateway (SNAT throughput and the failover gap, dove and OVN)."""
    paths = run_paths(reps, seconds, progress) if "paths" in parts else []
    gateway: list[dict[str, Any]] = []
    for rep in range(reps) if "gateway" in parts else ():
        for system in GATEWAY_SYSTEMS if rep % 2 == 0 else list(reversed(GATEWAY_SYSTEMS)):
            progress(f"routing: gateway rep {rep + 1}/{reps}: {system}")
            try:
                gateway.append(gateway_sample(system, seconds))
            except Exception as e:
                gateway.append({"system": system, "error": f"{type(e).__name__}: {e}"[-500:]})
            gateway[-1]["rep"] = rep
            progress(f"  {gateway[-1]}"[:240])
    return {
        "paths": paths,
        "summary": summarize_paths(paths, PATH_SYSTEMS),
        "gateway_samples": gateway,
        "gateway": summarize_gateway(gateway),
    }


def ovn_internet(net: RunningNet, hvs: Sequence[Any]) -> VmRecord:
    """OVN's way out: each of ``hvs`` becomes a gateway chassis, with a leg (a veth) to an
    internet host at INTERNET_IP that has no route into the overlay (the legs meet on a
    bridge inside the internet host's namespace: nothing in the root namespace)."""
    from mininet_topos import ovn

    host = net.net.addHost("inet", ip=None)
    cmds = [["ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]]
    legs = []
    for n, hv in enumerate(hvs):
        link = net.net.addLink(hv, host, intfName1=f"{hv.name}-ext", intfName2=f"inet-eth{n}")
        legs.append((hv, link.intf1.name))
        cmds += [
            ["ethtool", "-K", f"inet-eth{n}", "tx", "off"],
            ["ip", "link", "set", f"inet-eth{n}", "master", "br0", "up"],
        ]
    cmds += [
        ["ip", "addr", "add", f"{INTERNET_IP}/24", "dev", "br0"],
        ["ethtool", "-K", "br0", "tx", "off"],
        ["ip", "link", "set", "br0", "up"],
    ]
    for cmd in cmds:
        out, err, rc = host.pexec(cmd)
        if rc != 0:
            raise RuntimeError(f"inet: {' '.join(cmd)}: {err or out}")
    for hv, uplink in legs:
        ovn.make_gateway_chassis(hv, uplink)
    return VmRecord("inet", host, hvs[0], 0, 0, "", INTERNET_IP, f"{INTERNET_IP}/24", "br0")


def build_ovn_gateway(chassis: Sequence[str]) -> tuple[RunningNet, VmRecord, VmRecord]:
    """OVN's routed build with the router's distributed gateway port (SNAT) on ``chassis``
    (by priority); returns the net, a VM on hv1 and the internet host."""
    from mininet_topos import ovn

    net, vms = build_ovn_routed()
    try:
        central = net.probe  # type: ignore[attr-defined]
        src = next(vm for vm in vms if vm.hypervisor.name == "hv1")
        hvs = {vm.hypervisor.name: vm.hypervisor for vm in vms}
        inet = ovn_internet(net, [hvs[name] for name in chassis])
        router = tenant_router(vms)
        ovn.add_gateway(central, router, ovn.OvnGateway(OVN_EXTERNAL, INTERNET_IP, tuple(chassis)))
        central.nbctl("--wait=hv", "sync")
        wait_until(
            lambda: "1 received" in src.host.cmd(f"ping -c1 -W1 {INTERNET_IP}"),
            20.0,
            "a VM to reach the internet host through OVN's gateway",
        )
    except BaseException:
        net.stop()
        raise
    return net, src, inet


def ovn_gateway_sample(seconds: int, settle: float) -> dict[str, Any]:
    """OVN: gateway chassis hv2 (active) and hv3 (standby), a VM on hv1; SNAT iperf3
    through hv2, then hv2's ovn-controller and OVS stop under the stream."""
    net, src, inet = build_ovn_gateway(("hv2", "hv3"))
    try:
        sample = {"system": "ovn", **snat_iperf(src, inet, seconds)}
        # What decides OVN's gap: BFD on the sender's tunnels to the gateway chassis.
        sample["bfd"] = src.hypervisor.vsctl(
            "--bare", "--columns=name,bfd", "find", "Interface", "type=geneve"
        ).split()
        old = next(h for h in net.hypervisors if h.name == "hv2")  # type: ignore[attr-defined]
        return {**sample, **stream_through_failover(src, inet.ip, old.stop_ovs, settle)}
    finally:
        net.stop()


def snat_iperf(src: VmRecord, inet: VmRecord, seconds: int) -> dict[str, Any]:
    try:
        return {"mbits": mbits(iperf3(src, inet, seconds))}
    except TrafficError as e:
        return {"mbits": None, "iperf_error": str(e)[-300:]}


def stream_through_failover(
    src: VmRecord, dst_ip: str, stop: Callable[[], None], settle: float
) -> dict[str, Any]:
    """A 5 ms ping stream from ``src`` to ``dst_ip``; ``stop()`` the active gateway after
    ``settle`` s; the gap, and what was lost, once the stream has run long enough to
    come back."""
    proc, log = ping_stream(src, dst_ip)
    time.sleep(settle)
    stopped_at = time.time()
    stop()
    try:  # until the stream is back after a silence (polled), then settle more seconds
        wait_until(
            lambda: came_back(parse_stream(read_so_far(log))[0], stopped_at),
            RECOVERY_TIMEOUT,
            "the stream to come back",
            step=0.1,
        )
        time.sleep(settle)
    except TimeoutError:
        pass  # reported as no gap: the stream never came back
    replies, sent, received = parse_stream(stop_stream(proc, log))
    return {
        "gap_ms": gap_ms(replies, stopped_at),
        "sent": sent,
        "lost": sent - received if sent is not None and received is not None else None,
    }


class _WithExternal:
    """A dove net with its external network: stopping it stops both."""

    def __init__(self, dnet: Any, external: Any) -> None:
        self.dnet, self.external, self.net = dnet, external, dnet.net

    def stop(self) -> None:
        try:
            self.external.stop()
        finally:
            self.dnet.stop()


def build_dove_gateway() -> tuple[Any, VmRecord, VmRecord, Any]:
    """dove-ryu's routed build (three hypervisors, tenant 1's four VMs in two subnets)
    with the external network, the internet host and two gateways (mininet_topos.gateway,
    the first one active); returns the net, a VM on hv1, the internet host and the
    ``External``.  The VM is not t1vm1 (it has a floating IP: its traffic would leave
    with that address, not through source NAT)."""
    from mininet_topos import gateway
    from mininet_topos.dove_topo import build_dove_net

    dnet, key = build_dove_net(
        3, 1, 4, subnets=2, routers=True, extra={"peers": gateway.hosts_and_gateways(3)}
    )
    try:
        external = gateway.add_gateways(dnet, key)
    except BaseException:
        dnet.stop()
        raise
    net = _WithExternal(dnet, external)
    try:
        src = next(vm for vm in dnet.tenant_vms(1) if vm.ip != gateway.FLOATING_VM_IP)
        inet = VmRecord(
            "inet",
            external.internet,
            external.gateways[0],
            0,
            0,
            "",
            gateway.INTERNET_IP,
            f"{gateway.INTERNET_IP}/{gateway.EXTERNAL_PREFIX}",
            "inet-eth0",
        )
        wait_until(
            lambda: "1 received" in src.host.cmd(f"ping -c1 -W1 {inet.ip}"),
            20.0,
            "a VM to reach the internet host through the gateway",
        )
    except BaseException:
        net.stop()
        raise
    return net, src, inet, external


def active_gateway(external: Any) -> Any:
    """The running gateway whose agent says it is active (waits for one)."""
    return wait_until(external.active, 30.0, "an active gateway")


def dove_gateway_sample(seconds: int, settle: float, hello: float | None = None) -> dict[str, Any]:
    """dove-ryu: SNAT iperf3 through the active gateway, then its agent and OVS stop
    under the stream.  ``hello``: the gateways' hello interval instead of the
    emulation's (mininet_topos.gateway.HELLO_INTERVAL)."""
    from mininet_topos import gateway

    kept = gateway.HELLO_INTERVAL
    if hello is not None:
        gateway.HELLO_INTERVAL = hello  # read by gateway_config while the net is built
    try:
        net, src, inet, external = build_dove_gateway()
    finally:
        gateway.HELLO_INTERVAL = kept
    system = "dove" if hello is None else f"dove-hello-{hello:g}"
    try:
        old = active_gateway(external)
        sample = {"system": system, "active": old.name, **snat_iperf(src, inet, seconds)}

        def stop() -> None:
            old.stop_agent()
            old.stop_ovs()

        return {**sample, **stream_through_failover(src, inet.ip, stop, settle)}
    finally:
        net.stop()


def gateway_sample(system: str, seconds: int, settle: float = 1.0) -> dict[str, Any]:
    """One build with two gateways: iperf3 from a VM through the active one (SNAT) to the
    internet host; then a 5 ms ping stream to it while the active gateway stops (agent
    and datapath): the gap is the longest silence between replies from then on."""
    if system == "ovn":
        return ovn_gateway_sample(seconds, settle)
    if system.startswith("dove-hello-"):
        return dove_gateway_sample(seconds, settle, float(system.removeprefix("dove-hello-")))
    return dove_gateway_sample(seconds, settle)
