"""The ITCH streamer's logic without Kafka or sockets (tests/itch_streamer_harness.py): an in-memory topic
with committed offsets, a sender that keeps the datagrams, a fake dead-letter producer, and the reference
listener reading the datagrams.

* two partitions merge into one time-ordered feed equal to ``itch-export``'s day, byte for byte, however
  the topic is cut into batches, and with partial fills, partial cancels (X) and queue walks (several E);
* poison messages (type > 5, timestamps beyond 6 bytes, prices beyond 4 bytes, bad date and seq headers,
  odd values, events their resting order contradicts) and a legitimate stock whose price cannot be
  expressed in ITCH are dead-lettered with their reasons; the feed of everything else goes on;
* a restart (the previous process killed part-way through a send) rebuilds the resting orders and the
  events held for the merge and re-sends the step in flight: the listener sees one unbroken session;
* a stock that lags by more than the lateness window is sent late, counted, never dropped; the memory
  bound forces the merge;
* re-reading a range returns exactly that range, whatever the client hands over.
"""

from __future__ import annotations

import collections
import io

import numpy as np
import pytest
from itch_streamer_harness import (
    DATE,
    TOPIC,
    CollectingSender,
    MemKafka,
    dead_letters,
    drive,
    eos_message,
    event_message,
    renumber,
    streamer,
    topic_of,
)
from itch_streams import sweep_session

from qrsdp_sim.book.replay import OrderBook
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.kafka_source import BridgeKafkaSource, run_slice
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.streamer import StreamerConfig
from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.message import H_DATE, H_SEQ
from qrsdp_sim.records import RECORD_DTYPE

SID = mold.session_id(DATE)


@pytest.fixture(scope="module")
def sessions() -> dict[str, np.ndarray]:
    return {"AAPL": sweep_session(12_000, 31), "MSFT": sweep_session(9_000, 32, p0=25_000)}


def config(symbols, **kw) -> StreamerConfig:
    kw.setdefault("merge_window", 3600.0)  # the watermark alone decides (no wall-clock dependence)
    return StreamerConfig(symbols=list(symbols), **kw)


def reference_day(sessions: dict[str, np.ndarray], symbols) -> bytes:
    """The day's message stream as ``itch-export`` writes it: merged by time, ties by locate."""
    directory = Directory.of(list(symbols))
    feed = DayFeed(directory, 100)
    recs = np.concatenate(list(sessions.values()))
    locs = np.concatenate([np.full(len(r), directory.locate(s), np.uint16) for s, r in sessions.items()])
    order = np.lexsort((np.arange(len(recs)), locs, recs["ts_ns"]))
    opening = feed.opening(int(recs["ts_ns"].min()))
    enc = feed.orders(recs[order], locs[order], opening.count + 1, OrderTable())
    assert not len(enc.rejected)
    return Framed.concat([opening, enc.framed, feed.closing(int(recs["ts_ns"].max()))]).data.tobytes()


def listen(datagrams: list[bytes]) -> Listener:
    lis = Listener(ListenerConfig(print_messages=False, retransmit=None, keep=True, session=SID),
                   out=io.StringIO(), err=io.StringIO())
    for d in datagrams:
        lis.handle_packet(d)
    lis.flush()
    return lis


def assert_books(lis: Listener, sessions: dict[str, np.ndarray], symbols) -> None:
    directory = Directory.of(list(symbols))
    recs, loc, _seq = lis.records()
    for sym, src in sessions.items():
        locate = directory.locate(sym)
        mine = recs[loc == locate]
        for f in ("ts_ns", "type", "side", "price_ticks", "qty"):
            np.testing.assert_array_equal(mine[f], src[f], err_msg=f"{sym} {f}")
        ref = OrderBook()
        ref.apply(src)
        for side in (0, 1):
            assert lis.books[locate].depth(side, 10_000) == ref.depth(side, 10_000)


