"""A trading day's ITCH message stream: directory, opening, order messages, closing.

Both the live streamer and ``qrsdp itch-export`` build a day the same way:

1. ``S O`` start of messages, ``S S`` start of system hours,
2. one Stock Directory ``R`` per security of the day's directory (locates 1..N, alphabetical),
3. ``S Q`` start of market hours,
4. the order messages (A/D/X/E) of every security, merged by time,
5. ``S M`` end of market hours, ``S E`` end of system hours, ``S C`` end of messages.

Timestamps of the system events (ns since midnight): O at min(03:00, first event), S and the
directory at min(04:00, first event), Q at the day's first event (the market open), M at the
day's last event, E at max(last event, 20:00), C at max(last event, 20:05) -- so the feed's
timestamps never decrease around them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch.encoder import Encoded, Framed, encode_orders, frame_array, stock_table
from qrsdp_sim.itch.order_state import OrderTable

_H = 3_600_000_000_000
START_OF_MESSAGES_NS = 3 * _H
START_OF_SYSTEM_NS = 4 * _H
END_OF_SYSTEM_NS = 20 * _H
END_OF_MESSAGES_NS = 20 * _H + 5 * 60_000_000_000

DEFAULT_TICK_SIZE = 100  # engine default: 1 tick = 100 x 1e-4 $ = one cent
_SYMBOL = re.compile(r"[A-Za-z0-9._-]{1,8}")  # no separators of the streamer's commit metadata


def check_symbol(symbol: str) -> str:
    if not _SYMBOL.fullmatch(symbol):
        raise ValueError(f"stock symbol {symbol!r} must be 1-8 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
    return symbol


def parse_symbols(text: str) -> list[str]:
    """``"MSFT,AAPL"`` or ``"AAPL:18000,MSFT"`` (the platform's QRSDP_SYMBOLS form) -> symbols."""
    out: list[str] = []
    for item in text.split(","):
        sym = item.split(":", 1)[0].strip()
        if not sym:
            continue
        check_symbol(sym)
        if sym in out:
            raise ValueError(f"symbol {sym} listed twice")
        out.append(sym)
    if not out:
        raise ValueError(f"no symbols in {text!r}")
    return out


@dataclass(frozen=True)
class Directory:
    """The day's securities; stock locate = 1-based position in alphabetical order."""

    symbols: tuple[str, ...]

    @classmethod
    def of(cls, symbols: list[str] | tuple[str, ...]) -> Directory:
        syms = tuple(sorted(set(symbols)))
        if not syms:
            raise ValueError("the stock directory needs at least one symbol")
        if len(syms) > 0xFFFF:
            raise ValueError("at most 65,535 securities (u16 stock locate)")
        for s in syms:
            check_symbol(s)
        return cls(syms)

    @property
    def n(self) -> int:
        return len(self.symbols)

    def locate(self, symbol: str) -> int | None:
        try:
            return self._index[symbol]
        except KeyError:
            return None

    @property
    def _index(self) -> dict[str, int]:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {s: i + 1 for i, s in enumerate(self.symbols)}
            object.__setattr__(self, "_idx", idx)
        return idx

    def fingerprint(self, tick_size: int) -> str:
        """Short hash of (directory, tick size): a restart mid-day must not change either."""
        h = hashlib.blake2b(f"{tick_size}|{','.join(self.symbols)}".encode(), digest_size=4)
        return h.hexdigest()


def opening_times(first_ts: int) -> tuple[int, int, int]:
    """(start of messages, start of system hours + directory, start of market hours) timestamps."""
    return min(START_OF_MESSAGES_NS, first_ts), min(START_OF_SYSTEM_NS, first_ts), first_ts


def closing_times(last_ts: int) -> tuple[int, int, int]:
    return last_ts, max(last_ts, END_OF_SYSTEM_NS), max(last_ts, END_OF_MESSAGES_NS)


class DayFeed:
    """Builds the framed ITCH messages of one trading day for a fixed directory and tick size."""

    def __init__(self, directory: Directory, tick_size: int = DEFAULT_TICK_SIZE) -> None:
        if not 1 <= tick_size <= m.MAX_PRICE:
            raise ValueError(f"tick size must be 1..{m.MAX_PRICE} (units of 1e-4 $), got {tick_size}")
        self.directory = directory
        self.tick_size = int(tick_size)
        self.stocks = stock_table(directory.symbols)

    @property
    def opening_count(self) -> int:
        return 3 + self.directory.n

    def opening(self, first_ts: int) -> Framed:
        t_o, t_s, t_q = opening_times(first_ts)
        head = frame_array(m.system_events([m.START_OF_MESSAGES, m.START_OF_SYSTEM_HOURS], [t_o, t_s]),
                           np.array([t_o, t_s], np.uint64))
        d = self.directory
        directory = frame_array(m.stock_directory(list(d.symbols), list(range(1, d.n + 1)), t_s), t_s)
        tail = frame_array(m.system_events([m.START_OF_MARKET_HOURS], [t_q]), t_q)
        return Framed.concat([head, directory, tail])

    def closing(self, last_ts: int) -> Framed:
        times = closing_times(last_ts)
        codes = [m.END_OF_MARKET_HOURS, m.END_OF_SYSTEM_HOURS, m.END_OF_MESSAGES]
        return frame_array(m.system_events(codes, list(times)), np.array(times, np.uint64))

    def orders(self, records: np.ndarray, locates: np.ndarray | int, first_seq: int, orders: OrderTable,
               *, write: bool = True) -> Encoded:
        """Order messages of ``records`` (locate per record, or one for all) numbered from ``first_seq``;
        ``orders`` holds the day's resting orders and is updated."""
        return encode_orders(records, locates, stocks=self.stocks, tick_size=self.tick_size, first_seq=first_seq,
                             orders=orders, write=write)
