"""Sensors: ``lake_landing_sensor`` and ``itch_streamer_health`` (at the end).

``lake_landing_sensor``: newly landed, complete ``raw/events`` partitions -> downstream runs.

A partition is complete when its ``_SUCCESS`` marker exists; every marker written is also
announced in the lake's landing log (``raw/_landings/events/<hour>/<landed_at>_<symbol>_<date>.json``,
see :mod:`qrsdp_sim.lake.store`). The cursor is a position in that log (hour, last entry name),
so each evaluation lists only the hours since the cursor and reads only the new entries: its
work is proportional to what was landed since, never to the size of the lake. For each new
entry the sensor requests ``qrsdp_downstream`` (book_states + dbt) for exactly that partition --
unless the landing was done by a Dagster run that is still going (the entry is kept in the cursor
and looked at again; its own downstream steps will usually follow) or book_states was already
materialised after the landing.
"""

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from qrsdp_dagster.jobs import qrsdp_downstream
from qrsdp_dagster.partitions import SETTINGS, session_key
from qrsdp_dagster.resources import KafkaResource, LakeResource
from qrsdp_sim.lake import Lake, PartitionMarker
from qrsdp_sim.lake.store import landing_hour

MAX_REQUESTS_PER_TICK = 50
MAX_HOURS_PER_TICK = 48
"""Hours of landing log read per evaluation: a sensor switched off for long catches up over ticks."""


