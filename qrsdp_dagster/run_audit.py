"""What a Dagster instance's event log says about runs: which partitions they materialised and how
their asset checks (the dbt tests and the Python checks) came out.

Reads through the instance (PostgreSQL for the distributed profile, SQLite for the embedded default),
so the answer is the record every process wrote, not what one process saw. Used by the distributed
tests and ``benchmarks/bench_distributed.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterEventType, RunsFilter

from qrsdp_dagster.backfill import RUN_JOB

# The pipeline of a symbol's range: a backfill over asset partitions runs the implicit asset job, the
# schedule and direct launches run qrsdp_pipeline.
PIPELINE_JOBS: tuple[str, ...] = ("qrsdp_pipeline", RUN_JOB)


def symbol_runs(instance: Any, symbol: str, jobs: Collection[str] = PIPELINE_JOBS) -> list[Any]:
    """The pipeline runs tagged ``qrsdp/symbol=<symbol>`` (newest first)."""
    return [r for r in instance.get_runs(RunsFilter(tags={"qrsdp/symbol": symbol})) if r.job_name in jobs]


def materializations(instance: Any, run_ids: Iterable[str]) -> Counter[tuple[str, str | None]]:
    """(asset, partition) -> how many times the runs materialised it."""
    seen: Counter[tuple[str, str | None]] = Counter()
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            mat = record.dagster_event.event_specific_data.materialization
            seen[(mat.asset_key.to_user_string(), mat.partition)] += 1
    return seen


@dataclass
class CheckTally:
    """The asset check evaluations of some runs."""

    evaluated: Counter[str] = field(default_factory=Counter)  # run id -> evaluations
    failed: list[str] = field(default_factory=list)  # "<run id>: <asset> <check>"

    @property
    def total(self) -> int:
        return sum(self.evaluated.values())


def checks(instance: Any, run_ids: Iterable[str]) -> CheckTally:
    """Every asset check evaluation of the runs, and the ones that did not pass."""
    tally = CheckTally()
    for run_id in run_ids:
        tally.evaluated[run_id] += 0
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            data = record.dagster_event.event_specific_data
            tally.evaluated[run_id] += 1
            if not data.passed:
                tally.failed.append(f"{run_id}: {data.asset_key.to_user_string()} {data.check_name}")
    return tally


def failed_checks(instance: Any, run_ids: Iterable[str]) -> list[str]:
    """The asset checks of the runs that did not pass ("<run id>: <asset> <check>")."""
    return checks(instance, run_ids).failed
