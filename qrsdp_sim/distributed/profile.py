"""The distributed Dagster instance (``dagster.yaml``), rendered from ``QRSDP_*`` environment variables.

    python -m qrsdp_sim.distributed.profile write DAGSTER_HOME     # writes DAGSTER_HOME/dagster.yaml
    python -m qrsdp_sim.distributed.profile show                   # prints it
    python -m qrsdp_sim.distributed.profile exec -- CMD [ARGS...]  # writes $DAGSTER_HOME/dagster.yaml,
                                                                   # then becomes CMD (containers)

What it configures, and why:

- **storage**: runs, event logs and schedules in PostgreSQL (``dagster-postgres``), so webserver,
  daemon and every worker see one instance; the password stays out of the file (``env:``).
- **run coordinator**: the queued coordinator (``ChainCheckingRunCoordinator``: it also refuses a run
  that cannot chain before queuing it, and tags a run of one symbol ``qrsdp/symbol``), at most ``max_concurrent_runs`` runs at once (the
  number of worker slots: a run dequeued while every worker is busy would wait in Redis and count
  against the start timeout), one run per ``qrsdp/symbol`` tag value (a symbol's sessions chain).
- **run launcher**: :class:`~qrsdp_sim.distributed.launcher.QrsdpCeleryRunLauncher`, a Redis broker and
  a Redis result backend. ``visibility_timeout`` is twice the longest allowed run, ``result_expires``
  longer still: Redis redelivers an unacknowledged message after the former and drops a task's state
  after the latter, and neither may happen to a running run. Tasks are acknowledged when they start
  (not ``acks_late``): a run whose worker died is failed by run monitoring and retried by Dagster,
  never redelivered behind its back.
- **run monitoring**: start timeout, maximum runtime, a short poll interval; no resume (a resumed run
  would need its step outputs on the dead worker's disk).
- **run retries**: one automatic retry of a run whose worker died (not of a failed asset or op).
- **compute logs**: stdout/stderr of each step to S3 (``dagster-aws``), readable in the UI whichever
  worker ran the step.
- **pools**: ``default_limit``: 1 while the marts are one DuckDB file, one per run slot when they are
  a DuckLake (``QRSDP_WAREHOUSE=ducklake``: workers build marts at once; see docs/data-platform.md).

Variables (defaults fit ``infra/stack.sh``; tests pass their private ports):

=================================  ==============================================  =====================
QRSDP_PG_HOST / QRSDP_PG_PORT      PostgreSQL of the instance                      127.0.0.1 / 15432
QRSDP_PG_USER / QRSDP_PG_PASSWORD  its role; the password is read at run time      qrsdp / (required)
QRSDP_PG_DAGSTER_DB                database of the instance                        qrsdp_dagster
QRSDP_REDIS_URL                    Redis; broker db 0, result backend db 1         redis://127.0.0.1:16379
QRSDP_CELERY_QUEUE                 queue the runs go to                            dagster
QRSDP_MAX_CONCURRENT_RUNS          runs at once (= worker slots)                   $QRSDP_WORKERS or 2
QRSDP_RUN_MAX_RUNTIME_S            longest run; monitoring fails longer ones       21600
QRSDP_RUN_START_TIMEOUT_S          launched but not started after this: failed     600
QRSDP_RUN_MONITORING_INTERVAL_S    how often run monitoring looks                  30
QRSDP_RUN_MAX_RETRIES              automatic retries of a run whose worker died    1
QRSDP_WORKER_HEARTBEAT_TTL_S       a worker silent this long is dead               60
QRSDP_S3_ENDPOINT / QRSDP_S3_BUCKET  compute logs (empty endpoint: AWS S3)         (unset: local logs) / exchange-data
QRSDP_POOL_DEFAULT_LIMIT           op concurrency per pool                         1 (ducklake: run slots)
=================================  ==============================================  =====================
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

DAY_S = 86_400
SYMBOL_TAG = "qrsdp/symbol"
HEADER = (
    "# Written by `python -m qrsdp_sim.distributed.profile write` from QRSDP_* variables\n"
    "# (infra/stack.sh rewrites it at each start: edit the variables, not this file).\n"
)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


@dataclass(frozen=True)
class DistributedSettings:
    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "qrsdp"
    pg_db: str = "qrsdp_dagster"
    redis_url: str = "redis://127.0.0.1:16379"
    queue: str = "dagster"
    max_concurrent_runs: int = 2
    max_runtime_s: int = 6 * 3600
    start_timeout_s: int = 600
    monitoring_interval_s: int = 30
    max_retries: int = 1
    heartbeat_ttl_s: int = 60
    s3_endpoint: str | None = None
    s3_bucket: str = "exchange-data"
    s3_region: str = "us-east-1"
    compute_logs_s3: bool = False
    pool_default_limit: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistributedSettings:
        env = os.environ if environ is None else environ
        redis_url = env.get("QRSDP_REDIS_URL", "").strip() or cls.redis_url
        parsed = urlparse(redis_url)
        if parsed.scheme not in ("redis", "rediss") or parsed.path not in ("", "/"):
            raise ValueError(
                f"QRSDP_REDIS_URL={redis_url!r}: expected redis://HOST:PORT (no database number: "
                "the broker uses db 0 and the result backend db 1)"
            )
        workers = _int(env, "QRSDP_WORKERS", 2, minimum=1)
        endpoint = env.get("QRSDP_S3_ENDPOINT", "").strip() or None
        return cls(
            pg_host=env.get("QRSDP_PG_HOST", "").strip() or cls.pg_host,
            pg_port=_int(env, "QRSDP_PG_PORT", cls.pg_port, minimum=1),
            pg_user=env.get("QRSDP_PG_USER", "").strip() or cls.pg_user,
            pg_db=env.get("QRSDP_PG_DAGSTER_DB", "").strip() or cls.pg_db,
            redis_url=redis_url.rstrip("/"),
            queue=env.get("QRSDP_CELERY_QUEUE", "").strip() or cls.queue,
            max_concurrent_runs=_int(env, "QRSDP_MAX_CONCURRENT_RUNS", workers, minimum=1),
            max_runtime_s=_int(env, "QRSDP_RUN_MAX_RUNTIME_S", cls.max_runtime_s, minimum=60),
            start_timeout_s=_int(env, "QRSDP_RUN_START_TIMEOUT_S", cls.start_timeout_s, minimum=10),
            monitoring_interval_s=_int(env, "QRSDP_RUN_MONITORING_INTERVAL_S", cls.monitoring_interval_s, 1),
            max_retries=_int(env, "QRSDP_RUN_MAX_RETRIES", cls.max_retries),
            heartbeat_ttl_s=_int(env, "QRSDP_WORKER_HEARTBEAT_TTL_S", cls.heartbeat_ttl_s, minimum=4),
            s3_endpoint=endpoint,
            s3_bucket=env.get("QRSDP_S3_BUCKET", "").strip() or cls.s3_bucket,
            s3_region=env.get("QRSDP_S3_REGION", "").strip() or cls.s3_region,
            compute_logs_s3=bool(endpoint) or env.get("QRSDP_COMPUTE_LOGS_S3", "") in ("1", "true", "yes"),
            # one dbt step at a time writes a DuckDB file; a DuckLake takes one per run slot
            pool_default_limit=_int(
                env,
                "QRSDP_POOL_DEFAULT_LIMIT",
                _int(env, "QRSDP_MAX_CONCURRENT_RUNS", workers, minimum=1)
                if env.get("QRSDP_WAREHOUSE", "").strip().lower() == "ducklake"
                else cls.pool_default_limit,
                minimum=1,
            ),
        )

    @property
    def broker_url(self) -> str:
        return f"{self.redis_url}/0"

    @property
    def backend_url(self) -> str:
        return f"{self.redis_url}/1"

    @property
    def visibility_timeout_s(self) -> int:
        return 2 * self.max_runtime_s

    @property
    def result_expires_s(self) -> int:
        return max(7 * DAY_S, 4 * self.max_runtime_s)

    def celery_config(self) -> dict[str, Any]:
        """Settings of the Celery app (the launcher's and, through it, every worker's)."""
        return {
            "broker_transport_options": {
                "visibility_timeout": self.visibility_timeout_s,
                # dagster_celery's defaults for publishing retries
                "max_retries": 3,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
            "broker_connection_retry_on_startup": True,
            "result_expires": self.result_expires_s,
            "result_extended": True,  # the task's worker is stored with its state
            "task_acks_late": False,
            "task_track_started": True,
            "worker_prefetch_multiplier": 1,
            "worker_disable_prefetch": True,  # a busy worker never holds a second run
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
        }

    def instance_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "telemetry": {"enabled": False},
            "storage": {
                "postgres": {
                    "postgres_db": {
                        "hostname": self.pg_host,
                        "port": self.pg_port,
                        "username": self.pg_user,
                        "password": {"env": "QRSDP_PG_PASSWORD"},
                        "db_name": self.pg_db,
                        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; dagster-postgres
                        # ships psycopg2, so name the driver
                        "scheme": "postgresql+psycopg2",
                    }
                }
            },
            # Dagster's queued coordinator, plus: a run that cannot chain is refused before it is
            # queued, and a run of one symbol is tagged qrsdp/symbol (so the limit below applies)
            "run_coordinator": {
                "module": "qrsdp_dagster.run_coordinator",
                "class": "ChainCheckingRunCoordinator",
                "config": {"dequeue_interval_seconds": 2},
            },
            "run_launcher": {
                "module": "qrsdp_sim.distributed.launcher",
                "class": "QrsdpCeleryRunLauncher",
                "config": {
                    "broker": self.broker_url,
                    "backend": self.backend_url,
                    "default_queue": self.queue,
                    "heartbeat_ttl_seconds": self.heartbeat_ttl_s,
                    "config_source": self.celery_config(),
                },
            },
            "run_monitoring": {
                "enabled": True,
                "start_timeout_seconds": self.start_timeout_s,
                "cancel_timeout_seconds": 180,
                "max_resume_run_attempts": 0,
                "poll_interval_seconds": self.monitoring_interval_s,
                "max_runtime_seconds": self.max_runtime_s,
            },
            "run_retries": {
                "enabled": self.max_retries > 0,
                "max_retries": self.max_retries,
                "retry_on_asset_or_op_failure": False,
            },
            # The queued coordinator's limits (Dagster takes them from here once `concurrency` is used).
            "concurrency": {
                "runs": {
                    "max_concurrent_runs": self.max_concurrent_runs,
                    "tag_concurrency_limits": [
                        {"key": SYMBOL_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
                    ],
                },
                "pools": {"default_limit": self.pool_default_limit},
            },
        }
        if self.compute_logs_s3:
            logs: dict[str, Any] = {
                "bucket": self.s3_bucket,
                "prefix": "dagster/compute-logs",
                "region": self.s3_region,
                "skip_empty_files": True,
                "upload_interval": 30,
            }
            if self.s3_endpoint:
                logs["endpoint_url"] = self.s3_endpoint
                logs["use_ssl"] = self.s3_endpoint.startswith("https://")
            cfg["compute_logs"] = {
                "module": "dagster_aws.s3.compute_log_manager",
                "class": "S3ComputeLogManager",
                "config": logs,
            }
        return cfg


def render(settings: DistributedSettings) -> str:
    return HEADER + yaml.safe_dump(settings.instance_config(), sort_keys=False)


def write_dagster_home(home: Path, settings: DistributedSettings | None = None) -> Path:
    """Write ``home/dagster.yaml`` (atomically) and return its path."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    tmp = home / ".dagster.yaml.tmp"
    tmp.write_text(render(settings or DistributedSettings.from_env()))
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qrsdp_sim.distributed.profile", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write DAGSTER_HOME/dagster.yaml")
    w.add_argument("home", type=Path)
    sub.add_parser("show", help="print the dagster.yaml")
    e = sub.add_parser("exec", help="write $DAGSTER_HOME/dagster.yaml, then replace this process by CMD")
    e.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    try:
        settings = DistributedSettings.from_env()
    except ValueError as exc:
        print(f"profile: error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "write":
        print(write_dagster_home(args.home, settings))
    elif args.cmd == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        home = os.environ.get("DAGSTER_HOME", "").strip()
        if not command or not home:
            print("profile: error: exec needs DAGSTER_HOME set and a command after --", file=sys.stderr)
            return 2
        write_dagster_home(Path(home), settings)
        os.execvp(command[0], command)
    else:
        print(render(settings), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
