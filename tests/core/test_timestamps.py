"""The stored timestamp form: fixed width, UTC, microseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bastion.core.timestamps import format_utc, parse_utc


def test_times_are_written_in_utc_at_fixed_width_and_read_back() -> None:
    paris = datetime(2030, 6, 1, 16, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    text = format_utc(paris)
    assert text == "2030-06-01T14:30:00.000005Z"
    assert parse_utc(text) == paris
    assert format_utc(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000000Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_utc(datetime(2030, 1, 1))


@pytest.mark.parametrize(
    "text",
    [
        "2030-06-01T14:30:00Z",
        "2030-06-01 14:30:00.000000Z",
        "2030-06-01T14:30:00.000000+00:00",
        "2030-02-30T00:00:00.000000Z",
        "",
        None,
    ],
)
def test_other_forms_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"canonical form|out of range"):
        parse_utc(text)  # type: ignore[arg-type]
