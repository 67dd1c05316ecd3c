"""sync's own rules, in-process: retag policies, immutable entries, rate limits, streamed blobs re-hashed, dry run."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from mirror.errors import ExitCode, ImagesFailed
from mirror.model.reference import Reference
from mirror.model.target import RegistryAddress, backup_tag
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.settings import RegistrySettings
from mirror.transfer.plan import Target
from mirror.transfer.pull import PullRequest, pull
from mirror.transfer.selection import SyncImage
from mirror.transfer.sync import SyncRequest, sync
from support.fake_registry import FakeRegistry, answer, by_host, digest_of
from support.images import image, index, seed

pytestmark = pytest.mark.anyio

SOURCE, TARGET = "src.test", "target.test"
REF = f"{SOURCE}/lib/app:1.0"
LANDED = "src.test/lib/app"  # where REF lands in the target
QUIET = Progress(quiet=True)


def plain(host: str) -> RegistrySettings:
    return RegistrySettings(plain_http=True, retries=0)


@pytest.fixture
def ends():
    """(source, target): the source's lib/app:1.0 is ``new``; the target's tag still has ``old``."""
    source, target, old, new = FakeRegistry(), FakeRegistry(), image("old"), image("new")
    seed(source, "lib/app", new, "1.0")
    seed(target, LANDED, old, "1.0")
    return source, target, old, new


async def run(source: FakeRegistry, target: FakeRegistry, *images: SyncImage, progress: Progress = QUIET, **options):
    request = SyncRequest(list(images), Target(RegistryAddress.parse(f"http://{TARGET}"), plain(TARGET)),
                          SourceMap(), plain, http_transport=by_host({SOURCE: source, TARGET: target}), **options)
    return await sync(request, progress)


class Bars(Progress):
    """Quiet, but keeps each bar's total and the sum of its updates: ``counted[desc] == [total, sum]``."""

    def __init__(self):
        super().__init__(quiet=True)
        self.counted: dict[str, list[int]] = {}

    @contextmanager
    def bar(self, total, desc, unit="B"):
        counted = self.counted[desc] = [total, 0]

        class Counting:
            def update(self, n: int = 1) -> None:
                counted[1] += n

        yield Counting()


async def test_a_moved_tag_is_updated_by_default(ends):
    source, target, old, new = ends
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    (entry,) = result.images
    assert (entry.action, entry.old_digest, entry.new_digest) == ("updated", old.digest, new.digest)
    assert target.tags[LANDED] == {"1.0": new.digest}


async def test_the_tag_is_asked_at_the_target_once_and_moved_from_what_that_answer_said(ends):
    source, target, old, new = ends
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    # the check's HEAD is the tag step's too: a registry's CPU per request, one request per image spared
    assert target.requests.count(f"HEAD /v2/{LANDED}/manifests/1.0") == 1
    assert (result.images[0].old_digest, target.tags[LANDED]) == (old.digest, {"1.0": new.digest})
    assert result.tags_pushed == 1


async def test_a_repository_new_to_the_target_is_listed_once_instead_of_a_head_per_blob():
    source, target, app = FakeRegistry(), FakeRegistry(), image("app", layers=3)
    seed(source, "lib/app", app, "1.0")
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    assert [line for line in target.requests if line.startswith(("HEAD ", "GET "))] == [
        "GET /v2/", f"HEAD /v2/{LANDED}/manifests/1.0", f"GET /v2/{LANDED}/tags/list"]
    assert target.tags[LANDED] == {"1.0": app.digest} and result.uploaded_blobs == len(app.blobs)


async def test_blobs_an_interrupted_run_left_in_a_repository_without_tags_are_neither_read_nor_sent_again():
    source, target, app = FakeRegistry(), FakeRegistry(), image("app", layers=3)
    seed(source, "lib/app", app, "1.0")
    left = list(app.blobs.values())[:2]
    for data in left:  # the run before stopped after these, before any manifest or tag
        target.add_blob(LANDED, data)
    bars = Bars()
    result = await run(source, target, SyncImage(Reference.parse(REF)), progress=bars)
    assert bars.counted["copying"] == [sum(len(data) for data in app.blobs.values())] * 2  # its end reached
    kept = {digest_of(data) for data in left}
    assert not [line for line in source.requests if "/blobs/" in line and line.rsplit("/", 1)[1] in kept]
    sent = [line for line in target.writes() if line.startswith("PUT ") and "/blobs/uploads/" in line]
    assert len(sent) == result.uploaded_blobs == len(app.blobs) - 2 and result.skipped_blobs == 2
    assert result.images[0].action == "copied" and target.tags[LANDED] == {"1.0": app.digest}


