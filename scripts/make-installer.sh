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
# RHEL 9's own python3 is 3.9, older than mirror supports: install its
# python3.11 or python3.12 package. --arch and --python-version narrow the
# targets (repeatable). Writes OUT.tar.gz and OUT.tar.gz.sha256; OUT appears
# only once complete. Needs pip and PyPI (or the index pip is set up for).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/make-installer.sh [--arch x86_64|aarch64]... [--python-version X.Y]... OUT.tar.gz"
die() { echo "make-installer: $*" >&2; exit 2; }

arches=() versions=() out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arches+=("$2"); shift 2 ;;
    --python-version) [ $# -ge 2 ] || die "--python-version needs a value"; versions+=("$2"); shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) die "unknown option $1; $usage" ;;
    *) [ -z "$out" ] || die "one output file, got $out and $1"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || die "$usage"
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)
[ ${#versions[@]} -gt 0 ] || versions=(3.11 3.12 3.13)
for a in "${arches[@]}"; do
  case "$a" in x86_64|aarch64) ;; *) die "--arch $a: x86_64 or aarch64" ;; esac
done
for v in "${versions[@]}"; do
  [[ "$v" =~ ^3\.(1[0-9])$ ]] || die "--python-version $v: 3.10 or newer, as X.Y"
done

# pip runs on this host; which Python runs it does not limit the targets.
python=${PYTHON:-}
[ -n "$python" ] || { [ -x "$repo/.venv/bin/python" ] && python=$repo/.venv/bin/python || python=python3; }
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip: run scripts/install-deps.sh first, or set PYTHON"
pip=("$python" -m pip --disable-pip-version-check --quiet)

[ -d "$(dirname "$out")" ] || die "$out: no such directory $(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
stage=$(mktemp -d)
trap 'rm -rf "$stage" "$out.tmp"' EXIT
dir=$stage/mirror-installer
mkdir -p "$dir/wheels"

# mirror's wheel is built from a copy of the checkout's files: setuptools' build/
# in the repository would carry modules deleted since into the wheel.
mkdir "$stage/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard |
  (cd "$repo" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$stage/src" -xf -
"${pip[@]}" wheel --no-deps --wheel-dir "$dir/wheels" "$stage/src"
mirror_wheel=$(ls "$dir"/wheels/mirror-*.whl)
# install.sh runs pip from its wheel: a bastion's Python may have neither pip nor ensurepip.
"${pip[@]}" download --only-binary=:all: --no-deps --dest "$dir/wheels" pip
for arch in "${arches[@]}"; do
  # glibc 2.34 is RHEL 9's; Debian 12 has 2.36, Debian 13 2.41.
  platforms=()
  for tag in manylinux_2_34 manylinux_2_28 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_$arch"); done
  for version in "${versions[@]}"; do
    echo "make-installer: wheels for linux $arch, CPython $version" >&2
    "${pip[@]}" download --only-binary=:all: --implementation cp --python-version "$version" "${platforms[@]}" \
      --dest "$dir/wheels" "$mirror_wheel"
    echo "$arch $version" >>"$dir/targets"
  done
done
cp "$repo/scripts/installer/install.sh" "$dir/install.sh"
chmod 755 "$dir/install.sh"

tar -C "$stage" -czf "$out.tmp" mirror-installer
digest=$(sha256sum "$out.tmp" | cut -d' ' -f1)
mv "$out.tmp" "$out"
echo "$digest  $(basename "$out")" >"$out.sha256"
echo "wrote $out ($(du -h "$out" | cut -f1), $(ls "$dir/wheels" | wc -l) wheels for: $(paste -sd, "$dir/targets"))"
