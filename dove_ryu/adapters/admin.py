"""The agent's local admin socket: one JSON request per line, one JSON answer.

Only root can open it (the socket is 0600 in a 0700 directory), and the server
checks the peer's credentials too (SO_PEERCRED), so a socket file whose mode was
loosened still answers only root and the agent's own user (another user gets a
refusal, which ``query`` raises as PermissionError).  dovectl and the demo read the
agent's state through it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("dove_ryu.adapters.admin")
MAX_REQUEST = 4096
REFUSED = "refused"  # the one key of the answer a caller of another user gets

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class AdminServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.stopping = threading.Event()
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # left by a previous run
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old_umask)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, name="admin", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                uid = peer_uid(conn)
                if uid not in (0, os.getuid()):
                    LOG.warning("admin: refused a client with uid %s", uid)
                    _send(conn, {REFUSED: f"uid {uid} may not use this socket"})
                    continue
                try:
                    raw = conn.makefile("rb").readline(MAX_REQUEST)
                    request = json.loads(raw or b"{}")
                    if not isinstance(request, dict):
                        raise ValueError("request is not a JSON object")
                    answer = self.handler(request)
                except Exception as e:  # a bad request must not end the admin thread
                    answer = {"error": f"{type(e).__name__}: {e}"}
                _send(conn, answer)


def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    """One answer line; a caller that has gone away is not an error of ours."""
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end of a unix socket."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def query(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Ask an agent over its admin socket.

    Raises OSError when the agent cannot be asked (PermissionError when it refuses this
    user), ValueError when its answer is not a JSON object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
        except BrokenPipeError:
            # The server refuses without reading the request: it may have answered and
            # closed before we wrote. Its answer is still there to read (an empty read if
            # it closed without one, which fails below).
            pass
        data = sock.makefile("rb").readline()
    if not data:
        raise ConnectionError(f"{path}: closed without an answer")
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("admin answer is not a JSON object")
    if set(answer) == {REFUSED}:
        raise PermissionError(f"{path}: {answer[REFUSED]}")
    return answer
