"""The agent's Prometheus endpoint: ``GET /metrics`` over HTTP.

A thin adapter around prometheus_client's exposition: each scrape writes the agent's
registry with `generate_latest` (its collector copies the core under the shell's
lock).  Each connection is served by its own daemon thread with a socket timeout, so
a slow or broken client costs a thread for a few seconds, never the agent; anything
but ``GET``/``HEAD /metrics`` gets a 404 or 405.

NOTE: prometheus_client 0.26.0's own server (`start_http_server`, `make_wsgi_app`) is
not used: it serves the metrics on every path (no 404), refuses HEAD, sets no timeout
on a client that never finishes its request (each holds a thread for good), prints a
failing collector's traceback to stderr instead of our log, and listens as soon as it
is made, before the agent starts.  This module keeps only the HTTP side.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from dove_ryu.adapters.metrics import CONTENT_TYPE

LOG = logging.getLogger("dove_ryu.adapters.metrics")
PATH = "/metrics"
CLIENT_TIMEOUT = 5.0  # seconds a client may take to send its request or read the answer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT
    server_version = "dove-agent"

    def do_GET(self) -> None:
        self._metrics(with_body=True)

    def do_HEAD(self) -> None:
        self._metrics(with_body=False)

    def _not_allowed(self) -> None:
        self._reply(405, b"only GET and HEAD\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _metrics(self, with_body: bool) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._reply(404, f"not found; the metrics are at {PATH}\n".encode(), with_body)
            return
        try:
            data = generate_latest(self.server.registry)
        except Exception:  # a bug must not end the thread without an answer
            LOG.exception("metrics: cannot render")
            self._reply(500, b"cannot render the metrics\n", with_body)
            return
        self._reply(200, data, with_body, content_type=CONTENT_TYPE)

    def _reply(
        self,
        code: int,
        data: bytes,
        with_body: bool = True,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("metrics: %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry) -> None:
        self.registry = registry
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up or timed out: not the agent's problem, no traceback.
        LOG.debug("metrics: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves ``registry`` at /metrics on (host, port); raises OSError if it cannot bind."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.httpd = _Server((host, port), registry)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever: never if not started
            self.httpd.shutdown()
        self.httpd.server_close()
