"""Session fixture: one loopback registry seeded with the small corpus, standing in for docker.io and quay.io.

Registered from tests/conftest.py with ``pytest_plugins = ["support.corpus_fixtures"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from support import corpus, testbed
from support.cli import run_mirror


@dataclass
class SeededSource:
    registry: testbed.Registry
    corpus: corpus.Corpus
    mirror_args: list[str]  # --source-mirror flags that make mirror read this registry as upstream


def single_platform_image(seeded: corpus.Corpus) -> corpus.CorpusImage:
    """An image that is one manifest, no index: the shape where a platform comes from the config."""
    return next(image for image in seeded.images if len(image.platforms) == 1)


@pytest.fixture(scope="session")
def seeded_source(tmp_path_factory) -> SeededSource:
    """Read-only for tests: ``mirror pull docker.io/rancher/...`` with ``*seeded_source.mirror_args``."""
    registry = testbed.start_registry(tmp_path_factory.mktemp("source-registry"))
    try:
        generated = corpus.generate_corpus(tmp_path_factory.mktemp("corpus"), corpus.small_spec())
        seeded = corpus.seed_registry(registry.host, generated)
        yield SeededSource(registry, seeded, corpus.source_mirror_args(registry.host))
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def corpus_bundle(seeded_source, tmp_path_factory):
    """Every image of the small corpus pulled once into one bundle; read-only for tests."""
    output = tmp_path_factory.mktemp("corpus-bundle") / "bundle.tar.zst"
    refs = [image.source for image in seeded_source.corpus.images]
    result = run_mirror("pull", *refs, "-o", output, *seeded_source.mirror_args, "-q")
    assert result.returncode == 0, result.stderr
    return output
