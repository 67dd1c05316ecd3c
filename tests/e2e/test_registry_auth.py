"""Registry authentication and TLS: htpasswd, bearer tokens, auth files, redirects.

Real docker-registry processes throughout. The bearer-token tests run
testbed's small token server (JWTs signed RS256 with an openssl-made key the
registry trusts through ``auth: token: rootcertbundle``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mirror.model import oci
from mirror.errors import AuthError, UsageError
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles, default_paths
from mirror.registry.settings import Credentials, RegistrySettings
from support import testbed
from support.faults import FaultProxy
from support.testbed import TokenServer

pytestmark = pytest.mark.anyio

USER, PASSWORD = "alice", "correct horse battery"
GOOD = Credentials(USER, PASSWORD)
BAD = Credentials(USER, "wrong password 42")
NO_AUTH_FILES = AuthFiles([])


def client(host: str, settings: RegistrySettings, auth_files: AuthFiles | None = NO_AUTH_FILES) -> RegistryClient:
    return RegistryClient(host, settings, auth_files=auth_files, backoff_base=0.01)


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def seed(c: RegistryClient, repository: str = "lib/app", tag: str = "v1") -> tuple[oci.Manifest, bytes]:
    layer = secrets.token_bytes(50_000)
    config = b'{"architecture":"amd64","os":"linux"}'
    for data in (config, layer):
        await c.upload_blob(repository, oci.sha256_digest(data), len(data), data)
    manifest = oci.Manifest.from_bytes(json.dumps({
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": oci.sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": oci.sha256_digest(layer), "size": len(layer)}]}).encode())
    await c.put_manifest(repository, tag, manifest)
    return manifest, layer


@pytest.fixture
def secured(start_registry, tmp_path):
    """A TLS + htpasswd registry, as an air-gapped site runs one."""
    tls = testbed.make_tls(tmp_path / "tls")
    htpasswd = testbed.make_htpasswd(tmp_path / "htpasswd", USER, PASSWORD)
    return start_registry(tls=tls, htpasswd=htpasswd)


@pytest.fixture
def htpasswd_proxy(start_registry, tmp_path):
    """A plain-HTTP htpasswd registry behind a proxy that counts requests."""
    registry = start_registry(htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", USER, PASSWORD))
    with FaultProxy(registry.host) as proxy:
        yield proxy


# -- htpasswd (Basic) and TLS ----------------------------------------------


async def test_tls_and_basic_auth_with_explicit_credentials(secured):
    settings = RegistrySettings(ca_file=secured.tls.ca_cert, credentials=GOOD)
    async with client(secured.host, settings) as c:
        await c.ping()
        manifest, _ = await seed(c)
        assert await c.get_manifest("lib/app", "v1") == manifest


async def test_credentials_from_docker_config_json(secured, tmp_path, monkeypatch):
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps(
        {"auths": {f"https://{secured.host}": {"auth": basic(USER, PASSWORD)}}}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    async with RegistryClient(secured.host, RegistrySettings(ca_file=secured.tls.ca_cert)) as c:
        await c.ping()
        manifest, _ = await seed(c)
        assert (await c.head_manifest("lib/app", "v1")) == manifest.descriptor


async def test_wrong_password_fails_at_once(htpasswd_proxy):
    async with client(htpasswd_proxy.host, RegistrySettings(plain_http=True, credentials=BAD)) as c:
        started = time.monotonic()
        with pytest.raises(AuthError) as caught:
            await c.get_manifest("lib/app", "v1")
    message = str(caught.value)
    assert f"credentials for {htpasswd_proxy.host} were refused" in message
    assert BAD.password not in message and basic(USER, BAD.password) not in message
    assert len(htpasswd_proxy.seen) < 5 and time.monotonic() - started < 2


async def test_no_credentials_for_a_registry_that_wants_them(htpasswd_proxy):
    async with client(htpasswd_proxy.host, RegistrySettings(plain_http=True)) as c:
        with pytest.raises(AuthError, match=f"{htpasswd_proxy.host} requires authentication"):
            await c.ping()
    assert len(htpasswd_proxy.seen) == 1


async def test_forbidden_is_an_auth_error(htpasswd_proxy):
    htpasswd_proxy.fail("/manifests/", 403, times=None)
    async with client(htpasswd_proxy.host, RegistrySettings(plain_http=True, credentials=GOOD)) as c:
        with pytest.raises(AuthError, match=f"{htpasswd_proxy.host} denied access to repository:lib/app:pull"):
            await c.get_manifest("lib/app", "v1")
    assert len(htpasswd_proxy.requests("GET", "/manifests/")) == 1


async def test_unverifiable_tls_is_an_auth_error_and_insecure_is_explicit(secured):
    async with client(secured.host, RegistrySettings(credentials=GOOD)) as c:
        started = time.monotonic()
        with pytest.raises(AuthError, match=f"TLS certificate of {secured.host} could not be verified.*--ca-file"):
            await c.ping()
        assert time.monotonic() - started < 2  # not retried
    async with client(secured.host, RegistrySettings(credentials=GOOD, insecure=True)) as c:
        await c.ping()


async def test_redirect_to_another_host_drops_authorization(htpasswd_proxy, registry, tmp_path):
    """Blob GETs redirected to storage elsewhere must not carry the registry's credentials."""
    settings = RegistrySettings(plain_http=True, credentials=GOOD)
    async with client(htpasswd_proxy.host, settings) as c:
        _, layer = await seed(c)
    async with client(registry.host, RegistrySettings(plain_http=True)) as c:
        await seed_blob(c, layer)
    digest = oci.sha256_digest(layer)
    with FaultProxy(registry.host) as storage:
        htpasswd_proxy.redirect(r"/blobs/sha256:", f"http://{storage.host}", method="GET", times=1)
        async with client(htpasswd_proxy.host, settings) as c:
            await c.ping()  # learns the challenge, so every request below carries credentials
            await c.download_blob("lib/app", digest, tmp_path / "other-host.partial")
            # Same host (scheme, host and port): the credentials stay, or the registry would refuse.
            htpasswd_proxy.redirect(r"/blobs/sha256:", f"http://{htpasswd_proxy.host}", method="GET", times=1)
            await c.download_blob("lib/app", digest, tmp_path / "same-host.partial")
        assert [r.headers.get("authorization") for r in storage.requests("GET")] == [None]
    gets = htpasswd_proxy.requests("GET", "/blobs/sha256:")
    assert [g.status for g in gets] == [307, 307, 200]
    assert all(g.headers.get("authorization") == "Basic " + basic(USER, PASSWORD) for g in gets)
    assert (tmp_path / "other-host.partial").read_bytes() == layer == (tmp_path / "same-host.partial").read_bytes()