def _downstream_done_since(instance: dg.DagsterInstance, key: str, landed_at: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("book_states"), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return False
    return records[0].timestamp >= dt.datetime.fromisoformat(landed_at).timestamp()


GRACE = dt.timedelta(hours=2)
"""How long an hour of the log stays open: an entry is named by the landing's start time but
written at its end, so a long landing can add to an hour the sensor has already read."""


@dataclass
class LandingCursor:
    """Position in the landing log: ``hour`` is the oldest hour still read; ``done`` names the
    entries already handled in the open hours (``hour`` .. now); ``waiting`` the entries whose
    landing run was still going (looked at again on every evaluation)."""

    hour: str = ""
    done: dict[str, list[str]] | None = None
    waiting: list[list[str]] | None = None  # [hour, name]

    @classmethod
    def parse(cls, text: str | None) -> "LandingCursor":
        d = json.loads(text) if text else {}
        if not isinstance(d, dict) or "hour" not in d:  # none, or the former full-listing sensor's
            return cls(done={}, waiting=[])
        return cls(hour=d["hour"], done=dict(d.get("done", {})), waiting=list(d.get("waiting", [])))

    def dump(self) -> str:
        return json.dumps({"hour": self.hour, "done": self.done or {}, "waiting": self.waiting or []})


def _hours_since(lake: Lake, cursor: LandingCursor, now: dt.datetime) -> list[str]:
    """The log's hours to read: from the cursor's hour to now (at most MAX_HOURS_PER_TICK); without
    a cursor, the hours present in the log (listed once)."""
    if not cursor.hour:
        import pyarrow.fs as pafs

        infos = lake.fs.get_file_info(pafs.FileSelector(lake.landings_dir("events"), allow_not_found=True))
        present = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        if not present:
            return [landing_hour(now)]
        cursor.hour = present[0]
    start = dt.datetime.strptime(cursor.hour, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)
    hours = []
    moment = start
    while moment <= now and len(hours) < MAX_HOURS_PER_TICK:
        hours.append(landing_hour(moment))
        moment += dt.timedelta(hours=1)
    return hours


def _request_for(
    context: dg.SensorEvaluationContext, store: Lake, marker: PartitionMarker
) -> dg.RunRequest | str | None:
    """A RunRequest, "wait" while the landing run is going, or None (not ours, superseded, done)."""
    if marker.symbol not in SETTINGS.symbols or marker.date < SETTINGS.start_date:
        return None  # not a partition of this code location
    current = store.read_marker("events", marker.symbol, marker.date)
    if current is None or current.landed_at != marker.landed_at:
        return None  # being landed again, or landed again since: that landing has its own entry
    key = str(session_key(marker.symbol, marker.date))
    run_id = marker.extra.get("dagster_run_id")
    run = context.instance.get_run_by_id(run_id) if run_id else None
    if run is not None and not run.is_finished:
        return "wait"
    if _downstream_done_since(context.instance, key, marker.landed_at):
        return None
    return dg.RunRequest(
        partition_key=key,
        run_key=f"{key}@{marker.landed_at}",
        tags={"qrsdp/trigger": "lake_landing_sensor", "qrsdp/landed_at": marker.landed_at},
    )


@dg.sensor(
    job=qrsdp_downstream,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests book_states + dbt for every newly landed, complete raw_events partition "
    "(follows the lake's landing log from a cursor: work per check grows with what is new, not with the lake).",
)
def lake_landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    store = lake.lake()
    cursor = LandingCursor.parse(context.cursor)
    now = dt.datetime.now(dt.UTC)
    requests: list[dg.RunRequest] = []
    waiting: list[list[str]] = []
    for hour, name in cursor.waiting or []:  # landing runs that were going at the last evaluation
        for entry, marker in store.landings("events", hour, after=name[:-1]):
            if entry == name:
                outcome = _request_for(context, store, marker)
                if outcome == "wait":
                    waiting.append([hour, name])
                elif outcome is not None:
                    requests.append(outcome)
    read = 0
    full = False
    for hour in _hours_since(store, cursor, now):
        done = set(cursor.done.get(hour, []))
        for name, marker in store.landings("events", hour):
            if name in done:
                continue
            if len(requests) >= MAX_REQUESTS_PER_TICK:
                full = True
                break
            read += 1
            done.add(name)
            outcome = _request_for(context, store, marker)
            if outcome == "wait":
                waiting.append([hour, name])
            elif outcome is not None:
                requests.append(outcome)
        cursor.done[hour] = sorted(done)
        if full:
            break
    # hours older than the grace period are closed: forget their names, start after them
    open_from = landing_hour(now - GRACE)
    for hour in sorted(cursor.done):
        if hour < open_from and not full:
            del cursor.done[hour]
            cursor.hour = max(cursor.hour, (dt.datetime.strptime(hour, "%Y-%m-%dT%H") + dt.timedelta(hours=1))
                              .strftime("%Y-%m-%dT%H"))  # fmt: skip
    cursor.waiting = waiting
    context.update_cursor(cursor.dump())
    if requests:
        return requests
    return dg.SkipReason(
        f"no newly landed partitions ({read} new landing log entries"
        + (f"; {len(waiting)} waiting for their landing run to finish)" if waiting else ")")
    )


# ---------------------------------------------------------------------------------------------------
# itch_streamer_health: is the ITCH streamer (`qrsdp itch-stream`, run by infra/stack.sh) keeping up?

ITCH_GROUP = os.environ.get("QRSDP_ITCH_GROUP", "") or "itch-streamer"
GROWING_LIMIT = 3
"""Consecutive evaluations with a growing lag before the sensor reports the streamer unhealthy."""


class ItchStreamerUnhealthy(RuntimeError):
    """Raised by ``itch_streamer_health``: the tick fails and the UI shows this message."""


@dataclass(frozen=True)
class StreamerHealth:
    healthy: bool
    message: str
    growing: int  # consecutive evaluations the lag grew (kept in the cursor)


def streamer_health(
    members: int,
    lag: int,
    lag_before: int | None,
    growing_before: int = 0,
    *,
    growing_limit: int = GROWING_LIMIT,
) -> StreamerHealth:
    """Health of the streamer from what Kafka (and the pid file) say now and the last evaluation.

    ``members``: live consumers of the group (group members, plus the local streamer process when its pid
    file names a live one); ``lag``: messages of the topic not yet committed by the group;
    ``lag_before`` / ``growing_before``: the previous evaluation's lag and growth streak (None: first).
    Unhealthy when nobody consumes while there is lag, or when the lag grew ``growing_limit`` times in a row.
    """
    if lag_before is None:
        trend, growing = "first check", 0
    elif lag == lag_before:
        trend, growing = "steady", 0
    elif lag < lag_before:
        trend, growing = "falling", 0
    else:
        trend, growing = "growing", growing_before + 1
    if members <= 0:
        if lag > 0:
            return StreamerHealth(
                False, f"no active consumer in the group while lag is {lag:,} ({trend})", growing
            )
        return StreamerHealth(True, "not running, nothing to send (lag 0)", 0)
    if lag <= 0:
        return StreamerHealth(True, f"alive ({members} member(s)), caught up (lag 0)", 0)
    if growing >= growing_limit:
        return StreamerHealth(
            False,
            f"alive ({members} member(s)) but lag {lag:,} grew over {growing} consecutive evaluations",
            growing,
        )
    return StreamerHealth(True, f"alive ({members} member(s)), lag {lag:,} ({trend})", growing)


def _local_streamer_alive(brokers: str) -> bool:
    """Whether infra/stack.sh's pid file for this (loopback) broker names a live ``itch-stream`` process.

    The streamer assigns its partitions itself (no group subscription), so Kafka lists no members for
    its group; on the stack's machine the pid file says whether it runs."""
    from qrsdp_sim.stack import StackError, project_root

    first = brokers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return False
    try:
        pidfile = project_root() / "infra" / ".run" / f"itch-{port}.pid"
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError, StackError):
        return False
    return b"itch-stream" in cmdline and f"127.0.0.1:{port}".encode() in cmdline


