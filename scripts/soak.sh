#!/usr/bin/env bash
# The soak under faults (issue 13): the two-site emulation under load for --duration seconds
# (default 600) while agents are killed and restarted, VMs migrate, start and stop, the
# underlay loses, delays and reorders, and proxies fail over; then every agent's state is
# checked. Exits 1 on any failure. Installs what it needs first.
# Extra arguments go to benchmarks.soak (--duration, --seed, --json FILE, --out DIR, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m mininet_topos.sites --clean >/dev/null 2>&1 || true
exec .venv/bin/python -m benchmarks.soak "$@"
