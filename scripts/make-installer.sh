#!/usr/bin/env bash
# Build the offline installer for a host with no network (the bastion): one
# archive holding install.sh and the wheels of mirror and of every dependency,
# for each target platform, so that pip never needs an index there.
#
#   scripts/make-installer.sh [--arch ARCH]... [--python-version X.Y]... OUT.tar.gz
#   # on the bastion:
#   tar xzf OUT.tar.gz && ./mirror-installer/install.sh [--prefix DIR]
#
# Targets by default: linux x86_64 and aarch64, each with CPython 3.11
# (Debian 12), 3.12 (RHEL 9's python3.12 package) and 3.13 (Debian 13).
# --arch and --python-version narrow them (repeatable). Writes OUT.tar.gz and
# OUT.tar.gz.sha256; OUT appears only once complete. Needs pip and PyPI (or
# the index pip is set up for). The work is mirror/installer.py's, which
# `mirror pull --with-installer` runs too.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# pip runs on this host; which Python runs it does not limit the targets.
python=${PYTHON:-}
[ -n "$python" ] || { [ -x "$repo/.venv/bin/python" ] && python=$repo/.venv/bin/python || python=python3; }
"$python" -m pip --version >/dev/null 2>&1 || {
  echo "make-installer: $python has no pip: run scripts/install-deps.sh first, or set PYTHON" >&2; exit 2; }
PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} exec "$python" -m mirror.installer "$@"
