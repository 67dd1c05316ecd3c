#!/usr/bin/env bash
# Set up a fresh Debian machine and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec python3 -m pytest "$@"
