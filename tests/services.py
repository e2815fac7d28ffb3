"""Pytest fixtures that run the real services (Kafka KRaft broker, MinIO; PostgreSQL, Redis and the
distributed Dagster processes) from ``infra/stack.sh``.

Loaded as a plugin by ``tests/conftest.py`` (``pytest_plugins = ("services",)``), so every test module
can ask for:

- ``stack_config``  (session): the :class:`qrsdp_sim.stack.StackConfig` of the test instance: its own
  data folder under pytest's temp dir and free ports on 127.0.0.1, so it never touches a developer's
  stack on 9092/9000.
- ``kafka_stack``   (session): Kafka started and healthy, topics ``exchange.events`` and
  ``exchange.events.dlq`` created. A :class:`ServiceHandle`: ``.bootstrap_servers``, ``.stop(kill=)``,
  ``.start()`` for fault tests.
- ``minio_stack``   (session): MinIO started and healthy, bucket ``exchange-data`` created. A
  :class:`ServiceHandle`: ``.endpoint``, ``.s3_client()``, ``.stop()``, ``.start()``.
- ``distributed_config`` (session): ``stack_config`` plus free ports for PostgreSQL, Redis, the Dagster
  webserver and code server, a PostgreSQL folder the ``postgres`` user can reach (pytest's temp dir is
  closed to other users), the test code location ``tests/distributed_location.py`` (QRSDP's own
  definitions plus a test job; ``PIPELINE_ENV`` sets their symbols and dates) and fast run
  monitoring (2 s polls, 15 s heartbeat time-to-live).
- ``postgres_stack`` / ``redis_stack`` (session): PostgreSQL (databases ``qrsdp_dagster``,
  ``qrsdp_lake``) / Redis started and healthy; ``.url`` / ``.pg_url(db)``. On a machine without them
  the first start installs the Debian packages with apt-get (as root).
- ``distributed_stack`` (session): MinIO, PostgreSQL, Redis, and the Dagster code server, webserver,
  daemon and two Celery workers. A :class:`DistributedStack`: ``.instance()``, ``.graphql()``,
  ``.stop_worker(i, kill=)``, ``.start_worker(i)``, ``.s3_client()``.

Services that cannot start make the test error with the script output and the service log tail
(no skip). Whatever was started is stopped at the end of the session, also after failures. The first
use on a new machine fetches the Kafka jars and builds MinIO (minutes; see docs/data-platform-services.md).

Mark tests that use them ``@pytest.mark.services``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qrsdp_sim import stack


def _free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 that is free now, as is the one above it (MinIO's console address)."""
    return stack.free_port_pair(taken)


@dataclass
class ServiceHandle:
    """One running service of the test stack, with the controls fault tests need."""

    name: stack.Service
    config: stack.StackConfig
    started: bool = field(default=False)

    @property
    def bootstrap_servers(self) -> str:
        return self.config.bootstrap_servers

    @property
    def endpoint(self) -> str:
        return self.config.s3_endpoint

    @property
    def bucket(self) -> str:
        return stack.BUCKET

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT (Redis) or the URL of database postgres (PostgreSQL)."""
        return self.config.redis_url if self.name == "redis" else self.config.pg_url("postgres")

    def pg_url(self, db: str) -> str:
        return self.config.pg_url(db)

    def s3_client(self):
        return self.config.s3_client()

    def start(self) -> None:
        """Start (or keep) the service and wait until it is healthy; idempotent."""
        stack.start_service(self.name, self.config)
        self.started = True

    def stop(self, *, kill: bool = False) -> None:
        """Stop the service: gracefully (SIGTERM, then SIGKILL after a grace period) or SIGKILL at once."""
        stack.stop_service(self.name, self.config, kill=kill)

    def is_running(self) -> bool:
        return stack.status(self.config).service(self.name).running


_TAKEN_PORTS: set[int] = set()


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> stack.StackConfig:
    taken = _TAKEN_PORTS
    kafka_port = _free_port(taken)
    controller_port = _free_port(taken)
    minio_port = _free_port(taken)
    return stack.StackConfig(
        stack_dir=tmp_path_factory.mktemp("stack"),
        kafka_port=kafka_port,
        controller_port=controller_port,
        minio_port=minio_port,
        timeout_s=90,
    )


@pytest.fixture(scope="session")
def stack_installed(stack_config: stack.StackConfig) -> stack.StackConfig:
    """Kafka jars fetched and MinIO built (no-op when present)."""
    stack.install(stack_config)
    return stack_config


def _service(name: stack.Service, config: stack.StackConfig) -> Iterator[ServiceHandle]:
    handle = ServiceHandle(name=name, config=config)
    try:
        handle.start()
        yield handle
    finally:
        # Always stop: also when start failed half-way or a test left it stopped (then a no-op).
        stack.stop_service(name, config)


@pytest.fixture(scope="session")
def kafka_stack(stack_installed: stack.StackConfig) -> Iterator[ServiceHandle]:
    yield from _service("kafka", stack_installed)


@pytest.fixture(scope="session")
def minio_stack(stack_installed: stack.StackConfig) -> Iterator[ServiceHandle]:
    yield from _service("minio", stack_installed)


TEST_CODE_LOCATION = Path(__file__).with_name("distributed_location.py")


def _newest_trading_date() -> Any:
    import datetime as dt

    day = dt.datetime.now(dt.UTC).date()
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _pipeline_env() -> dict[str, str]:
    """Settings of the real code location in the test stack: two trading dates (the newest and the
    one before, so the nightly catch-up has a small, real range), 600-second sessions, the schedule
    ticking every minute (it is stopped until a test starts it). Sessions on S3 and the marts in a
    DuckLake are the stack's defaults."""
    from qrsdp_sim.engine.calendar import previous_trading_date

    return {
        "QRSDP_SYMBOLS": ",".join(PIPELINE_SYMBOLS),
        "QRSDP_START_DATE": previous_trading_date(_newest_trading_date()).isoformat(),
        "QRSDP_SESSION_SECONDS": "600",
        "QRSDP_CATCH_UP_CRON": "* * * * *",
    }


