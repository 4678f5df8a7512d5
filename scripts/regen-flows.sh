#!/usr/bin/env bash
# Regenerate the reference flow tables in flows/ (a hypervisor's and a proxy's, see
# flows/README.md): runs the fixed scenario on fake switches (tests.fakesites; no root,
# a second) and rewrites the files. With --live, runs it in the two-site emulation on
# live Open vSwitch instead (as root; mininet_topos.flows_reference), which must give
# the same text, and also writes the gateway's table (live only: --only sites|gateway).
# Other arguments (--out DIR) go to the generator.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--live" ]; then
    shift
    bash scripts/bootstrap.sh
    exec .venv/bin/python -m mininet_topos.flows_reference "$@"
fi
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec "$python" -m tests.fakesites "$@"
