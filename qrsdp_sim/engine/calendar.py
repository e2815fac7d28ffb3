"""Trading dates (weekdays; no holiday calendar) and market-open parsing."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

DEFAULT_START = dt.date(2026, 1, 2)
DEFAULT_MARKET_OPEN = "09:30"
NS_PER_SECOND = 1_000_000_000


def parse_date(text: str) -> dt.date:
    """Parse YYYY-MM-DD, raising ValueError with a readable message."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


def next_weekday(day: dt.date) -> dt.date:
    """``day`` itself if it is Monday-Friday, else the following Monday."""
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def iter_trading_dates(start: dt.date) -> Iterator[dt.date]:
    """Consecutive weekdays from ``start`` (rolled forward to a weekday) to the end of the calendar
    (9999-12-31): a live run's dates."""
    day = start
    while True:
        while day.weekday() >= 5:
            if day == dt.date.max:
                return
            day += dt.timedelta(days=1)
        yield day
        if day == dt.date.max:
            return
        day += dt.timedelta(days=1)


def trading_dates(start: dt.date, days: int) -> list[dt.date]:
    """``days`` consecutive weekdays starting at ``start`` (rolled forward to a weekday); fewer when
    the calendar ends first (9999-12-31)."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    return list(itertools.islice(iter_trading_dates(start), days))


def previous_trading_date(day: dt.date) -> dt.date:
    """The weekday before ``day`` (the date whose close opens ``day``)."""
    day -= dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def parse_market_open(text: str) -> int:
    """'HH:MM' -> nanoseconds since midnight."""
    try:
        hh, mm = text.split(":")
        if len(hh) != 2 or len(mm) != 2:
            raise ValueError
        h, m = int(hh), int(mm)
        if not (0 <= h < 24 and 0 <= m < 60):
            raise ValueError
    except ValueError:
        raise ValueError(f"invalid market open {text!r}: expected HH:MM (24-hour clock)") from None
    return (h * 3600 + m * 60) * NS_PER_SECOND
