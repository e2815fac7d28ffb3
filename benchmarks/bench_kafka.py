"""Kafka figures on the running local stack (`qrsdp stack up` first).

    uv run python benchmarks/bench_kafka.py [--seconds 23400] [--perf-records 5000000]

Prints, on the same broker:
  1. dual-write: simulation + .qrsdp file + Kafka delivery confirmed, events/s end to end;
  2. Kafka's own ProducerPerformance at 26-byte records (acks=all, linger 5 ms, lz4);
  3. the Parquet consumer landing those events into MinIO, records/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from qrsdp_sim.engine.runner import RunSpec, session_description, simulate_symbol_date, warm_up
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.publisher import KafkaPublisher
from qrsdp_sim.lake.store import Lake, S3Options

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--s3-endpoint", default="http://127.0.0.1:9000")
    ap.add_argument("--seconds", type=int, default=23_400, help="session length to dual-write")
    ap.add_argument("--perf-records", type=int, default=5_000_000, help="records for ProducerPerformance")
    args = ap.parse_args()

    topic = f"bench.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)

    spec = RunSpec(session_seconds=args.seconds)
    warm_up(spec.model)
    with tempfile.TemporaryDirectory() as tmp:
        publisher = KafkaPublisher(args.brokers, topic)
        t0 = time.perf_counter()
        sink = publisher.open_session("AAPL", dt.date(2026, 1, 2), "bench")
        result = simulate_symbol_date(spec, "AAPL", dt.date(2026, 1, 2), 10_000, Path(tmp) / "a.qrsdp",
                                      extra_sinks=[sink])
        publisher.end_session(sink, session_description(spec, "AAPL", dt.date(2026, 1, 2), result))
        totals = publisher.close()
        wall = time.perf_counter() - t0
    print(f"1. dual-write, 1 session of {args.seconds} s: {result.events:,} events in {wall:.2f} s = "
          f"{result.events / wall / 1e6:.2f} M events/s end to end "
          f"(delivered {totals['delivered']:,}, failed {totals['failed']:,})")

    perf = subprocess.run([str(ROOT / "infra/stack.sh"), "kafka-perf", str(args.perf_records)],
                          capture_output=True, text=True, check=False)
    m = re.findall(r"([\d.]+) records/sec", perf.stdout + perf.stderr)
    print(f"2. Kafka ProducerPerformance, {args.perf_records:,} x 26 B: "
          f"{float(m[-1]) / 1e6:.2f} M records/s" if m else f"2. ProducerPerformance failed: {perf.stderr[-500:]}")

    lake = Lake.from_uri(f"s3://exchange-data/bench/{topic}", S3Options(args.s3_endpoint, "qrsdp", "qrsdp-secret"))
    consumer = ParquetConsumer(args.brokers, lake, topic=topic, group_id=f"bench-{topic}")
    t0 = time.perf_counter()
    stats = consumer.run(idle_exit_seconds=3.0)
    wall = time.perf_counter() - t0 - 3.0
    print(f"3. Parquet consumer -> MinIO: {stats.records_landed:,} records in {wall:.2f} s = "
          f"{stats.records_landed / wall / 1e6:.2f} M records/s ({stats.objects_written} objects, "
          f"{stats.markers_written} completion markers)")
    admin.delete_topics([topic])


if __name__ == "__main__":
    main()
