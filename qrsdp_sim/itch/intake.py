"""The ITCH streamer's intake: Kafka items -> each stock's accepted events, held for the merge.

Every Kafka message is untrusted. Per message (vectorised over a run's records, no Python per
event): a date header that is a real ``YYYY-MM-DD`` date, a seq header of 8 bytes, a value that is a
26-byte record or an end-of-session marker, and the record checks of :mod:`qrsdp_sim.itch.validate`.
A message that fails is sent to the dead-letter topic with the reason and counted
(``rejected``/``dead_lettered``); it never stops the streamer and never holds up the messages behind
it. What is merely not for this feed is counted and skipped: symbols outside the directory
(``unknown_symbol``), events of a day that has ended (``late``), events already streamed
(``duplicates``, e.g. a ``qrsdp republish``); holes in a stock's seqs are counted (``kafka_gaps``).

After a restart the intake re-reads what it had read before (``fresh=False``): the same decisions
are taken again, silently -- nothing is counted or dead-lettered twice -- and the events already
sent rebuild the day's resting orders instead of being held again.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.feed_state import KEEP_ENDED, DayState, FeedState, Held, Pending, StockState
from qrsdp_sim.itch.kafka_source import run_slice
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.validate import (
    DUPLICATE,
    OUT_OF_SEQUENCE,
    PENDING,
    REASON_NAMES,
    TAKEN,
    UNFIT,
    StockSequence,
    check_records,
    describe,
)
from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.dead_letter import DeadLetters
from qrsdp_sim.kafka.message import (
    H_DATE,
    H_EOS,
    H_RUN_ID,
    H_SEQ,
    H_TS_NS,
    MAX_SESSION_EVENTS,
    EndOfSession,
    MalformedMessage,
)
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

log = logging.getLogger(__name__)

MAX_RUNNING_DAYS = 8  # trading days open at once (each costs memory and commit metadata)
_DATE_CACHE_LIMIT = 4096


@dataclass
class Counters:
    consumed: int = 0  # Kafka messages read
    events: int = 0  # events sent as ITCH order messages
    messages: int = 0  # ITCH messages sent (first transmission)
    packets: int = 0
    heartbeats: int = 0
    eos_packets: int = 0
    sessions_started: int = 0
    sessions_ended: int = 0
    duplicates: int = 0  # events already streamed (republish)
    late: int = 0  # events of a day that has already ended
    unknown_symbol: int = 0
    kafka_gaps: int = 0  # events missing upstream (seq jumped)
    merge_late: int = 0  # events sent after the merge had passed their timestamp (see merge.py)
    dead_lettered: int = 0  # Kafka messages sent to the dead-letter topic
    rejected: dict[str, int] = field(default_factory=dict)  # dead letters by reason
    resent_after_restart: int = 0
    batches: int = 0

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.dead_lettered += n

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self.__dict__.items()}


def _be8(value: int) -> bytes:
    return int(value).to_bytes(8, "big")


class Intake:
    """Reads Kafka items into the feed state (``state``, replaced by the streamer on restore)."""

    def __init__(self, feed: DayFeed, topic: str, counters: Counters, dead_letters: DeadLetters,
                 max_orders: int) -> None:
        self.feed = feed
        self.directory: Directory = feed.directory
        self.topic = topic
        self.counters = counters
        self.dead = dead_letters
        self.max_orders = max_orders
        self.state = FeedState(self.directory.fingerprint(feed.tick_size))
        self.consumed: dict[int, int] = {}  # per partition: the next offset to read
        self.last_traffic: dict[str, float] = {}  # date -> monotonic time of its last message
        self._dates: dict[bytes, str] = {}

    # -- items ----------------------------------------------------------------
    def items(self, items: list, now: float, fresh_from: dict[int, int] | None = None) -> None:
        """Take a batch of Kafka items; ``fresh_from``: below these offsets messages were read before a
        restart (decided again without counting or dead-lettering them)."""
        for item in items:
            if isinstance(item, Run):
                p, first, n = item.partition, item.first_offset, len(item.records)
            else:
                if item.error() is not None:
                    continue
                p, first, n = item.partition(), item.offset(), 1
            done = self.consumed.get(p, 0)
            if first + n <= done:
                continue  # read before (a stale fetch)
            if first < done:
                item = _slice(item, done - first)
                first, n = done, n - (done - first)
            if fresh_from is not None and first < fresh_from.get(p, 0) < first + n:
                k = fresh_from[p] - first
                self._take(_slice(item, 0, k), now, False)
                self._take(_slice(item, k), now, True)
            else:
                self._take(item, now, fresh_from is None or first >= fresh_from.get(p, 0))
            self.consumed[p] = first + n

    def _take(self, item: Any, now: float, fresh: bool) -> None:
        n = len(item.records) if isinstance(item, Run) else 1
        if fresh:
            self.counters.consumed += n
        try:
            if isinstance(item, Run):
                self._run(item, now, fresh)
            else:
                self._message(item, now, fresh)
        except Exception as exc:  # a defect must cost one item, not the feed
            log.exception("itch-stream: could not process a Kafka item")
            if fresh:
                self._dead_item(item, f"the streamer could not process it: {exc!r}")

    # -- dead letters -----------------------------------------------------------
    def _dead(self, message: Any, reason_name: str, reason: str) -> None:
        self.counters.reject(reason_name)
        self.dead.send(message, reason_name, reason)

    def _dead_item(self, item: Any, reason: str, reason_name: str = "unprocessable") -> None:
        if isinstance(item, Run):
            for i in range(len(item.records)):
                self._dead_run_record(item, i, reason, reason_name)
        else:
            self._dead(item, reason_name, reason)

    def _dead_run_record(self, run: Run, i: int, reason: str, reason_name: str) -> None:
        """One record of a run, as the Kafka message it was (key, value, the producer's four headers)."""
        rec = run.records[i]
        headers = [(H_TS_NS, _be8(rec["ts_ns"])), (H_DATE, run.date), (H_SEQ, _be8(run.first_seq + i)),
                   (H_RUN_ID, run.run_id)]
        self._dead(RawMessage(self.topic, run.partition, run.first_offset + i, run.key, rec.tobytes(), headers),
                   reason_name, reason)

    def dead_record(self, symbol: str, date: str, partition: int, offset: int, seq: int, record: np.void,
                    reason_name: str, reason: str) -> None:
        """Dead-letter one held event refused when it was encoded (its resting order disagrees)."""
        headers = [(H_TS_NS, _be8(record["ts_ns"])), (H_DATE, date.encode()), (H_SEQ, _be8(seq))]
        self._dead(RawMessage(self.topic, partition, offset, symbol.encode(), record.tobytes(), headers),
                   reason_name, reason)

    # -- headers ----------------------------------------------------------------
    def _date(self, raw: Any) -> str | None:
        """``raw`` as a YYYY-MM-DD string when it is a real date of 2000-2100 (the Parquet consumer's
        rule), else None."""
        if not isinstance(raw, bytes):
            return None
        got = self._dates.get(raw)
        if got is not None:
            return got
        if len(raw) != 10:
            return None
        try:
            text = raw.decode("ascii")
            if not 2000 <= dt.date.fromisoformat(text).year <= 2100:
                return None
        except (UnicodeDecodeError, ValueError):
            return None
        if len(self._dates) >= _DATE_CACHE_LIMIT:
            self._dates.clear()
        self._dates[raw] = text
        return text

    # -- days -------------------------------------------------------------------
    def day(self, date: str) -> DayState | None:
        """The running day ``date`` (opened now if new); None when it has ended (or too many are open)."""
        st = self.state
        day = st.days.get(date)
        if day is not None:
            return day
        if date in st.ended or (st.ended and date < st.ended[0]):
            return None
        if len(st.days) >= MAX_RUNNING_DAYS:
            return None
        day = st.days[date] = DayState(orders=OrderTable(self.max_orders))
        return day

    def end_day(self, date: str) -> DayState:
        day = self.state.days.pop(date)
        self.state.ended = sorted([*self.state.ended, date])[-KEEP_ENDED:]
        self.last_traffic.pop(date, None)
        return day

    def _no_day(self, date: str, n: int, fresh: bool, item: Any) -> None:
        """Events of a day that cannot run: ended (late), or one day too many (dead-lettered)."""
        st = self.state
        if date in st.ended or (st.ended and date < st.ended[0]):
            if fresh:
                self.counters.late += n
            return
        if fresh:
            self._dead_item(item, f"too many trading days open at once ({MAX_RUNNING_DAYS}); {date} is refused",
                            "too_many_days")

    # -- events -----------------------------------------------------------------
    def _run(self, run: Run, now: float, fresh: bool) -> None:
        n = len(run.records)
        symbol = run.key.decode("ascii", "replace") if run.key else ""
        locate = self.directory.locate(symbol)
        if locate is None:
            if fresh:
                self.counters.unknown_symbol += n
            return
        date = self._date(run.date)
        if date is None:
            if fresh:
                self._dead_item(run, f"date header {run.date!r} is not a YYYY-MM-DD date", "bad_date")
            return
        day = self.day(date)
        if day is None:
            self._no_day(date, n, fresh, run)
            return
        self.last_traffic[date] = now
        p = run.partition
        ss = day.stocks.get(symbol)
        if ss is None:
            ss = day.stocks[symbol] = StockState(p, sent=0)
        ss.partition = p
        if ss.ended:
            if fresh:
                self.counters.duplicates += n
            return
        records, seq0 = run.records, run.first_seq
        if seq0 + n > MAX_SESSION_EVENTS:
            if fresh:
                self._dead_item(run, f"seq header {seq0} is beyond a session's {MAX_SESSION_EVENTS} events", "bad_headers")
            return
        reasons = check_records(records, locate=locate, n_locates=self.directory.n, tick_size=self.feed.tick_size)
        verdict, before, gaps = ss.seq.feed(records["ts_ns"], seq0, reasons == 0)
        if fresh and gaps:
            self.counters.kafka_gaps += gaps
            log.warning("%s %s: %d events missing in Kafka before seq %d", symbol, date, gaps, ss.seq.conf_seq)
        if before:
            self._settle_pending(day, ss, locate, taken=before == 1)
        odd = np.flatnonzero(verdict != TAKEN)
        if len(odd):
            for i in odd:
                v = int(verdict[i])
                if v == PENDING:
                    ss.pending = Pending(records[i : i + 1], seq0 + int(i), run.first_offset + int(i), p, run.key,
                                         run.date, run.run_id, fresh)
                elif not fresh:
                    continue
                elif v == DUPLICATE:
                    self.counters.duplicates += 1
                else:
                    code = int(reasons[i]) if v == UNFIT else OUT_OF_SEQUENCE
                    self._dead_run_record(run, int(i), describe(code, records[i], self.feed.tick_size),
                                          REASON_NAMES[code])
        # the events taken, as runs of consecutive ones (the others cut them)
        bounds = [-1, *odd.tolist(), n]
        for a, b in itertools.pairwise(bounds):
            if b - a > 1:
                self._accept(day, ss, locate, Held(records[a + 1 : b], seq0 + a + 1, run.first_offset + a + 1, now))
        if day.arrivals and day.arrivals[-1][0] == now:
            day.arrivals[-1] = (now, day.read_ts)
        else:
            day.arrivals.append((now, day.read_ts))

    def _settle_pending(self, day: DayState, ss: StockState, locate: int, *, taken: bool) -> None:
        """The stock's pending event was confirmed (taken: held for the merge) or refused (dead-lettered)."""
        pend, ss.pending = ss.pending, None
        if pend is None:
            return
        if taken:
            self._accept(day, ss, locate, Held(pend.records, pend.seq, pend.offset, time.monotonic()))
        elif pend.fresh:
            run = Run(pend.partition, pend.offset, pend.seq, pend.key, pend.date, pend.run_id, pend.records)
            self._dead_run_record(run, 0, describe(OUT_OF_SEQUENCE, pend.records[0], self.feed.tick_size),
                                  REASON_NAMES[OUT_OF_SEQUENCE])

    def release(self, date: str) -> None:
        """A day closes without the end-of-session markers of some stocks: their pending events are taken."""
        day = self.state.days.get(date)
        if day is None:
            return
        for sym, ss in day.stocks.items():
            if ss.pending is not None:
                outcome, _gaps = ss.seq.close(None)
                self._settle_pending(day, ss, self.directory.locate(sym), taken=outcome == 1)

    def _accept(self, day: DayState, ss: StockState, locate: int, h: Held) -> None:
        """Hold taken events for the merge -- or, read again after a restart and sent before it, only
        apply them to the resting orders."""
        if ss.start < 0:
            ss.start = h.offset0
        day.read_ts = max(day.read_ts, int(h.records["ts_ns"][-1]))
        if h.seq0 < ss.sent:
            k = min(ss.sent - h.seq0, len(h.records))
            done, h = h.cut(k)
            self.feed.orders(done.records, locate, 1, day.orders, write=False)
            if not len(h.records):
                return
        ss.held.append(h)
        ss.held_count += len(h.records)

    def _message(self, msg: Any, now: float, fresh: bool) -> None:
        value = msg.value()
        headers = msg.headers() or ()
        try:
            h = dict(headers)
        except (TypeError, ValueError):
            h = {}
        raw_seq = h.get(H_SEQ)
        seq = int.from_bytes(raw_seq, "big") if isinstance(raw_seq, bytes) and len(raw_seq) == 8 else None
        date = self._date(h.get(H_DATE))
        key = msg.key()
        if value is not None and len(value) == RECORD_SIZE:
            if date is None or seq is None:
                if fresh:
                    self._dead_item(msg, "event message without a YYYY-MM-DD date header and an 8-byte seq header",
                                    "bad_headers")
                return
            run_id = h.get(H_RUN_ID)
            records = np.frombuffer(value, RECORD_DTYPE)
            self._run(Run(msg.partition(), msg.offset(), seq, key if isinstance(key, bytes) else b"",
                          date.encode(), run_id if isinstance(run_id, bytes) else b"", records), now, fresh)
            return
        if value:
            if fresh:
                self._dead_item(msg, f"value of {len(value)} bytes is neither a {RECORD_SIZE}-byte record nor an "
                                "end-of-session marker", "bad_value")
            return
        if date is None or seq is None:
            if fresh:
                self._dead_item(msg, "end-of-session marker without a YYYY-MM-DD date header and an 8-byte seq "
                                "header", "bad_marker")
            return
        symbol = key.decode("ascii", "replace") if isinstance(key, bytes) else ""
        if self.directory.locate(symbol) is None:
            if fresh:
                self.counters.unknown_symbol += 1
            return
        # A marker ends the stock's session for good: only one as the producers write it (a valid eos
        # header whose count the seq header repeats) may, never a stray or forged one mid-session.
        try:
            eos = EndOfSession.decode(h.get(H_EOS))
        except MalformedMessage as exc:
            if fresh:
                self._dead_item(msg, f"end-of-session marker: {exc}", "bad_marker")
            return
        if eos.events != seq:
            if fresh:
                self._dead_item(msg, f"end-of-session marker: seq header {seq} disagrees with its eos count "
                                f"{eos.events}", "bad_marker")
            return
        self._end_of_session(symbol, msg.partition(), date, seq, now, fresh, msg)

    def _end_of_session(self, symbol: str, p: int, date: str, count: int, now: float, fresh: bool, msg: Any) -> None:
        day = self.day(date)
        if day is None:
            self._no_day(date, 1, fresh, msg)
            return
        self.last_traffic[date] = now
        ss = day.stocks.get(symbol)
        if ss is None:
            ss = day.stocks[symbol] = StockState(p)
        if ss.ended:
            return
        received = ss.seq.conf_seq + 1  # events confirmed in sequence (a pending one may be forged)
        if count < received:  # a session never ends below what it already delivered
            if fresh:
                self._dead_item(msg, f"end-of-session count {count} is below the {received} events of {symbol} "
                                f"{date} already received", "bad_marker")
            return
        outcome, gaps = ss.seq.close(count)
        if outcome:
            self._settle_pending(day, ss, self.directory.locate(symbol), taken=outcome == 1)
        if gaps and fresh:
            self.counters.kafka_gaps += gaps
            log.warning("%s %s: session of %d events ended with %d never received", symbol, date, count, gaps)
        ss.ended = True

    def restart_stocks(self) -> None:
        """Before re-reading after a restart: each stock's sequence starts over from ``start``."""
        for day in self.state.days.values():
            for s in day.stocks.values():
                s.seq = StockSequence()
                s.pending = None
                if s.start >= 0:  # re-read from its first event: its end-of-session marker comes again too
                    s.ended = False
                else:  # nothing to re-read: what lies below ``sent`` is a duplicate
                    s.seq.conf_seq = s.sent - 1
                s.held.clear()
                s.held_count = 0

    def rebuild_from(self, default: dict[int, int]) -> dict[int, int]:
        """Per partition, where a restart re-reads from: the first event of every stock not done, else
        ``default`` (the committed offset)."""
        out = dict(default)
        for day in self.state.days.values():
            for s in day.stocks.values():
                if s.start >= 0:  # a stock done (ended, everything sent) was committed without its start
                    out[s.partition] = min(out.get(s.partition, s.start), s.start)
        return out


def _slice(item: Any, lo: int, hi: int | None = None) -> Any:
    """Messages ``lo:hi`` of a run (a single message is returned as it is)."""
    return run_slice(item, lo, hi) if isinstance(item, Run) else item
