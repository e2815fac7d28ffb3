"""The ITCH streamer's bridge path without Kafka: a scripted stand-in for ``BridgeConsumer`` hands out
runs and raw messages as the bridge does.

* processing runs gives the same ITCH stream, sequence numbers and consumed segments as processing
  the same messages one by one (the confluent-kafka path), whole or cut into batches of any size;
* stale runs (already handled) are skipped or cut;
* re-reading an in-flight batch returns exactly the committed per-partition message counts in the
  committed order, runs cut where the segments cut them.
"""

from __future__ import annotations

import collections
import datetime as dt

import numpy as np
import pytest

from qrsdp_sim.engine import SessionConfig, simulate_session
from qrsdp_sim.itch.kafka_source import BridgeKafkaSource, run_slice
from qrsdp_sim.itch.streamer import Data, EndOfSession, Streamer, StreamerConfig
from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ, H_TS_NS
from qrsdp_sim.kafka.message import EndOfSession as Eos
from qrsdp_sim.records import RECORD_DTYPE
from qrsdp_sim.sinks.memory import InMemorySink

DATE = dt.date(2026, 1, 2).isoformat().encode()
TOPIC = "exchange.events"
SYMBOLS = {"AAPL": 0, "MSFT": 1}  # symbol -> partition


class FakeBridge:
    """What ``BridgeKafkaSource`` uses of ``BridgeConsumer``: poll() hands out a script, then None."""

    def __init__(self, items) -> None:
        self.items = collections.deque(items)

    def poll(self, timeout=None):
        return self.items.popleft() if self.items else None

    def assign(self, offsets) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def sessions() -> dict[str, np.ndarray]:
    out = {}
    for i, sym in enumerate(SYMBOLS):
        sink = InMemorySink()
        simulate_session(SessionConfig(seed=31 + i, p0_ticks=10_000, session_seconds=120), sink)
        out[sym] = sink.records
    return out


def _script(sessions, rng: np.random.Generator):
    """The topic as the bridge would emit it: each stock's events in runs of random length (run ids
    change part-way, so runs also break where the seqs continue), then its end-of-session marker;
    the two partitions interleaved at random. Returns (items, the same as single messages)."""
    per_partition = {}
    for sym, p in SYMBOLS.items():
        recs = sessions[sym]
        items, msgs = [], []
        pos = 0
        off = 0
        while pos < len(recs):
            n = int(rng.integers(1, 3000))
            chunk = recs[pos : pos + n]
            run_id = b"r1" if pos < len(recs) // 2 else b"r2"
            run = Run(p, off, pos, sym.encode(), DATE, run_id, chunk)
            items.append(run)
            for k, rec in enumerate(chunk):
                msgs.append(RawMessage(TOPIC, p, off + k, sym.encode(), rec.tobytes(), [
                    (H_TS_NS, int(rec["ts_ns"]).to_bytes(8, "big")), (H_DATE, DATE),
                    (H_SEQ, (pos + k).to_bytes(8, "big")), (H_RUN_ID, run_id)]))  # fmt: skip
            pos += len(chunk)
            off += len(chunk)
        eos = RawMessage(TOPIC, p, off, sym.encode(), b"", [
            (H_DATE, DATE), (H_SEQ, len(recs).to_bytes(8, "big")), (H_RUN_ID, b"r2"),
            (H_EOS, Eos(len(recs), 0).encode())])  # fmt: skip
        items.append(eos)
        msgs.append(eos)
        per_partition[p] = (items, msgs)
    # interleave whole items; the messages follow the same order
    order = rng.permutation(np.repeat(list(per_partition), [len(v[0]) for v in per_partition.values()]))
    items, msgs = [], []
    taken = dict.fromkeys(per_partition, 0)
    msg_pos = dict.fromkeys(per_partition, 0)
    for p in order:
        p = int(p)
        item = per_partition[p][0][taken[p]]
        taken[p] += 1
        items.append(item)
        k = len(item.records) if isinstance(item, Run) else 1
        msgs.extend(per_partition[p][1][msg_pos[p] : msg_pos[p] + k])
        msg_pos[p] += k
    return items, msgs


def _streamer() -> Streamer:
    st = Streamer(StreamerConfig(symbols=list(SYMBOLS)))
    st._partitions = sorted(SYMBOLS.values())
    st._next_offset = dict.fromkeys(st._partitions, 0)
    return st


