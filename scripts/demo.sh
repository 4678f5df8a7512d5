#!/usr/bin/env bash
# Run the DOVE demo (3 hypervisors, 2 tenants with identical address plans).
# Installs what it needs first; extra arguments go to the demo, e.g. --json, --cli,
# --hypervisors 4 --tenants 3 --vms-per-tenant 3.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m mininet_topos.demo "$@"
