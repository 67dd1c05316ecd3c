"""`push --registry A --registry B`: one read of the bundle, every registry written, each failing alone."""

from __future__ import annotations

import pytest

from mirror.bundle.reader import BundleReader
from mirror.errors import ExitCode
from mirror.model.target import RegistryAddress
from mirror.transfer.plan import Target
from mirror.transfer.push import PushRequest, push_all
from support.fake_registry import FakeRegistry, by_host, error
from support.pulled import QUIET, plain, pulled, source  # noqa: F401 - source: a fixture

pytestmark = pytest.mark.anyio


def target(host: str) -> Target:
    return Target(RegistryAddress.parse(f"http://{host}"), plain(host))


async def test_one_read_of_the_bundle_fills_every_registry(source, tmp_path, monkeypatch):  # noqa: F811
    result = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    reads = []
    entries = BundleReader.entries
    monkeypatch.setattr(BundleReader, "entries", lambda self: reads.append(1) or entries(self))
    registries = {"a.test": FakeRegistry(), "b.test": FakeRegistry(), "c.test": FakeRegistry()}
    request = PushRequest(result.bundle.path, target("a.test"), also=(target("b.test"), target("c.test")),
                          http_transport=by_host(registries))
    reports = await push_all(request, QUIET)
    assert len(reads) == 1  # the tar was read once for three registries
    assert [r.registry for r in reports] == ["a.test", "b.test", "c.test"]
    expected = {"src.test/lib/app": {"1.0": source.tags["lib/app"]["1.0"]},
                "src.test/lib/tool": {"2": source.tags["lib/tool"]["2"]}}
    for report, registry in zip(reports, registries.values()):
        assert report.failures == {} and report.exit_code == ExitCode.OK and report.uploaded_blobs > 0
        assert registry.tags == expected


async def test_a_registry_failing_mid_push_gets_no_tag_and_holds_back_no_other(source, tmp_path):  # noqa: F811
    result = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    commits = []

    def dies_after_one_blob(request):
        """b.test takes one blob, then answers every write with 503: a registry going down mid-push."""
        if request.method in ("PUT", "POST", "PATCH") and "/blobs/uploads/" in request.url.path:
            if "digest" in request.url.params:
                commits.append(request.url.params["digest"])
            if len(commits) > 1:
                return error(503, "UNAVAILABLE", "going down")
        return None

    healthy, dying = FakeRegistry(), FakeRegistry(fault=dies_after_one_blob)
    request = PushRequest(result.bundle.path, target("a.test"), also=(target("b.test"),),
                          http_transport=by_host({"a.test": healthy, "b.test": dying}))
    first, second = await push_all(request, QUIET)
    assert first.failures == {} and set(healthy.tags) == {"src.test/lib/app", "src.test/lib/tool"}
    assert second.exit_code == ExitCode.FAILED and set(second.failures) == {
        "src.test/lib/app:1.0", "src.test/lib/tool:2"}
    assert all("b.test" in reason for reason in second.failures.values())
    assert dying.tags == {}  # no tag on an incomplete image there
    assert not [line for line in dying.writes() if "/manifests/1.0" in line or "/manifests/2" in line]


async def test_a_registry_refusing_at_the_start_fails_alone(source, tmp_path):  # noqa: F811
    result = await pulled(source, tmp_path, "lib/tool:2")
    refusing = FakeRegistry(auth="basic", credentials=("bob", "right"))
    healthy = FakeRegistry()
    request = PushRequest(result.bundle.path, target("a.test"), also=(target("b.test"),),
                          http_transport=by_host({"a.test": refusing, "b.test": healthy}))
    first, second = await push_all(request, QUIET)
    assert first.exit_code == ExitCode.AUTH and "a.test" in first.failures["src.test/lib/tool:2"]
    assert second.failures == {} and healthy.tags == {"src.test/lib/tool": {"2": source.tags["lib/tool"]["2"]}}


async def test_blobs_larger_than_the_window_are_copied_to_every_registry_from_one_stream(source, tmp_path):  # noqa: F811
    result = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    registries = {"a.test": FakeRegistry(), "b.test": FakeRegistry()}
    request = PushRequest(result.bundle.path, target("a.test"), also=(target("b.test"),), window=64,
                          http_transport=by_host(registries))
    reports = await push_all(request, QUIET)
    for report, registry in zip(reports, registries.values()):
        assert report.failures == {}, report.failures
        assert registry.tags["src.test/lib/app"] == {"1.0": source.tags["lib/app"]["1.0"]}
