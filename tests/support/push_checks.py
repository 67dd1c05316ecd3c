"""What a push or sync sent and left behind: read from a FaultProxy's log and from the registry itself."""

from __future__ import annotations

import hashlib
import re

import httpx


def tags_sent(proxy, repository: str | None = None) -> list[str]:
    """Manifest PUTs by tag (not by digest) that reached the proxy: what push decided to tag.

    The registry itself refuses a manifest whose blobs are missing, so only
    push's own requests show whether it tried to tag a broken image.
    """
    return [r.path for r in proxy.requests("PUT", "/manifests/")
            if "/manifests/sha256:" not in r.path and (repository is None or f"/v2/{repository}/" in r.path)]


ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


def catalog(registry) -> list[str]:
    """Every repository in the registry; raises when the registry does not answer with a list."""
    response = httpx.get(f"{registry.url}/v2/_catalog?n=1000")
    response.raise_for_status()
    return response.json()["repositories"]


def tags_of(registry, repository: str) -> list[str]:
    """The repository's tags; [] only when the registry says it has none, never when the call fails."""
    response = httpx.get(f"{registry.url}/v2/{repository}/tags/list")
    if response.status_code == 404 and "NAME_UNKNOWN" in response.text:
        return []
    response.raise_for_status()
    return response.json()["tags"] or []  # null: a repository whose tags are gone


def tags_pointing_at_incomplete_images(registry) -> list[str]:
    """Every tag in the registry whose image lacks a manifest or blob (must always be empty)."""
    client = httpx.Client(base_url=registry.url, timeout=10)
    broken = []
    for repository in catalog(registry):
        for tag in tags_of(registry, repository):
            pending = [f"/v2/{repository}/manifests/{tag}"]
            while pending:
                response = client.get(pending.pop(), headers={"Accept": ACCEPT})
                if response.status_code != 200:
                    broken.append(f"{repository}:{tag}")
                    break
                document = response.json()
                pending += [f"/v2/{repository}/manifests/{m['digest']}" for m in document.get("manifests", [])]
                for blob in [document.get("config"), *document.get("layers", [])]:
                    if blob and client.head(f"/v2/{repository}/blobs/{blob['digest']}").status_code != 200:
                        broken.append(f"{repository}:{tag}")
    return broken


def blobs_committed(proxy) -> list[str]:
    """Digests of every blob push asked the registry to commit (``PUT ...?digest=``), whatever the answer."""
    return [seen.query("digest") for seen in proxy.requests("PUT", r"/blobs/uploads/") if seen.query("digest")]


_WIRE_PATH = re.compile(r"/v2/(?P<repository>.+)/(?P<kind>blobs|manifests)/(?P<rest>[^?]*)")


def assert_manifests_follow_their_content(proxy, registry) -> int:
    """Every manifest PUT (by digest or by tag) arrived only after the registry had answered that
    everything it references is in that repository: a child manifest or blob seen there (HEAD 200),
    committed (PUT ?digest= 201), mounted (POST ?mount= 201) or pushed (manifest PUT 201); a tag also
    after its own manifest. What a manifest references is read back from the registry, not from
    mirror. Returns how many manifest PUTs were checked.
    """
    since: dict[tuple[str, str], int] = {}  # (repository, digest) -> when the registry said it had it

    def have(repository: str, digest: str | None, seen) -> None:
        key = (repository, digest)
        since[key] = min(since.get(key, seen.answered), seen.answered)

    manifest_puts = []
    for seen in proxy.requests():
        match = _WIRE_PATH.match(seen.path)
        if not match or seen.answered is None:
            continue
        repository, kind, rest = match["repository"], match["kind"], match["rest"]
        if seen.method == "HEAD" and seen.status == 200 and rest.startswith("sha256:"):
            have(repository, rest, seen)
        elif kind == "blobs" and seen.method == "PUT" and seen.status == 201 and seen.query("digest"):
            have(repository, seen.query("digest"), seen)
        elif kind == "blobs" and seen.method == "POST" and seen.status == 201 and seen.query("mount"):
            have(repository, seen.query("mount"), seen)
        elif kind == "manifests" and seen.method == "PUT" and seen.status == 201:
            manifest_puts.append((repository, rest, seen))
    documents = []
    for repository, reference, seen in manifest_puts:
        response = httpx.get(f"{registry.url}/v2/{repository}/manifests/{reference}",
                             headers={"Accept": ACCEPT})
        response.raise_for_status()
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if reference == digest:
            have(repository, digest, seen)
        documents.append((repository, reference, digest, response.json(), seen))
    for repository, reference, digest, document, seen in documents:
        needed = [m["digest"] for m in document.get("manifests", [])]
        needed += [blob["digest"] for blob in [document.get("config"), *document.get("layers", [])] if blob]
        if reference != digest:
            needed.append(digest)  # a tag: its manifest first
        early = [d for d in needed if since.get((repository, d), seen.arrived) >= seen.arrived]
        assert early == [], f"PUT {seen.path} arrived before the registry had {early}"
    return len(manifest_puts)


def tag_as(registry, repository: str, source_tag: str, *tags: str) -> None:
    response = httpx.get(f"{registry.url}/v2/{repository}/manifests/{source_tag}", headers={"Accept": ACCEPT})
    for tag in tags:
        put = httpx.put(f"{registry.url}/v2/{repository}/manifests/{tag}", content=response.content,
                        headers={"Content-Type": response.headers["content-type"]})
        assert put.status_code == 201, put.text


def tags_at(registry, repository: str) -> set[str]:
    return set(httpx.get(f"{registry.url}/v2/{repository}/tags/list").json().get("tags") or [])
