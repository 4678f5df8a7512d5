#!/usr/bin/env bash
# Run the benchmarks side by side (dove-ryu, OVN, OVS NORMAL, kernel VXLAN, learning
# switch). Installs what it needs first. --quick for a change's check (< 5 min).
# Extra arguments go to benchmarks.run (e.g. --sections first,dataplane).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m mininet_topos.dove_topo --clean >/dev/null 2>&1 || true
exec .venv/bin/python -m benchmarks.run "$@"
