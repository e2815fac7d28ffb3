"""The ITCH streamer's feed state and its encoding in Kafka commit metadata.

``FeedState`` is what a restarted streamer needs to continue one unbroken session per day. For every
running day: the next MoldUDP64 sequence number, the highest timestamp sent, whether the opening
went out, and per stock (``StockState``) the Kafka ``seq`` of its first event not sent yet, whether
its end-of-session marker was read, and the offset of its first event of the day (where a restart
re-reads from to rebuild the resting orders and the events held for the time-ordered merge). Plus the
most recent ended days.

Each partition's commit carries the part of the state of the stocks on that partition, and the
in-flight step (:class:`Step`) when the commit is a write-ahead: how far the step read each
partition, and for each day the merge cut it sends up to and whether it closes the day.

The fields held only in memory (events held for the merge, the resting orders, the per-stock read
position) are rebuilt by re-reading Kafka; see ``Streamer._restore``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from qrsdp_sim.itch.order_state import DEFAULT_MAX_ORDERS, OrderTable
from qrsdp_sim.itch.validate import StockSequence

META_VERSION = "itch2"
META_LIMIT = 4000  # Kafka's default offset.metadata.max.bytes is 4096
CUT_ALL = 1 << 64  # a cut above every timestamp: send everything held
KEEP_ENDED = 32  # ended days remembered (their late or republished events are dropped)

_RUNNING, _ENDED, _DONE = "r", "e", "d"
_NO_ORDERS = OrderTable(1, 16)  # stands in for the resting orders in a snapshot (never used)


class StateError(RuntimeError):
    """The committed metadata cannot be read as this version's feed state."""


@dataclass
class Held:
    """Consecutive accepted events of one stock, held for the merge: record ``i`` came with Kafka seq
    ``seq0 + i`` at offset ``offset0 + i`` (a run with refused events in it is held as several)."""

    records: np.ndarray
    seq0: int
    offset0: int
    arrived: float  # monotonic time the batch was read

    def cut(self, k: int) -> tuple[Held, Held]:
        """(the first ``k`` events, the rest)."""
        return (Held(self.records[:k], self.seq0, self.offset0, self.arrived),
                Held(self.records[k:], self.seq0 + k, self.offset0 + k, self.arrived))


@dataclass
class Pending:
    """A stock's newest event, waiting for its next event (or end) to confirm it (validate.StockSequence)."""

    records: np.ndarray  # the one record
    seq: int
    offset: int
    partition: int
    key: bytes
    date: bytes
    run_id: bytes
    fresh: bool  # read for the first time (not re-read after a restart)


@dataclass
class StockState:
    partition: int
    sent: int = 0  # Kafka seq of the first event not sent (events below are sent or refused)
    ended: bool = False  # end-of-session marker read
    start: int = -1  # offset of the first accepted event of the day (-1: none yet, or the stock is done)
    # in memory only, rebuilt on restart by re-reading from ``start``
    seq: StockSequence = field(default_factory=StockSequence)
    pending: Pending | None = None
    held: collections.deque[Held] = field(default_factory=collections.deque)
    held_count: int = 0

    @property
    def done(self) -> bool:
        """Ended and everything accepted was sent: the stock no longer takes part in the day."""
        return self.ended and self.held_count == 0

    def bound(self) -> int:
        """No event of this stock still to come is earlier than this (the merge's watermark term)."""
        if self.ended:
            return CUT_ALL
        return self.seq.conf_ts if self.seq.conf_seq >= 0 else 0

    def next_unsent(self) -> int:
        """The Kafka seq of the first event not sent yet."""
        if self.held:
            return self.held[0].seq0
        return self.seq.tent_seq if self.seq.pending else self.seq.conf_seq + 1


@dataclass
class DayState:
    next_seq: int = 1  # next MoldUDP64 sequence number of the day's session
    max_ts: int = 0  # highest timestamp sent
    first_ts: int = 0  # the opening's market-open time (once started)
    started: bool = False  # the opening (system events, directory) went out
    stocks: dict[str, StockState] = field(default_factory=dict)
    # in memory only
    orders: OrderTable = field(default_factory=lambda: OrderTable(DEFAULT_MAX_ORDERS))
    arrivals: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    forced_to: int = 0  # the merge never waits for events at or below this timestamp any more
    read_ts: int = 0  # highest timestamp read

    @property
    def held(self) -> int:
        return sum(s.held_count for s in self.stocks.values())


