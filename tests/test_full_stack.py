"""The full data platform on real services, end to end: engine dual-write -> Kafka -> Parquet consumer
-> MinIO (events + sessions rows + completion markers) -> book_states replayed from the S3 lake ->
dbt build over s3:// (DuckDB httpfs from its PyPI package) with every data-quality test passing,
and marts that agree with the .qrsdp files."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from kafka_lake_testutil import (
    ConsumerThread,
    create_topics,
    file_records,
    manifest_closes,
    s3_lake,
    simulate,
)

from qrsdp_dagster.resources import WarehouseResource
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.publisher import KafkaPublisher
from qrsdp_sim.lake import land_book_states

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"


def test_kafka_to_minio_to_dbt_marts(kafka_stack, minio_stack, tmp_path):
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "fullstack")
    result = simulate(tmp_path / "out", days=2, seconds=600, publisher=KafkaPublisher(bootstrap, topic))
    assert result.manifest["publish"]["failed"] == 0
    expected = file_records(tmp_path / "out")
    closes = manifest_closes(result.manifest)

    lake = s3_lake(minio_stack, "fullstack")
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"g-{topic}", dead_letter_topic=dlq,
                               batch_seconds=1.0)
    worker = ConsumerThread(consumer)  # stopped once every session is marked, not after a guessed idle time
    try:
        worker.wait_complete(set(expected), timeout=180)
    finally:
        worker.stop()
    stats = consumer.stats
    assert stats.markers_written == len(expected) and stats.dead_lettered == 0

    # The consumer landed the sessions rows the marts need, from the end-of-session markers.
    sessions = {(m.symbol, m.date.isoformat()) for m in lake.complete_partitions("sessions")}
    assert sessions == set(expected)
    for symbol, day in sorted(expected):
        report, _ = land_book_states(lake, symbol, dt.date.fromisoformat(day))
        assert report.rows == len(expected[(symbol, day)])

    warehouse = WarehouseResource(duckdb_path=str(tmp_path / "wh.duckdb"), dbt_project_dir=str(DBT_DIR))
    env = {**os.environ, **warehouse.dbt_env(lake)}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(DBT_DIR), "--profiles-dir",
         str(DBT_DIR), "--target-path", str(tmp_path / "t"), "--log-path", str(tmp_path / "t"),
         "--vars", json.dumps({"lake_root": lake.query_root, "min_events_per_session": 1000})],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((tmp_path / "t" / "run_results.json").read_text())["results"]
    assert results and {r["status"] for r in results} <= {"success", "pass"}
    assert sum(1 for r in results if r["unique_id"].startswith("test.")) >= 10

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rows = con.sql(
            "select symbol, cast(date as varchar), n_events, open_ticks, close_ticks from marts.fct_session_summary"
        ).fetchall()
    got = {(s, d): (n, o, c) for s, d, n, o, c in rows}
    for key, records in expected.items():
        n, _open, close_ticks = got[key]
        assert n == len(records)
        assert close_ticks == closes[key]
    # chaining survives the Kafka path: day 2 opens at day 1's close
    for symbol in {s for s, _ in expected}:
        days = sorted(d for s, d in expected if s == symbol)
        assert got[(symbol, days[1])][1] == closes[(symbol, days[0])]
