#!/usr/bin/env bash
# Sets up everything the tests need (as root on Debian 12) and runs them.
#   scripts/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
if [ -x scripts/get-chart-tools.sh ]; then
    ./scripts/get-chart-tools.sh .cache/chart-tools
fi
# Lint and types first: cheap, and a finding there fails CI like a test.
./scripts/lint.sh
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
