"""Launching a run from the UI: ChainCheckingRunCoordinator refuses, before queuing, a run whose
sessions cannot chain (canceled at once, with the reason), and queues the others unchanged."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.run_coordinator import SubmitRunContext

from qrsdp_dagster.definitions import defs
from qrsdp_dagster.partitions import SETTINGS, session_key
from qrsdp_dagster.run_coordinator import REFUSED_TAG, launch_problems, symbol_tag
from qrsdp_sim.engine.calendar import trading_dates

SYMBOL = next(iter(SETTINGS.symbols))
DATES = trading_dates(SETTINGS.start_date, 4)


@pytest.fixture
def instance():
    with dg.instance_for_test(
        overrides={
            "run_coordinator": {
                "module": "qrsdp_dagster.run_coordinator",
                "class": "ChainCheckingRunCoordinator",
                "config": {"max_concurrent_runs": 1},
            }
        }
    ) as inst:
        yield inst


def create(instance, tmp_path, partition: str, assets: list[str] | None = None) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=defs.resolve_job_def("qrsdp_pipeline"),
        run_config={"resources": {"simulation": {"config": {"data_dir": str(tmp_path), "session_seconds": 300}}}},
        tags={"dagster/partition": partition},
        asset_selection=frozenset(dg.AssetKey(a) for a in assets) if assets else None,
    )


def submit(instance, tmp_path, partition: str, assets: list[str] | None = None) -> dg.DagsterRun:
    run = create(instance, tmp_path, partition, assets)
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


def test_out_of_order_launch_is_refused_before_it_runs(instance, tmp_path):
    run = submit(instance, tmp_path, str(session_key(SYMBOL, DATES[3])))
    assert run.status == dg.DagsterRunStatus.CANCELED  # not FAILURE: nothing counts as failed
    assert run.tags[REFUSED_TAG] == "true"
    messages = [e.message or "" for e in instance.all_logs(run.run_id)]
    refusal = next(m for m in messages if m.startswith("Launch refused"))
    assert f"backfill {SYMBOL} from {DATES[0]} (the first trading date without a session) to {DATES[3]}" in refusal
    assert not list(tmp_path.rglob("*.qrsdp"))


def test_launches_that_can_chain_pass_the_check(instance, tmp_path):
    """(Queuing itself needs a code location; the check that decides is tested here.)"""
    assert launch_problems(create(instance, tmp_path, str(session_key(SYMBOL, DATES[0])))) == []
    # a run that does not simulate (downstream only) is not checked
    assert launch_problems(create(instance, tmp_path, str(session_key(SYMBOL, DATES[3])), ["book_states"])) == []
    assert launch_problems(create(instance, tmp_path, str(session_key(SYMBOL, DATES[3])))) != []


def create_range(instance, tmp_path, first: str, last: str, tags: dict[str, str] | None = None) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=defs.resolve_job_def("qrsdp_pipeline"),
        run_config={"resources": {"simulation": {"config": {"data_dir": str(tmp_path), "session_seconds": 300}}}},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last, **(tags or {})},
    )


def test_a_run_of_one_symbol_is_tagged_with_it_before_it_is_queued(instance, tmp_path):
    """The instance limits runs per qrsdp/symbol value to one: the coordinator tags every one-symbol
    run, whoever launched it (UI, backfill), and leaves runs of several symbols untagged."""
    one = create_range(instance, tmp_path, str(session_key(SYMBOL, DATES[0])), str(session_key(SYMBOL, DATES[3])))
    assert symbol_tag(one) == {"qrsdp/symbol": SYMBOL}
    symbols = list(SETTINGS.symbols)
    several = create_range(
        instance, tmp_path, str(session_key(symbols[0], DATES[0])), str(session_key(symbols[-1], DATES[0]))
    )
    assert symbol_tag(several) == {}
    assert symbol_tag(create(instance, tmp_path, str(session_key(SYMBOL, DATES[2])))) == {"qrsdp/symbol": SYMBOL}
    # refused or queued, the submitted run carries the tag
    refused = submit(instance, tmp_path, str(session_key(SYMBOL, DATES[3])))
    assert refused.tags["qrsdp/symbol"] == SYMBOL


def test_a_backfill_split_by_date_is_refused_with_the_per_symbol_way(instance, tmp_path):
    """Dagster splits a single-run backfill along its dimension with fewer keys (ties: dates). Two
    symbols x two dates become one run per date; the second date's run cannot chain, and the refusal
    says why and what to launch instead."""
    from dagster._core.definitions.automation_tick_evaluation_context import (
        build_run_requests_with_backfill_policies,
    )
    from dagster._core.definitions.events import AssetKeyPartitionKey

    symbols = list(SETTINGS.symbols)[:2]
    graph = defs.resolve_asset_graph()

    def ranges(dates):
        keys = [AssetKeyPartitionKey(dg.AssetKey("session_log"), str(session_key(s, d))) for s in symbols for d in dates]
        with dg.instance_for_test() as inst:
            requests = build_run_requests_with_backfill_policies(keys, graph, inst)
        return sorted(
            (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in requests
        )

    # fewer symbols than dates: one run per symbol over its dates
    assert ranges(DATES) == sorted((str(session_key(s, DATES[0])), str(session_key(s, DATES[3]))) for s in symbols)
    # as many symbols as dates: one run per date over the symbols
    assert ranges(DATES[:2]) == sorted(
        (str(session_key(symbols[0], d)), str(session_key(symbols[1], d))) for d in DATES[:2]
    )
    run = create_range(
        instance, tmp_path, str(session_key(symbols[0], DATES[1])), str(session_key(symbols[1], DATES[1])),
        tags={"dagster/backfill": "bf1"},
    )  # fmt: skip
    refused = instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
    assert refused.status == dg.DagsterRunStatus.CANCELED
    refusal = next(m for m in (e.message or "" for e in instance.all_logs(run.run_id)) if m.startswith("Launch refused"))
    assert "splits a single-run backfill along its dimension with fewer keys" in refusal
    assert "qrsdp backfill" in refusal


def test_backfill_plan_is_one_backfill_per_symbol_over_trading_dates():
    import datetime as dt

    from qrsdp_dagster import backfill

    plan = backfill.plan(["AAPL", "MSFT"], dt.date(2026, 1, 3), dt.date(2026, 1, 9))  # Saturday .. Friday
    assert [(b.symbol, b.dates[0], b.dates[-1], len(b.dates)) for b in plan] == [
        ("AAPL", dt.date(2026, 1, 5), dt.date(2026, 1, 9), 5),
        ("MSFT", dt.date(2026, 1, 5), dt.date(2026, 1, 9), 5),
    ]
    params = plan[0].params([["session_log"]], {"qrsdp/trigger": "t"})
    assert params["partitionNames"][0] == "2026-01-05|AAPL" and len(params["partitionNames"]) == 5
    assert {"key": "qrsdp/symbol", "value": "AAPL"} in params["tags"]
    with pytest.raises(ValueError, match="no trading date"):
        backfill.plan(["AAPL"], dt.date(2026, 1, 3), dt.date(2026, 1, 4))
