"""Session fixture: one loopback registry seeded with the small corpus, standing in for docker.io and quay.io.

Registered from tests/conftest.py with ``pytest_plugins = ["corpus_fixtures"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import corpus
import testbed


@dataclass
class SeededSource:
    registry: testbed.Registry
    corpus: corpus.Corpus
    mirror_args: list[str]  # --source-mirror flags that make mirror read this registry as upstream


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
