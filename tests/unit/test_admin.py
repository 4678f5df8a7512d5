"""The admin socket answers root and the agent's own user only, even when its file
mode has been loosened (the server checks the caller's credentials)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dove_ryu.adapters.admin import AdminServer, query

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user"),
]

NOBODY = 65534


def _ask_as(uid: int, path: str) -> str:
    """Fork, become ``uid``, ask for status; the answer or the error, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            os.setuid(uid)
            text = repr(query(path, {"cmd": "status"}, timeout=2.0))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            text = f"error: {type(e).__name__}: {e}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        return f.read()


def test_only_root_and_the_agent_get_answers() -> None:
    # Not pytest's tmp_path: its parents are 0700, which alone would refuse the caller.
    tmp_path = Path(tempfile.mkdtemp(prefix="dove-admin-test-", dir="/tmp"))
    path = str(tmp_path / "admin" / "admin.sock")
    server = AdminServer(path, lambda request: {"ok": True})
    server.start()
    try:
        assert query(path, {"cmd": "status"}) == {"ok": True}
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert _ask_as(NOBODY, path) == "error: PermissionError: [Errno 13] Permission denied"
        # Loosened by hand: the file lets anyone connect, the server still refuses.
        os.chmod(tmp_path / "admin", 0o755)
        os.chmod(tmp_path, 0o755)
        os.chmod(path, 0o666)
        assert (
            _ask_as(NOBODY, path)
            == f"error: PermissionError: {path}: uid {NOBODY} may not use this socket"
        )
        assert query(path, {"cmd": "status"}) == {"ok": True}
    finally:
        server.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
