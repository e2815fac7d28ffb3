"""Test harness: the ITCH streamer's logic with neither Kafka nor sockets.

* :class:`MemKafka` -- a partitioned topic in memory plus a consumer group's committed offsets and
  metadata (shared between "processes": pass the same ``committed`` dict to the next one), handing out
  the same items as the real clients (runs of events, single messages), in chunks of random length
  from randomly (or strictly) interleaved partitions;
* :class:`CollectingSender` -- the streamer's sender, keeping every datagram;
* :class:`FakeProducer` -- the dead-letter producer, keeping every dead letter;
* :func:`topic_of` -- sessions as Kafka messages exactly as the producer writes them;
* :func:`drive` -- a streamer's restore and main loop until nothing more happens.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.kafka_source import _Source, group_runs
from qrsdp_sim.itch.streamer import Streamer, StreamerConfig
from qrsdp_sim.kafka.bridge import RawMessage
from qrsdp_sim.kafka.dead_letter import DeadLetters
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ, H_TS_NS
from qrsdp_sim.kafka.message import EndOfSession as Eos

TOPIC = "exchange.events"
DATE = dt.date(2026, 1, 2).isoformat()


def event_message(p: int, off: int, symbol: str, rec: np.void, seq: int, date: str = DATE,
                  run_id: bytes = b"run") -> RawMessage:
    return RawMessage(TOPIC, p, off, symbol.encode(), rec.tobytes(), [
        (H_TS_NS, int(rec["ts_ns"]).to_bytes(8, "big")), (H_DATE, date.encode()), (H_SEQ, seq.to_bytes(8, "big")),
        (H_RUN_ID, run_id)])  # fmt: skip


def eos_message(p: int, off: int, symbol: str, count: int, date: str = DATE) -> RawMessage:
    return RawMessage(TOPIC, p, off, symbol.encode(), b"", [
        (H_DATE, date.encode()), (H_SEQ, count.to_bytes(8, "big")), (H_RUN_ID, b"run"),
        (H_EOS, Eos(count, 0).encode())])  # fmt: skip


def topic_of(sessions: dict[str, tuple[int, np.ndarray]], date: str = DATE) -> dict[int, list[RawMessage]]:
    """{symbol: (partition, records)} -> each partition's messages: a stock's events then its marker
    (stocks sharing a partition one after the other)."""
    log: dict[int, list[RawMessage]] = {}
    for sym, (p, recs) in sessions.items():
        msgs = log.setdefault(p, [])
        for i, rec in enumerate(recs):
            msgs.append(event_message(p, len(msgs), sym, rec, i, date))
        msgs.append(eos_message(p, len(msgs), sym, len(recs), date))
    return log


def renumber(msgs: list[RawMessage]) -> list[RawMessage]:
    """The same messages at offsets 0, 1, 2 ... (after inserting some)."""
    return [RawMessage(TOPIC, m.partition(), i, m.key(), m.value(), m.headers()) for i, m in enumerate(msgs)]


class MemKafka(_Source):
    name = "mem"

    def __init__(self, cfg: StreamerConfig, log: dict[int, list[RawMessage]], *, seed: int = 0,
                 max_chunk: int = 3000, committed: dict[int, tuple[int, str]] | None = None,
                 strict_order: bool = False) -> None:
        self.cfg = cfg
        self.log = log
        self.rng = np.random.default_rng(seed)
        self.max_chunk = max_chunk
        self.group = committed if committed is not None else {}
        self.strict_order = strict_order  # partitions one after the other (a lagging partition)
        self.pos: dict[int, int] = {}
        self.commits = 0

    def partitions(self) -> list[int]:
        return sorted(self.log)

    def committed(self, partitions: list[int]) -> dict[int, tuple[int, str]]:
        return {p: v for p, v in self.group.items() if p in partitions}

    def low(self, p: int) -> int:
        return 0

    def assign(self, offsets: dict[int, int]) -> None:
        self.pos = dict(offsets)

    def commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        for p, o in offsets.items():
            self.group[p] = (o, metadata[p])
        self.commits += 1

    def fetch(self, budget: int, timeout: float) -> list:
        out: list[RawMessage] = []
        while len(out) < budget:
            ready = [p for p in sorted(self.pos) if self.pos[p] < len(self.log[p])]
            if not ready:
                break
            p = ready[0] if self.strict_order else int(self.rng.choice(ready))
            k = min(int(self.rng.integers(1, self.max_chunk + 1)), budget - len(out), len(self.log[p]) - self.pos[p])
            out += self.log[p][self.pos[p] : self.pos[p] + k]
            self.pos[p] += k
        return group_runs(out)

    def close(self) -> None:
        pass


class CollectingSender:
    """What ``Streamer._send`` uses of :class:`~qrsdp_sim.itch.transport.Sender`; keeps the datagrams.
    ``fail_after``: raise after that many datagrams (a process killed mid-send)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.datagrams: list[bytes] = []
        self.fail_after = fail_after
        self.packets = self.bytes = self.dropped = 0

    def _add(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.datagrams) >= self.fail_after:
            raise KeyboardInterrupt("killed mid-send")
        self.datagrams.append(data)
        self.packets += 1
        self.bytes += len(data)

    def send(self, head: bytes, body: bytes | memoryview = b"", *, lossy: bool = True) -> None:
        self._add(bytes(head) + bytes(body))

    def send_packets(self, session: bytes, first_seq: int, data: np.ndarray, offsets: np.ndarray,
                     bounds: np.ndarray) -> None:
        for k in range(len(bounds) - 1):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            self._add(mold.header(session, first_seq + lo, hi - lo) + data[offsets[lo] : offsets[hi]].tobytes())

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None, dict[str, bytes | None]]] = []
        self.flushes = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list) -> None:
        self.produced.append((topic, value, key, dict(headers)))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        return 0


def streamer(cfg: StreamerConfig, kafka: MemKafka, sender: CollectingSender | None = None) -> Streamer:
    """A streamer on ``kafka`` and a collecting sender, with a fake dead-letter producer (``st.producer``)."""
    producer = FakeProducer()
    st = Streamer(cfg, dead_letters=DeadLetters(cfg.brokers, cfg.dead_letter_topic, producer=producer,
                                                service="itch-stream"))
    st.kafka = kafka
    st.sender = sender or CollectingSender()
    st.producer = producer  # type: ignore[attr-defined]
    return st


def dead_letters(st: Streamer) -> list[tuple[str, bytes | None, bytes | None, dict[str, bytes | None]]]:
    return list(st.producer.produced)  # type: ignore[attr-defined]


def drive(st: Streamer, budget: int = 65_536, restore: bool = True, max_steps: int = 100_000) -> None:
    """Restore, then steps until nothing more is read or sent; then the final commit."""
    if restore:
        st._restore()
    for _ in range(max_steps):
        batch = st.kafka.fetch(budget, 0)
        completed, busy = st._step(batch)
        assert completed
        if not batch and not busy:
            break
    if not st._clean:
        st._commit_clean()
