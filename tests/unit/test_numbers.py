"""Numbers from peers: ASCII digits or nothing (a header of '²' ended whole runs before)."""

import pytest

from mirror.model.numbers import MAX_DIGITS, ascii_int


@pytest.mark.parametrize("text, value", [("0", 0), ("123", 123), (b"42", 42), (" 7\t", 7), ("9" * MAX_DIGITS, 10**MAX_DIGITS - 1)])
def test_ascii_digits_are_read(text, value):
    assert ascii_int(text) == value


@pytest.mark.parametrize("text", ["", " ", "²", "٣", "1²", "-1", "+1", "1_000", "1.5", "0x10", "1e3", "9" * (MAX_DIGITS + 1),
                                  "1 2", "１２", None, "\u00a01"])
def test_anything_else_is_not_a_number(text):
    assert ascii_int(text) is None
