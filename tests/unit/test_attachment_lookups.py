"""An attachment lookup that fails is its image's failure, said in one line with the error's exit code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mirror.errors import AuthError, DiskFull, ExitCode, MirrorError, Unreachable
from mirror.transfer import attachments
from mirror.transfer.attachments import PullAttachments

pytestmark = pytest.mark.anyio

IMAGE = SimpleNamespace(ref="src.test/lib/app:1.0", location=SimpleNamespace(host="src.test", repository="lib/app"),
                        narrowed_from=None, digest="sha256:" + "a" * 64, children=[])


class Pool:
    async def get(self, host: str) -> object:
        return object()


@pytest.mark.parametrize("raised, code", [
    (Unreachable("src.test stopped answering", "src.test"), ExitCode.FAILED),  # error classes that take more
    (DiskFull("no room in /work", "/work", "writing a signature"), ExitCode.FAILED),  # than a message
    (AuthError("src.test refused the token"), ExitCode.AUTH),
])
async def test_a_failed_lookup_fails_its_image_naming_it_with_the_errors_code(monkeypatch, raised, code):
    async def find(*args, **kwargs):
        raise raised

    monkeypatch.setattr(attachments, "find", find)
    lookups = PullAttachments(Pool(), store=None, want=lambda image: None, enabled=True, keys=[])
    await lookups._look_up(IMAGE)
    failed = lookups.failed[id(IMAGE)]
    assert isinstance(failed, MirrorError) and failed.exit_code == code
    assert str(failed) == f"{IMAGE.ref}: looking up its signatures and attachments: {raised}"