@pytest.mark.parametrize("budget", [1_000, 7_777, 65_536])
def test_two_partitions_merge_into_the_exported_day(sessions, budget) -> None:
    symbols = ("AAPL", "MSFT")
    log = topic_of({"AAPL": (0, sessions["AAPL"]), "MSFT": (1, sessions["MSFT"])})
    st = streamer(config(symbols), MemKafka(config(symbols), log, seed=budget))
    drive(st, budget)
    lis = listen(st.sender.datagrams)
    assert lis.complete and lis.stats.unrecovered == 0 and lis.stats.book_errors == 0
    assert lis.stats.ts_order_violations == 0
    assert b"".join(lis.raw_kept) == reference_day(sessions, symbols)
    assert_books(lis, sessions, symbols)
    c = st.counters
    n = sum(len(r) for r in sessions.values())
    assert c.events == n and c.consumed == n + 2 and c.dead_lettered == 0 and c.merge_late == 0
    assert c.sessions_started == 1 and c.sessions_ended == 1
    assert st.kafka.group == {0: (len(log[0]), st.state.encode(0)), 1: (len(log[1]), st.state.encode(1))}
    by_type = lis.stats.by_type
    assert by_type["ORDER_CANCEL"] > 0 and by_type["ORDER_DELETE"] > 0 and by_type["ORDER_EXECUTED"] > 0


def _poisoned(sessions):
    """AAPL's partition with poison messages put in at random places (their seqs taking places in the
    stock's sequence where they are events), and a stock BIG whose price cannot be expressed in ITCH."""
    rng = np.random.default_rng(7)
    good = sessions["AAPL"]
    rec = good[5].copy()
    poison_records = []
    for field, value in (("type", 9), ("ts_ns", 1 << 48), ("price_ticks", 50_000_000), ("qty", 0)):
        r = rec.copy()
        r["order_id"] = 900_000 + len(poison_records)
        r[field] = value
        poison_records.append(r)
    contradicting = rec.copy()  # a cancel of an order that never rested
    contradicting["type"], contradicting["order_id"] = 2 + int(rec["type"]) % 2, 777_777
    spike = rec.copy()  # valid on its own, but 10^12 ns (17 minutes) ahead of the events around it
    spike["order_id"] = 888_888
    positions = sorted(rng.choice(np.arange(100, len(good) - 100), 6, replace=False))
    stream = list(good)
    for pos, r in zip(reversed(positions), reversed([*poison_records, contradicting, spike]), strict=True):
        if r["ts_ns"] < 1 << 48:
            r["ts_ns"] = good[pos - 1]["ts_ns"] + (10**12 if r is spike else 0)  # in time with its neighbours
        stream.insert(pos, r)
    msgs = [event_message(0, 0, "AAPL", r, i) for i, r in enumerate(stream)]
    forged = stream[3_999].copy()  # in time with its neighbours, but with a seq far ahead of theirs
    forged["order_id"] = 999_999
    msgs.insert(4_000, event_message(0, 0, "AAPL", forged, 10**9))
    odd = [
        RawMessage(TOPIC, 0, 0, b"AAPL", good[0].tobytes(), [(H_DATE, b"2026-13-45"), (H_SEQ, (5).to_bytes(8, "big"))]),
        RawMessage(TOPIC, 0, 0, b"AAPL", good[0].tobytes(), [(H_DATE, DATE.encode()), (H_SEQ, b"\1\2\3")]),
        RawMessage(TOPIC, 0, 0, b"AAPL", good[0].tobytes(), [(H_DATE, None), (H_SEQ, None)]),
        RawMessage(TOPIC, 0, 0, b"AAPL", b"\0" * 7, [(H_DATE, DATE.encode())]),
        RawMessage(TOPIC, 0, 0, b"AAPL", b"", [(H_DATE, b"yesterday"), (H_SEQ, (1).to_bytes(8, "big"))]),
        RawMessage(TOPIC, 0, 0, b"AAPL", None, None),
    ]
    for k, m in enumerate(odd):
        msgs.insert(200 + 300 * k, m)
    msgs.append(eos_message(0, 0, "AAPL", len(stream)))
    big = sessions["MSFT"][:3000].copy()
    big["price_ticks"] += 50_000_000  # x tick size 100 > 2^32 - 1: no ITCH price for it
    big_log = topic_of({"BIG": (1, big)})[1]
    n_poison = len(poison_records) + 3 + len(odd)
    return renumber(msgs), big_log, n_poison, big


