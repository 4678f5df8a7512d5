#!/usr/bin/env bash
# Regenerate the reference flow tables in flows/ (a hypervisor's and a proxy's, see
# flows/README.md): builds the two-site emulation, runs the fixed scenario, rewrites
# the files. Run as root. Extra arguments go to mininet_topos.flows_reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m mininet_topos.flows_reference "$@"
