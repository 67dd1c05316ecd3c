"""pull, push and sync as whole operations, in-process: source and target are fake registries."""

from __future__ import annotations

import pytest

from mirror.errors import DeltaBaseMissing, ExitCode
from mirror.model.oci import Platform
from mirror.model.reference import Reference
from mirror.model.target import RegistryAddress
from mirror.model.upstream import SourceMap
from mirror.transfer.delta import load_base
from mirror.transfer.plan import Target
from mirror.transfer.push import PushRequest, push
from mirror.transfer.selection import SyncImage
from mirror.transfer.sync import SyncRequest, sync
from support.fake_registry import FakeRegistry, by_host, error
from support.pulled import QUIET, SOURCE, plain, pulled, source  # noqa: F401 - source: a fixture

pytestmark = pytest.mark.anyio

TARGET = "target.test"


def target() -> Target:
    return Target(RegistryAddress.parse(f"http://{TARGET}"), plain(TARGET))


async def test_a_pulled_bundle_pushes_into_an_empty_registry_tags_last(source, tmp_path):
    result = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    assert result.failures == {} and result.bundle is not None
    registry = FakeRegistry()
    report = await push(PushRequest(result.bundle.path, target(), http_transport=registry), QUIET)
    assert report.failures == {} and report.exit_code == ExitCode.OK
    assert registry.tags == {"src.test/lib/app": {"1.0": source.tags["lib/app"]["1.0"]},
                             "src.test/lib/tool": {"2": source.tags["lib/tool"]["2"]}}
    writes = registry.writes()
    tags = [line for line in writes if line.endswith(("/manifests/1.0", "/manifests/2"))]
    assert len(tags) == 2 and writes[-2:] == sorted(tags, key=writes.index)
    assert report.mounted_blobs == 1  # the common base layer: uploaded once, mounted into the other repository


async def test_a_second_push_of_the_same_bundle_writes_nothing(source, tmp_path):
    result = await pulled(source, tmp_path, "lib/app:1.0")
    registry = FakeRegistry()
    await push(PushRequest(result.bundle.path, target(), http_transport=registry), QUIET)
    before = len(registry.writes())
    report = await push(PushRequest(result.bundle.path, target(), http_transport=registry), QUIET)
    assert len(registry.writes()) == before and [i["change"] for i in report.images] == ["unchanged"]


async def test_a_pull_narrowed_by_platform_pushes_the_narrowed_index(source, tmp_path):
    result = await pulled(source, tmp_path, "lib/app:1.0", platforms=[Platform.parse("linux/arm64")])
    record = result.images[0]
    assert record.narrowed_from == source.tags["lib/app"]["1.0"] and record.digest != record.narrowed_from
    registry = FakeRegistry()
    await push(PushRequest(result.bundle.path, target(), http_transport=registry), QUIET)
    assert registry.tags["src.test/lib/app"]["1.0"] == record.digest


async def test_a_push_whose_blob_upload_fails_tags_nothing_of_that_image(source, tmp_path):
    result = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    tool_only = [d.replace(":", "%3A") for d in result.images[1].blobs if d not in result.images[0].blobs]

    def refuse(request):  # the registry finds the tool's own layers corrupt
        if request.method == "PUT" and any(f"digest={d}" in str(request.url) for d in tool_only):
            return error(400, "DIGEST_INVALID")
        return None

    registry = FakeRegistry(fault=refuse)
    report = await push(PushRequest(result.bundle.path, target(), http_transport=registry), QUIET)
    assert list(report.failures) == [f"{SOURCE}/lib/tool:2"] and report.exit_code == ExitCode.INTEGRITY
    assert "src.test/lib/tool" not in registry.tags and "1.0" in registry.tags["src.test/lib/app"]


async def test_a_delta_whose_base_is_not_in_the_target_writes_nothing(source, tmp_path):
    full = await pulled(source, tmp_path, "lib/tool:2")
    base = load_base([full.bundle.path])
    (tmp_path / "delta").mkdir()
    delta = await pulled(source, tmp_path / "delta", "lib/app:1.0", base=base)
    assert delta.kind == "delta" and delta.omitted == 1  # the common base layer
    registry = FakeRegistry()
    with pytest.raises(DeltaBaseMissing):
        await push(PushRequest(delta.bundle.path, target(), http_transport=registry), QUIET)
    assert registry.writes() == []
    await push(PushRequest(full.bundle.path, target(), http_transport=registry), QUIET)
    report = await push(PushRequest(delta.bundle.path, target(), http_transport=registry), QUIET)
    assert report.failures == {} and "1.0" in registry.tags["src.test/lib/app"]


async def test_sync_copies_from_source_to_target_then_finds_nothing_to_do(source):
    destination = FakeRegistry()
    request = SyncRequest([SyncImage(Reference.parse(f"{SOURCE}/{r}")) for r in ("lib/app:1.0", "lib/tool:2")],
                          target(), SourceMap(), plain, http_transport=by_host({SOURCE: source, TARGET: destination}))
    result = await sync(request, QUIET)
    assert [i.action for i in result.images] == ["copied", "copied"] and result.exit_code == ExitCode.OK
    assert destination.tags["src.test/lib/app"]["1.0"] == source.tags["lib/app"]["1.0"]
    writes = destination.writes()
    assert all("/manifests/sha256:" in line or "/blobs/" in line for line in writes[:-2])
    again = await sync(request, QUIET)
    assert [i.action for i in again.images] == ["unchanged", "unchanged"]
    assert destination.writes() == writes


async def test_a_spool_dir_that_is_not_there_fails_the_push_before_any_blob_as_itself(source, tmp_path):
    result = await pulled(source, tmp_path, "lib/app:1.0")
    registry = FakeRegistry()
    with pytest.raises(FileNotFoundError):  # the error itself (the CLI's one line), not a task group's
        await push(PushRequest(result.bundle.path, target(), spool_dir=tmp_path / "gone", space_check=False,
                               http_transport=registry), QUIET)
    assert registry.writes() == []
