"""``qrsdp itch-stream``: Kafka ``exchange.events`` -> ITCH 5.0 over MoldUDP64 (a long-lived daemon).

Sessions. One MoldUDP64 session per trading day (``QR`` + ``YYYYMMDD``). A day's session opens with
its first message: start of messages, start of system hours, the Stock Directory (one ``R`` per
security of ``--symbols``, locates 1..N alphabetically), start of market hours -- then the day's
order messages of every stock in one sequence whose timestamps never decrease (the time-ordered
merge of :mod:`qrsdp_sim.itch.merge`, with its lateness window). When every security of the
directory has delivered its end-of-session marker (or, for securities that never show up, after
``day_end_idle`` seconds without traffic for the day), the day closes with end of market hours, end
of system hours, end of messages, and the MoldUDP64 end-of-session packet (repeated every second for
``eos_seconds`` in place of heartbeats). Several dates running at once (a multi-day run whose
symbols progress at different speeds) are each their own session on the same group and port.

Input. :mod:`qrsdp_sim.itch.intake` checks every Kafka message; anything malformed goes to the
dead-letter topic with its reason and never stops the streamer. An event whose resting order
disagrees with it (cancel of an order that is not resting, more shares than are left ...) is
dead-lettered when it is encoded. Cancels become Order Delete ``D`` (all that was left) or Order
Cancel ``X`` (part of it), executions Order Executed ``E`` with the shares executed: the encoder
keeps every resting order's remaining shares per day (:mod:`qrsdp_sim.itch.encoder`).

Committed state and restarts. The streamer assigns itself every partition of the topic and keeps its
state in the consumer group's committed offsets (:mod:`qrsdp_sim.itch.feed_state`): the offset read
up to, and as metadata, per running day the next MoldUDP64 sequence number and per stock the first
Kafka ``seq`` not sent yet and the offset of its first event of the day. Each step -- read a batch,
send each day up to its merge cut -- is committed before it is sent (write-ahead: where the step
read to, and each day's cut), so its messages and sequence numbers can be rebuilt exactly. A
restarted streamer re-reads each running stock's day from its first event (rebuilding the resting
orders and the events held for the merge), re-sends the step that was in flight -- listeners drop
what they already had as duplicates and fill the rest -- and carries on: listeners see one unbroken
session.

Exactly one streamer may run per consumer group (it is the feed's sequencer).

Kafka client. ``QRSDP_KAFKA_CLIENT`` (``qrsdp_sim.kafka.client.use_bridge``): the native bridge
(``qrsdp-kafka-bridge``, docs/kafka-bridge.md; ``auto`` uses it when it is built) hands over each
stock's consecutive events as one numpy run; confluent-kafka's messages are grouped into the same
runs (:mod:`qrsdp_sim.itch.kafka_source`). Both commit the same offsets and metadata, so a streamer
may switch clients across a restart.
"""

from __future__ import annotations

import logging
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer

from qrsdp_sim.itch import merge
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.feed_state import CUT_ALL, DayState, FeedState, Step
from qrsdp_sim.itch.intake import Counters, Intake
from qrsdp_sim.itch.kafka_source import BridgeKafkaSource, PythonKafkaSource
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.retransmit import RetransmitBuffer, RetransmitServer
from qrsdp_sim.itch.streamer_config import StreamerConfig
from qrsdp_sim.itch.transport import Sender
from qrsdp_sim.itch.validate import REASON_NAMES, describe
from qrsdp_sim.kafka.bridge import BridgeConsumer
from qrsdp_sim.kafka.client import use_bridge
from qrsdp_sim.kafka.dead_letter import DeadLetters
from qrsdp_sim.records import RECORD_DTYPE

log = logging.getLogger(__name__)

PREFETCH = 1 << 20  # messages the bridge path reads ahead while the encoder loads
SEND_CHUNK = 1024  # packets per Sender.send_packets call (one sendmmsg); a stop request waits at most this

__all__ = ["Counters", "Data", "EndOfSession", "Streamer", "StreamerConfig"]


# ---------------------------------------------------------------------------
# actions produced by a step
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
class DeadRecord:
    """An event its resting order refused when it was encoded: dead-lettered when the step's actions
    run (after the step's write-ahead commit is confirmed, like every other effect of a step)."""

    symbol: str
    date: str
    partition: int
    offset: int
    seq: int
    record: np.void
    reason_name: str
    reason: str


