"""The chaos soak: a dual-write of several symbols over several days on the real services, while the
seeded schedule (:mod:`qrsdp_sim.chaos.schedule`) kills and restarts the broker, MinIO, the Parquet
consumer, the ITCH streamer and Kafka bridges, and injects poison Kafka messages and hostile UDP
datagrams. Then: the lake against the files, ``dbt build``, every listener against ``itch-export``,
the dead-letter topic against the poison sent, and every service still up.

Everything runs on a private stack (its own folder, free ports, its own multicast group), so it never
touches a developer's stack. :func:`run_soak` returns :class:`Figures`; ``benchmarks/chaos.py`` prints them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qrsdp_sim import stack
from qrsdp_sim.chaos import hostile, schedule, verify
from qrsdp_sim.chaos.procs import ServiceProcess
from qrsdp_sim.chaos.progress import Progress
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.lake.store import Lake, S3Options

log = logging.getLogger(__name__)

SYMBOL_POOL = ("AAPL", "MSFT", "IBM", "ORCL", "NVDA", "AMZN", "GOOG", "META", "INTC", "CSCO")
START_DATE = dt.date(2026, 1, 5)  # a Monday
CONSUMER_GROUP, STREAMER_GROUP = "parquet-writer", "itch-streamer"


@dataclass
class SoakConfig:
    seed: int = 7
    sessions: int = 12  # at least this many (symbol, date) sessions: whole days of every symbol
    symbols: int = 3
    faults: int = 24
    session_seconds: int = 600
    producer_seconds: float = 120.0  # wall time of the paced dual-write (sets --speed)
    poison_per_fault: int = 6
    datagrams_per_fault: int = 40
    timeout: float = 1800.0  # the whole soak, at most
    work_dir: Path | None = None  # default: a temporary folder, removed afterwards
    keep: bool = False  # keep work_dir

    @property
    def days(self) -> int:
        return max(1, math.ceil(self.sessions / self.symbols))

    def __post_init__(self) -> None:
        if not 1 <= self.symbols <= len(SYMBOL_POOL):
            raise ValueError(f"--symbols must be 1..{len(SYMBOL_POOL)}, got {self.symbols}")
        if self.sessions < 1 or self.session_seconds < 60 or self.faults < 0:
            raise ValueError("--sessions >= 1, --session-seconds >= 60 and --faults >= 0 please")
        if not self.producer_seconds > 0:
            raise ValueError("--producer-seconds must be > 0")


@dataclass
class FaultRecord:
    index: int
    kind: str
    watch: str
    at: float
    fired_at_value: int | None
    on_drain: bool  # fired because its metric stopped short (the pipeline had drained), not at its fraction
    fired: bool  # False: nothing to hit (the producer's bridge after the run ended)
    outcome: str
    seconds: float


@dataclass
class Figures:
    config: dict[str, Any]
    wall_s: float = 0.0
    sessions: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    poison_sent: dict[str, int] = field(default_factory=dict)
    poison_set_aside_by_consumer: int = 0
    poison_missed_by_consumer: int = 0
    real_messages_dead_lettered: int = 0  # by the consumer, not poison: data set aside
    dead_letters_by_service: dict[str, int] = field(default_factory=dict)
    datagrams_sent: dict[str, int] = field(default_factory=dict)
    topic_messages: int = 0  # on the events topic at the end (re-sent and republished copies, poison included)
    expected_messages: int = 0  # the run's events + one end-of-session marker per session
    republished_sessions: int = 0
    republish_attempts: int = 0
    files_identical_to_reference: bool = False
    producer_exit: int | None = None
    unexpected_exits: dict[str, list[int]] = field(default_factory=dict)
    lake: dict[str, int] = field(default_factory=dict)
    dbt: dict[str, Any] = field(default_factory=dict)
    marts_lost: int = 0
    marts_duplicated: int = 0
    feed: list[dict[str, Any]] = field(default_factory=list)
    itch_messages_expected: int = 0
    itch_messages_received: int = 0
    itch_messages_missing: int = 0
    services_up_at_end: dict[str, bool] = field(default_factory=dict)
    graceful_exits: dict[str, int | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def faults_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.faults if f.fired).items()))

    @property
    def events_lost(self) -> int:
        return self.lake.get("missing", 0) + self.lake.get("conflicting", 0) + self.marts_lost

    @property
    def ok(self) -> bool:
        return (not self.errors and self.events_lost == 0 and self.marts_duplicated == 0
                and self.lake.get("foreign", 0) == 0 and self.itch_messages_missing == 0
                and self.dbt.get("returncode") == 0 and self.dbt.get("tests_failed", 1) == 0
                and all(self.services_up_at_end.values()) and self.poison_missed_by_consumer == 0
                and self.real_messages_dead_lettered == 0
                and all(f["complete"] and f["unrecovered"] == 0 and f["stocks_in_order"] == f["stocks"]
                        for f in self.feed))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(faults_by_kind=self.faults_by_kind, events_lost=self.events_lost, ok=self.ok)
        return d


def _free_port(kind: int = socket.SOCK_STREAM, taken: set[int] | None = None) -> int:
    return stack.free_port_pair(taken if taken is not None else set(), kind)


def _qrsdp() -> str:
    return str(Path(sys.executable).with_name("qrsdp"))


class Soak:
    """One soak run; :meth:`run` does everything and always cleans up."""

    def __init__(self, cfg: SoakConfig, echo: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.echo = echo
        self.rng = random.Random(cfg.seed)
        self.plan = schedule.plan(cfg.seed, cfg.faults)
        self.symbols = list(SYMBOL_POOL[: cfg.symbols])
        self.figures = Figures(config={**dataclasses.asdict(cfg), "work_dir": str(cfg.work_dir)})
        self._own_work = cfg.work_dir is None
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="qrsdp-chaos-"))
        self.work.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        self.stack_cfg = stack.StackConfig(
            stack_dir=self.work / "stack", kafka_port=_free_port(taken=taken), controller_port=_free_port(taken=taken),
            minio_port=_free_port(taken=taken), timeout_s=180,
        )  # fmt: skip
        self.bootstrap = self.stack_cfg.bootstrap_servers
        self.topic, self.dlq = stack.EVENTS_TOPIC, stack.DLQ_TOPIC
        self.group = f"239.{random.Random(os.getpid()).randint(100, 250)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
        self.feed_port, self.rport = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_DGRAM)
        self.lake = Lake.from_uri(
            f"s3://{stack.BUCKET}/chaos-{cfg.seed}",
            S3Options(endpoint=self.stack_cfg.s3_endpoint, access_key=self.stack_cfg.access_key,
                      secret_key=self.stack_cfg.secret_key),
        )  # fmt: skip
        self.dates = self._dates()
        self.services: dict[str, ServiceProcess] = {}
        self.listeners: dict[bytes, tuple[Listener, threading.Thread, threading.Event]] = {}
        self.progress: Progress | None = None
        self.totals: dict[str, int] = {}
        self.expected_messages = 0
        self.poison_sources: list[tuple[str, str]] = []  # (kind, topic/partition/offset)
        self.republished = False
        self.deadline = 0.0
        self._beside = [f for f in self.plan if f.beside]

    # -- set-up ------------------------------------------------------------------------------
    def _dates(self) -> list[str]:
        from qrsdp_sim.engine.calendar import trading_dates

        return [d.isoformat() for d in trading_dates(START_DATE, self.cfg.days)]

    def _securities(self) -> str:
        return ",".join(f"{s}:{10_000 + 2_500 * i}" for i, s in enumerate(self.symbols))

    def _run_args(self, output: Path) -> list[str]:
        return ["run", "--securities", self._securities(), "--days", str(self.cfg.days), "--seconds",
                str(self.cfg.session_seconds), "--start-date", START_DATE.isoformat(), "--seed", str(self.cfg.seed),
                "--workers", str(len(self.symbols)), "--output", str(output)]  # fmt: skip

    def _reference(self) -> None:
        """The same run without Kafka: the number of messages each trigger's metric ends at."""
        ref = self.work / "reference"
        proc = subprocess.run([_qrsdp(), *self._run_args(ref)], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"the reference run failed: {proc.stderr[-2000:]}")
        from qrsdp_sim.eventlog.reader import read_records

        counts = {p: len(read_records(p)) for p in ref.glob("*/*.qrsdp")}
        self.figures.sessions = len(counts)
        self.expected_messages = sum(counts.values()) + len(counts)  # + one end-of-session marker each

    def _env(self) -> dict[str, str]:
        return {**os.environ, "QRSDP_S3_ENDPOINT": self.stack_cfg.s3_endpoint,
                "QRSDP_S3_ACCESS_KEY": self.stack_cfg.access_key, "QRSDP_S3_SECRET_KEY": self.stack_cfg.secret_key,
                "QRSDP_LAKE_URI": self.lake.uri, "PYTHONUNBUFFERED": "1"}

    def _service(self, name: str, args: list[str]) -> ServiceProcess:
        svc = ServiceProcess(name, [_qrsdp(), *args], self._env(), self.work / f"{name}.log")
        svc.start()
        self.services[name] = svc
        return svc

    def _start_listeners(self) -> None:
        for day in self.dates:
            sid = mold.session_id(day)
            lis = Listener(ListenerConfig(
                multicast_group=self.group, port=self.feed_port, retransmit=("127.0.0.1", self.rport), session=sid,
                print_messages=False, keep=True, gap_timeout=self.cfg.timeout, max_runtime=self.cfg.timeout,
            ))  # fmt: skip
            lis.open()
            stop = threading.Event()
            thread = threading.Thread(target=lis.run, args=(stop,), daemon=True, name=f"listen-{day}")
            thread.start()
            self.listeners[sid] = (lis, thread, stop)

    def _start(self) -> None:
        self.echo(f"chaos: private stack in {self.work} (Kafka {self.bootstrap}, MinIO {self.stack_cfg.s3_endpoint}), "
                  f"feed {self.group}:{self.feed_port}")
        stack.install(self.stack_cfg)
        stack.start_service("kafka", self.stack_cfg)
        stack.start_service("minio", self.stack_cfg)
        self._reference()
        self.echo(f"chaos: {self.figures.sessions} sessions ({len(self.symbols)} symbols x {self.cfg.days} days), "
                  f"{self.expected_messages:,} messages; plan: {len(self.plan)} faults")
        self.progress = Progress(self.bootstrap, self.topic, {"landed": CONSUMER_GROUP, "streamed": STREAMER_GROUP})
        self._start_listeners()
        self._service("consumer", ["parquet-consumer", "--kafka-brokers", self.bootstrap, "--kafka-topic", self.topic,
                                   "--lake-uri", self.lake.uri, "--s3-endpoint", self.stack_cfg.s3_endpoint,
                                   "--consumer-group", CONSUMER_GROUP, "--batch-records", "5000",
                                   "--batch-seconds", "2"])  # fmt: skip
        self._service("streamer", ["itch-stream", "--kafka-brokers", self.bootstrap, "--kafka-topic", self.topic,
                                   "--consumer-group", STREAMER_GROUP, "--symbols", ",".join(self.symbols),
                                   "--multicast-group", self.group, "--port", str(self.feed_port),
                                   "--retransmit-port", str(self.rport), "--merge-window", "600",
                                   "--batch", "20000", "--summary-json", str(self.work / "streamer.json")])
        speed = self.cfg.days * self.cfg.session_seconds / self.cfg.producer_seconds
        self._service("producer", [*self._run_args(self.work / "run"), "--kafka-brokers", self.bootstrap,
                                   "--realtime", "--speed", f"{speed:.3f}"])

    # -- the fault loop ------------------------------------------------------------------------
    def _supervise(self) -> None:
        self._fire_beside()
        for name in ("consumer", "streamer"):
            if self.services[name].restart_if_exited():
                self.echo(f"chaos: {name} exited (status {self.services[name].unexpected_exits[-1]}): restarted")
        prod = self.services["producer"]
        if not prod.alive() and not self.republished:
            self._republish()

    def _republish(self) -> None:
        """The designed recovery of an incomplete dual-write: ``qrsdp republish`` the sessions the run's
        manifest lists as incomplete (retried while the broker may be restarting)."""
        self.republished = True
        prod = self.services["producer"]
        self.figures.producer_exit = prod.proc.returncode if prod.proc else None
        manifest = json.loads((self.work / "run" / "manifest.json").read_text())
        incomplete = manifest.get("publish", {}).get("incomplete_sessions", [])
        files = [str(self.work / "run" / f"{key}.qrsdp") for key in incomplete]
        self.figures.republished_sessions = len(files)
        if not files:
            return
        self.echo(f"chaos: the run ended; republishing {len(files)} incomplete session(s)")
        for _attempt in range(10):
            self.figures.republish_attempts += 1
            proc = subprocess.run([_qrsdp(), "republish", *files, "--kafka-brokers", self.bootstrap, "--kafka-topic",
                                   self.topic], capture_output=True, text=True, timeout=600)  # fmt: skip
            if proc.returncode == 0:
                return
            self.echo(f"chaos: republish failed ({proc.stderr.strip()[-300:]}); again")
            time.sleep(2)
        self.figures.errors.append("republish never succeeded")

    def _wait_trigger(self, fault: schedule.Fault) -> tuple[int | None, bool]:
        """Until the fault's metric reaches its fraction; or (on_drain) the producer is done, republish ran
        and the metric has not moved for a while -- the pipeline has drained short of the fraction."""
        assert self.progress is not None
        target = int(fault.at * self.expected_messages)
        last, since = None, time.monotonic()
        while time.monotonic() < self.deadline:
            self._supervise()
            value = self.progress.read(fault.watch)
            if value is not None and value >= target:
                return value, False
            if value != last:
                last, since = value, time.monotonic()
            elif self.republished and time.monotonic() - since > 20:
                return value, True
            time.sleep(0.25)
        raise TimeoutError(f"{fault.describe()}: not reached before the soak's timeout")

    def _kill_bridge(self, name: str) -> str:
        svc = self.services[name]
        if name != "producer" and svc.restart_if_exited():  # it had just exited on its own: up again first
            self.echo(f"chaos: {name} exited (status {svc.unexpected_exits[-1]}): restarted")
        pid = svc.wait_bridge(60)
        if pid is None:
            return f"skipped: no bridge child of the {name} to kill (not running, or not using the bridge)"
        os.kill(pid, signal.SIGKILL)
        if name == "producer":
            return "producer's bridge killed: the run goes on, its later events count as failed"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not svc.alive():
                code = svc.proc.returncode if svc.proc else None
                svc.unexpected_exits.append(code)  # type: ignore[arg-type]
                svc.start()
                return f"{name} exited ({code}) when its bridge died: restarted"
            new = svc.bridge_pid()
            if new is not None and new != pid:
                return f"{name} started a new bridge"
            time.sleep(0.2)
        self.figures.errors.append(f"{name} neither exited nor replaced its bridge within 120 s")
        svc.kill()
        svc.start()
        return f"{name} hung without its bridge: killed and restarted"

    def _poison(self, rng: random.Random) -> str:
        from confluent_kafka import Producer

        from qrsdp_sim.kafka.sink import producer_config

        batch = hostile.poison_batch(rng, self.symbols, self.dates, self.cfg.poison_per_fault)
        where: list[tuple[str, str]] = []
        producer = Producer(producer_config(self.bootstrap, **{"delivery.report.only.error": False,
                                                               "compression.type": "none"}))

        def report(kind: str):
            def cb(err, msg) -> None:
                if err is None:
                    where.append((kind, f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))
                else:
                    self.figures.errors.append(f"poison {kind} not delivered: {err}")
            return cb

        for kind, (key, value, headers) in batch:
            producer.produce(self.topic, value, key, headers=headers, on_delivery=report(kind))
        producer.flush(60)
        self.poison_sources += where
        for kind, _src in where:
            self.figures.poison_sent[kind] = self.figures.poison_sent.get(kind, 0) + 1
        return f"{len(where)} poison messages: {', '.join(sorted({k for k, _ in where}))}"

    def _udp(self, rng: random.Random) -> str:
        attacker = hostile.UdpAttacker(self.group, self.feed_port, ("127.0.0.1", self.rport))
        try:
            delivered = {sid: max(0, lis.expected - 1) for sid, (lis, _t, _s) in self.listeners.items()}
            sent = attacker.burst(rng, self.cfg.datagrams_per_fault, list(self.listeners), delivered)
        finally:
            attacker.close()
        for kind, n in sent.items():
            self.figures.datagrams_sent[kind] = self.figures.datagrams_sent.get(kind, 0) + n
        return f"{sum(sent.values())} hostile datagrams"

    def _fire(self, fault: schedule.Fault) -> str:
        rng = random.Random(fault.seed)
        kind = fault.kind
        if kind in ("kill-broker", "kill-minio"):
            service = "kafka" if kind == "kill-broker" else "minio"
            stack.stop_service(service, self.stack_cfg, kill=True)
            stack.start_service(service, self.stack_cfg)
            return f"{service} SIGKILLed and restarted (healthy)"
        if kind in ("kill-consumer", "kill-streamer"):
            svc = self.services[kind.removeprefix("kill-")]
            svc.kill()
            svc.start()
            return f"{svc.name} SIGKILLed and restarted"
        if kind.endswith("-bridge"):
            return self._kill_bridge(kind.removeprefix("kill-").removesuffix("-bridge"))
        if kind == "poison-kafka":
            return self._poison(rng)
        if kind == "hostile-udp":
            return self._udp(rng)
        raise ValueError(kind)

    def _faults(self) -> None:
        for fault in self.plan:
            if not fault.beside:
                value, on_drain = self._wait_trigger(fault)
                self._record(fault, value, on_drain)
        while self._beside and time.monotonic() < self.deadline:
            self._supervise()
            time.sleep(0.25)

    def _fire_beside(self) -> None:
        """The faults beside the sequence whose metric got there (or whose target is gone)."""
        assert self.progress is not None
        for fault in list(self._beside):
            value = self.progress.read(fault.watch)
            if (value is not None and value >= fault.at * self.expected_messages) or not self.services[
                    "producer"].alive():
                self._beside.remove(fault)
                self._record(fault, value, False)

    def _record(self, fault: schedule.Fault, value: int | None, on_drain: bool) -> None:
        t0 = time.monotonic()
        outcome = self._fire(fault)
        rec = FaultRecord(fault.index, fault.kind, fault.watch, fault.at, value, on_drain,
                          not outcome.startswith("skipped"), outcome, round(time.monotonic() - t0, 2))
        self.figures.faults.append(rec)
        self.echo(f"chaos: {fault.describe()}{' (pipeline drained)' if on_drain else ''}: {outcome} "
                  f"[{rec.seconds:.1f} s]")

    # -- the end -------------------------------------------------------------------------------------
    def _complete(self) -> bool:
        if not self.republished:
            return False
        markers = {(m.symbol, m.date.isoformat()): m.rows for m in self.lake.complete_partitions("events")}
        if len(markers) < self.figures.sessions:
            return False
        if not all(lis.complete for lis, _t, _s in self.listeners.values()):
            return False
        # and both services have read (committed) everything on the topic, poison included
        assert self.progress is not None
        return self.progress.caught_up("landed") and self.progress.caught_up("streamed")

    def _wait_complete(self) -> None:
        while time.monotonic() < self.deadline:
            self._supervise()
            try:
                if self._complete():
                    return
            except OSError:
                pass  # MinIO just restarted
            time.sleep(1.0)
        self.figures.errors.append("timed out waiting for every session to be complete in the lake and the feed")

    def _finish(self) -> None:
        f = self.figures
        status = stack.status(self.stack_cfg)
        f.services_up_at_end = {
            "kafka": status.kafka.running and status.kafka.healthy,
            "minio": status.minio.running and status.minio.healthy,
            "consumer": self.services["consumer"].alive(),
            "streamer": self.services["streamer"].alive(),
            "listeners": all(t.is_alive() or lis.complete for lis, t, _s in self.listeners.values()),
        }
        for name in ("consumer", "streamer"):
            # Stopped once it is past its start (its bridge child exists): a SIGTERM before its command
            # installed a handler would end it with -15 without being a fault of the service.
            self.services[name].wait_bridge(60)
            f.graceful_exits[name] = self.services[name].stop()
            f.unexpected_exits[name] = self.services[name].unexpected_exits
        for _lis, thread, stop in self.listeners.values():
            stop.set()
            thread.join(30)

    def _verify(self) -> None:
        from qrsdp_sim.eventlog.reader import read_records

        f = self.figures
        run_files = {(p.parent.name, p.stem): p for p in sorted((self.work / "run").glob("*/*.qrsdp"))}
        ref_files = {(p.parent.name, p.stem): p for p in sorted((self.work / "reference").glob("*/*.qrsdp"))}
        f.files_identical_to_reference = set(run_files) == set(ref_files) and all(
            run_files[k].read_bytes() == ref_files[k].read_bytes() for k in run_files)
        expected = {k: read_records(p) for k, p in run_files.items()}
        f.lake = dataclasses.asdict(verify.check_lake(self.lake, expected))
        dbt = verify.run_dbt(self.lake, sorted(expected), self.work)
        f.dbt = {"returncode": dbt.returncode, "tests_passed": dbt.tests_passed, "tests_failed": dbt.tests_failed,
                 "models": dbt.models}
        if dbt.returncode != 0:
            f.errors.append(f"dbt build failed: {dbt.output_tail[-1500:]}")
        for key, records in expected.items():
            n = dbt.mart_sessions.get(key, 0)
            f.marts_lost += max(0, len(records) - n)
            f.marts_duplicated += max(0, n - len(records))
        f.marts_duplicated += sum(n for k, n in dbt.mart_sessions.items() if k not in expected)
        for day in self.dates:
            lis = self.listeners[mold.session_id(day)][0]
            paths = [p for (s, d), p in run_files.items() if d == day]
            check = verify.check_feed(lis, paths, self.symbols, self.work)
            f.feed.append(dataclasses.asdict(check))
            f.itch_messages_expected += check.expected_messages
            f.itch_messages_received += check.received_messages
            f.itch_messages_missing += max(0, check.expected_messages - check.received_messages) + check.unrecovered
        assert self.progress is not None
        f.topic_messages = self.progress.read("produced") or 0
        f.expected_messages = self.expected_messages
        dead = verify.dead_letters(self.bootstrap, self.dlq)
        f.dead_letters_by_service = dict(Counter(d["service"] for d in dead))
        by_consumer = {d["source"] for d in dead if d["service"] == "parquet-consumer"}
        poison = {src for _k, src in self.poison_sources}
        f.poison_set_aside_by_consumer = len(poison & by_consumer)
        f.poison_missed_by_consumer = len(poison - by_consumer)
        f.real_messages_dead_lettered = len(by_consumer - poison)

    def run(self) -> Figures:
        t0 = time.monotonic()
        self.deadline = t0 + self.cfg.timeout
        try:
            self._start()
            self._faults()
            self._wait_complete()
            self._finish()
            self._verify()
        except Exception as exc:
            log.exception("chaos soak failed")
            self.figures.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._cleanup()
        self.figures.wall_s = round(time.monotonic() - t0, 1)
        return self.figures

    def _cleanup(self) -> None:
        for svc in self.services.values():
            if svc.alive():
                svc.kill()
            svc.kill_leftover_bridges()
        for _lis, thread, stop in self.listeners.values():
            stop.set()
            thread.join(10)
        if self.progress is not None:
            self.progress.close()
        for service in ("minio", "kafka"):
            try:
                stack.stop_service(service, self.stack_cfg)
            except stack.StackError as exc:
                self.figures.errors.append(f"stopping {service}: {exc}")
        if self._own_work and not self.cfg.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def run_soak(cfg: SoakConfig, echo: Callable[[str], None] = print) -> Figures:
    return Soak(cfg, echo).run()
