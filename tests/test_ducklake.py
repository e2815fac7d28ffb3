"""DuckLake spike on real services: DuckDB 1.5.5 with the ducklake, postgres_scanner and httpfs
extensions from PyPI (loaded by path, offline), the catalog in PostgreSQL, the data on MinIO;
concurrent writers in separate processes; dbt-duckdb building a model into the attached lake.

Concurrent writers are ordered with events, not sleeps: writer A has written and waits before its
COMMIT until writer B has committed, so the two transactions certainly overlap.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from qrsdp_sim import stack
from qrsdp_sim.distributed import ducklake

pytestmark = pytest.mark.services

DBT_PROJECT = Path(__file__).with_name("dbt_ducklake")


@pytest.fixture(scope="module")
def lake_settings(postgres_stack, minio_stack) -> ducklake.DuckLakeSettings:
    """A lake of this module's own: a fresh catalog database (the stack's ``qrsdp_lake`` may already hold
    the distributed tests' lake, whose catalog is bound to another data path) and a fresh data path."""
    import psycopg2

    cfg = postgres_stack.config
    db = f"lake_test_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(postgres_stack.pg_url("postgres"))
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"create database {db}")
    finally:
        con.close()
    return ducklake.DuckLakeSettings(
        pg_db=db,
        pg_port=cfg.pg_port,
        pg_user=cfg.pg_user,
        pg_password=cfg.pg_password,
        data_path=f"s3://{stack.BUCKET}/ducklake-test-{uuid.uuid4().hex[:8]}/",
        s3_endpoint=minio_stack.endpoint,
        s3_access_key=cfg.access_key,
        s3_secret_key=cfg.secret_key,
    )


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def _rows(con: Any, table: str) -> list[tuple]:
    return con.sql(f"select symbol, date, count(*) from {table} group by all order by all").fetchall()


def _make_table(settings: ducklake.DuckLakeSettings, schema: str) -> str:
    table = f"lake.{schema}.bars"
    con = ducklake.connect(settings)
    con.execute(f"create schema lake.{schema}")
    con.execute(f"create table {table} (symbol varchar, date date, x bigint)")
    con.execute(f"alter table {table} set partitioned by (symbol)")
    con.execute(
        f"insert into {table} select s, date '2026-01-02', range from range(100), (values ('AAPL'), ('MSFT')) v(s)"
    )
    con.close()
    return table


def test_ducklake_catalog_in_postgres_data_on_minio(lake_settings, minio_stack, postgres_stack) -> None:
    import psycopg2

    schema = _schema()
    table = _make_table(lake_settings, schema)
    # Another DuckDB (nothing shared but PostgreSQL and S3) sees the committed table.
    other = ducklake.connect(lake_settings)
    assert _rows(other, table) == [("AAPL", _d("2026-01-02"), 100), ("MSFT", _d("2026-01-02"), 100)]
    files = other.sql(
        f"select data_file from ducklake_list_files('lake', 'bars', schema => '{schema}')"
    ).fetchall()
    other.close()
    assert len(files) == 2 and all(f[0].startswith(lake_settings.data_path) for f in files)
    assert {f[0].split("/")[-2] for f in files} == {"symbol=AAPL", "symbol=MSFT"}  # one file per symbol
    prefix = lake_settings.data_path.removeprefix(f"s3://{stack.BUCKET}/")
    listed = minio_stack.s3_client().list_objects_v2(Bucket=stack.BUCKET, Prefix=prefix)
    keys = {f"s3://{stack.BUCKET}/{o['Key']}" for o in listed.get("Contents", [])}
    assert {f[0] for f in files} <= keys
    with psycopg2.connect(postgres_stack.pg_url(lake_settings.pg_db)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from ducklake_snapshot")
        assert cur.fetchone()[0] >= 4  # catalog rows live in PostgreSQL


def _d(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


# ---------------------------------------------------------------- concurrent writers (processes)

OPS = {
    "insert": "insert into {t} select '{s}', date '2026-01-05', range from range({n})",
    "delete": "delete from {t} where symbol = '{s}'",
}


def _writer(role, settings, table, symbol, ops, rows, attempts, a_written, b_done, out) -> None:
    """Writer A writes, then waits for B's commit before its first COMMIT; B starts once A has written."""
    try:
        con = ducklake.connect(settings)
        if role == "B":
            assert a_written.wait(120)
        statements = [OPS[op].format(t=table, s=symbol, n=rows) for op in ops]

        def before_commit(attempt: int) -> None:
            if role == "A" and attempt == 1:
                a_written.set()
                assert b_done.wait(120)

        used = ducklake.run_transaction(
            con, statements, attempts=attempts, before_commit=before_commit, backoff_s=0.05
        )
        out.put((role, "ok", used))
    except Exception as exc:
        out.put((role, "conflict" if ducklake.is_conflict(exc) else f"error: {exc}", 0))
    finally:
        a_written.set()
        if role == "B":
            b_done.set()


def _race(settings, table, a_ops, b_ops, a_attempts: int) -> dict[str, tuple[str, int]]:
    """A replaces/appends AAPL (500 rows), B MSFT (700 rows), in two processes; B commits inside A's
    transaction. Returns role -> (ok | conflict, attempts used)."""
    ctx = mp.get_context("spawn")
    a_written, b_done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer,
            args=("A", settings, table, "AAPL", a_ops, 500, a_attempts, a_written, b_done, out),
        ),
        ctx.Process(
            target=_writer, args=("B", settings, table, "MSFT", b_ops, 700, 1, a_written, b_done, out)
        ),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    return {role: (result, used) for role, result, used in (out.get(timeout=10) for _ in procs)}


A_OLD, A_NEW = ("AAPL", "2026-01-02", 100), ("AAPL", "2026-01-05", 500)
M_OLD, M_NEW = ("MSFT", "2026-01-02", 100), ("MSFT", "2026-01-05", 700)


@pytest.mark.parametrize(
    ("a_ops", "b_ops", "a_result", "final"),
    [
        # appends never conflict
        (("insert",), ("insert",), "ok", [A_OLD, A_NEW, M_OLD, M_NEW]),
        # nor do deletes of different symbols' files
        (("delete",), ("delete",), "ok", []),
        # replace vs append on one table: the later commit loses, whatever the partitioning
        (("delete", "insert"), ("insert",), "conflict", [A_OLD, M_OLD, M_NEW]),
        # two per-symbol replaces: the same
        (("delete", "insert"), ("delete", "insert"), "conflict", [A_OLD, M_NEW]),
    ],
    ids=["insert|insert", "delete|delete", "replace|insert", "replace|replace"],
)
def test_overlapping_writers_of_different_symbols(lake_settings, a_ops, b_ops, a_result, final) -> None:
    """What DuckLake 1.5.5 lets two overlapping transactions on one table (partitioned by symbol) do.
    B (MSFT) commits while A (AAPL) is open: nobody blocks. A losing commit is all-or-nothing: the
    table then holds B's change and A's symbol exactly as it was."""
    table = _make_table(lake_settings, _schema())
    got = _race(lake_settings, table, a_ops, b_ops, a_attempts=1)
    assert got == {"A": (a_result, 1 if a_result == "ok" else 0), "B": ("ok", 1)}
    con = ducklake.connect(lake_settings)
    assert [(s, str(d), n) for s, d, n in _rows(con, table)] == final


def test_concurrent_symbol_replaces_succeed_with_retry(lake_settings) -> None:
    """Two workers replace their own symbol at the same time: the one that loses the commit retries
    (run_transaction) and both symbols end up replaced exactly once."""
    table = _make_table(lake_settings, _schema())
    got = _race(lake_settings, table, ("delete", "insert"), ("delete", "insert"), a_attempts=3)
    assert got == {"A": ("ok", 2), "B": ("ok", 1)}
    con = ducklake.connect(lake_settings)
    assert _rows(con, table) == [("AAPL", _d("2026-01-05"), 500), ("MSFT", _d("2026-01-05"), 700)]


# ---------------------------------------------------------------- dbt-duckdb on the lake


def _dbt_project(tmp_path: Path, settings: ducklake.DuckLakeSettings, schema: str) -> Path:
    project = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT, project)
    output = settings.dbt_output() | {"schema": schema}
    (project / "profiles.yml").write_text(
        yaml.safe_dump({"ducklake_spike": {"target": "lake", "outputs": {"lake": output}}})
    )
    return project


