"""The QRSDP code location: assets, jobs, sensor, schedule and resources.

Loaded by ``workspace.yaml`` (``dagster dev`` / ``qrsdp ui``) and by
``dagster job execute -m qrsdp_dagster.definitions -j <job> -c <config.yaml>``.
"""

import dagster as dg

from qrsdp_dagster.assets.dbt import qrsdp_dbt
from qrsdp_dagster.assets.lake import book_states, raw_events
from qrsdp_dagster.assets.simulation import session_log
from qrsdp_dagster.jobs import qrsdp_downstream, qrsdp_pipeline
from qrsdp_dagster.partitions import SETTINGS
from qrsdp_dagster.resources import build_resources
from qrsdp_dagster.schedules import nightly_catch_up
from qrsdp_dagster.sensors import itch_streamer_health, lake_landing_sensor

defs = dg.Definitions(
    assets=[session_log, raw_events, book_states, qrsdp_dbt],
    jobs=[qrsdp_pipeline, qrsdp_downstream],
    sensors=[lake_landing_sensor, itch_streamer_health],
    schedules=[nightly_catch_up],
    resources=build_resources(SETTINGS),
    # runs of the implicit asset job (UI materialisations, backfills) run their steps in one process
    # too, like qrsdp_pipeline: the steps follow each other anyway (see jobs.py)
    executor=dg.in_process_executor,
)