def test_poison_messages_are_dead_lettered_and_never_stop_the_streamer(sessions) -> None:
    symbols = ("AAPL", "BIG", "MSFT")
    aapl, big_log, n_poison, big = _poisoned(sessions)
    msft = topic_of({"MSFT": (2, sessions["MSFT"])})[2]
    log = {0: aapl, 1: big_log, 2: msft}
    st = streamer(config(symbols), MemKafka(config(symbols), log, seed=3))
    drive(st, 4_096)
    c = st.counters
    assert c.rejected == {
        "bad_type": 1, "bad_timestamp": 1, "price_out_of_range": 1 + int((big["type"] <= 1).sum()), "zero_qty": 1,
        "unknown_order": 1 + int((big["type"] >= 2).sum()), "bad_date": 1, "bad_headers": 2, "bad_value": 1,
        "bad_marker": 2, "out_of_sequence": 2,
    }  # fmt: skip
    dead = dead_letters(st)
    assert len(dead) == c.dead_lettered == n_poison + len(big)
    assert all(topic == "exchange.events.dlq" and h["dlq_service"] == b"itch-stream" for topic, _v, _k, h in dead)
    reasons = [h["dlq_reason"].decode() for _t, _v, _k, h in dead]
    assert any("does not fit the 4-byte ITCH price" in r for r in reasons)
    assert any("2026-13-45" in r for r in reasons) and any("event type 9" in r for r in reasons)
    assert sum("is not resting" in r for r in reasons) == 1 + int((big["type"] >= 2).sum())
    # everything else went out, in time order, and the day closed
    lis = listen(st.sender.datagrams)
    assert lis.complete and lis.stats.book_errors == 0 and lis.stats.ts_order_violations == 0
    good = {"AAPL": sessions["AAPL"], "MSFT": sessions["MSFT"]}
    assert_books(lis, good, symbols)
    assert b"".join(lis.raw_kept) == reference_day(good, symbols)
    assert c.sessions_ended == 1 and st.kafka.group[0][0] == len(aapl)  # committed past the poison


def _kill_and_restart(sessions, symbols, log, kill_after: int, budget: int = 5_000):
    committed: dict[int, tuple[int, str]] = {}
    first = streamer(config(symbols), MemKafka(config(symbols), log, seed=1, committed=committed),
                     CollectingSender(fail_after=kill_after))
    with pytest.raises(KeyboardInterrupt):
        drive(first, budget)
    second = streamer(config(symbols), MemKafka(config(symbols), log, seed=2, committed=committed))
    drive(second, budget)
    return first, second


@pytest.mark.parametrize("when", [0.05, 0.5, 0.97])
def test_a_restart_rebuilds_resting_orders_and_resends_the_step_in_flight(sessions, when) -> None:
    symbols = ("AAPL", "MSFT")
    log = topic_of({"AAPL": (0, sessions["AAPL"]), "MSFT": (0, sessions["MSFT"])})  # one partition for both
    clean = streamer(config(symbols), MemKafka(config(symbols), log, seed=1))
    drive(clean, 5_000)
    first, second = _kill_and_restart(sessions, symbols, log, int(when * len(clean.sender.datagrams)))
    lis = listen(first.sender.datagrams + second.sender.datagrams)
    assert lis.complete and lis.stats.unrecovered == 0 and lis.stats.book_errors == 0
    assert b"".join(lis.raw_kept) == reference_day(sessions, symbols)
    assert_books(lis, sessions, symbols)
    assert second.counters.resent_after_restart > 0
    assert second.timings.wall["restore"] > 0
    # X and D of orders added before the restart came out right (the order table was rebuilt)
    assert lis.stats.by_type["ORDER_CANCEL"] > 0


