"""Give the emulators' stores timestamps that never repeat or go backwards.

Real databases can hand out equal timestamps; the emulators use strictly
increasing ones (``max(now, last + 1 µs)``) so that "ordered by created_at"
is deterministic in tests. A fixed or scripted clock can be injected instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "MonotonicClock", "iso_aware", "iso_naive", "parse_iso"]

Clock = Callable[[], datetime]

_TICK = timedelta(microseconds=1)


class MonotonicClock:
    """Callable returning aware UTC datetimes, strictly increasing across calls."""

    def __init__(self, source: Clock | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = self._source()
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)
            if self._last is not None and now <= self._last:
                now = self._last + _TICK
            self._last = now
            return now


def iso_aware(moment: datetime) -> str:
    """``2025-01-02T03:04:05.123456+00:00`` (offset and microseconds always present)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def iso_naive(moment: datetime) -> str:
    """Naive UTC ISO text, as SQLite-backed FastAPI apps emit it (no offset)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def parse_iso(text: str) -> datetime:
    """Parse ISO 8601 text (``Z`` allowed); naive values are taken as UTC.

    Raises:
        ValueError: not ISO 8601.
    """
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
