"""A private instance of the distributed profile on free ports, for tests and benchmarks.

The pytest fixtures (``tests/services.py``) and ``benchmarks/bench_distributed.py`` start the same
thing: MinIO, PostgreSQL, Redis and the Dagster processes (code server, webserver, daemon, Celery
workers) of ``infra/stack.sh``, in a data folder of their own, on ports nobody else listens on, so a
developer's stack on 9000/15432/3000 is never touched.

    base = private_config(Path(tempfile.mkdtemp()))
    cfg = distributed_config(base, pg_root=..., code_location="-m qrsdp_dagster.definitions",
                             extra_env={"QRSDP_SYMBOLS": "AAPL,MSFT"})
    with running(cfg) as dist:               # every service healthy; all stopped on exit
        dist.instance().get_runs()
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrsdp_sim import stack
from qrsdp_sim.distributed import ducklake

# Run monitoring fast enough that a lost worker is noticed within seconds (defaults: 30 s / 60 s).
FAST_MONITORING = {
    "QRSDP_RUN_MONITORING_INTERVAL_S": "2",
    "QRSDP_WORKER_HEARTBEAT_TTL_S": "15",
    "QRSDP_RUN_START_TIMEOUT_S": "600",
    "QRSDP_RUN_MAX_RUNTIME_S": "3600",
}


def free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 outside the ephemeral range that is free now, as is the one above it
    (MinIO's console address); ``taken`` collects the ports handed out already (see ``stack.free_port``)."""
    return stack.free_port_pair(taken)


def private_config(
    stack_dir: Path, taken: set[int] | None = None, *, timeout_s: float = 90
) -> stack.StackConfig:
    """Kafka and MinIO of a private stack: its own data folder, free ports."""
    taken = set() if taken is None else taken
    return stack.StackConfig(
        stack_dir=stack_dir,
        kafka_port=free_port(taken),
        controller_port=free_port(taken),
        minio_port=free_port(taken),
        timeout_s=timeout_s,
    )


def distributed_config(
    base: stack.StackConfig,
    *,
    pg_root: Path,
    code_location: str,
    extra_env: Mapping[str, str],
    taken: set[int] | None = None,
    workers: int = 2,
) -> stack.StackConfig:
    """``base`` plus free ports for PostgreSQL, Redis, the webserver and the code server.

    ``pg_root`` must be reachable by the ``postgres`` user when the caller is root (a 0700 temp
    folder is not); ``code_location`` is the code server's arguments (``-m module`` or ``-f file``);
    ``extra_env`` goes to every process of the stack (the code location's ``QRSDP_*`` settings)."""
    taken = set() if taken is None else taken
    return dataclasses.replace(
        base,
        distributed=True,
        pg_port=free_port(taken),
        pg_dir=pg_root / "postgres",
        redis_port=free_port(taken),
        dagster_port=free_port(taken),
        code_server_port=free_port(taken),
        workers=workers,
        dagster_code=code_location,
        extra_env=dict(extra_env),
    )


def postgres_root(prefix: str = "qrsdp-pg-") -> Path:
    """A new temp folder that PostgreSQL's ``postgres`` user can enter (it runs as that user when the
    caller is root; pytest's and ``mkdtemp``'s folders are 0700). The caller removes it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def newest_trading_date(today: dt.date | None = None) -> dt.date:
    """Today (UTC) if it is a weekday, else the Friday before: the newest date partition."""
    day = today or dt.datetime.now(dt.UTC).date()
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


@dataclass
class DistributedStack:
    """A running distributed profile: Dagster on PostgreSQL, runs on Celery workers."""

    config: stack.StackConfig

    def instance(self) -> Any:  # DagsterInstance, read through the webserver's dagster.yaml
        from dagster import DagsterInstance

        return DagsterInstance.from_config(str(self.config.dagster_home))

    def graphql(self) -> Any:  # DagsterGraphQLClient
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.config.dagster_port, timeout=120)

    def s3_client(self) -> Any:
        return self.config.s3_client()

    def worker_name(self, i: int) -> str:
        return self.config.worker_name(i)

    def stop_worker(self, i: int, *, kill: bool = False) -> None:
        stack.stop_worker(i, self.config, kill=kill)

    def start_worker(self, i: int) -> None:
        stack.start_worker(i, self.config)

    def lake_settings(self) -> ducklake.DuckLakeSettings:
        """The stack's DuckLake (catalog in its PostgreSQL, data in its MinIO)."""
        cfg = self.config
        return ducklake.DuckLakeSettings(
            pg_port=cfg.pg_port, pg_user=cfg.pg_user, pg_password=cfg.pg_password,
            data_path=f"s3://{stack.BUCKET}/ducklake/", s3_endpoint=cfg.s3_endpoint,
            s3_access_key=cfg.access_key, s3_secret_key=cfg.secret_key,
        )  # fmt: skip

    def marts(self) -> Any:
        """A DuckDB connection with the lake attached and in use (``marts.fct_…`` resolve)."""
        con = ducklake.connect(self.lake_settings())
        con.execute("use lake")
        return con


@contextlib.contextmanager
def instance_password(config: stack.StackConfig) -> Iterator[None]:
    """The dagster.yaml reads the database password from the environment: set it in this process
    while the block runs (only that: DAGSTER_HOME and the S3 variables stay unset)."""
    saved = os.environ.get("QRSDP_PG_PASSWORD")
    os.environ["QRSDP_PG_PASSWORD"] = config.pg_password
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("QRSDP_PG_PASSWORD", None)
        else:
            os.environ["QRSDP_PG_PASSWORD"] = saved


@contextlib.contextmanager
def dagster_running(config: stack.StackConfig) -> Iterator[DistributedStack]:
    """The Dagster processes started (MinIO, PostgreSQL and Redis must run); stopped on exit."""
    with instance_password(config):
        try:
            stack.start_dagster(config)
            yield DistributedStack(config)
        finally:
            stack.stop_dagster(config)


DISTRIBUTED_DEPENDENCIES: tuple[stack.Service, ...] = ("minio", "postgres", "redis")


@contextlib.contextmanager
def running(config: stack.StackConfig, *, stop: bool = True) -> Iterator[DistributedStack]:
    """MinIO, PostgreSQL, Redis and the Dagster processes of ``config`` started and healthy; all of
    them stopped on exit (also after a failure) unless ``stop`` is false."""
    started: list[stack.Service] = []
    try:
        stack.install(config)
        for service in DISTRIBUTED_DEPENDENCIES:
            started.append(service)
            stack.start_service(service, config)
        with instance_password(config):
            try:
                stack.start_dagster(config)
                yield DistributedStack(config)
            finally:
                if stop:  # also after a start that failed half-way
                    stack.stop_dagster(config)
    finally:
        if stop:
            for service in reversed(started):
                stack.stop_service(service, config)