PIPELINE_SYMBOLS = ("AAPL", "MSFT", "KIL", "SCHA", "SCHB")  # tests/test_distributed_pipeline.py
PIPELINE_ENV = _pipeline_env()


@pytest.fixture(scope="session")
def distributed_config(stack_config: stack.StackConfig) -> Iterator[stack.StackConfig]:
    # PostgreSQL runs as user postgres when the tests run as root; pytest's temp dir is 0700.
    pg_root = Path(tempfile.mkdtemp(prefix="qrsdp-test-pg-"))
    pg_root.chmod(0o755)
    cfg = dataclasses.replace(
        stack_config,
        distributed=True,
        pg_port=_free_port(_TAKEN_PORTS),
        pg_dir=pg_root / "postgres",
        redis_port=_free_port(_TAKEN_PORTS),
        dagster_port=_free_port(_TAKEN_PORTS),
        code_server_port=_free_port(_TAKEN_PORTS),
        workers=2,
        dagster_code=f"-f {TEST_CODE_LOCATION}",
        extra_env={
            **PIPELINE_ENV,
            "QRSDP_RUN_MONITORING_INTERVAL_S": "2",
            "QRSDP_WORKER_HEARTBEAT_TTL_S": "15",
            "QRSDP_RUN_START_TIMEOUT_S": "600",
            "QRSDP_RUN_MAX_RUNTIME_S": "3600",
        },
    )
    try:
        yield cfg
    finally:
        shutil.rmtree(pg_root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_stack(distributed_config: stack.StackConfig) -> Iterator[ServiceHandle]:
    yield from _service("postgres", distributed_config)


@pytest.fixture(scope="session")
def redis_stack(distributed_config: stack.StackConfig) -> Iterator[ServiceHandle]:
    yield from _service("redis", distributed_config)


@dataclass
class DistributedStack:
    """The distributed profile of the test stack: Dagster on PostgreSQL, runs on two Celery workers."""

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


@pytest.fixture(scope="session")
def distributed_stack(
    distributed_config: stack.StackConfig,
    minio_stack: ServiceHandle,
    postgres_stack: ServiceHandle,
    redis_stack: ServiceHandle,
) -> Iterator[DistributedStack]:
    # The dagster.yaml reads the database password from the environment, in this process too (only
    # that: DAGSTER_HOME and the S3 variables stay unset for the other tests of the session).
    saved = os.environ.get("QRSDP_PG_PASSWORD")
    os.environ["QRSDP_PG_PASSWORD"] = distributed_config.pg_password
    try:
        stack.start_dagster(distributed_config)
        yield DistributedStack(distributed_config)
    finally:
        try:
            stack.stop_dagster(distributed_config)
        finally:
            if saved is None:
                os.environ.pop("QRSDP_PG_PASSWORD", None)
            else:
                os.environ["QRSDP_PG_PASSWORD"] = saved
