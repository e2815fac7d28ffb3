"""Kafka figures on the running local stack (`qrsdp stack up` first).

    uv run python benchmarks/bench_kafka.py [--seconds 23400] [--perf-records 5000000] [--only confluent|bridge]
        [--parquet-clients bridge,python]

Prints, on the same broker:
  1. dual-write through confluent-kafka: simulation + .qrsdp file + Kafka delivery confirmed, events/s end to end;
  2. Kafka's own ProducerPerformance at 26-byte records (acks=all, linger 5 ms, lz4);
  3. the Parquet consumer (``qrsdp parquet-consumer``'s ParquetConsumer) landing those events into
     MinIO, records/s until the last offset is committed (every object written, the _SUCCESS marker
     and the sessions row too); through qrsdp-kafka-bridge by default, also through confluent-kafka
     with ``--parquet-clients bridge,python`` (with --only bridge: on the topic of figure 4), and with
     --only bridge also 3b: the ``qrsdp parquet-consumer`` process from its spawn;
     each with the CPU seconds of every part (this process, the bridge, the broker, MinIO) and of
     the others' work on the machine -- on a shared machine the wall-clock figures depend on them;
  4. dual-write through qrsdp-kafka-bridge (KafkaPublisher, the default client), events/s end to end;
  5. the bridge's topic consumed through BridgeConsumer (runs decoded to numpy), records/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from confluent_kafka.admin import AdminClient, NewTopic

from qrsdp_sim.engine.runner import RunSpec, session_description, simulate_symbol_date, warm_up
from qrsdp_sim.kafka.bridge import BridgeConsumer, RawMessage, Run, bridge_available
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.publisher import KafkaPublisher
from qrsdp_sim.lake.store import Lake, S3Options

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = cpu[3] + cpu[4]
    return (sum(cpu) - idle) / _TICK, sum(cpu) / _TICK


class CpuMeter:
    """Where the CPU went during one measurement: this process (every thread), its reaped children (the
    bridge), the broker and MinIO of the stack (from infra/.run/*.pid), and the whole machine -- on a
    shared machine wall-clock figures depend on the others, CPU seconds per record much less."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.pids: dict[str, int] = {}
        kafka_port = args.brokers.split(",")[0].rpartition(":")[2]
        minio_port = str(urlparse(args.s3_endpoint).port or "")
        for name, port in (("kafka", kafka_port), ("minio", minio_port)):
            pid_file = Path(args.run_dir) / f"{name}-{port}.pid"
            if pid_file.is_file():
                self.pids[name] = int(pid_file.read_text().split()[0])

    def _sample(self) -> dict[str, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = _machine_busy()
        out = {"python": me.ru_utime + me.ru_stime, "children": kids.ru_utime + kids.ru_stime,
               "machine_busy": busy, "machine_total": total}
        for name, pid in self.pids.items():
            cpu = _proc_cpu(pid)
            if cpu is not None:
                out[name] = cpu
        return out

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        self.used = {k: end[k] - self.start[k] for k in end if k in self.start}

    def line(self, records: int) -> str:
        u = self.used
        ours = [(k, u[k]) for k in ("python", "children", "kafka", "minio") if k in u]
        mine = sum(v for _, v in ours)
        machine = u["machine_busy"]
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in ours)
        return (f"   CPU: {parts} = {mine:.2f} s ({mine / records * 1e6:.2f} us/record); the machine was busy "
                f"{machine:.2f} of {u['machine_total']:.2f} CPU-s ({machine - mine:.2f} s of it others' work)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--s3-endpoint", default="http://127.0.0.1:9000")
    ap.add_argument("--seconds", type=int, default=23_400, help="session length to dual-write")
    ap.add_argument("--run-dir", default=str(ROOT / "infra" / ".run"),
                    help="where infra/stack.sh keeps the broker's and MinIO's pid files (for their CPU time)")
    ap.add_argument("--perf-records", type=int, default=5_000_000, help="records for ProducerPerformance")
    ap.add_argument("--only", choices=("all", "confluent", "bridge"), default="all",
                    help="figures 1-3 (confluent-kafka), 4-5 (qrsdp-kafka-bridge) or all")
    ap.add_argument("--parquet-clients", default=None,
                    help="Kafka clients of the Parquet consumer for figure 3, comma-separated: bridge, python "
                         "(default: bridge when built, else python)")
    ap.add_argument("--batch-records", default=None,
                    help="Parquet consumer's records per object for figure 3, comma-separated to compare "
                         "(default: the consumer's)")
    args = ap.parse_args()
    clients = (args.parquet_clients or ("bridge" if bridge_available() else "python")).split(",")
    if not set(clients) <= {"bridge", "python"}:
        ap.error("--parquet-clients: bridge and/or python")
    if "bridge" in clients and not bridge_available():
        ap.error("--parquet-clients bridge: qrsdp-kafka-bridge is not built (infra/stack.sh bridge-build)")
    args.parquet_clients = clients

    admin = AdminClient({"bootstrap.servers": args.brokers})
    spec = RunSpec(session_seconds=args.seconds)
    warm_up(spec.model)
    if args.only in ("all", "confluent"):
        bench_confluent(args, admin, spec)
    if args.only in ("all", "bridge"):
        if bridge_available():
            bench_bridge(args, admin, spec)
        else:
            print("4./5. qrsdp-kafka-bridge not built (infra/stack.sh bridge-build): skipped")


def bench_confluent(args: argparse.Namespace, admin: AdminClient, spec: RunSpec) -> None:
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        publisher = KafkaPublisher(args.brokers, topic, bridge=False)
        sink = publisher.open_session("AAPL", dt.date(2026, 1, 2), "bench")
        result = simulate_symbol_date(spec, "AAPL", dt.date(2026, 1, 2), 10_000, Path(tmp) / "a.qrsdp",
                                      extra_sinks=[sink])
        publisher.end_session(sink, session_description(spec, "AAPL", dt.date(2026, 1, 2), result))
        totals = publisher.close()
        wall = time.perf_counter() - t0
    print(f"1. dual-write via confluent-kafka (KafkaPublisher, QRSDP_KAFKA_CLIENT=python), 1 session of {args.seconds} s: {result.events:,} events in {wall:.2f} s = "
          f"{result.events / wall / 1e6:.2f} M events/s end to end "
          f"(delivered {totals['delivered']:,}, failed {totals['failed']:,})")

    perf = subprocess.run([str(ROOT / "infra/stack.sh"), "kafka-perf", str(args.perf_records)],
                          capture_output=True, text=True, check=False)
    m = re.findall(r"([\d.]+) records/sec", perf.stdout + perf.stderr)
    print(f"2. Kafka ProducerPerformance, {args.perf_records:,} x 26 B: "
          f"{float(m[-1]) / 1e6:.2f} M records/s" if m else f"2. ProducerPerformance failed: {perf.stderr[-500:]}")

    bench_parquet(args, topic, result.events)
    admin.delete_topics([topic])


def bench_parquet(args: argparse.Namespace, topic: str, events: int) -> None:
    """Figure 3: the topic (one full session) landed in a fresh MinIO prefix by a fresh consumer group.

    Timed from the consumer's start (the bridge process and the group join included) and from its first
    message, to its last commit, which comes after every object, the _SUCCESS marker and the sessions row
    are written.
    """
    sizes = [int(b) for b in args.batch_records.split(",")] if args.batch_records else [None]
    for i, (client, batch) in enumerate((c, b) for c in args.parquet_clients for b in sizes):
        prefix = f"{topic}-{client}-{i}"
        extra = {} if batch is None else {"batch_records": batch}
        lake = Lake.from_uri(f"s3://exchange-data/bench/{prefix}", S3Options(args.s3_endpoint, "qrsdp", "qrsdp-secret"))
        with CpuMeter(args) as cpu:
            t_new = time.monotonic()
            consumer = ParquetConsumer(args.brokers, lake, topic=topic, group_id=f"bench-{prefix}", client=client,
                                       **extra)
            t0 = time.monotonic()
            stats = consumer.run(idle_exit_seconds=3.0)
        end, first = consumer.last_commit_at, consumer.first_item_at
        if end is None or first is None or stats.records_landed != events or stats.markers_written != 1:
            print(f"3. Parquet consumer ({client}) -> MinIO: incomplete: {stats.to_dict()}")
            continue
        print(f"3. Parquet consumer ({client}, batch {consumer.batch_records:,}) -> MinIO: {stats.records_landed:,} records landed and committed in "
              f"{end - t0:.2f} s = {stats.records_landed / (end - t0) / 1e6:.2f} M records/s from its start "
              f"({stats.records_landed / (end - t_new) / 1e6:.2f} M/s counting its construction, "
              f"{t0 - t_new:.2f} s: the Kafka client's start; "
              f"{stats.records_landed / (end - first) / 1e6:.2f} M records/s from its first message, "
              f"{first - t0:.2f} s to join the group and fetch; {stats.objects_written} objects, "
              f"{stats.markers_written} completion marker, {stats.commits} commits, "
              f"{stats.dead_lettered} dead-lettered, {getattr(stats, 'fenced_writes', 0)} fenced)")
        print(cpu.line(stats.records_landed) + " (includes the 3 s idle exit: the broker and MinIO idle)")


def bench_parquet_process(args: argparse.Namespace, topic: str, events: int) -> None:
    """Figure 3b: ``qrsdp parquet-consumer`` as the service runs, from the process's spawn (Python start,
    imports, bridge start, group join) until its group's commits reach the end of every partition
    (observed from outside, polled every 10 ms)."""
    from confluent_kafka import Consumer, TopicPartition

    group = f"bench-proc-{topic}"
    lake_uri = f"s3://exchange-data/bench/{topic}-process"
    probe = Consumer({"bootstrap.servers": args.brokers, "group.id": group, "enable.auto.commit": False,
                      "log_level": 3})
    parts = [TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=30).topics[topic].partitions]
    end = sum(probe.get_watermark_offsets(tp, timeout=30)[1] for tp in parts)
    qrsdp = Path(sys.executable).with_name("qrsdp")
    t0 = time.monotonic()
    proc = subprocess.Popen([str(qrsdp), "parquet-consumer", "--kafka-brokers", args.brokers, "--kafka-topic", topic,
                             "--consumer-group", group, "--lake-uri", lake_uri, "--s3-endpoint", args.s3_endpoint,
                             "--idle-exit", "3"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    done = None
    while proc.poll() is None:
        committed = sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=30))
        if committed >= end:
            done = time.monotonic()
            break
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=120)
    probe.close()
    if done is None:
        print(f"3b. qrsdp parquet-consumer process: did not commit everything: {out[-500:]}")
        return
    print(f"3b. qrsdp parquet-consumer process: {events:,} records committed {done - t0:.2f} s after its spawn = "
          f"{events / (done - t0) / 1e6:.2f} M records/s from process start (Python start and imports, the bridge, "
          f"the group join included)")


def bench_bridge(args: argparse.Namespace, admin: AdminClient, spec: RunSpec) -> None:
    topic = f"bench.bridge.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    day = dt.date(2026, 1, 2)
    # the product path: what `qrsdp run --kafka-brokers` and the session_log asset do
    with tempfile.TemporaryDirectory() as tmp, CpuMeter(args) as cpu:
        t0 = time.perf_counter()
        publisher = KafkaPublisher(args.brokers, topic, bridge=True)
        sink = publisher.open_session("AAPL", day, "bench")
        result = simulate_symbol_date(spec, "AAPL", day, 10_000, Path(tmp) / "a.qrsdp", extra_sinks=[sink])
        sim_wall = time.perf_counter() - t0
        publisher.end_session(sink, session_description(spec, "AAPL", day, result))
        totals = publisher.close()
        wall = time.perf_counter() - t0
    print(f"4. dual-write via qrsdp-kafka-bridge (KafkaPublisher, the default), 1 session of {args.seconds} s: {result.events:,} events in "
          f"{wall:.2f} s = {result.events / wall / 1e6:.2f} M events/s end to end (simulation + file done at "
          f"{sim_wall:.2f} s; delivered {totals['delivered']:,}, failed {totals['failed']:,})")
    print(cpu.line(result.events))

    expected = result.events + 1
    t0 = time.perf_counter()
    consumer = BridgeConsumer(args.brokers, topic, f"bench-{topic}")
    records = runs = raw = 0
    first = None
    while records + raw < expected:
        item = consumer.poll(30)
        if item is None:
            break
        if isinstance(item, Run):
            first = first or time.perf_counter()
            records += len(item.records)  # a numpy view of RECORD_DTYPE
            runs += 1
        elif isinstance(item, RawMessage):
            raw += 1
    end = time.perf_counter()
    consumer.close()
    wall = end - t0
    print(f"5. BridgeConsumer, whole topic as numpy runs: {records:,} records + {raw} raw in {wall:.2f} s = "
          f"{records / wall / 1e6:.2f} M records/s including the group join "
          f"({records / (end - (first or t0)) / 1e6:.2f} M records/s from the first run; {runs:,} runs)")
    if args.only == "bridge":
        bench_parquet(args, topic, result.events)
        if "bridge" in args.parquet_clients:
            bench_parquet_process(args, topic, result.events + 1)
    admin.delete_topics([topic])


if __name__ == "__main__":
    main()