def group_lag(brokers: str, topic: str, group: str, timeout: float = 10.0) -> tuple[int, int]:
    """(active members of ``group``, total lag of ``group`` on ``topic``): high watermark minus the
    committed offset per partition (minus the low watermark where nothing is committed)."""
    from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": brokers, "socket.connection.setup.timeout.ms": 5000})
    members = 0
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
        if desc.state in (
            ConsumerGroupState.STABLE,
            ConsumerGroupState.PREPARING_REBALANCING,
            ConsumerGroupState.COMPLETING_REBALANCING,
        ):
            members = len(desc.members)
    except KafkaException:
        members = 0  # no such group yet
    # A consumer that never subscribes does not join the group: it only reads its committed offsets.
    probe = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False,
                      "socket.connection.setup.timeout.ms": 5000, "log_level": 3})  # fmt: skip
    try:
        md = probe.list_topics(topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise ItchStreamerUnhealthy(f"topic {topic!r} not found on {brokers} ({t and t.error})")
        tps = [TopicPartition(topic, p) for p in sorted(t.partitions)]
        committed = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=timeout)}
        lag = 0
        for tp in tps:
            low, high = probe.get_watermark_offsets(tp, timeout=timeout, cached=False)
            done = committed.get(tp.partition, -1)
            lag += max(0, high - (done if done >= 0 else low))
    finally:
        probe.close()
    return members, lag


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING
    if SETTINGS.kafka_brokers
    else dg.DefaultSensorStatus.STOPPED,
    description=f"Checks that the ITCH streamer (consumer group {ITCH_GROUP}) is alive and keeping up with "
    "the Kafka topic; fails the tick when nobody consumes while there is lag, or when the lag keeps growing. "
    "Requests no runs.",
)
def itch_streamer_health(context: dg.SensorEvaluationContext, kafka: KafkaResource):
    if not kafka.enabled:
        return dg.SkipReason("Kafka is not configured (QRSDP_KAFKA_BROKERS unset): no ITCH streamer to check")
    state = json.loads(context.cursor) if context.cursor else {}
    members, lag = group_lag(kafka.brokers, kafka.topic, ITCH_GROUP)
    local = _local_streamer_alive(kafka.brokers)
    health = streamer_health(members + int(local), lag, state.get("lag"), state.get("growing", 0))
    context.update_cursor(json.dumps({"lag": lag, "growing": health.growing}))
    where = f"group {ITCH_GROUP} on {kafka.topic}" + (" (local streamer process running)" if local else "")
    if not health.healthy:
        message = f"ITCH streamer unhealthy: {health.message} -- {where}"
        context.log.error(message)
        raise ItchStreamerUnhealthy(message)
    return dg.SkipReason(f"ITCH streamer {health.message} -- {where}")
