#!/usr/bin/env bash
# Install everything mirror's tests, demo and benchmark use on a fresh Debian
# machine: the real components (registry, skopeo, containerd, Docker Engine,
# htpasswd, zstd) and the package itself, editable, with its test extras, in
# the virtual environment .venv/ (Debian's own python3 is "externally managed",
# PEP 668: pip refuses to install into it).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo containerd docker.io apache2-utils zstd openssl time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The venv is made from Debian's own interpreter (3.11.2 on Debian 12), the floor mirror supports,
# never from whatever python3 comes first on PATH (a pyenv or a newer build would hide what fails
# there). Debian splits `python3 -m venv`'s ensurepip off into python3-venv.
python=/usr/bin/python3
[ -x "$python" ] || missing+=(python3)
"$python" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The install is editable, so only a change to pyproject.toml (dependencies,
# packages, entry points) needs pip again: its hash is the stamp of the last
# install (with the interpreter's version), and a run with the same stamp does nothing.
venv=.venv
stamp="$venv/.pyproject.sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # Absent, left broken, or made by another interpreter: made anew.
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1 \
     || [ "$(readlink -f "$venv/bin/python")" != "$(readlink -f "$python")" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" >"$stamp"
fi
# pip compiles an installed package's bytecode; an editable one's is left to the first import, and
# under PYTHONDONTWRITEBYTECODE (set on some hosts, ours among them) every command would compile all
# of mirror again (~0.1 s each, hundreds of commands in the tests). Only what changed is compiled.
"$venv/bin/python" -m compileall -q mirror >/dev/null
