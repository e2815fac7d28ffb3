"""The same lake code path on S3: a real MinIO (tests/services.py), landing, markers, and dbt reading it.

DuckDB reads s3:// through httpfs loaded from its Python package (never downloaded) with
the endpoint and keys exported by WarehouseResource.dbt_env().
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from book_streams import random_session

from qrsdp_dagster.resources import WarehouseResource
from qrsdp_sim.lake import (
    Lake,
    S3Options,
    SessionInfo,
    land_book_states,
    land_records,
    land_table,
    read_records,
)
from qrsdp_sim.lake import sessions_table as make_sessions_table

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DAY = dt.date(2026, 1, 2)

pytestmark = pytest.mark.services


def test_s3_lake_round_trip_and_dbt_build(minio_stack, tmp_path):
    cfg = minio_stack.config
    prefix = f"test-lake-{uuid.uuid4().hex[:8]}"
    lake = Lake.from_uri(
        f"s3://{minio_stack.bucket}/{prefix}",
        S3Options(endpoint=minio_stack.endpoint, access_key=cfg.access_key, secret_key=cfg.secret_key),
    )
    assert not lake.is_local and lake.query_root == f"s3://{minio_stack.bucket}/{prefix}"
    rec = random_session(2_000, 1)
    land_records(lake, "AAPL", DAY, rec, rows_per_file=800)
    info = SessionInfo(
        symbol="AAPL", date=DAY, seed=1, open_ticks=10_000, close_ticks=None, tick_size=100,
        market_open_ns=int(rec["ts_ns"][0]), session_seconds=600, events=len(rec),
        first_ts_ns=int(rec["ts_ns"][0]), last_ts_ns=int(rec["ts_ns"][-1]), source="test",
    )  # fmt: skip
    land_table(lake, "sessions", "AAPL", DAY, make_sessions_table(info))
    report, _ = land_book_states(lake, "AAPL", DAY)
    assert report.rows == 2_000
    np.testing.assert_array_equal(read_records(lake, "AAPL", DAY), rec)
    assert [(m.symbol, m.rows) for m in lake.complete_partitions("events")] == [("AAPL", 2_000)]
    keys = sorted(
        o["Key"]
        for o in minio_stack.s3_client().list_objects_v2(Bucket=minio_stack.bucket, Prefix=prefix)["Contents"]
    )
    assert f"{prefix}/raw/events/symbol=AAPL/date=2026-01-02/part-00002.parquet" in keys
    assert f"{prefix}/raw/events/symbol=AAPL/date=2026-01-02/_SUCCESS" in keys

    warehouse = WarehouseResource(duckdb_path=str(tmp_path / "wh.duckdb"), dbt_project_dir=str(DBT_DIR))
    env = {**os.environ, **warehouse.dbt_env(lake)}
    dbt_vars = {"lake_root": lake.query_root, "min_events_per_session": 100}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(DBT_DIR), "--profiles-dir",
         str(DBT_DIR), "--target-path", str(tmp_path / "t"), "--log-path", str(tmp_path / "t"),
         "--vars", json.dumps(dbt_vars)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((tmp_path / "t" / "run_results.json").read_text())["results"]
    assert {r["status"] for r in results} <= {"success", "pass"}
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.sql("select n_events from marts.fct_session_summary").fetchall() == [(2_000,)]
