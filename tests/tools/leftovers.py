"""What an emulation's teardown may have left behind."""

from __future__ import annotations

from pathlib import Path

from mininet_topos.hypervisor import pid_alive


def live_pids_mentioning(paths: list[Path]) -> list[int]:
    """Live (non-zombie) processes whose command line mentions one of ``paths``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(str(p) in cmdline for p in paths) and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found
