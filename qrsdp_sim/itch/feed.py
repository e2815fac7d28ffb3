"""A trading day's ITCH message stream: directory, opening, order messages, closing.

Both the live streamer and ``qrsdp itch-export`` build a day the same way:

1. ``S O`` start of messages, ``S S`` start of system hours,
2. one Stock Directory ``R`` per security of the day's directory (locates 1..N, alphabetical),
3. ``S Q`` start of market hours,
4. the order messages (A/D/E) of every security,
5. ``S M`` end of market hours, ``S E`` end of system hours, ``S C`` end of messages.

Timestamps of the system events (ns since midnight): O at min(03:00, first event), S and the
directory at min(04:00, first event), Q at the day's first event (the market open), M at the
day's last event, E at max(last event, 20:00), C at max(last event, 20:05) -- so the feed's
timestamps never decrease around them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch.encoder import Framed, encode_records, frame_array

_H = 3_600_000_000_000
START_OF_MESSAGES_NS = 3 * _H
START_OF_SYSTEM_NS = 4 * _H
END_OF_SYSTEM_NS = 20 * _H
END_OF_MESSAGES_NS = 20 * _H + 5 * 60_000_000_000

DEFAULT_TICK_SIZE = 100  # engine default: 1 tick = 100 x 1e-4 $ = one cent


def parse_symbols(text: str) -> list[str]:
    """``"MSFT,AAPL"`` or ``"AAPL:18000,MSFT"`` (the platform's QRSDP_SYMBOLS form) -> symbols."""
    out: list[str] = []
    for item in text.split(","):
        sym = item.split(":", 1)[0].strip()
        if not sym:
            continue
        m.stock_field(sym)
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
            m.stock_field(s)
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
        if tick_size < 1:
            raise ValueError("tick size must be >= 1 (units of 1e-4 $)")
        self.directory = directory
        self.tick_size = int(tick_size)
        self._stock = {s: m.stock_field(s) for s in directory.symbols}

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

    def orders(self, symbol: str, records: np.ndarray, first_seq: int) -> Framed:
        locate = self.directory.locate(symbol)
        if locate is None:
            raise KeyError(f"{symbol} is not in the stock directory")
        return encode_records(
            records, locate=locate, n_locates=self.directory.n, stock=self._stock[symbol],
            tick_size=self.tick_size, first_seq=first_seq,
        )  # fmt: skip