async def test_a_new_tag_in_a_repository_with_tags_has_its_blobs_asked_before_any_is_read():
    source, target = FakeRegistry(), FakeRegistry()
    base = b"a base layer both tags share " * 40
    old, new = image("old", shared=[base]), image("new", shared=[base])
    seed(source, "lib/app", new, "1.0")
    seed(target, LANDED, old, "0.9")
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    assert f"HEAD /v2/{LANDED}/blobs/{digest_of(base)}" in target.requests
    assert not [line for line in source.requests if line.endswith(digest_of(base))]
    assert result.skipped_blobs == 1 and target.tags[LANDED] == {"0.9": old.digest, "1.0": new.digest}


async def test_on_retag_backup_keeps_the_old_image_under_a_backup_tag_first(ends):
    source, target, old, new = ends
    await run(source, target, SyncImage(Reference.parse(REF), on_retag="backup"))
    backup = backup_tag("1.0", old.digest)
    assert target.tags[LANDED] == {"1.0": new.digest, backup: old.digest}
    writes = target.writes()
    assert writes.index(f"PUT /v2/{LANDED}/manifests/{backup}") < writes.index(f"PUT /v2/{LANDED}/manifests/1.0")


async def test_on_retag_fail_leaves_the_tag_and_writes_nothing(ends):
    source, target, old, _ = ends
    result = await run(source, target, SyncImage(Reference.parse(REF), on_retag="fail"))
    assert result.images[0].action == "failed" and "on_retag: fail" in result.images[0].error
    assert target.tags[LANDED] == {"1.0": old.digest} and target.writes() == []


async def test_an_immutable_tag_moved_upstream_is_reported_moved_and_left_as_it_is(ends):
    source, target, old, new = ends
    result = await run(source, target, SyncImage(Reference.parse(REF), immutable=True))
    (entry,) = result.images
    assert (entry.action, entry.old_digest, entry.new_digest) == ("moved", old.digest, new.digest)
    assert target.tags[LANDED] == {"1.0": old.digest} and target.writes() == []
    assert [line.split(" ")[0] for line in source.requests] == ["HEAD"]  # free on Docker Hub: no pull counted


async def test_a_spent_rate_limit_defers_the_image_to_the_next_run(ends):
    source, target, old, _ = ends

    def rate_limited(request):
        if request.method == "HEAD" and "/manifests/" in request.url.path:
            data, media_type = source.manifests[source.tags["lib/app"]["1.0"]]
            return answer(200, headers={
                "Content-Type": media_type, "Docker-Content-Digest": source.tags["lib/app"]["1.0"],
                "Content-Length": str(len(data)), "RateLimit-Remaining": "0;w=21600", "RateLimit-Limit": "100;w=21600"})
        return None

    source.fault = rate_limited
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    assert result.images[0].action == "deferred" and result.exit_code == ExitCode.DEFERRED
    assert "its window is 21600 s" in result.images[0].error
    assert (result.ratelimits[SOURCE].remaining, result.ratelimits[SOURCE].limit) == (0, 100)
    assert target.writes() == [] and not any(line.startswith("GET") for line in source.requests)


