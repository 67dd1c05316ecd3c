"""A Helm repository's ``index.yaml``: which URL serves a chart version, and the digest it must have."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import yaml

from ..errors import UsageError

MAX_INDEX = 32 << 20  # Jetstack's index, every chart it ever served, is a few MB
_HEX64 = re.compile(r"[0-9a-f]{64}")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has it: 10x faster


def chart_location(index: bytes, index_url: str, name: str, version: str) -> tuple[str, str | None]:
    """(URL, sha256 hex or None) of chart ``name`` ``version`` in the index served at ``index_url``.

    A relative URL is taken relative to the repository, as Helm does. An
    index that is not one, or gives a digest that is no sha256, is a usage
    error naming it; so is a chart or version it does not have.
    """
    try:
        doc = yaml.load(index, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise UsageError(f"{index_url}: not a Helm repository index ({type(exc).__name__})") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise UsageError(f"{index_url}: not a Helm repository index (no entries)")
    versions = entries.get(name)
    if not isinstance(versions, list):
        raise UsageError(f"chart {name}: not in {index_url}")
    for entry in versions:
        if not isinstance(entry, dict) or str(entry.get("version")) != version:
            continue
        urls = entry.get("urls")
        if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
            raise UsageError(f"{index_url}: chart {name} {version} has no URL")
        digest = entry.get("digest")
        if digest is not None and not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            raise UsageError(f"{index_url}: chart {name} {version} has digest {str(digest)[:80]!r}, not a sha256")
        return urljoin(index_url.rsplit("/", 1)[0] + "/", urls[0]), digest
    known = [str(e.get("version")) for e in versions if isinstance(e, dict)][:5]
    raise UsageError(f"chart {name} {version}: not in {index_url} (it has {', '.join(known) or 'none'}"
                     + (" ..." if len(versions) > 5 else "") + ")")
