"""``ChainCheckingRunCoordinator``: refuses, before it is queued, a run that cannot chain.

Configured by the instance ``qrsdp ui`` creates (``dagster.yaml``: ``run_coordinator``); it is
Dagster's ``QueuedRunCoordinator`` (same configuration: run limits, tag concurrency) plus one
look at the run before it is queued. A run that simulates sessions (``session_log`` selected)
whose selection cannot chain -- a symbol's previous session missing, or simulated with another
configuration (:func:`qrsdp_dagster.chain.chain_problems`) -- is not queued: it is marked
canceled at once, with the reason (which date to backfill from, which settings differ) in its
event log. Nothing runs, so nothing downstream is attempted and no asset or dbt check shows a
failure it did not have (Dagster counts the planned partitions of a *failed* run as failed).
A run of exactly one symbol is tagged ``qrsdp/symbol=SYM`` before it is queued, so the instance's
limit of one run per symbol applies to runs from the UI and from backfills too.
Runs executed in process (``qrsdp demo``, tests, ``dagster job execute``) never pass through a
run coordinator; ``session_log`` makes the same check before simulating anything.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

REFUSED_TAG = "qrsdp/refused"
SYMBOL_TAG = "qrsdp/symbol"
BACKFILL_TAG = "dagster/backfill"
SPLIT_BY_DATE_HINT = (
    "This run covers several symbols because Dagster splits a single-run backfill along its dimension "
    "with fewer keys (here the dates): one run per date over every symbol, which cannot chain. Launch "
    "one backfill per symbol instead (in the UI, select one symbol's dates; or `qrsdp backfill`), or "
    "the nightly_catch_up schedule's runs (one per symbol)."
)
SESSION_LOG = dg.AssetKey("session_log")


def run_partitions(run: dg.DagsterRun) -> list[tuple[str, Any]]:
    """The (symbol, date) pairs a run covers, from its partition tags ([] when unpartitioned)."""
    from qrsdp_dagster.partitions import chain_order, session_partitions

    tags = run.tags
    if "dagster/partition" in tags:
        return chain_order([tags["dagster/partition"]])
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        keys = session_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
        return chain_order(keys)
    return []


def launch_problems(run: dg.DagsterRun) -> list[str]:
    """Why ``run`` cannot work ([] = it can, or it simulates nothing)."""
    from qrsdp_dagster.chain import chain_problems
    from qrsdp_dagster.resources import SimulationResource

    selection = run.asset_selection
    simulates = SESSION_LOG in selection if selection is not None else run.job_name == "qrsdp_pipeline"
    if not simulates:
        return []
    partitions = run_partitions(run)
    if not partitions:
        return []
    overrides = ((run.run_config or {}).get("resources", {}).get("simulation", {}) or {}).get(
        "config", {}
    ) or {}
    return chain_problems(SimulationResource(**overrides), partitions)


def symbol_tag(run: dg.DagsterRun) -> dict[str, str]:
    """``{qrsdp/symbol: SYM}`` for a run of exactly one symbol's partitions that is not tagged yet.

    The instance limits runs per value of this tag to 1 (a symbol's sessions chain), whoever made
    the run: a UI launch, a per-symbol backfill, the schedule."""
    if SYMBOL_TAG in run.tags:
        return {}
    symbols = {symbol for symbol, _ in run_partitions(run)}
    return {SYMBOL_TAG: symbols.pop()} if len(symbols) == 1 else {}


class ChainCheckingRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        try:
            problems = launch_problems(run)
            tags = symbol_tag(run)
        except Exception as exc:  # a broken check must not block every launch
            self._logger.warning(f"chain check of run {run.run_id} failed ({exc}); queuing it unchecked")
            problems, tags = [], {}
        if tags:
            self._instance.add_run_tags(run.run_id, tags)
            context = SubmitRunContext(self._instance.get_run_by_id(run.run_id) or run, context.workspace)
        if not problems:
            return super().submit_run(context)
        if BACKFILL_TAG in run.tags and len({s for s, _ in run_partitions(run)}) > 1:
            problems.append(SPLIT_BY_DATE_HINT)
        message = (
            "Launch refused before the run started: nothing was simulated and nothing downstream was "
            "attempted.\n" + "\n".join(f"- {p}" for p in problems)
        )
        self._instance.add_run_tags(run.run_id, {REFUSED_TAG: "true"})
        self._instance.report_engine_event(message, run)
        self._instance.report_run_canceled(run, message=message)
        refused = self._instance.get_run_by_id(run.run_id)
        assert refused is not None
        return refused