def _dbt_run(project: Path, symbol: str, rows: int) -> subprocess.Popen:
    dbt = Path(sys.executable).with_name("dbt")
    vars_ = yaml.safe_dump({"symbol": symbol, "rows": rows}, default_flow_style=True).strip()
    return subprocess.Popen(
        [
            str(dbt),
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--vars",
            vars_,
            "--target-path",
            f"target-{symbol}",
            "--log-path",
            f"logs-{symbol}",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )


def _dbt_run_with_retry(project: Path, symbol: str, rows: int, attempts: int = 5) -> tuple[int, str]:
    """dbt run; again when the model lost a DuckLake conflict (what a Dagster retry policy would do)."""
    out = ""
    for attempt in range(1, attempts + 1):
        proc = _dbt_run(project, symbol, rows)
        out, _ = proc.communicate(timeout=600)
        if proc.returncode == 0:
            return attempt, out
        if ducklake.CONFLICT_MARKER not in out:
            break
    raise AssertionError(f"dbt run for {symbol} failed:\n{out[-3000:]}")


def test_dbt_duckdb_builds_per_symbol_models_into_ducklake(lake_settings, tmp_path) -> None:
    schema = _schema()
    project = _dbt_project(tmp_path, lake_settings, schema)
    # The table is created (and partitioned) before concurrent runs start.
    assert _dbt_run_with_retry(project, "INIT", 300)[0] == 1
    # Two dbt processes at once, one symbol each (not ordered: they may or may not overlap).
    rows = {"AAPL": 500, "MSFT": 700}
    procs = {sym: _dbt_run(project, sym, n) for sym, n in rows.items()}
    attempts = {}
    for sym, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        if proc.returncode == 0:
            attempts[sym] = 1
        else:
            assert ducklake.CONFLICT_MARKER in out, out[-3000:]
            attempts[sym] = 1 + _dbt_run_with_retry(project, sym, rows[sym])[0]
    print(f"\ndbt attempts per symbol (concurrent start): {attempts}")
    # A second run of a symbol replaces its rows (delete+insert by symbol), others stay.
    assert _dbt_run_with_retry(project, "AAPL", 400)[0] == 1
    con = ducklake.connect(lake_settings)
    got = con.sql(
        f"select symbol, count(*), min(n), max(n) from lake.{schema}.symbol_rows group by 1 order by 1"
    )
    assert got.fetchall() == [("AAPL", 400, 400, 400), ("INIT", 300, 300, 300), ("MSFT", 700, 700, 700)]
    files = con.sql(
        f"select data_file from ducklake_list_files('lake', 'symbol_rows', schema => '{schema}')"
    ).fetchall()
    # Rows written after the table was partitioned sit in one folder per symbol (INIT's predate it).
    assert {f[0].split("/")[-2] for f in files} == {"symbol=AAPL", "symbol=MSFT", "symbol_rows"}
