"""``registry up --storage s3://BUCKET[/PREFIX]``: the registry's images on the site's object storage.

Several registries on the same bucket and prefix serve one set of images
(distribution's S3 driver keeps no state of its own on the host). The access
keys come from ``--s3-credentials-file`` (AWS's INI format, profile
``default``) or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; ``up`` keeps
them in the state dir (``s3-credentials``, mode 0600) so that ``up`` after a
reboot finds them, and hands them to the registry in its 0600 config.yml.
They never reach the command line, state.json, a log or ``--json``.

Before anything starts, ``check`` asks the storage for one key under the
prefix with those keys (a signed ListObjectsV2): an endpoint that does not
answer, or keys it refuses, end ``up`` with exit 3 naming the endpoint;
``status`` asks the same question.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..errors import ExitCode, MirrorError, UsageError
from .htpasswd import write_private
from .sigv4 import signed_headers

DEFAULT_REGION = "us-east-1"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_ANSWER = 64 * 1024  # an error document; a one-key listing is far smaller


class StorageRefused(MirrorError):
    """The object storage did not answer, or refused the credentials: exit 3, as a refused login is."""

    exit_code = ExitCode.AUTH


@dataclass(frozen=True)
class S3Storage:
    bucket: str
    prefix: str  # "" or "a/b", no slashes at either end
    endpoint: str  # http(s)://host[:port]
    region: str = DEFAULT_REGION

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def parse_storage(url: str, endpoint: str | None, region: str | None) -> S3Storage:
    """``--storage``, ``--s3-endpoint`` and ``--s3-region`` checked; UsageError naming the flag at fault."""
    if not url.startswith("s3://"):
        raise UsageError(f"--storage {url}: expected s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UsageError(f"--storage {url}: {bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    if prefix and not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in prefix.split("/")):
        raise UsageError(f"--storage {url}: the prefix may hold only A-Z a-z 0-9 . _ - between slashes")
    if not endpoint:
        raise UsageError("--storage s3://... needs --s3-endpoint URL (the object storage's address, "
                         "e.g. https://minio.example:9000)")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query \
            or parts.username or parts.password:
        raise UsageError(f"--s3-endpoint {endpoint}: expected http(s)://HOST[:PORT] and nothing else "
                         "(keys go in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --s3-credentials-file)")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"--s3-endpoint {endpoint}: bad port") from None
    region = region or DEFAULT_REGION
    if not re.fullmatch(r"[a-z0-9-]{1,64}", region):
        raise UsageError(f"--s3-region {region}: expected a region name such as us-east-1")
    return S3Storage(bucket, prefix, f"{parts.scheme}://{parts.netloc}", region)


def load_credentials(given_file: Path | None, kept_file: Path) -> S3Credentials:
    """From ``--s3-credentials-file``, else the environment, else what an earlier ``up`` kept."""
    if given_file is not None:
        return _read_ini(given_file, "--s3-credentials-file")
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return _checked(S3Credentials(access, secret), "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if kept_file.is_file():
        return kept_credentials(kept_file)
    raise UsageError("--storage s3://... needs the storage's keys: set AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY, or pass --s3-credentials-file FILE ([default] aws_access_key_id=..., "
                     "aws_secret_access_key=...)")


def kept_credentials(kept_file: Path) -> S3Credentials:
    """The keys the last ``up`` kept (what the running registry uses)."""
    return _read_ini(kept_file, "kept S3 credentials")


def keep_credentials(credentials: S3Credentials, kept_file: Path) -> None:
    """Write them where ``load_credentials`` finds them after a reboot (mode 0600)."""
    text = (f"[default]\naws_access_key_id = {credentials.access_key}\n"
            f"aws_secret_access_key = {credentials.secret_key}\n")
    write_private(kept_file, text.encode())


def _read_ini(path: Path, what: str) -> S3Credentials:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(), source=str(path))
        section = parser["default"]
        found = S3Credentials(section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip())
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    except (configparser.Error, KeyError, UnicodeDecodeError):
        raise UsageError(f"{what} {path}: expected [default] with aws_access_key_id and "
                         "aws_secret_access_key") from None
    return _checked(found, f"{what} {path}")


def _checked(credentials: S3Credentials, where: str) -> S3Credentials:
    """Keys go into a YAML file and an HTTP header: printable ASCII without quotes or spaces only."""
    for value in (credentials.access_key, credentials.secret_key):
        if not value or not re.fullmatch(r"[!#-&(-~]{1,256}", value) or "\\" in value:
            raise UsageError(f"{where}: an S3 key is empty or holds spaces, quotes or non-ASCII characters")
    return credentials


def check(storage: S3Storage, credentials: S3Credentials, timeout: float = 10.0) -> None:
    """Ask the storage for one key under the prefix: StorageRefused or UsageError naming what is wrong."""
    host = urlsplit(storage.endpoint).netloc
    path = f"/{storage.bucket}"  # path style, as the registry is configured (forcepathstyle)
    query = {"list-type": "2", "max-keys": "1", "prefix": f"{storage.prefix}/" if storage.prefix else ""}
    headers = signed_headers("GET", host, path, query, storage.region, credentials.access_key,
                             credentials.secret_key)
    # The registry reaches the storage directly (its environment has no proxy) and trusts the system's CAs.
    verify = ssl.create_default_context() if storage.endpoint.startswith("https") else False
    try:
        with httpx.Client(timeout=timeout, trust_env=False, verify=verify) as client:
            with client.stream("GET", storage.endpoint + path, params=query, headers=headers) as answer:
                body = b""
                for chunk in answer.iter_raw():
                    body += chunk
                    if len(body) > _MAX_ANSWER:
                        break
                status = answer.status_code
    except httpx.HTTPError as exc:
        raise StorageRefused(f"S3 storage {storage.endpoint} did not answer: {exc or type(exc).__name__}") from None
    if status == 200:
        return
    code = _error_code(body)
    if status == 404 and code == "NoSuchBucket":
        raise UsageError(f"S3 storage {storage.endpoint} has no bucket {storage.bucket}: create it first "
                         "(the registry does not)")
    if status in (301, 400) and code in ("AuthorizationHeaderMalformed", "PermanentRedirect"):
        raise UsageError(f"S3 storage {storage.endpoint} refused region {storage.region} for bucket "
                         f"{storage.bucket} ({code}): pass the bucket's --s3-region")
    if status in (401, 403):
        raise StorageRefused(f"S3 storage {storage.endpoint} refused the credentials for bucket "
                             f"{storage.bucket} ({code or status}): check the access key and secret")
    raise StorageRefused(f"S3 storage {storage.endpoint} answered {status} ({code or 'no error code'}) "
                         f"listing bucket {storage.bucket}")


def _error_code(body: bytes) -> str:
    """The <Code> of an S3 error document if it is one short word, else "" (the body is not parsed as XML)."""
    found = re.search(rb"<Code>([A-Za-z0-9.]{1,64})</Code>", body)
    return found.group(1).decode() if found else ""


def driver_lines(storage: S3Storage, credentials: S3Credentials) -> list[str]:
    """distribution's ``storage:`` entries for its S3 driver (values JSON-quoted, as distconfig does)."""
    q = json.dumps
    options = [f"accesskey: {q(credentials.access_key)}", f"secretkey: {q(credentials.secret_key)}",
               f"region: {q(storage.region)}", f"regionendpoint: {q(storage.endpoint)}",
               f"bucket: {q(storage.bucket)}", "forcepathstyle: true", "v4auth: true",
               f"secure: {'true' if storage.endpoint.startswith('https') else 'false'}"]
    if storage.prefix:
        options.append(f"rootdirectory: {q('/' + storage.prefix)}")
    # Blobs are served through the registry: nodes need not reach (or be allowed into) the storage.
    return ["  s3:"] + [f"    {line}" for line in options] + ["  redirect: {disable: true}"]
