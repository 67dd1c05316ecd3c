"""Semantic versions as image tags carry them, and ranges over them (``">=2.7.0 <2.8.0"``).

Written here rather than taken from ``packaging``: that library speaks PEP
440, which refuses tags such as ``v0.7.3-build20220613`` and spells ranges
with commas; tag filters (regsync, skopeo sync) take semver's
space-separated comparators and ``||`` alternatives.

Versions: ``[v]MAJOR.MINOR[.PATCH][-PRERELEASE][+BUILD]`` (a missing patch is
0). Precedence is semver's: a pre-release sorts before its release, build
metadata is ignored. Pre-release tags are matched like any other; a
``deny`` pattern leaves them out where they are not wanted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from .numbers import ascii_int

_VERSION = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?"
                      r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$", re.ASCII)
_COMPARATOR = re.compile(r"^(>=|<=|>|<|==|=|!=)?\s*(\S+)$")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Version | None":
        """The version a tag names, or None when it names none."""
        match = _VERSION.match(text.strip())
        if not match:
            return None
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch or 0), tuple(pre.split(".")) if pre else ())

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; identifiers: numbers before words, numbers by value.
        numbers = [ascii_int(p) for p in self.prerelease]
        pre = tuple((0, n, "") if n is not None else (1, 0, p) for p, n in zip(self.prerelease, numbers))
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


_TESTS = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    "=": lambda a, b: a == b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


class Range:
    """``">=2.7.0 <2.8.0 || >=3.0.0"``: comparators all hold, in any one alternative."""

    def __init__(self, text: str):
        self.text = text
        self.alternatives: list[list[tuple[str, Version]]] = []
        for alternative in text.split("||"):
            comparators = []
            for part in re.sub(r"(>=|<=|!=|==|>|<|=)\s+", r"\1", alternative).replace(",", " ").split():
                match = _COMPARATOR.match(part)
                version = Version.parse(match.group(2)) if match else None
                if match is None or version is None:
                    raise ValueError(f"semver range {text!r}: cannot read {part!r} "
                                     "(expected comparators such as >=2.7.0 <2.8.0, alternatives joined by ||)")
                comparators.append((match.group(1) or "=", version))
            if not comparators:
                raise ValueError(f"semver range {text!r}: an alternative without any comparator")
            self.alternatives.append(comparators)

    def matches(self, version: Version) -> bool:
        return any(all(_TESTS[op](version, bound) for op, bound in alternative) for alternative in self.alternatives)
