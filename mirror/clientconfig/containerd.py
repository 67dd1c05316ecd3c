"""containerd ``certs.d/<registry>/hosts.toml`` trees (containerd >= 1.5, ``config_path``).

docker.io maps to ``[host."https://REG"]``; a registry whose images sit
under a path in the target (``REG/quay.io/...``) maps to
``[host."https://REG/v2/quay.io"]`` with ``override_path = true``. hosts.toml
cannot carry credentials: a CRI config fragment does.
"""

from __future__ import annotations

import json
from typing import Any

from .model import ClientConfig, GeneratedFile, Target

DEFAULT_CERTS_DIR = "/etc/containerd/certs.d"
UPSTREAM = {"docker.io": "registry-1.docker.io"}  # the API host behind docker.io


def _host_block(target: Target, source: str, ca_install: str | None) -> list[str]:
    path_prefix = target.path_prefix(source).strip("/")
    url = target.endpoint + (f"/v2/{path_prefix}" if path_prefix else "")
    lines = [f"[host.{json.dumps(url)}]", '  capabilities = ["pull", "resolve"]']
    if ca_install:
        lines.append(f"  ca = {json.dumps(ca_install)}")
    if target.insecure:
        lines.append("  skip_verify = true")
    if path_prefix:
        lines.append("  override_path = true")
    return lines


def hosts_toml(target: Target, source: str, ca_install: str | None) -> str:
    upstream = UPSTREAM.get(source, source)
    lines = [
        f"# {source} images come from {target.registry}, where `mirror push` put them.",
        f"server = {json.dumps('https://' + upstream)}",
        "",
        *_host_block(target, source, ca_install),
    ]
    return "\n".join(lines) + "\n"


def generate(target: Target, *, certs_dir: str = DEFAULT_CERTS_DIR, **_: Any) -> ClientConfig:
    certs_dir = certs_dir.rstrip("/")
    ca_install = None
    result = ClientConfig()
    if target.ca_file and not target.plain_http:
        ca_install = f"{certs_dir}/{target.registry}/ca.crt"
        result.files.append(GeneratedFile(f"certs.d/{target.registry}/ca.crt", ca_install,
                                          copy_of=target.ca_file))
    for source in target.source_registries:
        result.files.append(GeneratedFile(f"certs.d/{source}/hosts.toml", f"{certs_dir}/{source}/hosts.toml",
                                          hosts_toml(target, source, ca_install)))
    # The registry itself, for images pulled by their REG/... names. containerd 1.6 rejects a
    # hosts.toml without a [host] table, hence the explicit one.
    own = [f"server = {json.dumps(target.endpoint)}", "", f"[host.{json.dumps(target.endpoint)}]",
           '  capabilities = ["pull", "resolve", "push"]']
    if ca_install:
        own.append(f"  ca = {json.dumps(ca_install)}")
    if target.insecure:
        own.append("  skip_verify = true")
    result.files.append(GeneratedFile(f"certs.d/{target.registry}/hosts.toml",
                                      f"{certs_dir}/{target.registry}/hosts.toml", "\n".join(own) + "\n"))
    fragment = ['[plugins."io.containerd.grpc.v1.cri".registry]', f"  config_path = {json.dumps(certs_dir)}"]
    if target.username:
        fragment += [
            "",
            f'[plugins."io.containerd.grpc.v1.cri".registry.configs.{json.dumps(target.registry)}.auth]',
            f"  username = {json.dumps(target.username)}",
            f"  password = {json.dumps(target.password_value())}",
        ]
    result.files.append(GeneratedFile("containerd-config.toml", "/etc/containerd/config.toml (merge)",
                                      "\n".join(fragment) + "\n", secret=target.password is not None))
    result.notes.append(f"containerd reads {certs_dir} through config_path (containerd-config.toml); "
                        f"`ctr images pull --hosts-dir {certs_dir}` uses it directly")
    if target.username:
        result.notes.append("hosts.toml cannot hold credentials: CRI pulls use containerd-config.toml's auth, "
                            "ctr needs --user")
    result.notes += target.password_note("containerd-config.toml")
    return result
