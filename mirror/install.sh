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
#
# Every wheel is checked against wheels.sha256 first. The environment is made
# in a new directory beside PREFIX/lib/mirror, which becomes a link to it only
# once its mirror runs: a failed install leaves the previous one as it was. A
# PREFIX/lib/mirror this script did not make (no .mirror-install in it) is
# refused, never replaced.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install.sh: $*" >&2; exit 2; }
MARKER=.mirror-install

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

# The wheels are what will run: each must be listed in wheels.sha256 (written when the archive was made)
# and match it; pip would take any file in wheels/.
[ -f "$here/wheels.sha256" ] || die "$here/wheels.sha256 is missing: this archive was not made by mirror's installer"
for wheel in "$here"/wheels/*; do
  name=wheels/${wheel##*/}
  awk -v name="$name" '$2 == name { found = 1 } END { exit !found }' "$here/wheels.sha256" ||
    die "$name is not in wheels.sha256: refusing to install from this archive (was it altered?)"
done
failed=$(cd "$here" && sha256sum -c --strict --quiet wheels.sha256 2>/dev/null | sed -n 's/: FAILED.*//p' | paste -sd, -) || true
[ -z "$failed" ] || die "$failed: does not match its sha256 in wheels.sha256: refusing to install (was it altered?)"

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
current=$prefix/lib/mirror  # a link to the environment in use, PREFIX/lib/mirror.ID
if [ -e "$current" ] || [ -L "$current" ]; then
  # An install by an install.sh from before the marker has the archive's contents kept in it.
  [ -f "$current/$MARKER" ] || { [ -f "$current/pyvenv.cfg" ] && [ -f "$current/share/mirror/installer/install.sh" ]; } ||
    die "$current exists and is not a mirror install made by install.sh (no $MARKER in it): refusing to replace it; choose another --prefix"
fi
previous=$(readlink "$current" || true)  # empty: a first install

new=$prefix/lib/mirror.$(date +%Y%m%d%H%M%S).$$
mkdir "$new"
swapped=""
trap '[ -n "$swapped" ] || rm -rf "$new" "$new.link"' EXIT
pip_wheel=$(ls "$here"/wheels/pip-*.whl)
# --without-pip: Debian's python3 lacks ensurepip unless python3-venv is installed;
# pip runs from its wheel instead, and no pip config on this host may add an index.
"$python" -m venv --without-pip "$new"
PIP_CONFIG_FILE=/dev/null "$new/bin/python" "$pip_wheel/pip" install --quiet --no-index --no-cache-dir \
  --disable-pip-version-check --find-links "$here/wheels" mirror ||
  die "pip could not install mirror from $here/wheels; the previous install is unchanged"
# The archive's contents stay with the install: `mirror pull --with-installer` here makes this
# installer again with no network (mirror/installer.py reads them there).
kept=$new/share/mirror/installer
mkdir -p "$kept"
cp -R "$here/wheels" "$here/wheels.sha256" "$here/targets" "$here/install.sh" "$kept/"
version=$("$new/bin/mirror" --version) || die "the new install's mirror does not run; the previous install is unchanged"
echo "made by mirror's install.sh: $version" > "$new/$MARKER"

# The swap: one rename of a link over PREFIX/lib/mirror. PREFIX/bin/mirror goes through that link.
ln -s "${new##*/}" "$new.link"
if [ -d "$current" ] && [ ! -L "$current" ]; then  # an install made before the link: moved aside first
  previous=mirror.replaced.$$
  mv "$current" "$prefix/lib/$previous"
fi
mv -T "$new.link" "$current"
swapped=yes
ln -sfn "$current/bin/mirror" "$prefix/bin/mirror"
case "$previous" in
  */*) ;;  # not a sibling this script made: not ours to delete
  mirror.*) rm -rf "${prefix:?}/lib/$previous" ;;
esac
echo "installed $version in $current; run $prefix/bin/mirror"
