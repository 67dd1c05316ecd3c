#!/bin/sh
# Install mirror on a host with no network access (an air-gapped bastion)
# from the wheels beside this script: a virtual environment PREFIX/lib/mirror
# and the command PREFIX/bin/mirror. Run again to replace an earlier install.
#
#   ./mirror-installer/install.sh [--prefix DIR] [--python PYTHON]
#
# PREFIX defaults to /usr/local as root, ~/.local otherwise. PYTHON defaults
# to the first of python3, python3.13, python3.12, python3.11 whose version
# this installer carries wheels for (see the file `targets`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install.sh: $*" >&2; exit 2; }

if [ "$(id -u)" -eq 0 ]; then prefix=/usr/local; else prefix=$HOME/.local; fi
python=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (usage: install.sh [--prefix DIR] [--python PYTHON])" ;;
  esac
done

arch=$(uname -m)
carried() {  # PYTHON: is there a target for this machine and that interpreter's version?
  version=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 1
  grep -qx "$arch $version" "$here/targets"
}
if [ -n "$python" ]; then
  carried "$python" || die "$python: no wheels in this installer for it on $arch; carried: $(paste -sd, "$here/targets")"
else
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && carried "$candidate"; then python=$candidate; break; fi
  done
  [ -n "$python" ] || die "no Python this installer carries wheels for on $arch (carried: $(paste -sd, "$here/targets")); name one with --python"
fi

mkdir -p "$prefix/bin" "$prefix/lib"
prefix=$(cd "$prefix" && pwd)
venv=$prefix/lib/mirror
case "$here/" in "$venv/"*) die "copy the installer kept in $venv out of it first: installing replaces $venv" ;; esac
pip_wheel=$(ls "$here"/wheels/pip-*.whl)
# --without-pip: Debian's python3 lacks ensurepip unless python3-venv is installed;
# pip runs from its wheel instead, and no pip config on this host may add an index.
"$python" -m venv --clear --without-pip "$venv"
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" "$pip_wheel/pip" install --quiet --no-index --no-cache-dir \
  --disable-pip-version-check --find-links "$here/wheels" mirror
# The archive's contents stay with the install: `mirror pull --with-installer` here makes this
# installer again with no network (mirror/installer.py reads them there).
kept=$venv/share/mirror/installer
mkdir -p "$kept"
cp -R "$here/wheels" "$here/targets" "$here/install.sh" "$kept/"
ln -sfn "$venv/bin/mirror" "$prefix/bin/mirror"
echo "installed $("$prefix/bin/mirror" --version) in $venv; run $prefix/bin/mirror"
