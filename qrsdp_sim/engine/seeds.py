"""Per-session seeds derived from (base seed, symbol, date) -- never from list positions.

``session_seed`` feeds ``[base_seed, domain tag, symbol as an integer, YYYYMMDD]`` to
numpy's ``SeedSequence`` and takes one 64-bit word. A symbol-date therefore gets the
same seed whether it is simulated alone (one orchestrator partition) or inside any
multi-symbol, multi-day run. The seed is stored in the file header and the manifest;
``simulate_session`` with that seed and the same open price reproduces the session.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

SEED_STRATEGY = "SeedSequence([base_seed, 0x51525344, symbol_int, yyyymmdd]).generate_state(1, uint64)[0]"
SESSION_DOMAIN = 0x51525344  # "QRSD": separates session streams from other derived streams
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,8}$")


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is 1-8 characters of A-Z and 0-9, else raise ValueError."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise ValueError(f"invalid symbol {symbol!r}: use 1-8 characters of A-Z and 0-9")
    return symbol


def symbol_int(symbol: str) -> int:
    """The symbol's ASCII bytes as a big-endian integer (unique for valid symbols)."""
    return int.from_bytes(validate_symbol(symbol).encode("ascii"), "big")


def session_seed(base_seed: int, symbol: str, date: dt.date) -> int:
    """The 64-bit seed of one (symbol, date) session."""
    if int(base_seed) < 0:
        raise ValueError(f"base seed must be >= 0, got {base_seed}")
    ymd = date.year * 10_000 + date.month * 100 + date.day
    seq = np.random.SeedSequence([int(base_seed), SESSION_DOMAIN, symbol_int(symbol), ymd])
    return int(seq.generate_state(1, dtype=np.uint64)[0])