def warm_up(feed: DayFeed, max_packet: int = mold.DEFAULT_MAX_PACKET, span_ns: int | None = None) -> None:
    """Call every compiled function of the streamer's hot path once, with the argument types it meets
    there, so the first batches never wait for a compile or a cache load in the main loop. numba makes
    one machine-code version per argument type, and a read-only array is another type than a writable
    one: every record array the streamer handles is read-only (a view of what the Kafka client read;
    the merge marks its copy read-only too), so these are too. A changed source compiles them here
    (seconds, once per installation); an unchanged one loads them from numba's cache."""
    from qrsdp_sim.itch.validate import StockSequence, check_records

    recs = np.zeros(4, RECORD_DTYPE)
    recs["ts_ns"] = 1
    recs["type"] = [0, 1, 3, 0]
    recs["side"] = [0, 1, 1, 0]
    recs["price_ticks"] = 1
    recs["qty"] = 1
    recs["order_id"] = [1, 2, 2, 3]
    recs.flags.writeable = False
    fit = check_records(recs, locate=1, n_locates=feed.directory.n, tick_size=feed.tick_size) == 0
    StockSequence().feed(recs["ts_ns"], 0, fit)
    framed = feed.orders(recs, 1, 1, OrderTable(16, 16)).framed
    feed.orders(recs, 1, 1, OrderTable(16, 16), write=False)
    mold.packet_bounds(framed, max_packet, span_ns)
    OrderTable(16, 16).reserve(64)  # the table's growth (a day's first batches)


class Timings:
    """Seconds the main loop spent per step on batches that carried messages: wall time (waiting
    included) and the main thread's CPU time.

    Steps: ``restore`` (re-reading Kafka after a restart), ``fetch`` (taking the batch from the Kafka
    client), ``process`` (checking and holding it, merging, encoding), ``commit`` (the write-ahead
    commits), ``send`` (packets out, and pacing in real-time mode)."""

    STEPS = ("restore", "fetch", "process", "commit", "send")

    def __init__(self) -> None:
        self.wall = dict.fromkeys(self.STEPS, 0.0)
        self.cpu = dict.fromkeys(self.STEPS, 0.0)
        self._mark = (0.0, 0.0)

    def start(self) -> None:
        self._mark = (time.perf_counter(), time.thread_time())

    def lap(self, step: str) -> None:
        """Charge the time since the last ``start``/``lap`` to ``step``."""
        now = (time.perf_counter(), time.thread_time())
        self.wall[step] += now[0] - self._mark[0]
        self.cpu[step] += now[1] - self._mark[1]
        self._mark = now

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.wall.items()}

    def cpu_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.cpu.items()}


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process (every thread, start-up included) and of its ended child processes
    (the Kafka bridge, once closed)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"process": round(me.ru_utime + me.ru_stime, 3), "children": round(kids.ru_utime + kids.ru_stime, 3)}


