"""Progress bars in one place: tqdm on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


class Progress:
    def __init__(self, quiet: bool = False):
        self.enabled = not quiet and sys.stderr.isatty()

    @contextmanager
    def bar(self, total: int | None, desc: str, unit: str = "B") -> Iterator[tqdm | _Silent]:
        if not self.enabled:
            yield _Silent()
            return
        scale = unit == "B"
        with tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                  dynamic_ncols=True, leave=True, file=sys.stderr) as bar:
            yield bar
