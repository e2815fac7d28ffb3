"""Launching a run from the UI: ChainCheckingRunCoordinator refuses, before queuing, a run whose
sessions cannot chain (canceled at once, with the reason), and queues the others unchanged."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.run_coordinator import SubmitRunContext

from qrsdp_dagster.definitions import defs
from qrsdp_dagster.partitions import SETTINGS, session_key
from qrsdp_dagster.run_coordinator import REFUSED_TAG, launch_problems
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
