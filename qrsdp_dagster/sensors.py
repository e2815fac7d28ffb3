"""``lake_landing_sensor``: newly landed, complete ``raw/events`` partitions -> downstream runs.

A partition is complete when its ``_SUCCESS`` marker exists. For each marker not seen
before (the cursor maps partition -> landed_at), the sensor requests ``qrsdp_downstream``
(book_states + dbt) for exactly that partition -- unless the landing was done by a
Dagster run that is still going (its own downstream steps will follow) or book_states
was already materialised after the landing.
"""

import datetime as dt
import json

import dagster as dg

from qrsdp_dagster.jobs import qrsdp_downstream
from qrsdp_dagster.partitions import SETTINGS, session_key
from qrsdp_dagster.resources import LakeResource

MAX_REQUESTS_PER_TICK = 50


def _downstream_done_since(instance: dg.DagsterInstance, key: str, landed_at: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("book_states"), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return False
    return records[0].timestamp >= dt.datetime.fromisoformat(landed_at).timestamp()


@dg.sensor(
    job=qrsdp_downstream,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests book_states + dbt for every newly landed, complete raw_events partition.",
)
def lake_landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    first = SETTINGS.start_date
    requests = []
    waiting = 0
    for marker in lake.lake().complete_partitions("events"):
        if marker.symbol not in SETTINGS.symbols or marker.date < first:
            continue  # not a partition of this code location
        key = str(session_key(marker.symbol, marker.date))
        if seen.get(key) == marker.landed_at:
            continue
        run_id = marker.extra.get("dagster_run_id")
        run = context.instance.get_run_by_id(run_id) if run_id else None
        if run is not None and not run.is_finished:
            waiting += 1  # decide once the landing run is over
            continue
        seen[key] = marker.landed_at
        if _downstream_done_since(context.instance, key, marker.landed_at):
            continue
        requests.append(
            dg.RunRequest(
                partition_key=key,
                run_key=f"{key}@{marker.landed_at}",
                tags={"qrsdp/trigger": "lake_landing_sensor", "qrsdp/landed_at": marker.landed_at},
            )
        )
        if len(requests) >= MAX_REQUESTS_PER_TICK:
            break
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if requests:
        return requests
    return dg.SkipReason(
        f"no newly landed partitions ({waiting} waiting for their landing run to finish)"
        if waiting
        else "no newly landed partitions"
    )
