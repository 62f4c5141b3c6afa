"""The one timestamp form bastion stores (stable API).

ISO-8601 in UTC, fixed width, with microseconds and a ``Z``: ``2030-01-01T12:00:00.000000Z``.
Such strings sort as text in time order, which the audit log, the API keys and the registry
rely on in their tables.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["TIMESTAMP_PATTERN", "format_utc", "parse_utc"]

TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z"
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


def format_utc(moment: datetime) -> str:
    """Write a timezone-aware time in the stored form.

    Raises:
        ValueError: ``moment`` is naive (callers turn this into their own error).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware (datetime.now(UTC))")
    t = moment.astimezone(UTC)
    # Not strftime: it does not pad years before 1000 on every platform.
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond:06d}Z"
    )


def parse_utc(text: str) -> datetime:
    """Read a time in the stored form.

    Raises:
        ValueError: ``text`` is not in that form, or names no real time.
    """
    if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
        raise ValueError(f"timestamp {text!r} is not in canonical form")
    # The pattern fixed the form; fromisoformat (C) reads it 20x faster than strptime.
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
