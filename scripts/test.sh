#!/usr/bin/env bash
# Set up a fresh Debian machine and run the whole test suite (or the pytest
# arguments given) with the virtual environment's python, which the tests
# also use to run `python -m mirror`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec .venv/bin/python -m pytest "$@"
