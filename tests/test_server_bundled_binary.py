"""`registry up --engine binary --from-bundle` on a bastion with no registry binary: the binary comes
out of the registry image in the bundle (the host's platform, digests checked), and serves push."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import testbed
from conftest import run_mirror
from mirror.errors import IntegrityError, UsageError
from mirror.model.oci import sha256_digest
from mirror.server.binaryload import MAX_HEADER, extract_registry_binary
from mirror.server.state import find_local_registry
from mirror.bundle.store import BlobStore
from registry_image import FILES, build_other_image, build_registry_image, write_test_bundle
from test_server_up import registries_running


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    store = BlobStore(root / "store")
    return write_test_bundle(root / "bundle.tar.zst", store, [build_other_image(store), build_registry_image(store).record])


def test_up_takes_the_registry_binary_out_of_the_bundle_when_path_has_none(bundle, tmp_path):
    empty_path = tmp_path / "path"
    empty_path.mkdir()  # mirror runs as `python -m mirror` by absolute path; the registry needs nothing
    env = {"PATH": str(empty_path), "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        without = run_mirror("registry", "up", "--state-dir", state_dir, "--port", port, "--address", "127.0.0.1",
                             "--engine", "binary", env=env)
        assert without.returncode == 2 and "--from-bundle" in without.stderr, without.stderr

        up = run_mirror("registry", "up", "--state-dir", state_dir, "--port", port, "--address", "127.0.0.1",
                        "--engine", "binary", "--from-bundle", bundle, env=env)
        assert up.returncode == 0, up.stderr
        assert "no registry binary on PATH: taking /bin/registry out of the registry image" in up.stderr
        extracted = state_dir / "bin" / "registry"
        assert extracted.read_bytes() == Path(FILES["bin/registry"]).read_bytes()  # amd64, not the decoy
        assert registries_running("binary", state_dir, None) == 1
        pid = (state_dir / "registry.pid").read_text().strip()
        assert os.readlink(f"/proc/{pid}/exe") == str(extracted)

        pushed = run_mirror("push", bundle, "--quiet", env={**env, "MIRROR_STATE_DIR": str(state_dir)})
        assert pushed.returncode == 0, pushed.stderr
        assert f"pushed 2 images to {find_local_registry(state_dir).host}" in pushed.stdout

        again = run_mirror("registry", "up", "--state-dir", state_dir, "--port", port, "--address", "127.0.0.1",
                           "--engine", "binary", "--from-bundle", bundle, env=env)
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr

        # After a reboot (here: down), `up` with no flags starts the binary it took out of the bundle.
        assert run_mirror("registry", "down", "--state-dir", state_dir, env=env).returncode == 0
        rebooted = run_mirror("registry", "up", "--state-dir", state_dir, env=env)
        assert rebooted.returncode == 0, rebooted.stderr
        assert registries_running("binary", state_dir, None) == 1
        pid = (state_dir / "registry.pid").read_text().strip()
        assert os.readlink(f"/proc/{pid}/exe") == str(extracted)
    finally:
        run_mirror("registry", "down", "--purge", "--state-dir", state_dir, env=env)
    assert registries_running("binary", state_dir, None) == 0 and not state_dir.exists()


def layer_tar(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return raw.getvalue()


def image_bundle(tmp_path: Path, layer: bytes, diff_id: str | None = None) -> Path:
    """A one-layer linux/amd64 registry image in a bundle."""
    from mirror.bundle.format import ImageRecord
    from mirror.model.oci import DOCKER_MANIFEST
    from registry_image import _image

    store = BlobStore(tmp_path / "store")
    image = _image(store, layer, "amd64", {"Cmd": ["serve"]})
    if diff_id is not None:  # the config names another diff_id: rebuild config and manifest around it
        manifest = json.loads(store.read(image["digest"]))
        config = json.loads(store.read(manifest["config"]["digest"]))
        config["rootfs"]["diff_ids"] = [diff_id]
        config_data = json.dumps(config).encode()
        store.put_bytes(sha256_digest(config_data), config_data)
        manifest["config"].update(digest=sha256_digest(config_data), size=len(config_data))
        manifest_data = json.dumps(manifest).encode()
        store.put_bytes(sha256_digest(manifest_data), manifest_data)
        image.update(digest=sha256_digest(manifest_data), size=len(manifest_data),
                     blobs=[sha256_digest(config_data), image["blobs"][1]])
    record = ImageRecord("docker.io/library/registry:2.8.2", image["digest"], DOCKER_MANIFEST, image["size"],
                         ["linux/amd64"], image["blobs"])
    return write_test_bundle(tmp_path / "bundle.tar.zst", store, [record])


def test_only_a_regular_file_at_bin_registry_is_taken(tmp_path):
    link = tarfile.TarInfo("bin/registry")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bundle = image_bundle(tmp_path, layer_tar(link))
    target = tmp_path / "out" / "registry"
    with pytest.raises(UsageError, match="has no /bin/registry"):
        extract_registry_binary(bundle, None, target)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == []


def test_a_layer_that_does_not_unpack_to_its_diff_id_is_refused(tmp_path):
    member = tarfile.TarInfo("bin/registry")
    member.size = 5
    layer = layer_tar(member, data=b"#!/x\n")
    bundle = image_bundle(tmp_path, layer, diff_id=sha256_digest(layer + b"other"))
    target = tmp_path / "out" / "registry"
    with pytest.raises(IntegrityError, match="does not unpack to"):
        extract_registry_binary(bundle, None, target)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == []


def test_an_oversized_pax_header_is_refused_before_it_is_read(tmp_path):
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 1 << 30  # claims 1 GiB; the layer holds a few bytes
    layer = header.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024
    bundle = image_bundle(tmp_path, layer)
    with pytest.raises(IntegrityError, match=f"refusing over {MAX_HEADER}"):
        extract_registry_binary(bundle, None, tmp_path / "out" / "registry")
