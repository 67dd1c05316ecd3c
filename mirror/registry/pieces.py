"""A blob on disk while it downloads, as pieces: byte ranges, each filled from its start in a file of its own.

The first piece is the partial file itself; a later one starting at byte N is
the file ``N`` in the directory ``<partial>.pieces``, created as the piece is,
so a run that stops leaves what the next run resumes (``Pieces.resume``). A
piece being fetched may be split for a connection with nothing else to do:
its end moves down to the middle of what it has left, and a new piece from
there goes to that connection. Once every piece is full they are joined into
the partial file, hashed in order on the way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..model.numbers import ascii_int

CHUNK_SIZE = 1 << 20
SPLIT_MIN = 2 << 20  # a piece with less left is not split: at 10 MB/s its half is a couple of round trips


@dataclass(eq=False)
class Piece:
    """Bytes [start, end) of the blob; ``end`` is None while the blob's size is unknown (never split)."""

    file: Path
    start: int
    end: int | None
    held: int = 0  # bytes in the file
    done: anyio.Event = field(default_factory=anyio.Event)  # set when its fetch ended, in error or not
    error: BaseException | None = None

    @property
    def position(self) -> int:
        return self.start + self.held

    @property
    def left(self) -> int | None:
        return None if self.end is None else self.end - self.position


class Pieces:
    """The pieces of one blob, in order; every byte of it in exactly one of them."""

    def __init__(self, partial: Path, size: int | None):
        self.partial, self.size = partial, size
        self.directory = partial.with_name(partial.name + ".pieces")
        self.pieces: list[Piece] = []

    @classmethod
    def resume(cls, partial: Path, size: int | None, cuts: list[int] = ()) -> "Pieces":
        """What the work dir holds of the blob. Without later pieces, and with the partial file short of
        the first of ``cuts``, the blob is cut there (ranges fetched at once from the start).

        A piece file longer than its range holds something else: it starts over.
        """
        blob = cls(partial, size)
        starts = sorted(start for start in blob._later_starts() if size is not None and 0 < start < size)
        have = partial.stat().st_size if partial.exists() else 0
        if not starts and size is not None and cuts and have <= cuts[0]:
            starts = [cut for cut in cuts if 0 < cut < size]
        ends: list[int | None] = [*starts, size]
        for start, end in zip([0, *starts], ends):
            file = partial if start == 0 else blob.directory / str(start)
            held = file.stat().st_size if file.exists() else 0
            if end is not None and start + held > end:
                file.unlink()
                held = 0
            blob.pieces.append(Piece(file, start, end, held))
        if starts:
            blob.directory.mkdir(exist_ok=True)
            for piece in blob.pieces[1:]:
                piece.file.touch()
        return blob

    def _later_starts(self) -> list[int]:
        """The starts the piece directory names; anything else in it is removed."""
        if not self.directory.is_dir():
            return []
        starts = []
        for entry in self.directory.iterdir():
            start = ascii_int(entry.name)
            if start is None or self.size is None or not 0 < start < self.size:
                entry.unlink()
            else:
                starts.append(start)
        return starts

    def split(self) -> Piece | None:
        """Cut the piece with the most left in two: the second half, for the caller to fetch.

        None when no piece has SPLIT_MIN bytes left (the size unknown: never).
        """
        piece = max(self.pieces, key=_left_in_flight)
        if _left_in_flight(piece) < SPLIT_MIN:
            return None
        assert piece.end is not None and piece.left is not None
        middle = piece.position + piece.left // 2
        self.directory.mkdir(exist_ok=True)
        later = Piece(self.directory / str(middle), middle, piece.end)
        later.file.write_bytes(b"")  # the cut is on disk before either side writes past it
        piece.end = middle
        self.pieces.insert(self.pieces.index(piece) + 1, later)
        return later

    def most_left(self) -> int:
        """The most bytes a piece being fetched has left (the size unknown: 0)."""
        return max(map(_left_in_flight, self.pieces))

    def join(self, hasher: Any) -> str:
        """Append the later pieces to the first, in order, removing them; the digest of the whole.

        ``hasher`` has seen the first piece (hashed as it arrived); the later
        ones are hashed as they are appended, so no byte is read twice.
        """
        with open(self.partial, "ab") as out:
            for piece in self.pieces[1:]:
                with open(piece.file, "rb") as handle:
                    while chunk := handle.read(CHUNK_SIZE):
                        hasher.update(chunk)
                        out.write(chunk)
        self.discard()
        return "sha256:" + hasher.hexdigest()

    def discard(self) -> None:
        """Remove the later pieces (the partial file stays)."""
        if self.directory.is_dir():
            shutil.rmtree(self.directory)
        del self.pieces[1:]


def _left_in_flight(piece: Piece) -> int:
    """What a piece still being fetched has left; 0 once its fetch ended, or when its end is unknown."""
    return 0 if piece.done.is_set() or piece.left is None else piece.left


def hash_file(path: Path, hasher: Any) -> None:
    """Feed the bytes of ``path`` to ``hasher``."""
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
