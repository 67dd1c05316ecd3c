"""Which tags of a source repository a sync entry keeps.

The repository's tags (one listing, which no registry counts as a pull) go
through ``allow`` (any may match; none given: all), ``deny`` (none may
match), ``semver`` (the tag must be a version in the range) and
``keep_latest`` (the N highest versions left). ``immutable`` patterns mark
the chosen tags that, once at the target, are never asked upstream again.

A tag list comes from a peer: an entry that is no tag by the reference
grammar (``../../library/x/manifests/latest``, a number, an object) is
skipped and reported, and the rest of the run goes on. The patterns are the
user's, searched in the peer's tags with the ``regex`` module (the syntax of
``re``): a search that backtracks past MATCH_TIMEOUT on one tag ends the run
as a bad config, where ``re`` would never return.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any

import regex

from ..errors import UsageError
from ..model.reference import Reference, is_tag
from ..model.semver import Range, Version
from ..model.upstream import SourceMap
from ..registry.pool import ClientPool

@dataclass(frozen=True)
class SyncImage:
    """One source reference to keep in sync, with its entry's rules."""

    ref: Reference
    on_retag: str = "update"  # one of sync.RETAG_POLICIES
    immutable: bool = False  # present at the target -> never replaced; a move upstream is reported ``moved``


@dataclass
class SkippedTags:
    """Entries of a source's tag list that are no tags by the reference grammar: never synced, only reported."""

    repository: str  # registry/repository whose list held them
    count: int
    shown: list[str]  # the first few, each a repr cut to one short line

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "count": self.count, "tags": self.shown}

    def describe(self) -> str:
        more = f" and {self.count - len(self.shown)} more" if self.count > len(self.shown) else ""
        return (f"{self.repository}: {self.count} listed tag(s) that are no tags, skipped: "
                f"{', '.join(self.shown)}{more}")


MAX_SHOWN = 10  # bad entries of one tag list named in a report; the rest are counted
_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60  # a repr, cut in its middle past this (one line: repr escapes newlines)
_shown.maxlevel, _shown.maxlist, _shown.maxdict = 2, 4, 4


def listed_tags(repository: str, listed: list[Any]) -> tuple[list[str], SkippedTags | None]:
    """The entries of ``repository``'s tag list that are tags, and what was skipped (None: nothing)."""
    tags = [entry for entry in listed if is_tag(entry)]
    bad = [entry for entry in listed if not is_tag(entry)]
    if not bad:
        return tags, None
    return tags, SkippedTags(repository, len(bad), [_shown.repr(entry) for entry in bad[:MAX_SHOWN]])


MATCH_TIMEOUT = 1.0  # seconds one pattern may search one tag (of at most 128 characters): honest ones take µs


@dataclass(frozen=True)
class TagPattern:
    """A regex of sync.yaml, searched in tags within MATCH_TIMEOUT each."""

    compiled: regex.Pattern
    where: str  # ``file:line: key:`` it was written at

    def search(self, tag: str) -> bool:
        try:
            return self.compiled.search(tag, timeout=MATCH_TIMEOUT) is not None
        except TimeoutError:
            raise UsageError(f"{self.where} {self.compiled.pattern!r} took over {MATCH_TIMEOUT:g} s on the tag "
                             f"{tag!r} (it backtracks without end on some tags): rewrite it, e.g. without a "
                             "repeated group inside a repeat") from None


@dataclass
class TagSelection:
    repository: Reference  # registry/repository; its tag is ignored
    allow: list[TagPattern] = field(default_factory=list)
    deny: list[TagPattern] = field(default_factory=list)
    semver: Range | None = None
    keep_latest: int | None = None
    immutable: list[TagPattern] = field(default_factory=list)
    on_retag: str = "update"

    def choose(self, tags: list[str]) -> list[str]:
        """The selected tags, in a stable order (highest version first where they are versions)."""
        kept = [t for t in tags if (not self.allow or any(p.search(t) for p in self.allow))
                and not any(p.search(t) for p in self.deny)]
        if self.semver is not None or self.keep_latest is not None:
            versions = {t: Version.parse(t) for t in kept}
            kept = [t for t in kept if versions[t] is not None
                    and (self.semver is None or self.semver.matches(versions[t]))]  # type: ignore[arg-type]
            kept.sort(key=lambda t: (versions[t], t), reverse=True)
            if self.keep_latest is not None:
                kept = kept[:self.keep_latest]
            return kept
        return sorted(kept)

    def image(self, tag: str) -> SyncImage:
        ref = Reference(self.repository.registry, self.repository.repository, tag)
        return SyncImage(ref, self.on_retag, immutable=any(p.search(tag) for p in self.immutable))

    async def list_tags(self, pool: ClientPool, sources: SourceMap) -> list[Any]:
        """The repository's tag list as its source sends it: entries not yet checked."""
        location = sources.locate(self.repository)
        client = await pool.get(location.host)
        return await client.list_tags(location.repository)

    def select(self, listed: list[Any]) -> tuple[list[SyncImage], SkippedTags | None]:
        """The images of the tags chosen from ``listed``, and its entries skipped as no tags.

        A pattern too slow on a tag raises UsageError (exit 2): the config's fault, not the source's.
        """
        tags, skipped = listed_tags(self.repository.name, listed)
        return [self.image(tag) for tag in self.choose(tags)], skipped
