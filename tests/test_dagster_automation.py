"""The landing sensor (given fake landings) and the nightly schedule."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
from book_streams import random_session

from qrsdp_dagster.chain import trading_days_between
from qrsdp_dagster.partitions import SETTINGS, session_key
from qrsdp_dagster.resources import LakeResource
from qrsdp_dagster.schedules import LOOKBACK_DATES, catch_up_plan, nightly_catch_up
from qrsdp_dagster.sensors import lake_landing_sensor
from qrsdp_sim.engine.calendar import trading_dates
from qrsdp_sim.lake import Lake, land_records

SYMBOLS = list(SETTINGS.symbols)
DATES = trading_dates(SETTINGS.start_date, 3)


@pytest.fixture
def lake_uri(tmp_path):
    return (tmp_path / "lake").as_uri()


def evaluate(instance, lake_uri, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(uri=lake_uri)}
    )
    result = lake_landing_sensor(ctx)
    return result, ctx.cursor


def requested(result) -> list[str]:
    return [] if isinstance(result, dg.SkipReason) else sorted(r.partition_key for r in result)


def test_sensor_requests_exactly_the_newly_landed_partitions(lake_uri, tmp_path):
    lake = Lake.from_uri(lake_uri)
    with dg.instance_for_test() as instance:
        result, cursor = evaluate(instance, lake_uri)
        assert isinstance(result, dg.SkipReason)

        land_records(lake, SYMBOLS[0], DATES[0], random_session(100, 1))
        land_records(lake, SYMBOLS[1], DATES[1], random_session(100, 2))
        # incomplete landing (no marker yet): not requested
        land_records(lake, SYMBOLS[1], DATES[2], random_session(100, 3))
        lake.fs.delete_file(lake.marker_path("events", SYMBOLS[1], DATES[2]))
        # a symbol this code location does not know: ignored
        land_records(lake, "ZZZZ", DATES[0], random_session(100, 4))

        result, cursor = evaluate(instance, lake_uri, cursor)
        assert requested(result) == sorted(
            [str(session_key(SYMBOLS[0], DATES[0])), str(session_key(SYMBOLS[1], DATES[1]))]
        )
        assert all(r.job_name in (None, "qrsdp_downstream") for r in result)
        assert len({r.run_key for r in result}) == 2

        # nothing new: nothing requested, and nothing of the log read again
        result, cursor = evaluate(instance, lake_uri, cursor)
        assert requested(result) == []
        assert "(0 new landing log entries)" in result.skip_message

        # the partition completes, another is landed again: exactly those two
        land_records(lake, SYMBOLS[1], DATES[2], random_session(100, 3))
        land_records(lake, SYMBOLS[0], DATES[0], random_session(120, 5))
        result, cursor = evaluate(instance, lake_uri, cursor)
        assert requested(result) == sorted(
            [str(session_key(SYMBOLS[1], DATES[2])), str(session_key(SYMBOLS[0], DATES[0]))]
        )


def test_sensor_work_follows_what_is_new_not_the_lake(lake_uri, monkeypatch):
    """The sensor reads the landing log from its cursor: after 40 landings it reads one entry for
    one new landing, and hours past the grace period leave the cursor."""
    import qrsdp_dagster.sensors as sensors

    lake = Lake.from_uri(lake_uri)
    day = DATES[0]
    for i in range(40):
        land_records(lake, f"X{i:03d}", day, random_session(50, i))  # symbols this location ignores
    with dg.instance_for_test() as instance:
        result, cursor = evaluate(instance, lake_uri)
        assert "(40 new landing log entries)" in result.skip_message
        reads: list[str] = []
        real = Lake.landings
        monkeypatch.setattr(Lake, "landings", lambda self, table, hour, after="": reads.append(hour)
                            or real(self, table, hour, after))  # fmt: skip
        land_records(lake, SYMBOLS[0], day, random_session(100, 99))
        result, cursor = evaluate(instance, lake_uri, cursor)
        assert requested(result) == [str(session_key(SYMBOLS[0], day))]
        assert len(reads) <= 3  # the open hours only (grace period), not one read per landing
        # later, the hours read are closed: the cursor keeps no names of them
        later = dt.datetime.now(dt.UTC) + sensors.GRACE + dt.timedelta(hours=2)
        monkeypatch.setattr(sensors, "dt", _FrozenDt(later))
        result, cursor = evaluate(instance, lake_uri, cursor)
        state = json.loads(cursor)
        assert (
            all(hour >= state["hour"] for hour in state["done"])
            and sum(map(len, state["done"].values())) == 0
        )


class _FrozenDt:
    """The datetime module as the sensor sees it, with datetime.now() fixed."""

    def __init__(self, now: dt.datetime) -> None:
        self.datetime = _FrozenDatetime(now)

    def __getattr__(self, name):
        return getattr(dt, name)


class _FrozenDatetime:
    """dt.datetime with a fixed now() (strptime and the rest passed through)."""

    def __init__(self, now: dt.datetime) -> None:
        self._now = now

    def now(self, tz=None):
        return self._now

    def __getattr__(self, name):
        return getattr(_REAL_DATETIME, name)


_REAL_DATETIME = dt.datetime


def test_sensor_leaves_partitions_whose_downstream_is_handled(lake_uri):
    lake = Lake.from_uri(lake_uri)
    with dg.instance_for_test() as instance:
        # landed by a Dagster run that is still going: its own downstream steps will follow
        instance.add_run(
            dg.DagsterRun(job_name="qrsdp_pipeline", run_id="landing-run", status=dg.DagsterRunStatus.STARTED)
        )
        land_records(
            lake, SYMBOLS[0], DATES[0], random_session(100, 1), marker_extra={"dagster_run_id": "landing-run"}
        )
        # landed, then book_states materialised after the landing (e.g. by the pipeline run)
        land_records(lake, SYMBOLS[1], DATES[0], random_session(100, 2))
        key = str(session_key(SYMBOLS[1], DATES[0]))
        instance.report_runless_asset_event(dg.AssetMaterialization("book_states", partition=key))
        result, cursor = evaluate(instance, lake_uri)
        assert requested(result) == []
        assert "1 waiting" in result.skip_message
        # the landing run failed before its downstream steps: now the sensor takes over
        instance.delete_run("landing-run")
        instance.add_run(
            dg.DagsterRun(job_name="qrsdp_pipeline", run_id="landing-run", status=dg.DagsterRunStatus.FAILURE)
        )
        result, cursor = evaluate(instance, lake_uri, cursor)
        assert requested(result) == [str(session_key(SYMBOLS[0], DATES[0]))]


SUMMARY = dg.AssetKey(["marts", "fct_session_summary"])


def _materialize(instance, asset, symbol, days) -> None:
    for day in days:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=str(session_key(symbol, day)))
        )


def _tick(instance, when: dt.datetime):
    return nightly_catch_up(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))


def test_nightly_catch_up_requests_one_run_per_symbol_over_all_its_missing_dates():
    """One tick: each symbol from the date after its last complete one (session_log and the marts
    both materialised) to the newest trading date, in one run; how far behind in the tags."""
    night = dt.datetime.combine(DATES[-1] + dt.timedelta(days=17), dt.time(1), dt.UTC)  # a few weeks on
    newest = max(d for d in trading_dates(SETTINGS.start_date, 40) if d <= night.date())
    with dg.instance_for_test() as instance:
        # first symbol complete through DATES[1]; its session_log is a date ahead of its marts (a failed
        # dbt step): the catch-up starts after the last date that is complete in both
        _materialize(instance, "session_log", SYMBOLS[0], DATES[:3])
        _materialize(instance, SUMMARY, SYMBOLS[0], DATES[:2])
        requests = _tick(instance, night)
        by_symbol = {r.tags["qrsdp/symbol"]: r for r in requests}
        assert list(by_symbol) == SYMBOLS  # one run per symbol, every symbol behind
        first = by_symbol[SYMBOLS[0]]
        assert first.tags["dagster/asset_partition_range_start"] == str(session_key(SYMBOLS[0], DATES[2]))
        assert first.tags["dagster/asset_partition_range_end"] == str(session_key(SYMBOLS[0], newest))
        expected_behind = len([d for d in trading_dates(SETTINGS.start_date, 60) if DATES[2] <= d <= newest])
        assert first.tags["qrsdp/behind_trading_dates"] == str(expected_behind)
        assert first.tags["qrsdp/last_complete"] == str(DATES[1])
        other = by_symbol[SYMBOLS[1]]  # no history: from the start date
        assert other.tags["qrsdp/catch_up"] == f"{SETTINGS.start_date}..{newest}"
        assert other.tags["qrsdp/last_complete"] == "none"
        assert other.tags["qrsdp/behind_trading_dates"] == str(expected_behind + 2)
        assert all(r.tags["qrsdp/trigger"] == "nightly_catch_up" for r in requests)
        # idempotent: the same tick again asks for the same runs (same run keys: launched once)
        assert [r.run_key for r in _tick(instance, night)] == [r.run_key for r in requests]

        # a symbol with a run queued or running is left for the next tick
        instance.add_run(
            dg.DagsterRun(job_name="qrsdp_pipeline", run_id="busy", status=dg.DagsterRunStatus.STARTED,
                          tags={"qrsdp/symbol": SYMBOLS[1]})
        )  # fmt: skip
        assert [r.tags["qrsdp/symbol"] for r in _tick(instance, night)] == [SYMBOLS[0]]

        # everything complete through the newest date: nothing to do
        for symbol in SYMBOLS:
            _materialize(instance, "session_log", symbol, [newest])
            _materialize(instance, SUMMARY, symbol, [newest])
        result = _tick(instance, night)
        assert isinstance(result, dg.SkipReason) and "up to date" in str(result.skip_message)


def test_nightly_catch_up_reads_as_many_partitions_as_the_symbols_are_behind(monkeypatch):
    """A symbol one date behind after a long history: the tick names one window of partitions per
    asset (the latest dates), never the whole history -- no listing of every materialised partition."""
    history = trading_dates(SETTINGS.start_date, 3 * LOOKBACK_DATES)
    tonight = trading_dates(history[-1], 2)[-1]
    night = dt.datetime.combine(tonight, dt.time(1), dt.UTC)
    with dg.instance_for_test() as instance:
        for symbol in SYMBOLS:
            _materialize(instance, "session_log", symbol, history)
            _materialize(instance, SUMMARY, symbol, history)
        named: list[int] = []
        lookup = dg.DagsterInstance.get_latest_storage_id_by_partition

        def counted(self, asset_key, event_type, partitions=None, *args, **kwargs):
            named.append(len(partitions))
            return lookup(self, asset_key, event_type, partitions, *args, **kwargs)

        def listing(*args, **kwargs):
            raise AssertionError("the schedule listed every materialised partition")

        # on the class: the schedule's context may hold another object for the same instance
        monkeypatch.setattr(dg.DagsterInstance, "get_latest_storage_id_by_partition", counted)
        monkeypatch.setattr(dg.DagsterInstance, "get_materialized_partitions", listing)
        requests = _tick(instance, night)
        assert [
            (r.tags["qrsdp/symbol"], r.tags["qrsdp/catch_up"], r.tags["qrsdp/last_complete"])
            for r in requests
        ] == [(symbol, f"{tonight}..{tonight}", str(history[-1])) for symbol in SYMBOLS]
        assert named == [LOOKBACK_DATES * len(SYMBOLS)] * 2  # one lookup per asset, the newest window only


def test_nightly_catch_up_before_the_first_trading_date_does_nothing():
    with dg.instance_for_test() as instance:
        early = dt.datetime.combine(SETTINGS.start_date, dt.time(1), dt.UTC) - dt.timedelta(days=3)
        assert isinstance(_tick(instance, early), dg.SkipReason)


def test_catch_up_plan_and_trading_day_count():
    start = dt.date(2026, 1, 2)  # a Friday
    assert trading_days_between(start, dt.date(2026, 1, 2)) == 1
    assert trading_days_between(start, dt.date(2026, 1, 4)) == 1  # the weekend adds nothing
    assert (
        trading_days_between(start, dt.date(2026, 12, 31)) == 260
    )  # 2026 has 261 weekdays; Jan 1 is before start
    plan = catch_up_plan({"A": dt.date(2026, 1, 9)}, ["A", "B", "C"], start, dt.date(2026, 1, 12))
    assert [(c.symbol, c.first, c.last, c.dates) for c in plan] == [
        ("A", dt.date(2026, 1, 12), dt.date(2026, 1, 12), 1),  # Friday's done: Monday only
        ("B", start, dt.date(2026, 1, 12), 7),
        ("C", start, dt.date(2026, 1, 12), 7),
    ]
    assert catch_up_plan({"A": dt.date(2026, 1, 12)}, ["A"], start, dt.date(2026, 1, 12)) == []