def test_a_stock_later_than_the_window_is_sent_late_and_counted_never_dropped(sessions) -> None:
    symbols = ("AAPL", "MSFT")
    log = topic_of({"AAPL": (0, sessions["AAPL"]), "MSFT": (1, sessions["MSFT"])})
    cfg = config(symbols, merge_window=0.0)  # no waiting: partition 0 is read whole before partition 1
    st = streamer(cfg, MemKafka(cfg, log, strict_order=True))
    drive(st, 4_000)
    lis = listen(st.sender.datagrams)
    n = sum(len(r) for r in sessions.values())
    assert lis.complete and st.counters.events == n and lis.stats.book_errors == 0
    assert st.counters.merge_late > 0 and lis.stats.ts_order_violations > 0
    assert_books(lis, sessions, symbols)
    # the same partitions with the window: the merge waits for MSFT, nothing is late
    cfg = config(symbols)
    st = streamer(cfg, MemKafka(cfg, log, strict_order=True))
    drive(st, 4_000)
    assert st.counters.merge_late == 0 and listen(st.sender.datagrams).stats.ts_order_violations == 0


def test_the_merge_holds_at_most_its_memory_bound(sessions) -> None:
    symbols = ("AAPL", "MSFT", "ZZZ")  # ZZZ never trades: the watermark alone would hold everything
    log = topic_of({"AAPL": (0, sessions["AAPL"]), "MSFT": (1, sessions["MSFT"])})
    cfg = config(symbols, merge_max_held=3_000)
    st = streamer(cfg, MemKafka(cfg, log))
    peak = 0
    st._restore()
    while batch := st.kafka.fetch(1_000, 0):
        st._step(batch)
        peak = max(peak, sum(d.held for d in st.state.days.values()))
    assert peak <= 3_000 + 1_000
    held = sum(d.held for d in st.state.days.values())
    assert st.counters.events + held == sum(len(r) for r in sessions.values())


def test_read_range_returns_exactly_the_range() -> None:
    recs = np.zeros(1000, RECORD_DTYPE)
    recs["order_id"] = np.arange(1, 1001)

    class FakeBridge:
        def __init__(self, items) -> None:
            self.items = collections.deque(items)

        def poll(self, timeout=None):
            return self.items.popleft() if self.items else None

        def assign(self, offsets) -> None:
            pass

    def run(p: int, off: int, n: int) -> Run:
        return Run(p, off, off, b"AAPL" if p == 0 else b"MSFT", DATE.encode(), b"r", recs[off : off + n])

    # stale items, items straddling the start and the end, a single message, items past the end
    script = [run(0, 90, 30), run(1, 200, 120), run(0, 120, 400), RawMessage(TOPIC, 0, 520, b"AAPL", b"", []),
              run(1, 320, 50), run(0, 521, 100), run(1, 370, 10)]  # fmt: skip
    kafka = BridgeKafkaSource(StreamerConfig(symbols=["AAPL", "MSFT"]), FakeBridge(script))
    flat = []
    for batch in kafka.read_range({0: 100, 1: 250}, {0: 600, 1: 350}):
        for item in batch:
            if isinstance(item, Run):
                flat += [(item.partition, item.first_offset + k, item.first_seq + k) for k in range(len(item.records))]
                assert np.array_equal(item.records["order_id"], recs["order_id"][item.first_offset : item.next_offset])
            else:
                flat.append((item.partition(), item.offset(), None))
    expect = ([(0, o, o) for o in range(100, 520)] + [(0, 520, None)] + [(0, o, o) for o in range(521, 600)]
              + [(1, o, o) for o in range(250, 350)])  # fmt: skip
    assert sorted(flat) == sorted(expect)


def test_run_slice_keeps_offsets_and_seqs_aligned() -> None:
    recs = np.zeros(10, RECORD_DTYPE)
    r = Run(3, 100, 7, b"K", DATE.encode(), b"r", recs)
    s = run_slice(r, 4, 9)
    assert (s.partition, s.first_offset, s.first_seq, len(s.records), s.next_offset) == (3, 104, 11, 5, 109)


