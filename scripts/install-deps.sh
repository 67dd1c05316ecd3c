#!/usr/bin/env bash
# Install everything mirror's tests, demo and benchmark use on a fresh Debian
# machine: the real components (registry, skopeo, containerd, Docker Engine,
# htpasswd, zstd) and the package itself, editable, with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo containerd docker.io apache2-utils zstd openssl time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
