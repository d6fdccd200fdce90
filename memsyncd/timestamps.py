"""RFC 3339 timestamps as memsyncd writes and reads them (stdlib only and tiny: the thin client renders
times without loading the data model).

:func:`epoch_seconds` reads the UTC form memsyncd writes without loading ``datetime`` (``status``
only prints "5 minutes ago"); everything else goes through :func:`parse_ts`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    from datetime import UTC, datetime

    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z`` suffix (second precision kept as given)."""
    from datetime import UTC

    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def now_ts() -> str:
    """``format_ts(utc_now())`` without loading ``datetime``: microseconds shown unless zero, ``Z`` suffix."""
    import time

    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    now = time.gmtime(seconds)
    micros = nanos // 1000
    return (f"{now.tm_year:04d}-{now.tm_mon:02d}-{now.tm_mday:02d}T{now.tm_hour:02d}:{now.tm_min:02d}:"
            f"{now.tm_sec:02d}{f'.{micros:06d}' if micros else ''}Z")


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp; naive values are taken as UTC.

    Raises:
        ValueError: if ``text`` is not a timestamp.
    """
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _digits(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def epoch_seconds(text: str) -> float:
    """Seconds since 1970 of a timestamp, as ``parse_ts(text).timestamp()``.

    ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)`` (what memsyncd writes) is read here with integer
    arithmetic (days from the civil date, proleptic Gregorian, as ``datetime``); any other form is
    handed to :func:`parse_ts`.

    Raises:
        ValueError: if ``text`` is not a timestamp.
    """
    value = text.strip()
    body = value[:-1] if value.endswith("Z") else value[:-6] if value.endswith("+00:00") else ""
    if len(body) < 19 or body[4] != "-" or body[7] != "-" or body[10] != "T" or body[13] != ":" \
            or body[16] != ":" or (len(body) > 19 and (body[19] != "." or not 21 <= len(body) <= 26)):
        return parse_ts(text).timestamp()
    year, month, day = _digits(body[0:4]), _digits(body[5:7]), _digits(body[8:10])
    hour, minute, second = _digits(body[11:13]), _digits(body[14:16]), _digits(body[17:19])
    fraction = _digits(body[20:]) / 10 ** (len(body) - 20) if len(body) > 20 else 0.0
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (year >= 1 and 1 <= month <= 12 and hour < 24 and minute < 60 and second < 60
            and 1 <= day <= _DAYS_IN_MONTH[month - 1] + (1 if month == 2 and leap else 0)):
        raise ValueError(text)
    y = year - (month <= 2)  # days from 1970-01-01 (H. Hinnant's days_from_civil)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second + fraction