def _stream(actions) -> tuple[bytes, list[tuple[bytes, int]]]:
    """The ITCH byte stream of the actions, checking that sequence numbers follow on."""
    data = bytearray()
    marks = []
    expect: dict[bytes, int] = {}
    for a in actions:
        if isinstance(a, Data):
            assert a.first_seq == expect.get(a.session, 1)
            expect[a.session] = a.first_seq + a.framed.count
            data += a.framed.data.tobytes()
        else:
            assert isinstance(a, EndOfSession)
            marks.append((a.session, a.next_seq))
    return bytes(data), marks


def test_runs_give_the_message_paths_stream_whole_and_in_batches(sessions) -> None:
    rng = np.random.default_rng(5)
    items, msgs = _script(sessions, rng)
    ref = _streamer()
    ref_actions, ref_segments = ref._process(msgs)
    ref_stream = _stream(ref_actions)
    assert len(ref_stream[1]) == 1  # the day ended once both stocks' markers were in
    assert ref.counters.sessions_ended == 1 and ref.counters.events == sum(len(r) for r in sessions.values())

    whole = _streamer()
    whole.kafka = BridgeKafkaSource(whole.cfg, FakeBridge(items))
    actions, segments = whole._process_items(whole.kafka.fetch(10**9, 0))
    assert segments == ref_segments
    assert _stream(actions) == ref_stream
    assert whole.state.ended == ref.state.ended and whole._next_offset == ref._next_offset
    assert whole.counters.to_dict() == ref.counters.to_dict()

    for budget in (1, 777, 5000):
        st = _streamer()
        st.kafka = BridgeKafkaSource(st.cfg, FakeBridge(items))
        all_actions, all_segments = [], []
        while batch := st.kafka.fetch(budget, 0):
            assert sum(len(i.records) if isinstance(i, Run) else 1 for i in batch) <= budget
            a, s = st._process_items(batch)
            all_actions += a
            all_segments += s
        assert _stream(all_actions) == ref_stream, budget
        assert sum(n for _p, n in all_segments) == len(msgs)
        assert st.counters.to_dict() == ref.counters.to_dict()


def test_stale_runs_are_skipped_or_cut(sessions) -> None:
    recs = sessions["AAPL"][:100]
    st = _streamer()
    st._next_offset[0] = 60  # offsets 0..59 were sent already
    old = Run(0, 0, 0, b"AAPL", DATE, b"r", recs[:50])
    straddling = Run(0, 50, 50, b"AAPL", DATE, b"r", recs[50:])
    actions, segments = st._process_items([old, straddling])
    assert segments == [(0, 40)] and st._next_offset[0] == 100
    framed = [a.framed for a in actions if isinstance(a, Data)]
    assert framed[-1].count == 40  # the day's opening, then events 60..99 only


def test_in_flight_batch_is_read_back_in_segment_order() -> None:
    recs = np.zeros(1000, RECORD_DTYPE)
    recs["order_id"] = np.arange(1, 1001)

    def run(p: int, off: int, n: int) -> Run:
        return Run(p, off, off, b"AAPL" if p == 0 else b"MSFT", DATE, b"r", recs[off : off + n])

    # the bridge re-reads from before the committed offsets too (stale), in its own run boundaries
    script = [run(0, 90, 30), run(1, 200, 120), run(0, 120, 400), RawMessage(TOPIC, 0, 520, b"AAPL", b"", []),
              run(1, 320, 50), run(0, 521, 100)]  # fmt: skip
    kafka = BridgeKafkaSource(StreamerConfig(symbols=list(SYMBOLS)), FakeBridge(script))
    start = {0: 100, 1: 250}
    segments = [(0, 150), (1, 70), (0, 272), (1, 30)]
    got = kafka.read_batch(start, segments)
    flat = []
    for item in got:
        if isinstance(item, Run):
            flat += [
                (item.partition, item.first_offset + k, item.first_seq + k) for k in range(len(item.records))
            ]
            assert np.array_equal(
                item.records["order_id"], recs["order_id"][item.first_offset : item.next_offset]
            )
        else:
            flat.append((item.partition(), item.offset(), None))
    expect = ([(0, o, o) for o in range(100, 250)] + [(1, o, o) for o in range(250, 320)]
              + [(0, o, o) for o in range(250, 520)] + [(0, 520, None), (0, 521, 521)]
              + [(1, o, o) for o in range(320, 350)])  # fmt: skip
    assert flat == expect


def test_run_slice_keeps_offsets_and_seqs_aligned() -> None:
    recs = np.zeros(10, RECORD_DTYPE)
    r = Run(3, 100, 7, b"K", DATE, b"r", recs)
    s = run_slice(r, 4, 9)
    assert (s.partition, s.first_offset, s.first_seq, len(s.records), s.next_offset) == (3, 104, 11, 5, 109)
