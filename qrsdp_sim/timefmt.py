"""Formatting of session timestamps (nanoseconds since midnight)."""

from __future__ import annotations


def format_ts_ns(ts_ns: int) -> str:
    """``34_200_000_000_123`` -> ``'09:30:00.000000123'``."""
    secs, ns = divmod(int(ts_ns), 1_000_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{ns:09d}"
