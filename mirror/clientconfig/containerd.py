"""containerd ``certs.d/<registry>/hosts.toml`` trees (containerd >= 1.5, ``config_path``).

docker.io maps to ``[host."https://REG"]``; a registry whose images sit
under a path in the target (``REG/quay.io/...``) maps to
``[host."https://REG/v2/quay.io"]`` with ``override_path = true``. hosts.toml
cannot carry credentials: a CRI config fragment does.

The fragment's tables depend on the config schema: containerd 1.x reads
``version = 2`` with the registry under ``io.containerd.grpc.v1.cri`` (with
no version line it takes the file as version 1 and ignores those tables),
containerd 2.x writes ``version = 3`` with it under
``io.containerd.cri.v1.images``. 2.x still reads and migrates a version 2
file, so the 1.x form is the default; ``--containerd-version 2`` gives the
form to merge into a 2.x config.toml.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import UsageError
from ..model.reference import endpoint_host
from .model import ClientConfig, GeneratedFile, NodeRegistry

DEFAULT_CERTS_DIR = "/etc/containerd/certs.d"
# containerd major version -> (config schema version, plugin holding the CRI registry settings)
CRI_REGISTRY = {1: (2, "io.containerd.grpc.v1.cri"), 2: (3, "io.containerd.cri.v1.images")}


def config_schema(containerd_version: str) -> tuple[int, str]:
    """(schema version, CRI registry plugin) for ``1``, ``1.7``, ``v2.0.1``..."""
    match = re.fullmatch(r"v?(\d+)(\.\d+)*", containerd_version.strip())
    if match is None or int(match.group(1)) not in CRI_REGISTRY:
        raise UsageError(f"--containerd-version {containerd_version}: expected 1.x or 2.x "
                         "(what `containerd --version` prints)")
    return CRI_REGISTRY[int(match.group(1))]


def cri_fragment(target: NodeRegistry, certs_dir: str, containerd_version: str) -> str:
    """The config.toml part that points CRI at the certs.d tree and carries the registry's user."""
    schema, plugin = config_schema(containerd_version)
    lines = [f"version = {schema}", "", f'[plugins.{json.dumps(plugin)}.registry]',
             f"  config_path = {json.dumps(certs_dir)}"]
    for registry in target.registries if target.username else ():
        lines += [
            "",
            f'[plugins.{json.dumps(plugin)}.registry.configs.{json.dumps(registry)}.auth]',
            f"  username = {json.dumps(target.username)}",
            f"  password = {json.dumps(target.password_value())}",
        ]
    return "\n".join(lines) + "\n"


def _host_block(target: NodeRegistry, registry: str, source: str, ca_install: str | None) -> list[str]:
    path_prefix = target.path_prefix(source).strip("/")
    url = target.endpoint_of(registry) + (f"/v2/{path_prefix}" if path_prefix else "")
    lines = [f"[host.{json.dumps(url)}]", '  capabilities = ["pull", "resolve"]']
    if ca_install:
        lines.append(f"  ca = {json.dumps(ca_install)}")
    if target.insecure:
        lines.append("  skip_verify = true")
    if path_prefix:
        lines.append("  override_path = true")
    return lines


def hosts_toml(target: NodeRegistry, source: str, ca_install: str | None) -> str:
    upstream = endpoint_host(source)  # docker.io's API is served by registry-1.docker.io
    lines = [
        f"# {source} images come from {' then '.join(target.registries)}, where `mirror push` put them"
        + (" (containerd tries each [host] in order)." if target.fallbacks else "."),
        f"server = {json.dumps('https://' + upstream)}",
    ]
    for registry in target.registries:
        lines += ["", *_host_block(target, registry, source, ca_install)]
    return "\n".join(lines) + "\n"


def generate(target: NodeRegistry, *, certs_dir: str = DEFAULT_CERTS_DIR, containerd_version: str = "1",
             **_: Any) -> ClientConfig:
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
    # Each registry itself, for images pulled by their REG/... names. containerd 1.6 rejects a
    # hosts.toml without a [host] table, hence the explicit one.
    for registry in target.registries:
        endpoint = target.endpoint_of(registry)
        own = [f"server = {json.dumps(endpoint)}", "", f"[host.{json.dumps(endpoint)}]",
               '  capabilities = ["pull", "resolve", "push"]']
        if ca_install:
            own.append(f"  ca = {json.dumps(ca_install)}")
        if target.insecure:
            own.append("  skip_verify = true")
        result.files.append(GeneratedFile(f"certs.d/{registry}/hosts.toml", f"{certs_dir}/{registry}/hosts.toml",
                                          "\n".join(own) + "\n"))
    fragment = cri_fragment(target, certs_dir, containerd_version)
    result.files.append(GeneratedFile("containerd-config.toml", "/etc/containerd/config.toml (merge)",
                                      fragment, secret=target.password is not None))
    result.notes.append(f"containerd reads {certs_dir} through config_path (containerd-config.toml, "
                        f"{fragment.splitlines()[0]}: merge it only into a config.toml of that version); "
                        f"`ctr images pull --hosts-dir {certs_dir}` uses it directly")
    if target.username:
        result.notes.append("hosts.toml cannot hold credentials: CRI pulls use containerd-config.toml's auth, "
                            "ctr needs --user")
    result.notes += target.password_note("containerd-config.toml")
    return result
