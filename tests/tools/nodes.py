"""Commands run in an emulation's node, as the Mininet tests run them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DOVECTL = str(Path(sys.executable).parent / "dovectl")


def run(node: Any, *argv: str) -> str:
    """argv in ``node``'s namespace; its output (a failure fails the test, saying why)."""
    out, err, rc = node.pexec(list(argv))
    assert rc == 0, f"{node.name}: {' '.join(argv)}: rc {rc}\n{out}{err}"
    return str(out)


def dovectl_directory(node: Any, *args: str) -> Any:
    """``dovectl directory ... --json`` in ``node``'s namespace."""
    return json.loads(run(node, DOVECTL, "directory", *args, "--json"))


def received(ping_output: str) -> int:
    """How many echoes a ping's summary says came back."""
    for line in ping_output.splitlines():
        if "packets transmitted" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"no ping summary in:\n{ping_output}")


NETSEND = str(Path(__file__).resolve().parent / "netsend.py")


def send_frames(vm: Any, frames: Any, interval: float = 0.01) -> None:
    """Write raw Ethernet ``frames`` (bytes) out of ``vm``'s interface, ``interval`` apart."""
    args = [sys.executable, NETSEND, "frames", "--iface", vm.host.intf().name]
    args += ["--interval", str(interval)]
    for frame in frames:
        args += ["--hex", frame.hex()]
    out, err, rc = vm.host.pexec(args)
    assert rc == 0, f"netsend frames in {vm.name}: {out}{err}"
