"""Numbers a peer sends (headers, JSON, files mirror did not write): ASCII digits only, bounded.

``str.isdigit()`` accepts ``²`` and ``٣``, which ``int()`` then refuses or reads
as a number no peer meant; a Content-Length of a hundred digits is no size. Every
number mirror takes from a registry, a token server, a proxy or a crafted file
goes through ``ascii_int``: ``None`` means "not a number", and the caller decides
whether that is an answer to ignore (a Retry-After) or to refuse (a Content-Length).
"""

from __future__ import annotations

import re

MAX_DIGITS = 18  # below 2**63: every size, count and second a peer can honestly send
_DECIMAL = re.compile(rb"[0-9]{1,%d}" % MAX_DIGITS)


def ascii_int(text: str | bytes | None) -> int | None:
    """The non-negative integer ``text`` spells in at most MAX_DIGITS ASCII digits, else None.

    Surrounding spaces and tabs (HTTP's optional whitespace) are allowed; signs,
    underscores, non-ASCII digits and anything else are not.
    """
    if text is None:
        return None
    if isinstance(text, str):
        if not text.isascii():
            return None
        text = text.encode("ascii")
    text = text.strip(b" \t")
    return int(text) if _DECIMAL.fullmatch(text) else None
