#!/usr/bin/env bash
# The simulation of issue 11 (item 7): 10,000 hosts and 1,000,000 endpoints per
# resolution mode and OVN, on paper. Needs no root and no Mininet. Installs what it
# needs first. Arguments go to benchmarks.simulate (e.g. --calibration
# results/<run>/samples.json --out results/sim).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m benchmarks.simulate "$@"
