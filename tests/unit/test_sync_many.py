"""`sync run --to A --to B`: one read of the sources, every target written, each failing alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.errors import ExitCode, LockHeld, UsageError
from mirror.model.reference import Reference
from mirror.model.target import RegistryAddress
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.settings import RegistrySettings
from mirror.runlock import RunLock
from mirror.transfer.plan import Target
from mirror.transfer.selection import SyncImage
from mirror.transfer.sync import SyncRequest, sync_all
from mirror.transfer.sync_config import load_config
from mirror.transfer.sync_result import runs_to_json, worst_exit
from support.fake_registry import FakeRegistry, answer, by_host, error
from support.images import image, seed

pytestmark = pytest.mark.anyio

SOURCE = "src.test"
QUIET = Progress(quiet=True)


def plain(host: str) -> RegistrySettings:
    return RegistrySettings(plain_http=True, retries=0)


def target(host: str) -> Target:
    return Target(RegistryAddress.parse(f"http://{host}"), plain(host))


@pytest.fixture
def source():
    registry = FakeRegistry()
    seed(registry, "lib/app", image("app", layers=3), "1.0")
    seed(registry, "lib/tool", image("tool", layers=2), "2")
    return registry


async def run(source: FakeRegistry, targets: dict[str, FakeRegistry], **options):
    first, *also = [target(host) for host in targets]
    request = SyncRequest([SyncImage(Reference.parse(f"{SOURCE}/lib/app:1.0")),
                           SyncImage(Reference.parse(f"{SOURCE}/lib/tool:2"))], first, SourceMap(), plain,
                          http_transport=by_host({SOURCE: source, **targets}), also=tuple(also), **options)
    return await sync_all(request, QUIET)


def blob_reads(registry: FakeRegistry) -> list[str]:
    return [line for line in registry.requests if line.startswith("GET ") and "/blobs/" in line]


async def test_one_read_of_the_sources_fills_every_target(source):
    targets = {"a.test": FakeRegistry(), "b.test": FakeRegistry(), "c.test": FakeRegistry()}
    results = await run(source, targets)
    reads = blob_reads(source)
    assert len(reads) == len(set(reads)) == len(source.blobs)  # each blob read once for three targets
    manifest_reads = [line for line in source.requests if line.startswith("GET ") and "/manifests/" in line]
    assert len(manifest_reads) == len(set(manifest_reads))  # each manifest too
    assert [r.target for r in results] == ["a.test", "b.test", "c.test"]
    expected = {"src.test/lib/app": {"1.0": source.tags["lib/app"]["1.0"]},
                "src.test/lib/tool": {"2": source.tags["lib/tool"]["2"]}}
    for result, registry in zip(results, targets.values()):
        assert {i.action for i in result.images} == {"copied"} and result.exit_code == ExitCode.OK
        assert registry.tags == expected and result.uploaded_blobs == len(source.blobs)
    assert len({r.run_id for r in results}) == 1


async def test_a_target_failing_mid_copy_gets_no_tag_and_holds_back_no_other(source):
    def refuses_blobs(request):
        if request.method in ("PUT", "PATCH") and "/blobs/uploads/" in request.url.path:
            return error(503, "UNAVAILABLE", "going down")
        return None

    healthy, dying = FakeRegistry(), FakeRegistry(fault=refuses_blobs)
    first, second = await run(source, {"a.test": healthy, "b.test": dying})
    assert {i.action for i in first.images} == {"copied"} and set(healthy.tags) == {
        "src.test/lib/app", "src.test/lib/tool"}
    assert {i.action for i in second.images} == {"failed"} and dying.tags == {}
    assert second.exit_code == ExitCode.FAILED and worst_exit([first, second]) == ExitCode.FAILED
    document = runs_to_json([first, second])
    assert document["result"] == "partial" and document["exit_code"] == 1
    assert [t["result"] for t in document["targets"]] == ["ok", "failed"]


async def test_a_target_out_of_reach_fails_alone(source):
    def down(request):
        return error(503, "UNAVAILABLE", "down for maintenance")

    first, second = await run(source, {"a.test": FakeRegistry(fault=down), "b.test": FakeRegistry()})
    assert {i.action for i in first.images} == {"failed"} and "a.test" in first.images[0].error
    assert {i.action for i in second.images} == {"copied"}


async def test_an_image_unchanged_at_one_target_is_copied_only_to_the_other(source):
    there, empty = FakeRegistry(), FakeRegistry()
    seed(there, "src.test/lib/app", image("app", layers=3), "1.0")
    seed(there, "src.test/lib/tool", image("tool", layers=2), "2")
    first, second = await run(source, {"a.test": there, "b.test": empty})
    assert {i.action for i in first.images} == {"unchanged"} and there.writes() == []
    assert {i.action for i in second.images} == {"copied"}


async def test_a_spent_rate_limit_defers_an_image_at_every_target_and_counts_it_once(source):
    def one_pull_left(request):
        if request.method == "HEAD" and "/manifests/" in request.url.path:
            repository = request.url.path.split("/v2/")[1].split("/manifests/")[0]
            digest = next(iter(source.tags[repository].values()))
            data, media_type = source.manifests[digest]
            return answer(200, headers={"Content-Type": media_type, "Docker-Content-Digest": digest,
                                        "Content-Length": str(len(data)), "RateLimit-Remaining": "1;w=60"})
        return None

    source.fault = one_pull_left
    first, second = await run(source, {"a.test": FakeRegistry(), "b.test": FakeRegistry()})
    for result in (first, second):  # one pull left: the first image for both targets, the second for neither
        assert [i.action for i in result.images] == ["copied", "deferred"]
    assert worst_exit([first, second]) == ExitCode.DEFERRED


def test_a_config_names_several_targets_or_one(tmp_path: Path):
    config = tmp_path / "sync.yaml"
    config.write_text("targets:\n  - registry: a.test:5000\n  - registry: b.test/mirror\n"
                      "images:\n  - image: docker.io/library/busybox:1.36\n")
    job = load_config(config)
    assert [str(t.address) for t in job.request.targets] == ["a.test:5000", "b.test/mirror"]
    config.write_text("target:\n  registry: a.test:5000\ntargets:\n  - registry: b.test\n"
                      "images:\n  - image: docker.io/library/busybox:1.36\n")
    with pytest.raises(UsageError, match="not both"):
        load_config(config)
    config.write_text("targets:\n  - registry: a.test\n  - registry: a.test\nimages:\n  - image: docker.io/library/busybox:1.36\n")
    with pytest.raises(UsageError, match="each registry once"):
        load_config(config)


async def test_a_target_retrying_a_blob_reads_it_again_and_the_others_keep_their_one_read(source):
    failed_once: list[str] = []

    def drops_one_upload(request):
        """b.test answers the first blob commit with a 500: its upload is retried, from the source."""
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path and not failed_once:
            failed_once.append(request.url.params["digest"])
            return error(500, "UNKNOWN", "try again")
        return None

    retrying = {"a.test": FakeRegistry(), "b.test": FakeRegistry(fault=drops_one_upload)}
    first, *also = [Target(RegistryAddress.parse(f"http://{host}"), RegistrySettings(plain_http=True, retries=1))
                    for host in retrying]
    request = SyncRequest([SyncImage(Reference.parse(f"{SOURCE}/lib/app:1.0"))], first, SourceMap(), plain,
                          http_transport=by_host({SOURCE: source, **retrying}), also=tuple(also))
    results = await sync_all(request, QUIET)
    assert [{i.action for i in r.images} for r in results] == [{"copied"}, {"copied"}]
    (again,) = failed_once
    reads = blob_reads(source)
    assert sum(again in line for line in reads) == 2 and len(reads) == len(set(reads)) + 1


def test_a_run_into_several_targets_holds_each_targets_lock_and_none_when_one_is_taken(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = tmp_path / "sync.yaml"
    config.write_text("targets:\n  - registry: a.test\n  - registry: b.test\nimages:\n"
                      "  - image: docker.io/library/busybox:1.36\n")
    job = load_config(config)
    with job.lock():
        with pytest.raises(LockHeld):
            with job.lock():
                pass
    b_alone = RunLock(f"sync {config.resolve()} -> b.test", "sync to b.test")
    with b_alone:  # b.test busy: the run takes neither lock
        with pytest.raises(LockHeld):
            with job.lock():
                pass
        with RunLock(f"sync {config.resolve()} -> a.test", "sync to a.test"):
            pass  # a.test's lock was let go
