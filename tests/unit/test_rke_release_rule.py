"""RKE's own rule for the Kubernetes versions a release supports, and what is read from GitHub's tag list."""

from __future__ import annotations

import json

import pytest

from mirror.errors import UsageError
from mirror.kit.rke_release import _stable_tags, _unsupported

K8S = "v1.24.9-rancher1-1"


def snapshot(info: dict | None = None, versions=(K8S,)) -> dict:
    return {"K8sVersionRKESystemImages": {v: {"etcd": "rancher/etcd:v3"} for v in versions},
            "K8sVersionInfo": info or {}}


def test_a_release_supports_a_version_its_snapshot_lists_unless_its_entry_says_otherwise():
    assert _unsupported(snapshot(), "v1.4.2", K8S) is None
    assert _unsupported(snapshot(versions=()), "v1.4.2", K8S) == "does not list it"
    assert _unsupported(snapshot({K8S: {"minRKEVersion": "1.4.3-rc0"}}), "v1.4.2", K8S) \
        == "needs RKE v1.4.3 or later for it"
    assert _unsupported(snapshot({K8S: {"minRKEVersion": "1.4.2-rc0"}}), "v1.4.2", K8S) is None
    assert _unsupported(snapshot({K8S: {"deprecateRKEVersion": "1.4.2"}}), "v1.4.2", K8S) \
        == "deprecates it since RKE v1.4.2"


def test_a_snapshot_that_is_not_metadata_or_has_a_malformed_bound_is_refused():
    with pytest.raises(UsageError, match="not Kontainer Driver Metadata"):
        _unsupported({"K8sVersionInfo": {}}, "v1.4.2", K8S)
    with pytest.raises(UsageError, match="minRKEVersion '1.4; rm' is not a release version"):
        _unsupported(snapshot({K8S: {"minRKEVersion": "1.4; rm"}}), "v1.4.2", K8S)


def test_only_stable_release_tags_are_candidates():
    refs = [{"ref": "refs/tags/v1.4.2"}, {"ref": "refs/tags/v1.4.3-rc1"}, {"ref": "refs/tags/v1.4.4/../../x"},
            {"ref": "refs/heads/v1.9.9"}, {"ref": 7}, "refs/tags/v1.5.0", {"ref": "refs/tags/v1.3.24"}]
    assert _stable_tags(json.dumps(refs).encode(), "tags") == ["v1.4.2", "v1.3.24"]
    with pytest.raises(UsageError, match="tags: not a list of tags"):
        _stable_tags(b'{"message": "API rate limit exceeded"}', "tags")
