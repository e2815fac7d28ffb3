"""The live feed's time-ordered merge: one day's stocks, from any number of Kafka partitions, into one
MoldUDP64 sequence whose timestamps never decrease.

Each stock's accepted events are held per stock (:class:`~qrsdp_sim.itch.feed_state.Held`, in their
Kafka order; a stock's timestamps never go back, :mod:`qrsdp_sim.itch.validate` refuses those that
do). A step sends, for each day, every held event with a timestamp below the day's **cut**:

* the **watermark**: the smallest ``bound`` over the directory's stocks -- the last timestamp read
  for a stock still trading, 0 for a stock not seen yet, +inf for a stock whose end-of-session
  marker was read. No event still to come can be earlier, so everything below goes out in order;
* raised by the **lateness window**: an event waits at most ``window`` seconds of wall time for
  slower stocks. Once the events read at some moment are that old, the cut moves past the highest
  timestamp read by then, whatever the watermark says (a stock that never trades, or lags);
* raised by the **memory bound**: when a day holds more than ``max_held`` events, the oldest go out
  until half that is left.

The events below the cut are taken from every stock (a prefix of each) and put in timestamp order,
ties by stock locate and then each stock's own order -- the order ``itch-export`` writes -- so the
live feed of a day nothing was late for equals the day's export byte for byte. An event that arrives
after the cut passed its timestamp (its stock lagged by more than the window) is sent at once with
its true timestamp and counted as ``merge_late`` by the streamer (``qrsdp listen --stats`` reports it
as a timestamp order violation): it is never dropped, and never moved silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qrsdp_sim.itch.feed_state import CUT_ALL, DayState, Held


@dataclass
class Taken:
    """Events taken from the held queues for one send: ``parts`` (symbol, held events) in locate order,
    and when several stocks contribute, ``order``: the merge of their concatenation into send order."""

    parts: list[tuple[str, Held]]
    order: np.ndarray | None = None

    def __len__(self) -> int:
        return sum(len(h.records) for _s, h in self.parts)

    def merged(self, locate_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(records, locates, Kafka seqs, Kafka offsets) in send order, as arrays."""
        recs = np.concatenate([h.records for _s, h in self.parts])
        locs = np.concatenate([np.full(len(h.records), locate_of[s], np.uint16) for s, h in self.parts])
        seqs = np.concatenate([np.arange(h.seq0, h.seq0 + len(h.records), dtype=np.int64) for _s, h in self.parts])
        offs = np.concatenate([np.arange(h.offset0, h.offset0 + len(h.records), dtype=np.int64)
                               for _s, h in self.parts])
        if self.order is not None:
            recs, locs, seqs, offs = recs[self.order], locs[self.order], seqs[self.order], offs[self.order]
        recs.flags.writeable = False  # like every record array the streamer handles: one compiled version
        return recs, locs, seqs, offs


def watermark(day: DayState, symbols: tuple[str, ...]) -> int:
    """No event of the day still to come is earlier than this."""
    w = CUT_ALL
    stocks = day.stocks
    for sym in symbols:
        s = stocks.get(sym)
        b = 0 if s is None else s.bound()
        if b < w:
            w = b
            if w == 0:
                break
    return w


def cut(day: DayState, symbols: tuple[str, ...], now: float, window: float, max_held: int) -> int:
    """The day's cut now: send held events with a timestamp below it."""
    c = watermark(day, symbols)
    arrivals = day.arrivals
    while arrivals and arrivals[0][0] <= now - window:
        day.forced_to = max(day.forced_to, arrivals.popleft()[1] + 1)
    c = max(c, day.forced_to)
    held = day.held
    if held > max_held:
        ts = np.concatenate([h.records["ts_ns"] for s in day.stocks.values() for h in s.held])
        k = held - max_held // 2  # send the k oldest
        level = int(np.partition(ts, k - 1)[k - 1]) + 1
        day.forced_to = max(day.forced_to, level)
        c = max(c, level)
    return c


def has_below(day: DayState, c: int) -> bool:
    """Whether any held event lies below cut ``c``."""
    return any(s.held and int(s.held[0].records["ts_ns"][0]) < c for s in day.stocks.values())


def _take_stock(queue, c: int) -> tuple[list[Held], int]:
    """Pop the events below ``c`` from one stock's queue (a prefix); returns (parts, count)."""
    parts: list[Held] = []
    n = 0
    while queue:
        h = queue[0]
        ts = h.records["ts_ns"]
        k = len(ts) if c >= CUT_ALL or int(ts[-1]) < c else int(np.searchsorted(ts, np.uint64(c), "left"))
        if k == 0:
            break
        if k == len(ts):
            parts.append(queue.popleft())
        else:
            head, queue[0] = h.cut(k)
            parts.append(head)
        n += k
        if k < len(ts):
            break
    return parts, n


def take(day: DayState, locate_of: dict[str, int], c: int) -> Taken:
    """Take every held event below cut ``c`` from the day's stocks."""
    parts: list[tuple[str, Held]] = []
    stocks = 0
    for sym in sorted(day.stocks, key=locate_of.__getitem__):
        s = day.stocks[sym]
        if not s.held:
            continue
        got, n = _take_stock(s.held, c)
        if not n:
            continue
        s.held_count -= n
        parts += [(sym, h) for h in got]
        stocks += 1
    out = Taken(parts)
    if stocks > 1:
        # each stock's part is in time order: a stable sort by time merges them, ties by locate (the
        # concatenation order) and then by each stock's own order
        ts = np.concatenate([h.records["ts_ns"] for _s, h in parts])
        out.order = np.argsort(ts, kind="stable")
    return out