@dataclass
class Step:
    """A write-ahead step: read up to ``read_to`` (per partition), then send each day up to its cut."""

    read_to: dict[int, int]
    cuts: dict[str, int]  # date -> send held events with ts < cut
    closes: list[str]  # dates whose closing goes out after their cut


@dataclass
class FeedState:
    fingerprint: str
    days: dict[str, DayState] = field(default_factory=dict)  # running sessions by date
    ended: list[str] = field(default_factory=list)  # most recent ended dates

    def snapshot(self) -> FeedState:
        """A copy of what is committed (none of the in-memory parts: orders, held events)."""
        days = {}
        for date, d in self.days.items():
            stocks = {}
            for sym, s in d.stocks.items():
                c = StockState(s.partition, s.sent, s.ended, s.start)
                c.held_count = s.held_count  # only whether it is done matters
                stocks[sym] = c
            days[date] = DayState(d.next_seq, d.max_ts, d.first_ts, d.started, stocks, orders=_NO_ORDERS)
        return FeedState(self.fingerprint, days, list(self.ended))

    def encode(self, partition: int, step: Step | None = None) -> str:
        """The commit metadata of ``partition`` (raises StateError beyond Kafka's metadata limit)."""
        days = []
        for date, day in sorted(self.days.items()):
            stocks = []
            for s, v in sorted(day.stocks.items()):
                if v.partition != partition:
                    continue
                flag = _DONE if v.done else _ENDED if v.ended else _RUNNING
                start = "" if v.done else str(v.start)
                stocks.append(f"{s}:{v.sent}:{flag}:{start}")
            days.append(f"{date}~{day.next_seq}~{day.max_ts}~{day.first_ts}~{int(day.started)}~{','.join(stocks)}")
        text = "|".join([META_VERSION, self.fingerprint, ",".join(self.ended), _encode_step(partition, step),
                         "/".join(days)])
        if len(text) > META_LIMIT:
            raise StateError(f"commit metadata of partition {partition} is {len(text)} bytes (> {META_LIMIT}): "
                             "too many securities on one partition (use more partitions)")
        return text

    @staticmethod
    def decode(texts: dict[int, str], max_orders: int = DEFAULT_MAX_ORDERS) -> tuple[FeedState | None, Step | None]:
        """Merge the per-partition metadata of one commit; (None, None) when there is none."""
        state: FeedState | None = None
        step: Step | None = None
        for p, text in sorted(texts.items()):
            parts = text.split("|")
            if len(parts) != 5 or parts[0] != META_VERSION:
                raise StateError(
                    f"the committed state of partition {p} is not an {META_VERSION} feed state ({text[:40]!r}): it "
                    "was written by another program or streamer version; use a new --consumer-group"
                )
            try:
                _v, fp, ended, step_text, days = parts
                if state is None:
                    state = FeedState(fp, {}, [d for d in ended.split(",") if d])
                part_step = _decode_step(p, step_text)
                if part_step is not None:
                    if step is None:
                        step = part_step
                    else:
                        step.read_to.update(part_step.read_to)
                for item in (x for x in days.split("/") if x):
                    date, nseq, max_ts, first_ts, started, stocks = item.split("~")
                    day = state.days.get(date)
                    if day is None:
                        day = state.days[date] = DayState(int(nseq), int(max_ts), int(first_ts), started == "1",
                                                          orders=OrderTable(max_orders))
                    for st in (x for x in stocks.split(",") if x):
                        sym, sent, flag, start = st.split(":")
                        day.stocks[sym] = StockState(p, int(sent), flag != _RUNNING, int(start) if start else -1)
            except ValueError as exc:
                raise StateError(f"cannot read the committed state of partition {p}: {exc}") from None
        return state, step


def _encode_step(partition: int, step: Step | None) -> str:
    if step is None:
        return ""
    cuts = ";".join(f"{d}={'all' if c >= CUT_ALL else c}{'!' if d in step.closes else ''}"
                    for d, c in sorted(step.cuts.items()))
    return f"{step.read_to.get(partition, -1)}#{cuts}"


def _decode_step(partition: int, text: str) -> Step | None:
    if not text:
        return None
    read_to, cuts_text = text.split("#")
    cuts: dict[str, int] = {}
    closes: list[str] = []
    for item in (x for x in cuts_text.split(";") if x):
        date, cut = item.split("=")
        if cut.endswith("!"):
            cut = cut[:-1]
            closes.append(date)
        cuts[date] = CUT_ALL if cut == "all" else int(cut)
    return Step({partition: int(read_to)} if int(read_to) >= 0 else {}, cuts, closes)
