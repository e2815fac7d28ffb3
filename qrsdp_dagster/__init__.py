"""Dagster orchestration of QRSDP: ``dagster ... -m qrsdp_dagster`` or ``-m qrsdp_dagster.definitions``."""

import warnings

from dagster import BetaWarning

# Single-run backfills (BackfillPolicy) are how a date range keeps its order in one run;
# Dagster 1.13 still marks the parameter beta. Said once here instead of on every load.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)

from qrsdp_dagster.definitions import defs  # noqa: E402

__all__ = ["defs"]
