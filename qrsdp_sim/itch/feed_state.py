"""The ITCH streamer's feed state and its encoding in Kafka commit metadata.

``FeedState`` is what a restarted streamer needs to continue one unbroken session per day: for every
running day the next MoldUDP64 sequence number, event-time bounds and each stock's progress
(``StockState``: next expected Kafka ``seq``, ended), plus the most recent ended days. ``encode``
writes the part of one partition (with the composition of the in-flight batch) as that partition's
commit metadata; ``decode`` merges the metadata of one commit back into the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

META_VERSION = "itch1"
META_LIMIT = 4000  # Kafka's default offset.metadata.max.bytes is 4096


@dataclass
class StockState:
    partition: int
    next_seq: int = 0  # next expected Kafka ``seq`` of the stock's session that day
    ended: bool = False


@dataclass
class DayState:
    next_seq: int = 1  # next MoldUDP64 sequence number of the day's session
    max_ts: int = 0
    first_ts: int = 0
    stocks: dict[str, StockState] = field(default_factory=dict)

    def copy(self) -> DayState:
        return DayState(self.next_seq, self.max_ts, self.first_ts,
                        {s: StockState(v.partition, v.next_seq, v.ended) for s, v in self.stocks.items()})


KEEP_ENDED = 32  # ended days remembered (their late or republished events are dropped)


@dataclass
class FeedState:
    fingerprint: str
    days: dict[str, DayState] = field(default_factory=dict)  # running sessions by date
    ended: list[str] = field(default_factory=list)  # most recent ended dates

    def copy(self) -> FeedState:
        return FeedState(self.fingerprint, {d: v.copy() for d, v in self.days.items()}, list(self.ended))

    def encode(self, partition: int, segments: list[tuple[int, int]]) -> str:
        days = []
        for date, day in sorted(self.days.items()):
            stocks = ",".join(f"{s}:{v.next_seq}:{int(v.ended)}" for s, v in sorted(day.stocks.items())
                              if v.partition == partition)
            days.append(f"{date}~{day.next_seq}~{day.max_ts}~{day.first_ts}~{stocks}")
        seg = ",".join(f"{p}:{n}" for p, n in segments)
        text = "|".join([META_VERSION, self.fingerprint, ",".join(self.ended), seg, "/".join(days)])
        if len(text) > META_LIMIT:
            raise RuntimeError(f"commit metadata of partition {partition} is {len(text)} bytes (> {META_LIMIT}): "
                               "too many securities on one partition")
        return text

    @staticmethod
    def decode(texts: dict[int, str]) -> tuple[FeedState | None, list[tuple[int, int]]]:
        """Merge the per-partition metadata of one commit; (None, []) when there is none."""
        state: FeedState | None = None
        segments: list[tuple[int, int]] = []
        for p, text in sorted(texts.items()):
            parts = text.split("|")
            if len(parts) != 5 or parts[0] != META_VERSION:
                continue
            _v, fp, ended, seg, days = parts
            if state is None:
                state = FeedState(fp, {}, [d for d in ended.split(",") if d])
                segments = [(int(a), int(b)) for a, b in (x.split(":") for x in seg.split(",") if x)]
            for item in (x for x in days.split("/") if x):
                date, nseq, max_ts, first_ts, stocks = item.split("~")
                day = state.days.setdefault(date, DayState(int(nseq), int(max_ts), int(first_ts)))
                for st in (x for x in stocks.split(",") if x):
                    sym, sq, e = st.split(":")
                    day.stocks[sym] = StockState(p, int(sq), e == "1")
        return state, segments
