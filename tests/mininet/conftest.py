"""Fixtures and failure evidence for the Mininet tier.

The `dove` fixture runs one 3-hypervisor emulation with real agents per test module;
the `sites` fixture one two-site emulation with proxies (a module may set SITES_SPEC,
a `mininet_topos.sites.SitesSpec`, and SITES_EXTRA, agent settings), ready once every
site has its active proxy.  When a test that uses either fails,
`pytest_runtest_makereport` saves flow and group dumps, each agent's status and log,
and the VMs' and probes' addresses and neighbours under
``results/failures/<test name>/`` and prints that path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests/mininet has no __init__.py; `tests.tools` lives at REPO
    sys.path.insert(0, str(REPO))

FAILURES = REPO / "results" / "failures"
HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is of the Mininet tier, and needs root."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.mininet)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="Mininet needs root"))


@dataclass
class Dove:
    """The running emulation and the deployment key its agents share."""

    net: Any  # mininet_topos.dove_topo.DoveNet
    key: bytes = field(repr=False)  # kept out of tracebacks


@pytest.fixture(scope="module")
def dove(request: pytest.FixtureRequest) -> Iterator[Dove]:
    """A test module may set DOVE_EXTRA: agent settings for its emulation."""
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.agents import build_dove_net

    extra = getattr(request.module, "DOVE_EXTRA", None)
    dnet, key = build_dove_net(hypervisors=3, tenants=2, vms_per_tenant=2, extra=extra)
    try:
        yield Dove(dnet, bytes.fromhex(key))
    finally:
        dnet.stop()


@pytest.fixture(scope="module")
def sites(request: pytest.FixtureRequest) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("Mininet needs root")
    from mininet_topos.sites import SitesSpec, build_sites_net, wait_proxies_active

    spec = getattr(request.module, "SITES_SPEC", SitesSpec())
    snet, _ = build_sites_net(spec, extra=getattr(request.module, "SITES_EXTRA", None))
    try:
        wait_proxies_active(snet)
        yield snet
    finally:
        snet.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed or item.get_closest_marker("mininet") is None:
        return
    funcargs = getattr(item, "funcargs", {})
    # dove, sites: the shared fixtures; dnet: a module's own one-site emulation;
    # world: test_gateway's, the one-site emulation with its gateways.
    world = funcargs.get("world")
    env = funcargs.get("dove") or funcargs.get("sites") or funcargs.get("dnet")
    env = env or (world.dnet if world is not None else None)
    if env is None:
        return
    net = env.net if isinstance(env, Dove) else env
    gateways = world.ext.gateways if world is not None else []
    from tests.tools import evidence

    name = item.name.replace("/", "_").replace("[", "_").replace("]", "")
    try:
        path = evidence.save(net, FAILURES / name, gateways)
        message = f"evidence of {item.nodeid} ({report.when}) saved in {path}"
    except Exception as exc:  # noqa: BLE001 - never hide the real failure
        message = f"could not save evidence of {item.nodeid}: {exc!r}"
    report.sections.append(("dove evidence", message))
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message)
