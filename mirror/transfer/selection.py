"""Which tags of a source repository a sync entry keeps.

The repository's tags (one listing, which no registry counts as a pull) go
through ``allow`` (any may match; none given: all), ``deny`` (none may
match), ``semver`` (the tag must be a version in the range) and
``keep_latest`` (the N highest versions left). ``immutable`` patterns mark
the chosen tags that, once at the target, are never asked upstream again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..model.reference import Reference
from ..model.semver import Range, Version
from ..model.upstream import SourceMap
from ..registry.pool import ClientPool
from .sync import SyncImage


@dataclass
class TagSelection:
    repository: Reference  # registry/repository; its tag is ignored
    allow: list[re.Pattern] = field(default_factory=list)
    deny: list[re.Pattern] = field(default_factory=list)
    semver: Range | None = None
    keep_latest: int | None = None
    immutable: list[re.Pattern] = field(default_factory=list)
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

    async def select(self, pool: ClientPool, sources: SourceMap) -> list[SyncImage]:
        location = sources.locate(self.repository)
        client = await pool.get(location.host)
        return [self.image(tag) for tag in self.choose(await client.list_tags(location.repository))]