async def test_client_certificate_for_a_registry_that_requires_one(tmp_path):
    tls = testbed.make_tls(tmp_path / "tls")
    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mirror client",
                    "-keyout", str(key), "-out", str(tmp_path / "client.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "client.csr"), "-CA", str(tls.ca_cert),
                    "-CAkey", str(tls.ca_cert.with_suffix(".key")), "-CAcreateserial", "-days", "1",
                    "-out", str(cert)], check=True, capture_output=True)
    http = f"tls: {{certificate: {tls.cert}, key: {tls.key}, clientcas: [{tls.ca_cert}]}}"
    with custom_registry(tmp_path / "registry", http) as registry:
        async with client(registry.host, RegistrySettings(ca_file=tls.ca_cert)) as c:
            with pytest.raises(AuthError, match=f"TLS handshake with {registry.host} failed"):
                await c.ping()
        settings = RegistrySettings(ca_file=tls.ca_cert, client_cert=cert, client_key=key)
        async with client(registry.host, settings) as c:
            await c.ping()
            await seed(c)


async def seed_blob(c: RegistryClient, data: bytes) -> None:
    await c.upload_blob("lib/app", oci.sha256_digest(data), len(data), data)


# -- bearer tokens -----------------------------------------------------------


@contextlib.contextmanager
def custom_registry(directory: Path, http: str, auth: str = ""):
    """docker-registry with ``http:``/``auth:`` config that testbed.start_registry has no option for."""
    port = testbed.free_port()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text("\n".join([
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",
        f"storage: {{filesystem: {{rootdirectory: {directory / 'storage'}}}}}",
        f"http: {{addr: '127.0.0.1:{port}', secret: mirror-test-secret{', ' + http if http else ''}}}",
        f"auth: {{{auth}}}" if auth else "",
    ]) + "\n")
    log = directory / "registry.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([testbed.require(testbed.REGISTRY_BINARY), "serve", str(directory / "config.yml")],
                                   stdout=out, stderr=subprocess.STDOUT)
    registry = testbed.Registry(directory, port, process, log=log)
    try:
        deadline = time.monotonic() + 20
        while True:  # listening is ready enough; an HTTP probe would need this test's credentials
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def token_registry(tmp_path_factory):
    """A docker-registry trusting our token server, behind a counting proxy."""
    directory = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(directory / "signer", {USER: PASSWORD}, {"refresh-me": USER})
    auth = tokens.auth_config()
    try:
        with custom_registry(directory, "", auth) as registry, FaultProxy(registry.host) as proxy:
            yield tokens, proxy
    finally:
        tokens.close()


