"""Benchmark peer 'learning': a plain MAC-learning os-ken app as a hypervisor's controller.

The 'learning' mode is the NORMAL baseline's bridge (full VXLAN mesh, protected ports) made
``fail_mode=secure`` and handed to ``benchmarks.learning_switch`` on 127.0.0.1:6653 in each
hypervisor namespace: the cost of a reactive controller with no overlay logic, next to
dove-ryu's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mininet_topos.hypervisor import AGENT_OFP_PORT, BR_DOVE, Hypervisor, wait_until

REPO = Path(__file__).resolve().parents[1]
LEARNING_LOG = "ls.log"
LEARNING_OUT = "ls.out"


def learning_switch_cmd(hv: Hypervisor) -> list[str]:
    """The learning switch, with this Python (the venv's), logging into the rundir."""
    return [
        sys.executable,
        "-m",
        "benchmarks.learning_switch",
        "--ofp-tcp-listen-port",
        str(AGENT_OFP_PORT),
        "--log-file",
        str(hv.in_rundir(LEARNING_LOG)),
    ]


def start_learning_switch(hv: Hypervisor) -> None:
    """Run the learning switch as this hypervisor's agent (stopped with it on teardown).

    It runs with the rundir as cwd, so ``benchmarks`` is found through PYTHONPATH.
    """
    hv.start_agent(None, learning_switch_cmd(hv), out=LEARNING_OUT, env={"PYTHONPATH": str(REPO)})


def _connected(hv: Hypervisor) -> bool:
    if hv.agent is not None and hv.agent.poll() is not None:
        out = hv.in_rundir(LEARNING_OUT).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{hv.name}: learning switch exited ({hv.agent.returncode}):\n{out}")
    return "actions=CONTROLLER" in hv.ofctl("dump-flows", BR_DOVE)


def wait_learning_connected(hypervisors: list[Hypervisor], timeout: float = 30.0) -> None:
    """Until the app has programmed every br-dove (its table-miss flow is in).

    NOTE (OVS 3.1.0): the Controller row's ``is_connected`` is refreshed only every few
    seconds; it turned true about 2 s after the app had connected and installed its
    table-miss flow, so the flow is both the earlier and the stronger readiness signal.
    """
    for hv in hypervisors:
        wait_until(lambda hv=hv: _connected(hv), timeout, f"{hv.name} learning switch connected")
