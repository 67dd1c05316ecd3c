"""InOrderHash: the sha256 of a file that parallel ranges write out of order, each byte hashed once."""

from __future__ import annotations

import hashlib
import os
import random
import threading

from mirror.inorder_hash import InOrderHash

DATA = hashlib.shake_256(b"in order").digest(3 << 20)


def pieces(start: int, end: int, size: int) -> list[tuple[int, bytes]]:
    return [(at, DATA[at:min(at + size, end)]) for at in range(start, end, size)]


def test_ranges_written_at_once_in_any_order_hash_as_the_whole_file(tmp_path):
    spans = [(0, 1 << 20), *(((1 << 20) + i * 262144, (1 << 20) + (i + 1) * 262144) for i in range(8))]
    with open(tmp_path / "file", "w+b") as out:
        hashed = InOrderHash(out.fileno())

        def write_range(start: int, end: int, seed: int) -> None:
            for at, piece in pieces(start, end, random.Random(seed).choice([1000, 4096, 65536])):
                os.pwrite(out.fileno(), piece, at)
                hashed.wrote(at, piece)

        threads = [threading.Thread(target=write_range, args=(*span, seed)) for seed, span in enumerate(spans)]
        for thread in reversed(threads):  # the last ranges first: most of the file waits for the gap before it
            thread.start()
        for thread in threads:
            thread.join()
        assert hashed.hashed == len(DATA)
        assert hashed.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_pieces_that_come_in_order_are_hashed_as_they_come_never_read_back(tmp_path):
    fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT)  # a read back would fail
    try:
        hashed = InOrderHash(fd)
        for at, piece in pieces(0, len(DATA), 65536):
            os.pwrite(fd, piece, at)
            hashed.wrote(at, piece)
        assert hashed.hexdigest() == hashlib.sha256(DATA).hexdigest()
    finally:
        os.close(fd)


def test_a_gap_holds_back_what_follows_until_it_closes(tmp_path):
    with open(tmp_path / "file", "w+b") as out:
        hashed = InOrderHash(out.fileno())
        for at, piece in [(10, DATA[10:20]), (30, DATA[30:40]), (0, DATA[:10])]:
            os.pwrite(out.fileno(), piece, at)
            hashed.wrote(at, piece)
        assert hashed.hashed == 20  # 20-30 is not there yet
        os.pwrite(out.fileno(), DATA[20:30], 20)
        hashed.wrote(20, DATA[20:30])
        assert hashed.hashed == 40
        assert hashed.hexdigest() == hashlib.sha256(DATA[:40]).hexdigest()