PLAIN_GOOD = RegistrySettings(plain_http=True, credentials=GOOD)


async def test_bearer_credentials_go_to_the_token_server_and_tokens_are_cached_per_scope(token_registry, tmp_path):
    tokens, proxy = token_registry
    async with client(proxy.host, PLAIN_GOOD) as c:
        await c.ping()
        manifest, layer = await seed(c)
        for _ in range(2):
            assert await c.get_manifest("lib/app", "v1") == manifest
        assert await c.blob_size("lib/app", oci.sha256_digest(layer)) == len(layer)
        await c.download_blob("lib/app", oci.sha256_digest(layer), tmp_path / "layer.partial")
        assert await c.mount_blob("lib/copy", oci.sha256_digest(layer), "lib/app") is True
    assert [(r.user, r.scopes) for r in tokens.requests] == [
        (USER, []),
        (USER, ["repository:lib/app:pull,push"]),
        (USER, ["repository:lib/app:pull"]),
        (USER, ["repository:lib/app:pull", "repository:lib/copy:pull,push"]),
    ]
    assert not [r for r in proxy.seen if r.status == 401 and r.headers.get("authorization")]


async def test_bearer_anonymous_pull_and_refused_anonymous_push(token_registry, tmp_path):
    tokens, proxy = token_registry
    async with client(proxy.host, PLAIN_GOOD) as c:
        manifest, _ = await seed(c)
    tokens.requests.clear()
    async with client(proxy.host, RegistrySettings(plain_http=True)) as c:
        assert await c.get_manifest("lib/app", "v1") == manifest
        with pytest.raises(AuthError, match=f"{proxy.host} requires authentication"):
            await c.upload_blob("lib/app", oci.sha256_digest(b"x"), 1, b"x")
    assert tokens.requests[0].user is None and tokens.requests[0].scopes == ["repository:lib/app:pull"]
    assert all(r.user is None for r in tokens.requests)


async def test_one_bearer_token_opens_every_repository_a_run_expects(token_registry):
    tokens, proxy = token_registry
    async with client(proxy.host, PLAIN_GOOD) as c:
        seeded = [await seed(c, repository) for repository in ("lib/app", "lib/other")]
    tokens.requests.clear()
    async with client(proxy.host, RegistrySettings(plain_http=True)) as c:
        c.expect_pulls(["lib/app", "lib/other"])
        assert [await c.get_manifest(r, "v1") for r in ("lib/app", "lib/other")] == [m for m, _ in seeded]
    assert [r.scopes for r in tokens.requests] == [["repository:lib/app:pull", "repository:lib/other:pull"]]
    assert not [r for r in proxy.seen if r.status == 401 and r.headers.get("authorization")]


