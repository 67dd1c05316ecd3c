"""Times as mirror, distribution and Sigstore write them read back the same way on every supported Python."""

from datetime import datetime, timezone

import pytest

from mirror.clock import parse_time, utc_now


@pytest.mark.parametrize("text", ["2026-11-29T22:59:23Z", "2026-11-29T22:59:23+00:00", "2026-11-29T22:59:23"])
def test_an_rfc3339_time_with_z_an_offset_or_no_zone_is_utc(text):
    assert parse_time(text) == datetime(2026, 11, 29, 22, 59, 23, tzinfo=timezone.utc)


def test_what_mirror_writes_it_reads_back():
    assert parse_time(utc_now()).tzinfo is not None


def test_anything_else_is_a_value_error():
    with pytest.raises(ValueError):
        parse_time("yesterday")
