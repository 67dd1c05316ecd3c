#!/usr/bin/env bash
# The main job end to end on loopback, on a fresh Debian machine:
#   an "upstream" registry seeded with sample images standing in for docker.io
#   and quay.io -> mirror pull (through --source-mirror) -> ONE bundle ->
#   mirror registry up (TLS + auth) -> mirror push -> mirror verify ->
#   the kit (charts, CRDs, K3s files from loopback stand-ins) pulled, pushed
#   and extracted -> mirror config -> a real client (skopeo) reads an image
#   back over TLS with the generated credentials and gets its original digest.
# Everything it starts is stopped on exit; its files go under demo-work/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
py="$PWD/.venv/bin/python"   # where install-deps.sh put mirror

work="$PWD/demo-work"
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

start_registry() {  # DIR: runs a loopback registry; its HOST:PORT lands in DIR.addr once it answers
  PYTHONPATH=tests "$py" -m support.testbed registry "$1" >"$1.addr" 2>"$1.err" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$1.addr" ] && return; sleep 0.1; done
  echo "registry in $1 did not start: $(cat "$1.err")" >&2; exit 1
}

step "upstream: a loopback registry standing in for docker.io and quay.io"
start_registry "$work/upstream"
upstream=$(head -n1 "$work/upstream.addr")
PYTHONPATH=tests "$py" -m support.corpus seed --registry "$upstream" --spec demo --work "$work/corpus" \
  --images-file "$work/images.txt" >/dev/null
sed 's/^/  /' "$work/images.txt"

step "connected side: mirror pull -> one bundle"
"$py" -m mirror pull --images-file "$work/images.txt" \
  --source-mirror "docker.io=http://$upstream/dockerhub" --source-mirror "quay.io=http://$upstream/quay" \
  -o "$work/bundle.tar.zst"
"$py" -m mirror inspect "$work/bundle.tar.zst"
"$py" -m mirror verify "$work/bundle.tar.zst"

step "air gap: mirror registry up (TLS + htpasswd), mirror push, mirror verify"
export MIRROR_STATE_DIR="$work/bastion"   # where `registry up` records URL, CA and credentials
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$py" -m mirror registry up --engine binary --port "$port" --hostname localhost --data-dir "$work/registry-data"
trap '"$py" -m mirror registry down >/dev/null 2>&1 || true; cleanup' EXIT
"$py" -m mirror push "$work/bundle.tar.zst"               # finds the registry `up` started
"$py" -m mirror verify "$work/bundle.tar.zst" --local-registry
private="127.0.0.1:$port"

step "the rest of the kit: Rancher's and cert-manager's charts, the CRDs, K3s's binary and install.sh"
# Stand-ins for the chart repositories, GitHub releases and raw.githubusercontent.com on loopback,
# reached through mirror's environment overrides (docs/kit.md). --exclude . leaves out --mode's images:
# the stand-in upstream above holds only the demo's; on a connected host one pull carries both.
PYTHONPATH=tests "$py" -m support.kitbed serve >"$work/kitbed.env" 2>"$work/kitbed.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/kitbed.env" ] && break; sleep 0.1; done
eval "$("$py" -c 'import json, shlex, sys
print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in json.load(open(sys.argv[1])).items()))' "$work/kitbed.env")"
"$py" -m mirror pull --mode k3s --exclude . -o "$work/kit.tar.zst"
"$py" -m mirror inspect "$work/kit.tar.zst"
"$py" -m mirror push "$work/kit.tar.zst"                  # charts at REG/charts/NAME:VERSION, files at REG/files/...
"$py" -m mirror extract "$work/kit.tar.zst" -o "$work/kit"
(cd "$work/kit" && sha256sum -c SHA256SUMS)

step "what the nodes need: mirror config k3s (registries.yaml, the K3s install lines), mirror config rancher"
"$py" -m mirror config k3s --registry "localhost:$port" --ca-file "$MIRROR_STATE_DIR/ca/ca.crt" \
  --username mirror --bundle "$work/bundle.tar.zst"
"$py" -m mirror config rancher --registry "localhost:$port" --ca-file "$MIRROR_STATE_DIR/ca/ca.crt" \
  --username mirror -o "$work/rancher-config" 2>/dev/null
cat "$work/rancher-config/rancher-install.sh"

step "a real client (skopeo, TLS + login) pulls back from the private registry"
image=$(grep -m1 'klipper-helm' "$work/images.txt")
expected=$("$py" - "$work/bundle.tar.zst" "$image" <<'PY'
import sys
from mirror.bundle.reader import BundleReader
with BundleReader(sys.argv[1]) as reader:
    print(next(r.digest for r in reader.manifest.images if r.source == sys.argv[2]))
PY
)
mkdir -p "$work/certs" && cp "$MIRROR_STATE_DIR/ca/ca.crt" "$work/certs/ca.crt"
"$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["password"])' "$MIRROR_STATE_DIR/credentials" |
  skopeo login --authfile "$work/auth.json" --cert-dir "$work/certs" --username mirror --password-stdin "$private"
path=${image#docker.io/}
got=$(skopeo inspect --authfile "$work/auth.json" --cert-dir "$work/certs" --raw "docker://$private/$path" |
  sha256sum | cut -d' ' -f1)
echo "  $image: upstream digest $expected"
echo "  $private/$path: served digest sha256:$got"
[ "sha256:$got" = "$expected" ] || { echo "digest mismatch" >&2; exit 1; }
chart=$(skopeo inspect --authfile "$work/auth.json" --cert-dir "$work/certs" --raw \
  "docker://$private/charts/rancher:2.7.9" | "$py" -c 'import json, sys; print(json.load(sys.stdin)["config"]["mediaType"])')
echo "  $private/charts/rancher:2.7.9: a Helm chart ($chart)"
echo "demo OK: every image mirrored with its digests intact, the kit beside them"