async def test_bearer_expired_token_is_refreshed_once(token_registry):
    tokens, proxy = token_registry
    async with client(proxy.host, PLAIN_GOOD) as c:
        manifest, _ = await seed(c)
    tokens.requests.clear()
    tokens.expired_next = 1
    async with client(proxy.host, PLAIN_GOOD) as c:
        assert await c.get_manifest("lib/app", "v1") == manifest
    assert len(tokens.requests) == 2
    tokens.requests.clear()
    tokens.expired_next = 100  # the token server keeps handing out dead tokens: give up after one refresh
    async with client(proxy.host, PLAIN_GOOD) as c:
        with pytest.raises(AuthError, match="were refused"):
            await c.get_manifest("lib/app", "v1")
    assert len(tokens.requests) == 2


async def test_bearer_wrong_password_fails_at_the_token_server_at_once(token_registry):
    tokens, proxy = token_registry
    async with client(proxy.host, RegistrySettings(plain_http=True, credentials=BAD)) as c:
        with pytest.raises(AuthError, match=f"credentials for {proxy.host} were refused") as caught:
            await c.get_manifest("lib/app", "v1")
    assert BAD.password not in str(caught.value)
    assert len(tokens.requests) == 1 and len(proxy.seen) == 1


async def test_bearer_identity_token_from_auth_file(token_registry, tmp_path):
    tokens, proxy = token_registry
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {proxy.host: {"identitytoken": "refresh-me"}}}))
    async with client(proxy.host, RegistrySettings(plain_http=True), AuthFiles([auth_file])) as c:
        await seed(c)
    assert {(r.user, r.grant) for r in tokens.requests} == {(USER, "refresh_token")}


# -- auth files ------------------------------------------------------------------


def test_auth_file_lookup_order_and_key_spellings(tmp_path, monkeypatch):
    podman = tmp_path / "podman.json"
    podman.write_text(json.dumps({"auths": {"reg.example:5000": {"username": "pod", "password": "p1"}}}))
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"auths": {
        "https://reg.example:5000/v2/": {"auth": basic("dock", "p2")},
        "https://index.docker.io/v1/": {"auth": basic("hub", "p3")},
        "quay.io": {"auth": basic("quay", "p:4")},
    }}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert default_paths() == [podman, tmp_path / "run" / "containers" / "auth.json", docker_dir / "config.json"]
    files = AuthFiles()
    assert files.lookup("reg.example:5000") == Credentials("pod", "p1")  # REGISTRY_AUTH_FILE first
    assert files.lookup("docker.io") == files.lookup("registry-1.docker.io") == Credentials("hub", "p3")
    assert files.lookup("quay.io") == Credentials("quay", "p:4")
    assert files.lookup("ghcr.io") is None
    assert AuthFiles([docker_dir / "config.json"]).lookup("reg.example:5000") == Credentials("dock", "p2")


def test_unreadable_auth_file_is_a_usage_error_naming_it(tmp_path):
    broken = tmp_path / "config.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match=str(broken)):
        AuthFiles([broken]).lookup("quay.io")


def test_credential_helpers(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n'
                      'if [ "$server" = "https://index.docker.io/v1/" ]; then\n'
                      '  echo \'{"ServerURL":"x","Username":"hubuser","Secret":"hubsecret"}\'\n'
                      'elif [ "$server" = "reg.example" ]; then\n'
                      '  echo \'{"ServerURL":"x","Username":"reguser","Secret":"regsecret"}\'\n'
                      'else echo "credentials not found in native keychain"; exit 1; fi\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "fake", "credHelpers": {"reg.example": "fake", "gone.example": "absent"},
                                  "auths": {"gone.example": {"auth": basic("file", "f")}}}))
    files = AuthFiles([config])
    assert files.lookup("docker.io") == Credentials("hubuser", "hubsecret")
    assert files.lookup("reg.example") == Credentials("reguser", "regsecret")
    assert files.lookup("gone.example") == Credentials("file", "f")  # helper binary missing: auths entry
    assert files.lookup("other.example") is None
