"""The Dagster code location loads and has the expected graph, partitions, jobs and automation."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from qrsdp_dagster.definitions import defs
from qrsdp_dagster.partitions import (
    SETTINGS,
    chain_order,
    range_tags,
    session_key,
    session_partitions,
    split_key,
)
from qrsdp_dagster.settings import parse_symbols

EXPECTED_ASSETS = {
    "session_log", "raw_events", "book_states",
    "staging/stg_events", "staging/stg_book_states", "staging/stg_sessions",
    "staging/stg_event_landings", "staging/stg_event_checks", "staging/stg_book_state_checks",
    "marts/fct_ohlcv_1min", "marts/fct_session_summary",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _own_instance():
    """Resolving Definitions reads the state storage of Dagster's *current* instance (a context
    variable). A test that ran earlier may have left it pointing at an instance that is gone, so
    each test here runs under an instance of its own."""
    with dg.instance_for_test():
        yield


def test_definitions_load_with_the_asset_graph():
    import qrsdp_dagster

    assert qrsdp_dagster.defs is defs  # `-m qrsdp_dagster` finds the same Definitions
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert parents["session_log"] == {"session_log"}  # chained to its own previous date
    assert parents["raw_events"] == {"session_log"}
    assert parents["book_states"] == {"raw_events"}
    assert parents["staging/stg_event_landings"] == {"raw_events"}
    assert parents["staging/stg_events"] == {"raw_events", "staging/stg_event_landings"}
    assert parents["staging/stg_event_checks"] == {"staging/stg_events", "staging/stg_event_landings"}
    assert parents["staging/stg_book_states"] == {"book_states"}
    # the summary reads the statistics the checks models compute (and book states only when a
    # partition is not stored in seq order), never the events themselves
    assert parents["marts/fct_session_summary"] == {
        "staging/stg_event_checks", "staging/stg_book_states", "staging/stg_sessions", "staging/stg_book_state_checks",
    }  # fmt: skip
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def == session_partitions
    checks = {c.name for c in graph.asset_check_keys}
    for name in ("stg_events_unique_symbol_date_seq", "stg_events_removals_match_earlier_add",
                 "fct_session_summary_sessions_chain", "fct_ohlcv_1min_ohlc_sane",
                 "stg_events_rows_per_session_in_range", "stg_events_ts_non_decreasing_by_seq",
                 "stg_events_no_duplicate_add_order_id", "stg_events_removals_within_added_qty",
                 "stg_events_sweeps_fill_in_queue_order", "fct_ohlcv_1min_volume_is_executed_shares",
                 "session_file_intact", "raw_events_rows_match_session",
                 "book_states_replay_consistent"):  # fmt: skip
        assert name in checks


def test_every_asset_has_an_owner_and_a_description_and_every_check_a_description():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.owners == ["team:qrsdp"], key
        assert (spec.description or "").strip(), key
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert len((spec.description or "").strip()) > 20, check_key
    # the Python assets have checks of their own
    owners = {c.asset_key.to_user_string() for c in graph.asset_check_keys}
    assert {"session_log", "raw_events", "book_states"} <= owners


def test_jobs_sensor_schedule_and_resources():
    for job in ("qrsdp_pipeline", "qrsdp_downstream"):
        assert defs.resolve_job_def(job).executor_def.name == "in_process"  # a run's steps in one process
    assert "qrsdp_slice" not in {j.name for j in defs.resolve_all_job_defs()}  # no job that nests a run
    assert defs.resolve_sensor_def("lake_landing_sensor").job_name == "qrsdp_downstream"
    schedule = defs.resolve_schedule_def("nightly_catch_up")
    assert schedule.job_name == "qrsdp_pipeline" and schedule.cron_schedule == "0 1 * * *"
    resources = defs.resources
    assert {"simulation", "lake", "warehouse", "kafka", "dbt"} <= set(resources)
    assert resources["lake"].uri == SETTINGS.lake_uri
    assert resources["simulation"].data_dir == str(SETTINGS.data_dir)


def test_partition_keys():
    first = SETTINGS.start_date
    keys = session_partitions.get_partition_keys(current_time=dt.datetime(2026, 1, 10, tzinfo=dt.UTC))
    dates = sorted({split_key(k)[1] for k in keys})
    assert all(d.weekday() < 5 for d in dates) and dates[0] == first
    key = session_key("AAPL", dt.date(2026, 1, 5))
    assert str(key) == "2026-01-05|AAPL" and split_key("2026-01-05|AAPL") == ("AAPL", dt.date(2026, 1, 5))
    assert chain_order(["2026-01-05|MSFT", "2026-01-02|MSFT", "2026-01-05|AAPL"]) == [
        ("AAPL", dt.date(2026, 1, 5)), ("MSFT", dt.date(2026, 1, 2)), ("MSFT", dt.date(2026, 1, 5)),
    ]  # fmt: skip
    tags = range_tags(list(SETTINGS.symbols), first, dt.date(2026, 1, 5))
    rng = dg.PartitionKeyRange(
        tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
    )
    covered = session_partitions.get_partition_keys_in_range(rng)
    assert len(covered) == 2 * len(SETTINGS.symbols)


def test_parse_symbols():
    assert parse_symbols("AAPL, MSFT") == {"AAPL": 10_000, "MSFT": 10_000}
    assert parse_symbols("AAPL:18000,MSFT", 5) == {"AAPL": 18_000, "MSFT": 5}
    with pytest.raises(ValueError, match="twice"):
        parse_symbols("AAPL,AAPL")
    with pytest.raises(ValueError):
        parse_symbols("aapl")
