#!/usr/bin/env bash
# Run the test suite: lint, types, unit tests, then the real-OVS and Mininet tiers.
# Installs what it needs first. Extra arguments go to pytest (e.g. -m unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check dove_ryu mininet_topos tests
.venv/bin/mypy
# Leftovers of an interrupted run would make interface names clash.
.venv/bin/python -m mininet_topos.dove_topo --clean >/dev/null 2>&1 || true
set +e
.venv/bin/python -m pytest -ra "$@"
rc=$?
set -e
# pytest exits 5 when a selection holds no tests; that is not a failure of the code.
if [ "$rc" -eq 5 ]; then
    echo "pytest: no tests were collected"
    exit 0
fi
exit "$rc"
