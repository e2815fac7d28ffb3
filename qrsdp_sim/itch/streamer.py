"""``qrsdp itch-stream``: Kafka ``exchange.events`` -> ITCH 5.0 over MoldUDP64 (a long-lived daemon).

Sessions. One MoldUDP64 session per trading day (``QR`` + ``YYYYMMDD``). A day starts with the
first event of that date: start of messages, start of system hours, the Stock Directory (one ``R``
per security of ``--symbols``, locates 1..N alphabetically), start of market hours -- all before
the first order message. Order messages follow in Kafka consumption order (each stock's in its
session order). When every security of the directory has delivered its end-of-session marker
(or, for securities that never show up, after ``day_end_idle`` seconds without traffic for the
day), the day closes with end of market hours, end of system hours, end of messages, and the
MoldUDP64 end-of-session packet (repeated every second for ``eos_seconds`` in place of
heartbeats). When the producer publishes several dates at once (a multi-day run whose symbols
progress at different speeds), each running day is its own session on the same group and port;
a listener follows one session. Events of a day that has already closed are dropped (counted as
``late``), as are events already streamed (``duplicates``: re-publication).

Committed state and restarts. The streamer assigns itself every partition of the topic and keeps
its position in the Kafka consumer group ``itch-streamer``. Before sending a batch it commits, for
every partition, the offset of the first message *not yet sent* together with metadata holding the
feed state at that point (day, next MoldUDP64 sequence number, per-stock progress) and the exact
composition of the batch about to be sent (which partitions, in which order, how many messages).
Offsets thus only ever cover messages that were sent. A restarted streamer reads that committed
state, rebuilds the in-flight batch from the same Kafka messages -- same order, same sequence
numbers -- and sends it again (listeners drop what they already had as duplicates and fill the
rest), then carries on. Listeners see one unbroken session.

Exactly one streamer may run per consumer group (it is the feed's sequencer).

Kafka client. ``QRSDP_KAFKA_CLIENT`` (``qrsdp_sim.kafka.client.use_bridge``): with the native bridge
(``qrsdp-kafka-bridge``, docs/kafka-bridge.md; ``auto`` uses it when it is built) the streamer
consumes in assign mode and gets each stock's consecutive events as one numpy run, which goes to the
encoder as it is -- no Python code runs per Kafka message; end-of-session markers and anything
malformed arrive as single raw messages and take the same path as with confluent-kafka (``python``).
Both clients commit the same offsets and metadata, so a streamer may switch clients across a restart.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DEFAULT_TICK_SIZE, DayFeed, Directory
from qrsdp_sim.itch.feed_state import KEEP_ENDED, DayState, FeedState, StockState
from qrsdp_sim.itch.kafka_source import BridgeKafkaSource, PythonKafkaSource, Segments, run_slice
from qrsdp_sim.itch.retransmit import DEFAULT_CAPACITY, RetransmitBuffer, RetransmitServer
from qrsdp_sim.itch.transport import DEFAULT_GROUP, DEFAULT_INTERFACE, DEFAULT_PORT, DEFAULT_TTL, Sender
from qrsdp_sim.kafka.bridge import BridgeConsumer, Run
from qrsdp_sim.kafka.client import use_bridge
from qrsdp_sim.kafka.message import DEFAULT_TOPIC, H_DATE, H_SEQ
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "itch-streamer"
PREFETCH = 1 << 20  # messages the bridge path reads ahead while the encoder loads
SEND_CHUNK = 1024  # packets per Sender.send_packets call (one sendmmsg); a stop request waits at most this


@dataclass
class StreamerConfig:
    symbols: list[str]
    brokers: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    group_id: str = DEFAULT_GROUP_ID
    tick_size: int = DEFAULT_TICK_SIZE
    multicast_group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    ttl: int = DEFAULT_TTL
    unicast: tuple[str, int] | None = None
    retransmit_host: str = "127.0.0.1"
    retransmit_port: int = 5002
    retransmit_capacity: int = DEFAULT_CAPACITY
    pcap: str | None = None
    realtime: bool = False
    speed: float = 1.0
    batch: int = 65_536
    max_packet: int = mold.DEFAULT_MAX_PACKET
    loss: float = 0.0  # simulated sender packet loss (tests)
    loss_seed: int = 0
    heartbeat_s: float = mold.HEARTBEAT_INTERVAL_S
    eos_seconds: float = 3.0  # end-of-session packets replace heartbeats this long
    day_end_idle: float = 60.0  # close a day whose started stocks all ended after this long idle
    exit_after_sessions: int = 0  # 0: run until SIGTERM
    linger: float = 2.0  # keep serving retransmissions this long after the last session (exit mode)
    max_runtime: float = 0.0  # 0: unbounded (tests bound it)
    kafka_overrides: dict[str, Any] = field(default_factory=dict)  # confluent-kafka settings (python client only)


# ---------------------------------------------------------------------------
# actions produced by processing a batch
# ---------------------------------------------------------------------------


@dataclass
class Data:
    session: bytes
    first_seq: int
    framed: Framed
    paced: bool = True  # real-time mode paces order messages; system events and the directory go at once


@dataclass
class EndOfSession:
    session: bytes
    next_seq: int


@dataclass
class Counters:
    consumed: int = 0  # Kafka messages consumed
    events: int = 0  # records turned into order messages
    messages: int = 0  # ITCH messages sent (first transmission)
    packets: int = 0
    heartbeats: int = 0
    eos_packets: int = 0
    sessions_started: int = 0
    sessions_ended: int = 0
    duplicates: int = 0  # Kafka events already streamed (republish)
    late: int = 0  # events of a day that has already ended
    unknown_symbol: int = 0
    kafka_gaps: int = 0  # events missing upstream (seq jumped)
    resent_after_restart: int = 0
    batches: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Timings:
    """Seconds the main loop spent per step on batches that carried messages (waiting included)."""

    fetch: float = 0.0  # taking the batch from the Kafka client
    process: float = 0.0  # encoding it (ITCH messages, feed state)
    commit: float = 0.0  # the write-ahead commit and the commit after sending
    send: float = 0.0  # packets out (and pacing in real-time mode)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


class Streamer:
    """Kafka consumer -> ITCH encoder -> MoldUDP64 sender, with re-request server."""

    def __init__(self, config: StreamerConfig, consumer: Consumer | BridgeConsumer | None = None) -> None:
        self.cfg = config
        self.directory = Directory.of(config.symbols)
        self.feed = DayFeed(self.directory, config.tick_size)
        self.fingerprint = self.directory.fingerprint(config.tick_size)
        self.state = FeedState(self.fingerprint)
        self.counters = Counters()
        self.timings = Timings()
        self._consumer = consumer  # a client to use instead of one made from the config (tests)
        self.kafka: PythonKafkaSource | BridgeKafkaSource | None = None
        self._partitions: list[int] = []
        self._next_offset: dict[int, int] = {}
        self._stop = threading.Event()
        self._aborted = False
        self._sent_next: dict[bytes, int] = {}
        self._eos_until: dict[bytes, tuple[int, float]] = {}
        self._last_send = 0.0
        self._last_day_msg: dict[str, float] = {}
        self._pace_anchor: dict[bytes, tuple[float, int]] = {}
        self._pace_ts: dict[bytes, int] = {}
        self.buffer = RetransmitBuffer(config.retransmit_capacity)
        self.sender: Sender | None = None
        self.server: RetransmitServer | None = None
        self._warm_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def stop(self, *_args: object) -> None:
        """Graceful stop (SIGTERM/SIGINT): finish the packet being sent, commit, exit."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _make_kafka(self) -> PythonKafkaSource | BridgeKafkaSource:
        c = self._consumer
        if isinstance(c, BridgeConsumer):
            return BridgeKafkaSource(self.cfg, c)
        if c is not None:
            return PythonKafkaSource(self.cfg, c)
        try:
            bridge = use_bridge()
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        return BridgeKafkaSource(self.cfg) if bridge else PythonKafkaSource(self.cfg)

    def _open(self) -> None:
        c = self.cfg
        self.sender = Sender(c.multicast_group, c.port, interface=c.interface, ttl=c.ttl, unicast=c.unicast,
                             pcap=c.pcap, loss=c.loss, loss_seed=c.loss_seed)
        self.server = RetransmitServer(self.buffer, c.retransmit_host, c.retransmit_port, c.max_packet).start()
        # load the compiled encoder while the Kafka client starts and the position is read
        self._warm_thread = threading.Thread(target=self._warm_up, name="itch-warm-up", daemon=True)
        self._warm_thread.start()
        self.kafka = self._make_kafka()
        log.info("itch-stream: Kafka client %s", self.kafka.name)

    def _warm_up(self) -> None:
        """Load the compiled encoder and packetiser (numba's cache: ~0.5 s on first use)."""
        try:
            recs = np.zeros(3, RECORD_DTYPE)
            recs["ts_ns"] = 1
            recs["type"] = [0, 2, 4]
            recs["price_ticks"] = 1
            recs["qty"] = 1
            recs["order_id"] = 1
            framed = self.feed.orders(self.directory.symbols[0], recs, 1)
            mold.packet_bounds(framed, self.cfg.max_packet, int(1e6 * self.cfg.speed) if self.cfg.realtime else None)
        except Exception:  # the real call reports any problem
            log.debug("itch-stream: warm-up failed", exc_info=True)

    def _await_warm_up(self) -> None:
        if self._warm_thread is not None:
            self._warm_thread.join()
            self._warm_thread = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.sender is not None:
            self.sender.close()
        if self.kafka is not None:
            self.kafka.close()

    # -- Kafka position ------------------------------------------------------
    def _assign(self) -> None:
        self.kafka.assign({p: self._next_offset[p] for p in self._partitions})

    def _commit(self, segments: Segments, offsets: dict[int, int] | None = None,
                state: FeedState | None = None) -> None:
        offsets = self._next_offset if offsets is None else offsets
        state = self.state if state is None else state
        self.kafka.commit({p: offsets[p] for p in self._partitions},
                          {p: state.encode(p, segments) for p in self._partitions})

    def _restore(self) -> None:
        """Position and feed state from the group's committed offsets; re-send an in-flight batch."""
        self._partitions = self.kafka.partitions()
        metas: dict[int, str] = {}
        for p, (offset, meta) in self.kafka.committed(self._partitions).items():
            self._next_offset[p] = offset
            if meta:
                metas[p] = meta
        for p in self._partitions:
            if p not in self._next_offset:
                self._next_offset[p] = self.kafka.low(p)
        state, segments = FeedState.decode(metas)
        if state is not None:
            if state.fingerprint != self.fingerprint and state.days:
                raise RuntimeError(
                    "the committed feed state was produced with another stock directory or tick size while a "
                    "session is running; restart with the same --symbols/--tick-size (or a new --consumer-group)"
                )
            state.fingerprint = self.fingerprint
            self.state = state
            for date, day in state.days.items():
                self._sent_next[mold.session_id(date)] = day.next_seq
                self._last_day_msg[date] = time.monotonic()
        self._assign()
        if segments:
            self._replay_inflight(segments)
        log.info("itch-stream: resuming at offsets %s, sessions %s", self._next_offset,
                 {d: v.next_seq for d, v in self.state.days.items()})

    def _replay_inflight(self, segments: Segments) -> None:
        """Rebuild the batch that was being sent when the previous process stopped, and send it again."""
        ordered = self.kafka.read_batch(dict(self._next_offset), segments)
        actions, consumed = self._process_batch(ordered)
        if consumed != segments:
            raise RuntimeError(f"in-flight batch replay diverged: {consumed} != {segments}")
        before = self.counters.messages
        self._send(actions, resend=True)
        self.counters.resent_after_restart += self.counters.messages - before
        self.counters.messages = before
        self._commit([])
        self._assign()

    # -- processing ----------------------------------------------------------
    def _start_day(self, date: str, first_ts: int) -> list:
        day = self.state.days[date] = DayState(1, first_ts, first_ts)
        opening = self.feed.opening(first_ts)
        day.next_seq += opening.count
        self.counters.sessions_started += 1
        return [Data(mold.session_id(date), 1, opening, paced=False)]

    def _end_day(self, date: str) -> list:
        day = self.state.days.pop(date)
        sid = mold.session_id(date)
        closing = self.feed.closing(day.max_ts)
        out = [Data(sid, day.next_seq, closing, paced=False), EndOfSession(sid, day.next_seq + closing.count)]
        self.state.ended = sorted([*self.state.ended, date])[-KEEP_ENDED:]
        self._last_day_msg.pop(date, None)
        self.counters.sessions_ended += 1
        return out

    def _day(self, out: list, date: str, first_ts: int) -> DayState | None:
        """The running session of ``date`` (started now if new); None when the day has ended."""
        day = self.state.days.get(date)
        if day is not None:
            return day
        if date in self.state.ended or (self.state.ended and date < self.state.ended[0]):
            return None
        out.extend(self._start_day(date, first_ts))
        return self.state.days[date]

    def _events(self, out: list, symbol: str, p: int, date: str, seq0: int, recs: np.ndarray) -> None:
        """A contiguous run of one stock's events of one date (Kafka seq ``seq0`` ...)."""
        if self.directory.locate(symbol) is None:
            self.counters.unknown_symbol += len(recs)
            return
        day = self._day(out, date, int(recs["ts_ns"][0]))
        if day is None:
            self.counters.late += len(recs)
            return
        self._last_day_msg[date] = time.monotonic()
        ss = day.stocks.get(symbol)
        if ss is None:
            ss = day.stocks[symbol] = StockState(p)
        ss.partition = p
        if ss.ended:
            self.counters.duplicates += len(recs)
            return
        skip = ss.next_seq - seq0
        if skip >= len(recs):
            self.counters.duplicates += len(recs)
            return
        if skip > 0:
            self.counters.duplicates += skip
            recs = recs[skip:]
            seq0 += skip
        elif skip < 0:
            self.counters.kafka_gaps += -skip
            log.warning("%s %s: events %d..%d missing in Kafka", symbol, date, ss.next_seq, seq0 - 1)
        framed = self.feed.orders(symbol, recs, day.next_seq)
        out.append(Data(mold.session_id(date), day.next_seq, framed))
        day.next_seq += framed.count
        ss.next_seq = seq0 + len(recs)
        day.max_ts = max(day.max_ts, int(recs["ts_ns"].max()))
        self.counters.events += len(recs)

    def _eos(self, out: list, symbol: str, p: int, headers: dict) -> None:
        date = headers.get(H_DATE, b"").decode("ascii", "replace")
        count = int.from_bytes(headers.get(H_SEQ, b"\0" * 8), "big")
        day = self.state.days.get(date)
        if self.directory.locate(symbol) is None or day is None:
            return  # unknown stock, a day already closed, or an empty session
        self._last_day_msg[date] = time.monotonic()
        ss = day.stocks.get(symbol)
        if ss is None:
            ss = day.stocks[symbol] = StockState(p)
        if ss.ended:
            return
        if ss.next_seq < count:
            self.counters.kafka_gaps += count - ss.next_seq
            log.warning("%s %s: session ended with events %d..%d never received", symbol, date, ss.next_seq,
                        count - 1)
        ss.ended = True
        if all(s in day.stocks and day.stocks[s].ended for s in self.directory.symbols):
            out.extend(self._end_day(date))

    def _process_batch(self, batch: list) -> tuple[list, Segments]:
        self._await_warm_up()
        return self._process_items(batch) if self.kafka.items else self._process(batch)

    @staticmethod
    def _segment(segments: Segments, p: int, n: int) -> None:
        if segments and segments[-1][0] == p:
            segments[-1] = (p, segments[-1][1] + n)
        else:
            segments.append((p, n))

    def _process(self, msgs: list) -> tuple[list, Segments]:
        """Turn consumed messages into send actions; returns (actions, consumed segments)."""
        out: list = []
        segments: Segments = []
        self._process_messages(msgs, out, segments)
        return out, segments

    def _process_items(self, items: list) -> tuple[list, Segments]:
        """The same for the bridge's items: each run (runs continuing each other joined) goes to the
        encoder whole; raw messages (end-of-session markers, anything else) take the message path."""
        out: list = []
        segments: Segments = []
        n = len(items)
        i = 0
        while i < n:
            item = items[i]
            if not isinstance(item, Run):
                j = i + 1
                while j < n and not isinstance(items[j], Run):
                    j += 1
                self._process_messages(items[i:j], out, segments)
                i = j
                continue
            p = item.partition
            nxt = self._next_offset.get(p, 0)
            if item.first_offset + len(item.records) <= nxt:
                i += 1  # already handled (stale fetch)
                continue
            if item.first_offset < nxt:
                item = run_slice(item, nxt - item.first_offset)
            parts = [item.records]
            last = item
            j = i + 1
            while j < n:
                r = items[j]
                if (not isinstance(r, Run) or r.partition != p or r.first_offset != last.next_offset
                        or r.first_seq != last.first_seq + len(last.records) or r.key != item.key
                        or r.date != item.date):
                    break
                parts.append(r.records)
                last = r
                j += 1
            recs = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._events(out, item.symbol, p, item.day, item.first_seq, recs)
            self._next_offset[p] = last.next_offset
            self.counters.consumed += len(recs)
            self._segment(segments, p, len(recs))
            i = j
        return out, segments

    def _process_messages(self, msgs: list, out: list, segments: Segments) -> None:
        """Kafka messages (confluent ``Message`` or the bridge's :class:`RawMessage`) -> ``out``, ``segments``."""
        n = len(msgs)
        i = 0
        while i < n:
            msg = msgs[i]
            if msg.error() is not None:
                i += 1
                continue
            p = msg.partition()
            off = msg.offset()
            if off < self._next_offset.get(p, 0):
                i += 1  # already handled (stale fetch)
                continue
            key = msg.key()
            value = msg.value()
            # a run: same partition and key, consecutive offsets, all events (26-byte values)
            j = i + 1
            if value is not None and len(value) == RECORD_SIZE:
                while j < n:
                    m2 = msgs[j]
                    v2 = m2.value()
                    if (v2 is None or len(v2) != RECORD_SIZE or m2.key() != key or m2.partition() != p
                            or m2.offset() != off + (j - i) or m2.error() is not None):
                        break
                    j += 1
            self._run(out, msgs, i, j, p, key.decode("ascii", "replace") if key else "")
            self._next_offset[p] = msgs[j - 1].offset() + 1
            self.counters.consumed += j - i
            self._segment(segments, p, j - i)
            i = j

    def _run(self, out: list, msgs: list, i: int, j: int, p: int, symbol: str) -> None:
        """Process msgs[i:j]: one end-of-session marker, or a run of one stock's events."""
        first = msgs[i]
        value = first.value()
        if value is None or len(value) != RECORD_SIZE:
            if not value:
                self._eos(out, symbol, p, dict(first.headers() or ()))
            return  # anything else is not a QRSDP message: skipped
        hf = dict(first.headers() or ())
        hl = hf if j - i == 1 else dict(msgs[j - 1].headers() or ())
        date_f, date_l = hf.get(H_DATE, b""), hl.get(H_DATE, b"")
        seq_f = int.from_bytes(hf.get(H_SEQ, b"\0" * 8), "big")
        seq_l = int.from_bytes(hl.get(H_SEQ, b"\0" * 8), "big")
        recs = np.frombuffer(b"".join([m.value() for m in msgs[i:j]]), dtype=RECORD_DTYPE)
        if date_f == date_l and seq_l - seq_f == j - i - 1:
            # fast path: first and last agree with a contiguous run (the producer's normal output)
            self._events(out, symbol, p, date_f.decode("ascii", "replace"), seq_f, recs)
            return
        # slow path: dates or sequence numbers change inside the run (republish, day change)
        k = i
        while k < j:
            h = dict(msgs[k].headers() or ())
            date, seq = h.get(H_DATE, b""), int.from_bytes(h.get(H_SEQ, b"\0" * 8), "big")
            e = k + 1
            while e < j:
                h2 = dict(msgs[e].headers() or ())
                if h2.get(H_DATE, b"") != date or int.from_bytes(h2.get(H_SEQ, b"\0" * 8), "big") != seq + (e - k):
                    break
                e += 1
            self._events(out, symbol, p, date.decode("ascii", "replace"), seq, recs[k - i : e - i])
            k = e

    # -- sending -------------------------------------------------------------
    def _pace(self, session: bytes, ts: int) -> bool:
        """Real-time mode: wait until event time ``ts`` of ``session`` is due; False when stopping."""
        ts = self._pace_ts[session] = max(self._pace_ts.get(session, 0), ts)
        now = time.monotonic()
        anchor = self._pace_anchor.get(session)
        if anchor is None:
            self._pace_anchor[session] = (now, ts)
            return True
        due = anchor[0] + (ts - anchor[1]) / 1e9 / self.cfg.speed
        while now < due:
            if self._stop.is_set():
                return False
            time.sleep(min(due - now, 0.1))
            now = time.monotonic()
            self._idle_tasks(now)
        return True

    def _send(self, actions: list, resend: bool = False) -> bool:
        """Send actions in order; False if stopped part-way (the batch stays in flight)."""
        sender = self.sender
        for action in actions:
            if isinstance(action, EndOfSession):
                sender.send(mold.end_of_session(action.session, action.next_seq), lossy=False)
                self.counters.eos_packets += 1
                self._eos_until[action.session] = (action.next_seq, time.monotonic() + self.cfg.eos_seconds)
                self._pace_anchor.pop(action.session, None)
                self._pace_ts.pop(action.session, None)
                self._last_send = time.monotonic()
                continue
            framed = action.framed
            self.buffer.add(action.session, action.first_seq, framed)
            paced = self.cfg.realtime and action.paced
            span = int(1e6 * self.cfg.speed) if paced else None  # a packet spans <= 1 ms of wall time
            bounds = mold.packet_bounds(framed, self.cfg.max_packet, span)
            offsets = framed.offsets
            if not paced:
                # whole chunks of packets per call (sendmmsg when the sender can), stop checked between
                last = len(bounds) - 1
                for k0 in range(0, last, SEND_CHUNK):
                    if self._stop.is_set() and not resend:
                        return False
                    k1 = min(k0 + SEND_CHUNK, last)
                    sender.send_packets(action.session, action.first_seq, framed.data, offsets, bounds[k0 : k1 + 1])
                    self.counters.packets += k1 - k0
                    self._sent_next[action.session] = action.first_seq + int(bounds[k1])
                self.counters.messages += framed.count
                self._last_send = time.monotonic()
                continue
            data = memoryview(framed.data)
            for k in range(len(bounds) - 1):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                if paced and not self._pace(action.session, int(framed.ts[lo])):
                    return False
                if self._stop.is_set() and not resend:
                    return False
                sender.send(mold.header(action.session, action.first_seq + lo, hi - lo),
                            data[int(offsets[lo]) : int(offsets[hi])])
                self.counters.packets += 1
                self._sent_next[action.session] = action.first_seq + hi
            self.counters.messages += framed.count
            self._last_send = time.monotonic()
        return True

    def _idle_tasks(self, now: float) -> None:
        """Heartbeats when idle for a second; end-of-session packets in their place after a day."""
        if now - self._last_send < self.cfg.heartbeat_s:
            return
        sent = False
        for sid, (nseq, until) in list(self._eos_until.items()):
            if now > until:
                del self._eos_until[sid]
                continue
            self.sender.send(mold.end_of_session(sid, nseq), lossy=False)
            self.counters.eos_packets += 1
            sent = True
        for date, day in self.state.days.items():
            sid = mold.session_id(date)
            self.sender.send(mold.heartbeat(sid, self._sent_next.get(sid, day.next_seq)), lossy=False)
            self.counters.heartbeats += 1
            sent = True
        if sent:
            self._last_send = now

    def _end_idle_days(self, now: float) -> None:
        """Close days whose started stocks have all ended and that saw no traffic for ``day_end_idle`` s."""
        for date, day in list(self.state.days.items()):
            if now - self._last_day_msg.get(date, now) < self.cfg.day_end_idle:
                continue
            if not day.stocks or not all(s.ended for s in day.stocks.values()):
                continue
            log.info("itch-stream: closing %s after %.0f s idle (%d of %d stocks traded)", date,
                     self.cfg.day_end_idle, len(day.stocks), self.directory.n)
            if self._send(self._end_day(date)):
                self._commit([])

    # -- main loop -----------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.monotonic()
        finished_at: float | None = None
        try:
            self._open()
            self._restore()
            if self.kafka.items:
                # while the compiled encoder loads, read ahead so the bridge keeps converting
                while self._warm_thread is not None and self._warm_thread.is_alive() and not self._stop.is_set():
                    self.kafka.prefetch(PREFETCH, 0.01)
            while not self._stop.is_set():
                now = time.monotonic()
                if self.cfg.max_runtime and now - t_start > self.cfg.max_runtime:
                    log.warning("itch-stream: max runtime reached")
                    break
                target = self.cfg.exit_after_sessions
                if target and self.counters.sessions_ended >= target:
                    finished_at = finished_at or now
                    if now - finished_at >= max(self.cfg.eos_seconds, self.cfg.linger):
                        break
                    self._idle_tasks(now)
                    time.sleep(0.05)
                    continue
                t0 = time.perf_counter()
                batch = self.kafka.fetch(self.cfg.batch, 0.2)
                t1 = time.perf_counter()
                if batch:
                    tm = self.timings
                    tm.fetch += t1 - t0
                    start_offsets = dict(self._next_offset)
                    state_before = self.state.copy()
                    actions, segments = self._process_batch(batch)
                    t2 = time.perf_counter()
                    tm.process += t2 - t1
                    if segments:
                        # write-ahead: the offsets of what was sent + the composition of this batch
                        self._commit(segments, start_offsets, state_before)
                    t3 = time.perf_counter()
                    tm.commit += t3 - t2
                    self.counters.batches += 1
                    if not self._send(actions):
                        self._aborted = True
                        break
                    t4 = time.perf_counter()
                    tm.send += t4 - t3
                    if segments:
                        self._commit([])
                    tm.commit += time.perf_counter() - t4
                now = time.monotonic()
                self._idle_tasks(now)
                self._end_idle_days(now)
        finally:
            self.close()
        summary: dict[str, Any] = {
            "counters": self.counters.to_dict(),
            "timings_s": self.timings.to_dict(),
            "next_offsets": dict(self._next_offset),
            "sessions": {d: v.next_seq for d, v in self.state.days.items()},
            "ended": list(self.state.ended),
            "aborted": self._aborted,
            "kafka_client": self.kafka.name if self.kafka is not None else None,
        }
        if self.sender is not None:
            summary["sender"] = {"packets": self.sender.packets, "bytes": self.sender.bytes,
                                 "dropped": self.sender.dropped}
        if self.server is not None:
            summary["retransmit"] = {"requests": self.server.requests, "messages": self.server.messages_sent,
                                     "unanswered": self.server.unanswered, "malformed": self.server.malformed}
        return summary
