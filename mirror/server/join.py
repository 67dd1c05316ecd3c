"""``registry export-join`` and ``registry up --join``: one registry on object storage, on several hosts.

Registries behind one load balancer must share more than the bucket: the
HTTP secret (an upload started through one host is finished through
another), the users (one password for every host) and the CA nodes trust
(each host's certificate is issued by it, for its own names). The join file
carries exactly these and the storage's address, never its keys: each host
brings its own (``AWS_*`` or ``--s3-credentials-file``). It holds the CA key
and the password, so it is written mode 0600: carry it as a secret.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .distconfig import http_secret
from ..safefiles import write_file
from .htpasswd import write_private
from .objectstore import S3Storage, parse_storage
from .recall import recorded_storage, recorded_tls
from .state import StatePaths, load_state

SETTINGS = "join.json"
MAX_MEMBER = 1024 * 1024
FILES = ("credentials", "registry/htpasswd", "ca/ca.crt", "ca/ca.key")  # what a join may carry besides SETTINGS


@dataclass(frozen=True)
class Joined:
    storage: S3Storage
    http_secret: str
    tls: str  # auto | given | none
    auth: str  # htpasswd | none
    files: dict[str, bytes]  # of FILES, relative to the state dir


def export_join(state_dir: Path, output: Path) -> list[str]:
    """Write the join file for the registry of ``state_dir``; the names it holds."""
    paths = StatePaths(state_dir)
    state = load_state(paths)
    storage = recorded_storage(state) if state is not None else None
    if state is None or storage is None:
        raise UsageError(f"state dir {paths.root} has no registry on object storage: registries share images "
                         "only through one bucket (`mirror registry up --storage s3://BUCKET ...` first)")
    tls = recorded_tls(state, paths)
    settings = {"storage": storage.url, "s3_endpoint": storage.endpoint, "s3_region": storage.region,
                "http_secret": http_secret(paths.config), "tls": tls, "auth": "htpasswd" if state.auth else "none"}
    wanted = (["credentials", "registry/htpasswd"] if state.auth else []) + \
        (["ca/ca.crt", "ca/ca.key"] if tls == "auto" else [])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [(SETTINGS, json.dumps(settings, indent=2).encode())] + \
                [(n, (paths.root / n).read_bytes()) for n in wanted]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    write_private(output, buffer.getvalue())
    return [SETTINGS] + wanted


def read_join(path: Path) -> Joined:
    """The join file checked: only the members ``export_join`` writes, regular files, small."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.name not in (SETTINGS, *FILES) or not member.isfile() or member.size > MAX_MEMBER \
                        or member.name in found:
                    raise UsageError(f"--join {path}: unexpected member {member.name[:100]!r} (not a file "
                                     "`mirror registry export-join` writes)")
                found[member.name] = tar.extractfile(member).read()
        settings = json.loads(found.pop(SETTINGS))
        storage = parse_storage(settings["storage"], settings["s3_endpoint"], settings["s3_region"])
        joined = Joined(storage, str(settings["http_secret"]), settings["tls"], settings["auth"], found)
    except OSError as exc:
        raise UsageError(f"--join {path}: {exc.strerror or exc}") from None
    except (tarfile.TarError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise UsageError(f"--join {path}: not a file written by `mirror registry export-join`") from None
    if joined.tls not in ("auto", "given", "none") or joined.auth not in ("htpasswd", "none") \
            or (joined.auth == "htpasswd") != ("credentials" in found) \
            or (joined.tls == "auto") != ("ca/ca.key" in found) or not joined.http_secret.isalnum():
        raise UsageError(f"--join {path}: not a file written by `mirror registry export-join`")
    return joined


def install(joined: Joined, paths: StatePaths) -> None:
    """The shared users and CA where ``up`` looks for them (each kept file is mode 0600)."""
    for name, data in joined.files.items():
        target = paths.root / name
        if name == "ca/ca.crt":  # public: nodes are given it
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file(target, data)
        else:
            write_private(target, data)