class Streamer:
    """Kafka consumer -> checks -> time-ordered merge -> ITCH encoder -> MoldUDP64 sender, with re-request server."""

    def __init__(self, config: StreamerConfig, consumer: Consumer | BridgeConsumer | None = None,
                 dead_letters: DeadLetters | None = None) -> None:
        self.cfg = config
        self.directory = Directory.of(config.symbols)
        self.feed = DayFeed(self.directory, config.tick_size)
        self.fingerprint = self.directory.fingerprint(config.tick_size)
        self.counters = Counters()
        self.timings = Timings()
        self.dead = dead_letters or DeadLetters(config.brokers, config.dead_letter_topic, service="itch-stream")
        self.intake = Intake(self.feed, config.topic, self.counters, self.dead, config.max_orders)
        self._locate = {s: i + 1 for i, s in enumerate(self.directory.symbols)}
        self._consumer = consumer  # a client to use instead of one made from the config (tests)
        self.kafka: PythonKafkaSource | BridgeKafkaSource | None = None
        self._partitions: list[int] = []
        self._clean = True  # the last commit describes the state (no step in flight, nothing read since)
        self._stop = threading.Event()
        self._aborted = False
        self._sent_next: dict[bytes, int] = {}
        self._eos_until: dict[bytes, tuple[int, float]] = {}
        self._last_send = 0.0
        self._pace_anchor: dict[bytes, tuple[float, int]] = {}
        self._pace_ts: dict[bytes, int] = {}
        self.buffer = RetransmitBuffer(config.retransmit_capacity)
        self.sender: Sender | None = None
        self.server: RetransmitServer | None = None
        self._warm_thread: threading.Thread | None = None

    @property
    def state(self) -> FeedState:
        return self.intake.state

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
        self.server = RetransmitServer(self.buffer, c.retransmit_host, c.retransmit_port, c.max_packet,
                                       c.retransmit_limits).start()
        # load the compiled code while the Kafka client starts and the position is read
        self._warm_thread = threading.Thread(target=self._warm_up, name="itch-warm-up", daemon=True)
        self._warm_thread.start()
        self.kafka = self._make_kafka()
        log.info("itch-stream: Kafka client %s", self.kafka.name)

    def _warm_up(self) -> None:
        """Load the compiled checks, encoder and packetiser (numba's cache: ~0.5 s on first use)."""
        try:
            warm_up(self.feed, self.cfg.max_packet, int(1e6 * self.cfg.speed) if self.cfg.realtime else None)
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
        self.dead.close()

    # -- Kafka position --------------------------------------------------------
    def _metadata(self, step: Step | None = None) -> dict[int, str]:
        return {p: self.state.encode(p, step) for p in self._partitions}

    def _commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        self.kafka.commit({p: offsets[p] for p in self._partitions}, metadata)

    def _commit_start(self, offsets: dict[int, int], metadata: dict[int, str]) -> Callable[[], None]:
        """Send a commit; the returned function returns once the broker confirmed it."""
        return self.kafka.commit_start({p: offsets[p] for p in self._partitions}, metadata)

    def _confirm_dead_letters(self) -> None:
        """Every dead letter is in its topic before any offset passes it (waits while Kafka cannot take
        them; the messages are read again after a restart if it never can)."""
        while self.dead.unconfirmed and not self.dead.confirm(10.0):
            if self._stop.is_set():
                raise RuntimeError(f"stopping with dead letters not confirmed by {self.cfg.dead_letter_topic}: "
                                   "nothing committed past them (they are read again on restart)")
            log.warning("itch-stream: dead letters not confirmed by %s yet; not committing", self.cfg.dead_letter_topic)

    def _commit_clean(self) -> None:
        """Commit the state as it is (nothing in flight); dead letters first."""
        self._confirm_dead_letters()
        self._commit(self.intake.consumed, self._metadata())
        self._clean = True

    def _restore(self) -> None:
        """Position and feed state from the group's committed offsets: re-read each running stock's day
        (resting orders, events held for the merge), re-send a step that was in flight."""
        self.timings.start()
        self._partitions = self.kafka.partitions()
        consumed: dict[int, int] = {}
        metas: dict[int, str] = {}
        for p, (offset, meta) in self.kafka.committed(self._partitions).items():
            consumed[p] = offset
            if meta:
                metas[p] = meta
        for p in self._partitions:
            if p not in consumed:
                consumed[p] = self.kafka.low(p)
        state, step = FeedState.decode(metas, self.cfg.max_orders)
        intake = self.intake
        if state is not None:
            if state.fingerprint != self.fingerprint and state.days:
                raise RuntimeError(
                    "the committed feed state was produced with another stock directory or tick size while a "
                    "session is running; restart with the same --symbols/--tick-size (or a new --consumer-group)"
                )
            state.fingerprint = self.fingerprint
            intake.state = state
            now = time.monotonic()
            for date, day in state.days.items():
                if day.started:
                    self._sent_next[mold.session_id(date)] = day.next_seq
                intake.last_traffic[date] = now
        read_to = dict(consumed)
        if step is not None:
            read_to.update({p: o for p, o in step.read_to.items() if p in read_to})
        start = intake.rebuild_from(consumed)
        intake.restart_stocks()
        intake.consumed = dict(start)
        if any(start[p] < read_to[p] for p in self._partitions):
            self._await_warm_up()
            for batch in self.kafka.read_range(start, read_to):
                intake.items(batch, time.monotonic(), fresh_from=consumed)
        intake.consumed = dict(read_to)
        self.timings.lap("restore")
        if step is not None:
            before = self.counters.messages
            self._send(self._execute(step), resend=True)
            self.counters.resent_after_restart += self.counters.messages - before
            self.counters.messages = before
        if step is not None or read_to != consumed:
            self._commit_clean()
        self.kafka.assign(dict(read_to))
        log.info("itch-stream: resuming at offsets %s, sessions %s", read_to,
                 {d: v.next_seq for d, v in self.state.days.items()})

    # -- a step: plan, then execute ---------------------------------------------
    def _plan(self, now: float) -> Step:
        """Each running day's cut now, and the days that close."""
        cfg = self.cfg
        symbols = self.directory.symbols
        cuts: dict[str, int] = {}
        closes: list[str] = []
        for date, day in self.state.days.items():
            stocks = day.stocks
            if all(s in stocks and stocks[s].ended for s in symbols):
                close = True
            else:
                idle = now - self.intake.last_traffic.get(date, now) >= cfg.day_end_idle
                close = idle and bool(stocks) and all(s.ended for s in stocks.values())
                if close:
                    log.info("itch-stream: closing %s after %.0f s idle (%d of %d stocks traded)", date,
                             cfg.day_end_idle, len(stocks), self.directory.n)
            if close:
                cuts[date] = CUT_ALL
                closes.append(date)
                continue
            c = merge.cut(day, symbols, now, cfg.merge_window, cfg.merge_max_held)
            if merge.has_below(day, c):
                cuts[date] = c
        return Step(dict(self.intake.consumed), cuts, closes)

    def _execute(self, step: Step) -> list:
        """The actions of a step (state updated as if they were sent)."""
        out: list = []
        for date in step.closes:
            self.intake.release(date)  # stocks that never sent their end: their last events go out too
        for date, c in sorted(step.cuts.items()):
            day = self.state.days.get(date)
            if day is not None:
                self._send_day(out, date, day, c)
        for date in step.closes:
            if date in self.state.days:
                self._close_day(out, date)
        return out

    def _send_day(self, out: list, date: str, day: DayState, c: int) -> None:
        taken = merge.take(day, self._locate, c)
        for s in day.stocks.values():
            s.sent = s.next_unsent()
        if not taken.parts:
            return
        sid = mold.session_id(date)
        if not day.started:
            day.started = True
            day.first_ts = min(int(h.records["ts_ns"][0]) for _s, h in taken.parts)
            opening = self.feed.opening(day.first_ts)
            out.append(Data(sid, 1, opening, paced=False))
            day.next_seq = 1 + opening.count
            self.counters.sessions_started += 1
        if taken.order is None:  # one stock: its parts go out as they are, one after the other
            for sym, h in taken.parts:
                self._encode(out, sid, date, day, h.records, self._locate[sym], merge.Taken([(sym, h)]))
            return
        recs, locs, _seq, _off = taken.merged(self._locate)
        self._encode(out, sid, date, day, recs, locs, taken)

    def _encode(self, out: list, sid: bytes, date: str, day: DayState, recs: np.ndarray, locs: np.ndarray | int,
                taken: merge.Taken) -> None:
        """Encode events in send order; dead-letter those their resting order refuses (their Kafka seqs
        and offsets come from ``taken``, worked out only then)."""
        enc = self.feed.orders(recs, locs, day.next_seq, day.orders)
        bad = enc.rejected
        if len(bad):
            _r, _l, seqs, offs = taken.merged(self._locate)
            symbols = self.directory.symbols
            for i in bad:
                code = int(enc.reasons[i])
                loc = int(locs[i]) if isinstance(locs, np.ndarray) else locs
                sym = symbols[loc - 1]
                out.append(DeadRecord(sym, date, day.stocks[sym].partition, int(offs[i]), int(seqs[i]), recs[i],
                                      REASON_NAMES[code],
                                      describe(code, recs[i], self.feed.tick_size, int(enc.rest[i]))))
        framed = enc.framed
        if framed.count:
            ts = framed.ts
            if day.max_ts:
                self.counters.merge_late += int(np.searchsorted(ts, np.uint64(day.max_ts), "left"))
            out.append(Data(sid, day.next_seq, framed))
            day.next_seq += framed.count
            day.max_ts = max(day.max_ts, int(ts[-1]))
            self.counters.events += framed.count

    def _close_day(self, out: list, date: str) -> None:
        day = self.intake.end_day(date)
        if not day.started:
            return  # nothing was ever sent for it: there is no session to close
        sid = mold.session_id(date)
        closing = self.feed.closing(day.max_ts)
        out += [Data(sid, day.next_seq, closing, paced=False), EndOfSession(sid, day.next_seq + closing.count)]
        self.counters.sessions_ended += 1

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
            if isinstance(action, DeadRecord):
                self.intake.dead_record(action.symbol, action.date, action.partition, action.offset, action.seq,
                                        action.record, action.reason_name, action.reason)
                continue
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
            if not day.started:
                continue
            sid = mold.session_id(date)
            self.sender.send(mold.heartbeat(sid, self._sent_next.get(sid, day.next_seq)), lossy=False)
            self.counters.heartbeats += 1
            sent = True
        if sent:
            self._last_send = now

    # -- main loop -----------------------------------------------------------
    def _step(self, batch: list) -> tuple[bool, bool]:
        """Read ``batch`` and send what the merge lets out. Returns (completed, anything done); not
        completed means stopped part-way (the step stays in flight: a restart re-sends it)."""
        tm = self.timings
        tm.start()
        before = self.state.snapshot()
        offsets = dict(self.intake.consumed)
        now = time.monotonic()
        if batch:
            self._await_warm_up()
            self.intake.items(batch, now)
        step = self._plan(now)
        tm.lap("process")
        if not batch and not step.cuts and not step.closes:
            return True, False
        self._confirm_dead_letters()
        # write-ahead: the step is committed before any of its effects; its encoding does not depend on
        # the commit, so it runs while the broker answers
        confirm = self._commit_start(offsets, {p: before.encode(p, step) for p in self._partitions})
        self._clean = False
        tm.lap("commit")
        actions = self._execute(step)
        tm.lap("process")
        confirm()
        tm.lap("commit")
        self.counters.batches += 1
        if not self._send(actions):
            return False, True
        tm.lap("send")
        return True, True

    def run(self) -> dict[str, Any]:
        t_start = time.monotonic()
        finished_at: float | None = None
        try:
            self._open()
            self._restore()
            if isinstance(self.kafka, BridgeKafkaSource):
                # while the compiled code loads, read ahead so the bridge keeps converting
                while self._warm_thread is not None and self._warm_thread.is_alive() and not self._stop.is_set():
                    if not self.kafka.prefetch(PREFETCH, 0.01):
                        self._warm_thread.join(0.05)  # read ahead as far as allowed: only wait
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
                    if not self._clean:
                        self._commit_clean()
                    self._idle_tasks(now)
                    time.sleep(0.05)
                    continue
                fetch_started = (time.perf_counter(), time.thread_time())
                batch = self.kafka.fetch(self.cfg.batch, 0.2)
                if batch:
                    self.timings.wall["fetch"] += time.perf_counter() - fetch_started[0]
                    self.timings.cpu["fetch"] += time.thread_time() - fetch_started[1]
                completed, busy = self._step(batch)
                if not completed:
                    self._aborted = True
                    break
                if not busy and not self._clean:
                    self._commit_clean()  # idle: a restart need not re-send the last step
                self._idle_tasks(time.monotonic())
            if not self._aborted and not self._clean and self.kafka is not None and self._partitions:
                self._commit_clean()
        finally:
            self.close()
        summary: dict[str, Any] = {
            "counters": self.counters.to_dict(),
            "timings_s": self.timings.to_dict(),
            "cpu_s": {"steps": self.timings.cpu_dict(), **_cpu_seconds()},
            "next_offsets": dict(self.intake.consumed),
            "sessions": {d: v.next_seq for d, v in self.state.days.items()},
            "held": {d: v.held for d, v in self.state.days.items()},
            "ended": list(self.state.ended),
            "aborted": self._aborted,
            "kafka_client": self.kafka.name if self.kafka is not None else None,
            "dead_letter_topic": self.cfg.dead_letter_topic,
        }
        if self.sender is not None:
            summary["sender"] = {"packets": self.sender.packets, "bytes": self.sender.bytes,
                                 "dropped": self.sender.dropped}
        if self.server is not None:
            summary["retransmit"] = {**self.server.counters.to_dict(), "messages": self.server.messages_sent}
        return summary
