"""The pure model: registry addresses, the image graph walker, the fan-out helper."""

from __future__ import annotations

import anyio
import pytest

from mirror.errors import IntegrityError, UsageError
from mirror.model import graph
from mirror.model.oci import DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Manifest
from mirror.model.reference import canonical_registry, endpoint_host
from mirror.model.target import RegistryAddress
from mirror.model.upstream import SourceMirror
from mirror.transfer.tasks import each

LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"


@pytest.mark.parametrize("text, host, prefix, plain", [
    ("reg.example:5000", "reg.example:5000", "", False),
    ("reg.example:5000/harbor/project/", "reg.example:5000", "harbor/project", False),
    ("http://127.0.0.1:5000/p", "127.0.0.1:5000", "p", True),
    ("https://reg.example", "reg.example", "", False),
])
def test_registry_address_means_the_same_everywhere(text, host, prefix, plain):
    address = RegistryAddress.parse(text)
    assert (address.host, address.prefix, address.plain_http) == (host, prefix, plain)
    mirror = SourceMirror.parse(f"docker.io={text}")  # --source-mirror reads it with the same parser
    assert (mirror.host, mirror.prefix, mirror.plain_http) == (host, prefix, plain)


@pytest.mark.parametrize("text", ["reg.example:5000/Upper", "bad host", "reg..example", "reg:port/x"])
def test_a_bad_registry_address_names_the_option_and_the_text(text):
    with pytest.raises(UsageError, match=r"--to .*expected HOST\[:PORT\]\[/PREFIX\]"):
        RegistryAddress.parse(text, "--to")


def test_docker_hub_has_one_name_and_one_api_host():
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert canonical_registry(alias) == "docker.io"
    assert endpoint_host("docker.io") == "registry-1.docker.io"
    assert endpoint_host("quay.io") == "quay.io" and canonical_registry("quay.io") == "quay.io"


def _manifest(media_type: str, children: list[Descriptor]) -> Manifest:
    import json

    key = "manifests" if media_type == DOCKER_LIST else "layers"
    doc = {"schemaVersion": 2, "mediaType": media_type, key: [c.to_json() for c in children]}
    if key == "layers":
        doc["config"] = children[0].to_json()
        doc["layers"] = [c.to_json() for c in children[1:]]
    return Manifest.from_bytes(json.dumps(doc).encode(), media_type)


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def test_graph_walk_yields_children_before_parents_each_once_and_skips_what_is_seen():
    config, shared, own_a, own_b = (Descriptor(CONFIG if i == 0 else LAYER, _digest(i), 10 + i) for i in range(4))
    amd = _manifest(DOCKER_MANIFEST, [config, shared, own_a])
    arm = _manifest(DOCKER_MANIFEST, [config, shared, own_b])
    index = _manifest(DOCKER_LIST, [amd.descriptor, arm.descriptor])
    loaded = {m.digest: m for m in (amd, arm, index)}

    order = [d.digest for d in graph.walk(index.descriptor, lambda d: loaded.get(d.digest))]
    assert order[-1] == index.digest
    assert len(order) == len(set(order)) == 7
    for manifest in (amd, arm):
        assert all(order.index(c.digest) < order.index(manifest.digest) for c in manifest.children())

    seen = {amd.digest}  # e.g. what a delta's base already has: skipped with everything only it reaches
    rest = [d.digest for d in graph.walk(index.descriptor, lambda d: loaded.get(d.digest), seen)]
    assert amd.digest not in rest and own_a.digest not in rest and own_b.digest in rest
    assert graph.layer_blobs([amd, index]) == {d.digest: d.size for d in (config, shared, own_a)}


def test_each_runs_every_item_within_the_limit_and_propagates_the_first_error():
    running, peak, done = 0, 0, []

    async def work(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.001)
        running -= 1
        done.append(item)

    anyio.run(each, range(50), work, 4)
    assert sorted(done) == list(range(50)) and peak == 4

    async def failing(item: int) -> None:
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(BaseException) as raised:  # a task group's error, possibly in an exception group
        anyio.run(each, range(10), failing, 2)
    error = raised.value
    while hasattr(error, "exceptions"):
        (error,) = error.exceptions
    assert isinstance(error, ValueError) and str(error) == "item 3"


@pytest.mark.parametrize("size", [True, 1.5, " 12", "12", "1_000", -1, 1 << 63, None])
def test_a_descriptor_size_is_a_json_integer_byte_count(size):
    good = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 12}
    assert Descriptor.from_json(good).size == 12
    with pytest.raises(IntegrityError, match="malformed descriptor"):
        Descriptor.from_json({**good, "size": size})


@pytest.mark.parametrize("tag", ["v١.٢.٣", "1.2.3-١", "v1.2.3-²"])
def test_a_version_is_spelled_in_ascii_digits(tag):
    from mirror.model.semver import Version

    assert Version.parse(tag) is None  # \d took '١' for a digit, and int() read it
    assert Version.parse("v1.2.3-rc.2") < Version.parse("v1.2.3-rc.10") < Version.parse("v1.2.3")