def test_no_packet_or_dead_letter_of_a_step_leaves_before_its_commit_is_confirmed(sessions) -> None:
    """The write-ahead commit is sent before a step's encoding and confirmed only after it (the broker
    answers meanwhile): the step's packets and the dead letters of events refused while encoding must
    still wait for the confirmation."""
    symbols = ("AAPL", "BIG", "MSFT")
    aapl, big_log, _n, big = _poisoned(sessions)
    log = {0: aapl, 1: big_log, 2: topic_of({"MSFT": (2, sessions["MSFT"])})[2]}
    trail: list[str] = []

    class RecordingKafka(MemKafka):
        def commit_start(self, offsets, metadata):
            trail.append("commit sent")

            def confirm() -> None:
                self.commit(offsets, metadata)
                trail.append("confirmed")

            return confirm

    class RecordingSender(CollectingSender):
        def _add(self, data: bytes) -> None:
            trail.append("packet")
            super()._add(data)

    st = streamer(config(symbols), RecordingKafka(config(symbols), log, seed=5), RecordingSender())
    produce = st.producer.produce
    st.producer.produce = lambda *a, **k: (trail.append("dead letter"), produce(*a, **k))
    drive(st, 4_096)
    assert trail.count("commit sent") == trail.count("confirmed") > 3
    in_flight = False
    for what in trail:
        if what == "commit sent":
            in_flight = True
        elif what == "confirmed":
            in_flight = False
        else:
            assert not in_flight, f"a {what} left before its step's commit was confirmed"
    refused_at_encode = int((big["type"] >= 2).sum())  # cancels/executions of orders whose add was refused
    assert refused_at_encode and st.counters.rejected["unknown_order"] == 1 + refused_at_encode
    assert lis_ok(st)


def lis_ok(st) -> bool:
    lis = listen(st.sender.datagrams)
    return lis.complete and lis.stats.book_errors == 0 and lis.stats.unrecovered == 0


def test_a_refused_overlapped_commit_is_made_again_before_the_step_goes_on() -> None:
    from qrsdp_sim.kafka.bridge import BridgeRequestError

    class FakeBridge:
        def __init__(self) -> None:
            self.commits: list[tuple[dict, dict]] = []

        def commit_start(self, offsets, metadata):
            def refused() -> None:
                raise BridgeRequestError("commit on t (group g): NOT_COORDINATOR")

            return refused

        def commit(self, offsets, metadata):
            self.commits.append((dict(offsets), dict(metadata)))

    fake = FakeBridge()
    source = BridgeKafkaSource(config(("AAPL",)), fake)  # type: ignore[arg-type]
    confirm = source.commit_start({0: 7}, {0: "state"})
    assert fake.commits == []
    confirm()
    assert fake.commits == [({0: 7}, {0: "state"})]


def test_read_ahead_stops_at_its_limit_and_keeps_its_count_through_split_runs() -> None:
    """While the compiled code loads the streamer reads ahead from the bridge up to a limit; once there,
    ``prefetch`` must return at once without reading (the old loop recounted the held runs on every call
    and spun, holding the interpreter the loading thread needed)."""

    class FakeBridge:
        def __init__(self, runs: list[Run]) -> None:
            self.runs = collections.deque(runs)
            self.polls = 0

        def poll(self, timeout: float | None = None):
            self.polls += 1
            return self.runs.popleft() if self.runs else None

    recs = np.zeros(100, RECORD_DTYPE)
    runs = [Run(0, 100 * k, 100 * k, b"AAPL", DATE.encode(), b"r", recs) for k in range(5)]
    fake = FakeBridge(runs)
    source = BridgeKafkaSource(config(("AAPL",)), fake)  # type: ignore[arg-type]
    assert source.prefetch(250, 0.0)  # reads until 300 >= 250 are held
    polls = fake.polls
    assert not source.prefetch(250, 0.0) and fake.polls == polls  # full: nothing read
    got = source.fetch(150, 0.0)  # one run and half of the next: the other half is carried
    assert [len(r.records) for r in got] == [100, 50] and got[1].first_offset == 100
    assert source.prefetch(250, 0.0)  # 150 held: reads again (up to 350)
    rest = source.fetch(10_000, 0.0)
    assert [r.first_offset for r in rest] == [150, 200, 300, 400]
    assert sum(len(r.records) for r in got + rest) == 500
