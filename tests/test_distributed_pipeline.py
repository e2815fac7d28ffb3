"""The real pipeline on the distributed profile (real PostgreSQL, Redis, MinIO, two Celery workers):
sessions on S3, the marts in a DuckLake, one run per symbol.

- a per-symbol backfill: one run per symbol, spread over both workers, every partition materialised
  once, every check green, marts identical (checksums) to the same slice on the embedded default;
- two writers of the DuckLake at once: a worker's build is not blocked by an open transaction of
  another writer, and nothing is corrupted (the loser of the commit retries, the marts are unchanged);
- ``kill -9`` of the worker running a symbol after its first session was simulated: run monitoring
  fails the run, the retry runs on the other worker from the sessions on S3, and the marts hold every
  event once;
- the nightly catch-up schedule switched on over symbols with no history: its tick brings each of them
  from the start date to the newest trading date, one run per symbol, spread over the workers.

The stack's settings (symbols, dates, 600-second sessions) are ``services.PIPELINE_ENV``. Sizes are
small (2 dates, a few symbols): benchmarks/bench_distributed.py runs 20 symbols x 10 dates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
from services import PIPELINE_ENV

from qrsdp_dagster import backfill as backfills
from qrsdp_dagster.mart_checksums import mart_checksums
from qrsdp_sim import stack
from qrsdp_sim.distributed import ducklake
from qrsdp_sim.distributed.launcher import WORKER_TAG
from qrsdp_sim.engine.calendar import next_weekday

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
START = dt.date.fromisoformat(PIPELINE_ENV["QRSDP_START_DATE"])
NEWEST = next_weekday(START + dt.timedelta(days=1))
DATES = [START, NEWEST]
BACKFILL_SYMBOLS = ["AAPL", "MSFT"]  # one run per worker at once
SCHEDULE_SYMBOLS = ["SCHA", "SCHB"]


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 1500, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# A backfill launched over asset partitions runs the implicit asset job; the schedule and direct
# launches run qrsdp_pipeline. Both are the pipeline for a symbol's range.
PIPELINE_JOBS = ("qrsdp_pipeline", "__ASSET_JOB")


def _symbol_runs(instance, symbol: str) -> list:
    return [r for r in instance.get_runs(RunsFilter(tags={"qrsdp/symbol": symbol})) if r.job_name in PIPELINE_JOBS]


def _lake(dist) -> ducklake.DuckLakeSettings:
    cfg = dist.config
    return ducklake.DuckLakeSettings(
        pg_port=cfg.pg_port, pg_user=cfg.pg_user, pg_password=cfg.pg_password,
        data_path=f"s3://{stack.BUCKET}/ducklake/", s3_endpoint=cfg.s3_endpoint,
        s3_access_key=cfg.access_key, s3_secret_key=cfg.secret_key,
    )  # fmt: skip


def _marts(dist) -> Any:
    con = ducklake.connect(_lake(dist))
    con.execute("use lake")
    return con


def _asset_keys() -> list[list[str]]:
    """Every asset of the code location (from the test process's own import of the definitions)."""
    from qrsdp_dagster.definitions import defs

    return [k.path for k in defs.resolve_asset_graph().get_all_asset_keys()]


def _materializations(instance, run_ids: list[str]) -> Counter:
    """(asset, partition) -> how many times the runs materialised it."""
    seen: Counter = Counter()
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            mat = record.dagster_event.event_specific_data.materialization
            seen[(mat.asset_key.to_user_string(), mat.partition)] += 1
    return seen


def _failed_checks(instance, run_ids: list[str]) -> list[str]:
    out = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            data = record.dagster_event.event_specific_data
            if not data.passed:
                out.append(f"{run_id}: {data.check_name}")
    return out


def _embedded_marts(tmp_path: Path, symbols: list[str]) -> Any:
    """The same slice on the embedded default (local sessions, local lake, one DuckDB file), through
    Dagster's CLI with a partition range -- the CI entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRSDP_", "DAGSTER_", "AWS_"))}
    env.update(PIPELINE_ENV, QRSDP_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    first, last = f"{DATES[0]}|{symbols[0]}", f"{DATES[-1]}|{symbols[-1]}"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "qrsdp_dagster.definitions",
         "--select", "*", "--partition-range", f"{first}...{last}",
         "-c", str(ROOT / "qrsdp_dagster" / "configs" / "ci_resources.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import duckdb

    return duckdb.connect(str(tmp_path / "data" / "warehouse" / "qrsdp.duckdb"), read_only=True)


@pytest.mark.timeout(3600)
def test_backfill_is_one_run_per_symbol_over_both_workers_with_marts_equal_to_embedded(
    distributed_stack, tmp_path
) -> None:
    dist = distributed_stack
    instance = dist.instance()
    plan = backfills.plan(BACKFILL_SYMBOLS, DATES[0], DATES[-1])
    ids = backfills.launch(dist.graphql(), plan, _asset_keys(), {"qrsdp/test": "backfill"})
    assert set(ids) == set(BACKFILL_SYMBOLS)

    def runs_done() -> dict[str, Any] | None:
        runs = {s: _symbol_runs(instance, s) for s in BACKFILL_SYMBOLS}
        if all(len(r) == 1 and r[0].status in FINISHED for r in runs.values()):
            return {s: r[0] for s, r in runs.items()}
        return None

    runs = _wait("one finished run per symbol", runs_done)
    for symbol, run in runs.items():
        assert run.status == DagsterRunStatus.SUCCESS, (symbol, run.run_id)
        assert run.tags["dagster/backfill"] == ids[symbol]
        assert run.tags["dagster/asset_partition_range_start"] == f"{DATES[0]}|{symbol}"
        assert run.tags["dagster/asset_partition_range_end"] == f"{DATES[-1]}|{symbol}"
    workers = Counter(run.tags[WORKER_TAG] for run in runs.values())
    assert set(workers) == {dist.worker_name(1), dist.worker_name(2)}, workers

    run_ids = [run.run_id for run in runs.values()]
    seen = _materializations(instance, run_ids)
    for symbol in BACKFILL_SYMBOLS:
        for day in DATES:
            for asset in ("session_log", "raw_events", "book_states", "marts/fct_session_summary",
                          "marts/fct_ohlcv_1min", "staging/stg_event_checks"):  # fmt: skip
                assert seen[(asset, f"{day}|{symbol}")] == 1, (asset, symbol, day)
    assert max(seen.values()) == 1
    assert _failed_checks(instance, run_ids) == []
    checks = sum(1 for r in run_ids for _ in instance.all_logs(r, of_type=DagsterEventType.ASSET_CHECK_EVALUATION))
    assert checks >= len(runs) * 30  # every dbt test and Python check ran, in every run

    # sessions are on S3, not on a worker's disk
    listed = dist.s3_client().list_objects_v2(Bucket=stack.BUCKET, Prefix="sessions/AAPL/")
    assert {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])} >= {
        f"{d}{suffix}" for d in DATES for suffix in (".qrsdp", ".json")
    }
    distributed = mart_checksums(_marts(dist), BACKFILL_SYMBOLS)
    embedded = mart_checksums(_embedded_marts(tmp_path, BACKFILL_SYMBOLS), BACKFILL_SYMBOLS)
    assert distributed == embedded
    assert distributed["marts.fct_session_summary"][0] == len(BACKFILL_SYMBOLS) * len(DATES)


@pytest.mark.timeout(1800)
def test_a_build_is_not_blocked_by_another_writer_and_nothing_is_corrupted(distributed_stack) -> None:
    """The test holds a DuckLake transaction that has replaced AAPL's summary rows (with the same
    rows) and not committed; a worker builds MSFT's marts again meanwhile and finishes (not blocked).
    The test's commit then loses to the worker's, changes nothing, and succeeds when retried; every
    mart is exactly as before."""
    dist = distributed_stack
    instance = dist.instance()
    before = mart_checksums(_marts(dist), BACKFILL_SYMBOLS)
    writer = _marts(dist)
    writer.execute("begin")
    writer.execute(
        "create temp table aapl as select * from marts.fct_session_summary where symbol = 'AAPL'"
    )
    writer.execute("delete from marts.fct_session_summary where symbol = 'AAPL'")
    writer.execute("insert into marts.fct_session_summary select * from aapl")
    run_id = dist.graphql().submit_job_execution(
        "qrsdp_pipeline",
        tags={
            "dagster/asset_partition_range_start": f"{DATES[0]}|MSFT",
            "dagster/asset_partition_range_end": f"{DATES[-1]}|MSFT",
            "qrsdp/test": "concurrent-writer",
        },
    )
    _wait("the MSFT build", lambda: instance.get_run_by_id(run_id).status in FINISHED)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS  # while our txn was open
    with pytest.raises(Exception, match=ducklake.CONFLICT_MARKER):
        writer.execute("commit")
    with contextlib.suppress(Exception):  # the failed commit has ended the transaction
        writer.execute("rollback")
    assert mart_checksums(_marts(dist), BACKFILL_SYMBOLS) == before  # the lost commit changed nothing
    used = ducklake.run_transaction(
        writer,
        [
            "create or replace temp table aapl as select * from marts.fct_session_summary where symbol = 'AAPL'",
            "delete from marts.fct_session_summary where symbol = 'AAPL'",
            "insert into marts.fct_session_summary select * from aapl",
        ],
    )
    assert used == 1
    assert mart_checksums(_marts(dist), BACKFILL_SYMBOLS) == before


def _first_simulated(instance, run_id: str) -> str | None:
    """The worker of the run once its first session has been simulated (its log line), else None."""
    for record in instance.all_logs(run_id):
        if record.step_key == "session_log" and " events, open " in (record.message or ""):
            return instance.get_run_by_id(run_id).tags.get(WORKER_TAG)
    return None


@pytest.mark.timeout(3600)
def test_killed_worker_mid_run_is_retried_on_the_other_worker_with_every_event_once(distributed_stack) -> None:
    dist = distributed_stack
    instance = dist.instance()
    symbol = "KIL"
    run_id = dist.graphql().submit_job_execution(
        "qrsdp_pipeline",
        tags={
            "dagster/asset_partition_range_start": f"{DATES[0]}|{symbol}",
            "dagster/asset_partition_range_end": f"{DATES[-1]}|{symbol}",
        },
    )
    victim = _wait("the first simulated session", lambda: _first_simulated(instance, run_id), every_s=0.2)
    n = 1 if victim == dist.worker_name(1) else 2
    survivor = dist.worker_name(3 - n)
    try:
        dist.stop_worker(n, kill=True)
        _wait("run monitoring to fail the run", lambda: instance.get_run_by_id(run_id).status in FINISHED)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(run_id).tags["qrsdp/symbol"] == symbol  # tagged by the coordinator

        def retry() -> Any:
            runs = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id}))
            return runs[0] if runs and runs[0].status in FINISHED else None

        retried = _wait("the retry to finish", retry)
        assert retried.status == DagsterRunStatus.SUCCESS
        assert retried.tags[WORKER_TAG] == survivor
        assert _failed_checks(instance, [retried.run_id]) == []
    finally:
        dist.start_worker(n)
    # every event exactly once: the marts agree with the sessions' manifests (on S3)
    import json

    con = _marts(dist)
    rows = con.sql(
        f"select date, n_events, n_trades from marts.fct_session_summary where symbol = '{symbol}' order by date"
    ).fetchall()
    assert [r[0] for r in rows] == DATES
    s3 = dist.s3_client()
    for day, n_events, _ in rows:
        manifest = json.loads(s3.get_object(Bucket=stack.BUCKET, Key=f"sessions/{symbol}/{day}.json")["Body"].read())
        assert n_events == manifest["events"]
        landed = con.sql(
            f"select count(*), count(distinct seq) from read_parquet('s3://{stack.BUCKET}/raw/events/"
            f"symbol={symbol}/date={day}/*.parquet')"
        ).fetchone()
        assert landed == (manifest["events"], manifest["events"])
    minutes = con.sql(
        f"select count(*), count(distinct (date, minute_index)) from marts.fct_ohlcv_1min where symbol = '{symbol}'"
    ).fetchone()
    assert minutes[0] == minutes[1] > 0


TICKS = """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
  ... on Schedule { scheduleState { ticks(limit: 10) { status timestamp runIds skipReason } } } } }"""


def _ticks_after(client, selector: dict[str, str], after: float) -> list[dict[str, Any]]:
    ticks = client._execute(TICKS, {"s": selector})["scheduleOrError"]["scheduleState"]["ticks"]
    return [t for t in ticks if t["timestamp"] > after and t["status"] != "STARTED"]


@pytest.mark.timeout(3600)
def test_nightly_catch_up_tick_brings_symbols_without_history_to_the_newest_date(distributed_stack) -> None:
    """The schedule (ticking every minute in the test stack) is switched on; its first tick requests
    one run per symbol that is behind: the symbols without history, from the start date to the newest
    trading date; the symbols the other tests completed are up to date and left alone. The next tick
    requests nothing more (run keys, runs in flight)."""
    dist = distributed_stack
    instance = dist.instance()
    selector = {"repositoryLocationName": "qrsdp", "repositoryName": "__repository__", "scheduleName": "nightly_catch_up"}
    client = dist.graphql()
    # symbols the other tests of this module completed (all of them when the module runs in order)
    complete = [s for s in BACKFILL_SYMBOLS if any(r.status == DagsterRunStatus.SUCCESS for r in _symbol_runs(instance, s))]
    started = client._execute(
        """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
             __typename ... on ScheduleStateResult { scheduleState { id } } ... on PythonError { message } } }""",
        {"s": selector},
    )
    assert started["startSchedule"]["__typename"] == "ScheduleStateResult", started
    state_id = started["startSchedule"]["scheduleState"]["id"]
    try:
        def runs_done() -> dict[str, Any] | None:
            runs = {s: _symbol_runs(instance, s) for s in SCHEDULE_SYMBOLS}
            if all(len(r) >= 1 and all(x.status in FINISHED for x in r) for r in runs.values()):
                return runs
            return None

        _wait("the catch-up runs", runs_done, timeout_s=2400)
        done_at = time.time()
        # the next tick after the runs finished must request nothing
        _wait("a tick after the catch-up", lambda: len(_ticks_after(client, selector, done_at)) >= 1,
              timeout_s=600, every_s=5)  # fmt: skip
        assert all(t["status"] == "SKIPPED" for t in _ticks_after(client, selector, done_at))
    finally:
        client._execute(
            """mutation($id: String!) { stopRunningSchedule(id: $id) { __typename } }""",
            {"id": state_id},
        )
    workers = set()
    for symbol in SCHEDULE_SYMBOLS:
        symbol_runs = _symbol_runs(instance, symbol)
        assert len(symbol_runs) == 1, [r.run_id for r in symbol_runs]
        run = symbol_runs[0]
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags["qrsdp/trigger"] == "nightly_catch_up"
        assert run.tags["qrsdp/behind_trading_dates"] == str(len(DATES))
        assert run.tags["qrsdp/catch_up"] == f"{DATES[0]}..{DATES[-1]}"
        assert run.tags["qrsdp/last_complete"] == "none"
        workers.add(run.tags[WORKER_TAG])
    assert workers == {dist.worker_name(1), dist.worker_name(2)}
    for symbol in complete:  # complete through the newest date: not requested again
        assert not [r for r in _symbol_runs(instance, symbol) if r.tags.get("qrsdp/trigger") == "nightly_catch_up"]
    rows = _marts(dist).sql(
        "select symbol, count(*), min(date), max(date) from marts.fct_session_summary "
        f"where symbol in ({', '.join(repr(s) for s in SCHEDULE_SYMBOLS)}) group by 1 order by 1"
    ).fetchall()
    assert rows == [(s, len(DATES), DATES[0], DATES[-1]) for s in SCHEDULE_SYMBOLS]