async def test_a_multi_arch_image_costs_a_pull_per_manifest_get_and_waits_whole_when_they_do_not_fit():
    """Docker Hub charges the index and each platform manifest: 3 pulls left pay for a single image (1) and
    not for the two-platform image after it (3); the one after that waits too, in the job's order."""
    source, target = FakeRegistry(), FakeRegistry()
    seed(source, "lib/one", image("one"), "1")
    seed(source, "lib/multi", index(image("m-amd64"), image("m-arm64", arch="arm64")), "2")
    seed(source, "lib/last", image("last"), "3")

    def three_pulls_left(request):
        if request.method == "HEAD" and "/manifests/" in request.url.path:
            repository, tag = request.url.path.split("/v2/")[1].split("/manifests/")
            digest = source.tags[repository].get(tag)
            if digest is None:  # an attachment's tag: not there
                return None
            data, media_type = source.manifests[digest]
            return answer(200, headers={"Content-Type": media_type, "Docker-Content-Digest": digest,
                                        "Content-Length": str(len(data)), "RateLimit-Remaining": "3;w=21600"})
        return None

    source.fault = three_pulls_left
    result = await run(source, target, *(SyncImage(Reference.parse(f"{SOURCE}/{r}"))
                                         for r in ("lib/one:1", "lib/multi:2", "lib/last:3")))
    assert [(i.source, i.action) for i in result.images] == [
        (f"{SOURCE}/lib/one:1", "copied"), (f"{SOURCE}/lib/multi:2", "deferred"), (f"{SOURCE}/lib/last:3", "deferred")]
    assert "src.test's rate limit is spent (its window is 21600 s)" in result.images[1].error
    assert result.exit_code == ExitCode.DEFERRED and set(target.tags) == {"src.test/lib/one"}
    gets = [line for line in source.requests if line.startswith("GET ") and "/manifests/" in line]
    assert len(gets) <= 3  # never more than the source said was left: no 429 mid-run
    assert not [line for line in gets if "lib/last" in line]


async def test_a_blob_altered_on_the_way_is_never_written_and_fails_its_image(ends):
    source, target, _, new = ends
    layer = new.top.children()[1].digest

    def altered(request):
        if request.method == "GET" and request.url.path.endswith(layer):
            return answer(200, new.blobs[layer][:-1] + b"!")
        return None

    source.fault = altered
    result = await run(source, target, SyncImage(Reference.parse(REF)))
    assert result.images[0].action == "failed" and "hashing to" in result.images[0].error
    assert not target.has(LANDED, layer) and target.tags[LANDED]["1.0"] != new.digest
    assert result.exit_code == ExitCode.INTEGRITY


async def test_a_dry_run_says_what_would_change_and_writes_nothing(ends):
    source, target, _, _ = ends
    result = await run(source, target, SyncImage(Reference.parse(REF)), dry_run=True)
    assert result.images[0].action == "updated" and result.dry_run
    assert target.writes() == [] and not any(line.startswith("GET") for line in source.requests)


async def test_without_keep_going_one_missing_image_means_nothing_is_written(ends):
    source, target, _, _ = ends
    images = [SyncImage(Reference.parse(REF)), SyncImage(Reference.parse(f"{SOURCE}/lib/gone:1"))]
    result = await run(source, target, *images)
    assert sorted(i.action for i in result.images) == ["failed", "failed"] and target.writes() == []
    assert "--keep-going copies the rest" in next(i.error for i in result.images if "app" in i.source)
    kept = await run(source, target, *images, keep_going=True)
    assert sorted(i.action for i in kept.images) == ["failed", "updated"] and kept.result == "partial"


async def test_a_pull_with_a_missing_image_writes_no_bundle_unless_told_to_keep_going(tmp_path):
    source = FakeRegistry()
    seed(source, "lib/app", image("app"), "1.0")
    refs = [Reference.parse(REF), Reference.parse(f"{SOURCE}/lib/gone:1")]

    def request(**options) -> PullRequest:
        return PullRequest(images=refs, output=tmp_path / "b.tar.zst", sources=SourceMap(), settings_for=plain,
                           http_transport=source, **options)

    with pytest.raises(ImagesFailed) as failed:
        await pull(request(), QUIET)
    assert list(failed.value.failures) == [f"{SOURCE}/lib/gone:1"] and not (tmp_path / "b.tar.zst").exists()
    result = await pull(request(keep_going=True), QUIET)
    assert [r.source for r in result.images] == [REF] and result.exit_code == ExitCode.FAILED
    assert (tmp_path / "b.tar.zst").is_file()
