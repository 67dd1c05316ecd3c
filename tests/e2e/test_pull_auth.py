"""mirror pull from a source behind TLS and htpasswd, as a corporate mirror would be."""

from __future__ import annotations

import base64
import json

import pytest

from mirror.bundle.reader import BundleReader
from support import testbed
from support.cli import run_mirror


@pytest.fixture(scope="module")
def secured_source(seeded_source, tmp_path_factory):
    """A TLS + htpasswd registry holding two corpus images in the target layout (docker.io at the root)."""
    work = tmp_path_factory.mktemp("secured")
    images = seeded_source.corpus.images[:2]
    bundle = work / "seed.tar.zst"
    pulled = run_mirror("pull", *[i.source for i in images], "-o", bundle, *seeded_source.mirror_args, "-q")
    assert pulled.returncode == 0, pulled.stderr
    tls = testbed.make_tls(work / "tls")
    registry = testbed.start_registry(work / "registry", tls=tls,
                                      htpasswd=testbed.make_htpasswd(work / "htpasswd", "puller", "pa55"))
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--ca-file", tls.ca_cert,
                        "--username", "puller", "--password-stdin", input="pa55\n")
    assert pushed.returncode == 0, pushed.stderr
    auth_file = work / "auth.json"
    auth_file.write_text(json.dumps({"auths": {registry.host: {"auth": base64.b64encode(b"puller:pa55").decode()}}}))
    yield registry, tls, auth_file, images
    registry.stop()


def pull_through(registry, image, tmp_path, *extra, env=None):
    output = tmp_path / "out.tar.zst"
    mirror_arg = f"{image.source.split('/')[0]}={registry.host}" + ("" if image.source.startswith("docker.io/")
                                                                     else f"/{image.source.split('/')[0]}")
    result = run_mirror("pull", image.source, "--source-mirror", mirror_arg, "-o", output, "--force", *extra, env=env)
    return result, output


def test_pull_with_ca_file_and_registry_auth_file(secured_source, tmp_path):
    registry, tls, auth_file, images = secured_source
    for image in images:
        result, output = pull_through(registry, image, tmp_path, "--ca-file", tls.ca_cert,
                                      env={"REGISTRY_AUTH_FILE": str(auth_file)})
        assert result.returncode == 0, result.stderr
        with BundleReader(output) as reader:
            assert reader.manifest.images[0].digest == image.digest
        assert "pa55" not in result.stdout + result.stderr


def test_pull_without_credentials_is_refused_with_exit_3(secured_source, tmp_path):
    registry, tls, _, images = secured_source
    result, output = pull_through(registry, images[0], tmp_path, "--ca-file", tls.ca_cert,
                                  env={"REGISTRY_AUTH_FILE": str(tmp_path / "none.json"), "HOME": str(tmp_path),
                                       "DOCKER_CONFIG": str(tmp_path)})
    assert result.returncode == 3, result.stderr
    assert registry.host in result.stderr
    assert not output.exists()


def test_pull_from_an_untrusted_certificate_is_refused_with_exit_3(secured_source, tmp_path):
    registry, _, auth_file, images = secured_source
    result, output = pull_through(registry, images[0], tmp_path, env={"REGISTRY_AUTH_FILE": str(auth_file)})
    assert result.returncode == 3, result.stderr
    assert "--ca-file" in result.stderr
    assert not output.exists()
