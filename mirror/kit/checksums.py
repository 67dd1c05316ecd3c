"""A release's sha256sum file (``sha256sum-amd64.txt``, ``sha256sum.txt``): name -> digest, strictly read."""

from __future__ import annotations

import re

from ..errors import UsageError

MAX_SUMS = 1 << 20  # a release's sums are a few KB
_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\s/][^/]*)")


def parse_sums(body: bytes, url: str) -> dict[str, str]:
    """File name -> sha256 hex; a line that is not ``HEX  NAME`` is a usage error naming the file and line."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{url}: not a sha256sum file (not ASCII)") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip())
        if not match:
            raise UsageError(f"{url}: line {number} is not 'SHA256  NAME': {line[:80]!r}")
        name = match.group(2).removeprefix("./")
        if sums.get(name, match.group(1)) != match.group(1):
            raise UsageError(f"{url}: {name} is listed twice with different digests")
        sums[name] = match.group(1)
    return sums


def digest_of(sums: dict[str, str], name: str, url: str) -> str:
    """The digest ``url`` gives for ``name``; a file that names other files only is a usage error."""
    if name not in sums:
        raise UsageError(f"{url} has no sha256 for {name} (it names {', '.join(sorted(sums)[:5]) or 'nothing'})")
    return sums[name]
