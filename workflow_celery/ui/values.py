"""How the UI reads numbers and times from a query string, and writes times and durations on a page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def whole_number(text: str | None, default: int) -> int:
    try:
        return int(text) if text and len(text) < 12 else default
    except ValueError:
        return default


def when(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
        # In UTC, as the store compares them: a time at the edge of the calendar has no UTC equivalent.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: {text!r} is not a date and time such as 2026-12-01T09:30") from None


def at(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"+{seconds:.1f} s"
    if seconds < 7200:
        return f"+{seconds / 60:.1f} min"
    return f"+{seconds / 3600:.1f} h"
