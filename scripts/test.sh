#!/usr/bin/env bash
# Set up a fresh Debian machine and run the whole test suite (or the pytest
# arguments given) with the virtual environment's python, which the tests
# also use to run `python -m mirror`. With `--fast` it runs the fast tier alone:
# tests/unit, in-process against a fake registry, no daemon, seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ "${1:-}" = "--fast" ]; then
  shift
  exec .venv/bin/python -m pytest tests/unit "$@"
fi
exec .venv/bin/python -m pytest "$@"
