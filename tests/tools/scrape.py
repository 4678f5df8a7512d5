"""An agent's Prometheus endpoint read from inside its node's namespace, as a scraper on
that host would (the emulation's agents listen on the namespace's loopback)."""

from __future__ import annotations

import json
import sys
from typing import Any

from dove_ryu.adapters.metrics import CONTENT_TYPE
from mininet_topos.agents import METRICS_PORT
from tests.tools import promtext

URL = f"http://127.0.0.1:{METRICS_PORT}"

# Run inside a namespace: one HTTP request, its answer as JSON (no proxies: loopback).
FETCH = """
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(sys.argv[1], method=sys.argv[2])
try:
    r = opener.open(request, timeout=10)
except urllib.error.HTTPError as e:
    r = e
print(json.dumps({"status": r.status, "headers": dict(r.headers), "body": r.read().decode()}))
"""


def fetch(node: Any, path: str = "/metrics", method: str = "GET") -> dict[str, Any]:
    out, err, rc = node.pexec([sys.executable, "-c", FETCH, URL + path, method])
    assert rc == 0, f"{node.name}: {method} {path}: {out}{err}"
    return json.loads(out)  # type: ignore[no-any-return]


def scrape(node: Any) -> promtext.Scrape:
    """The agent's metrics, parsed (a bad status or content type fails the test)."""
    answer = fetch(node)
    assert answer["status"] == 200, answer
    assert answer["headers"]["Content-Type"] == CONTENT_TYPE
    return promtext.parse(answer["body"])
