#!/usr/bin/env bash
# Sets up (as root on Debian 12) and starts sftd on 127.0.0.1:8585 with the
# demo page at http://127.0.0.1:8585/demo/ and metrics on 127.0.0.1:49090.
# Extra arguments go to sftd, e.g. scripts/serve.sh --dataplane userspace -O lo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/sftd --demo "$@"
