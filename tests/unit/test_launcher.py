"""dove-agent refuses a bad configuration with one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

AGENT = str(Path(sys.executable).parent / "dove-agent")
GOOD = {"underlay_ip": "10.99.0.1", "auth_key": "00112233445566778899aabbccddeeff"}


def run_agent(tmp_path: Path, settings: dict[str, str] | None, text: str | None = None):
    ini = tmp_path / "dove.ini"
    if text is None:
        text = "[dove]\n" + "".join(f"{k} = {v}\n" for k, v in (settings or {}).items())
    ini.write_text(text)
    return subprocess.run(
        [AGENT, "--config-file", str(ini)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"auth_key": GOOD["auth_key"]}, "underlay_ip"),
        ({**GOOD, "underlay_ip": "10.99.0.x"}, "underlay_ip"),
        ({**GOOD, "auth_key": "short"}, "auth_key"),
        ({**GOOD, "control_port": "70000"}, "control_port"),
        ({**GOOD, "learn_timeout": "-1"}, "learn_timeout"),
        ({**GOOD, "tunnel_type": "gre"}, "tunnel_type"),
        ({**GOOD, "peers": "10.99.0.2, nonsense"}, "peers"),
        ({**GOOD, "colour": "blue"}, "colour"),
        ({**GOOD, "learn_idle_timeout": "86400"}, "learn_idle_timeout"),
        ({**GOOD, "announce_interval": "nan"}, "announce_interval"),
    ],
)
def test_bad_setting_stops_startup_naming_it(tmp_path: Path, settings, named: str) -> None:
    result = run_agent(tmp_path, settings)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"[dove] {named}" in lines[0]


def test_missing_section_and_missing_file(tmp_path: Path) -> None:
    result = run_agent(tmp_path, None, text="[DEFAULT]\nverbose = true\n")
    assert result.returncode == 2 and "no [dove] section" in result.stderr
    missing = subprocess.run(
        [AGENT, "--config-file", str(tmp_path / "nope.ini")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode != 0 and "nope.ini" in missing.stderr


def test_the_agent_loads_neither_eventlet_nor_what_it_brings() -> None:
    # ovs.poller would import eventlet (installed for os-ken), and with it dnspython and
    # cryptography: memory the agent never uses.
    code = (
        "import sys\n"
        "from dove_ryu.adapters.launcher import without_eventlet\n"
        "without_eventlet()\n"
        "import ovs.db.idl, os_ken.base.app_manager, dove_ryu.adapters.shell\n"
        "loaded = {m.split('.')[0] for m, module in sys.modules.items() if module}\n"
        "print(sorted(loaded & {'eventlet', 'dns', 'cryptography'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OSKEN_HUB_TYPE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


VTEP = {
    "role": "vtep-controller",
    "auth_key": GOOD["auth_key"],
    "vtep_ovsdb": "tcp:127.0.0.1:6640",
    "vtep_switch": "tor1",
    "vtep_bindings": "p1:0=5001",
}


def test_a_vtep_controller_without_the_directory_is_refused(tmp_path: Path) -> None:
    result = run_agent(tmp_path, VTEP)
    assert result.returncode == 2
    assert "[dove] discovery: a VTEP controller needs discovery = directory" in result.stderr


def test_a_vtep_controller_runs_without_a_bridge_and_stops_on_sigterm(tmp_path: Path) -> None:
    # Nothing answers at either database: it keeps trying, opens no OpenFlow port, and
    # SIGTERM ends it cleanly.
    ini = tmp_path / "dove.ini"
    settings = {
        **VTEP,
        "discovery": "directory",
        "directory": f"unix:{tmp_path / 'nodir.sock'}",
        "vtep_ovsdb": f"unix:{tmp_path / 'novtep.sock'}",
        "admin_socket": str(tmp_path / "admin.sock"),
    }
    ini.write_text("[dove]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    proc = subprocess.Popen(
        [AGENT, "--config-file", str(ini)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        status = _poll_admin(tmp_path / "admin.sock", 20.0)
        assert status["role"] == "vtep-controller" and status["connected"] is False
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _poll_admin(path: Path, timeout: float) -> dict[str, object]:
    from dove_ryu.adapters.admin import query

    deadline = time.monotonic() + timeout
    while True:
        try:
            return query(str(path), {"cmd": "vtep"})
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
