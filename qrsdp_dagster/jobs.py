"""Jobs.

* ``qrsdp_pipeline``   -- every asset for a partition or a partition range (UI, schedule, backfills).
* ``qrsdp_downstream`` -- book_states and the dbt assets (what the landing sensor requests).

A slice (symbols x trading dates) is a partition *range* of ``qrsdp_pipeline``: one run, no child
run. The unit of work is one symbol's dates, in order (each session opens at the previous close):
backfills and the nightly catch-up make one run per symbol, so N workers run N symbols at once.
From the command line (CI), a partition range as a pair of run tags::

    dagster job execute -m qrsdp_dagster.definitions -j qrsdp_pipeline -c qrsdp_dagster/configs/ci_resources.yaml \\
        --tags '{"dagster/asset_partition_range_start": "2026-01-02|AAPL",
                 "dagster/asset_partition_range_end": "2026-01-05|AAPL"}'

or with Dagster's asset CLI::

    dagster asset materialize -m qrsdp_dagster.definitions --select '*' \\
        --partition-range '2026-01-02|AAPL...2026-01-05|AAPL' -c qrsdp_dagster/configs/ci_resources.yaml

Both jobs run their steps in one process (``in_process_executor``): a run's steps follow each other
anyway, and one process saves a Python start and a code-location import per step (seconds each).
"""

import dagster as dg

qrsdp_pipeline = dg.define_asset_job(
    "qrsdp_pipeline",
    selection=dg.AssetSelection.all(),
    executor_def=dg.in_process_executor,
    description="Simulate, land, replay and build the marts for a symbol-date (or a range of them).",
)

qrsdp_downstream = dg.define_asset_job(
    "qrsdp_downstream",
    selection=dg.AssetSelection.assets("book_states").downstream(),
    executor_def=dg.in_process_executor,
    description="Replay landed events into book_states, then build and test the dbt models.",
)
