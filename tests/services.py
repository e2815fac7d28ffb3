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

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qrsdp_sim import stack
from qrsdp_sim.distributed import private_stack
from qrsdp_sim.distributed.private_stack import DistributedStack

__all__ = ["PIPELINE_ENV", "PIPELINE_SYMBOLS", "DistributedStack", "ServiceHandle"]


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
    return private_stack.private_config(tmp_path_factory.mktemp("stack"), _TAKEN_PORTS)


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


def _pipeline_env() -> dict[str, str]:
    """Settings of the real code location in the test stack: two trading dates (the newest and the
    one before, so the nightly catch-up has a small, real range), 600-second sessions, the schedule
    ticking every minute (it is stopped until a test starts it). Sessions on S3 and the marts in a
    DuckLake are the stack's defaults."""
    from qrsdp_sim.engine.calendar import previous_trading_date

    return {
        "QRSDP_SYMBOLS": ",".join(PIPELINE_SYMBOLS),
        "QRSDP_START_DATE": previous_trading_date(private_stack.newest_trading_date()).isoformat(),
        "QRSDP_SESSION_SECONDS": "600",
        "QRSDP_CATCH_UP_CRON": "* * * * *",
    }


PIPELINE_SYMBOLS = ("AAPL", "MSFT", "KIL", "SCHA", "SCHB")  # tests/test_distributed_pipeline.py
PIPELINE_ENV = _pipeline_env()


@pytest.fixture(scope="session")
def distributed_config(stack_config: stack.StackConfig) -> Iterator[stack.StackConfig]:
    pg_root = private_stack.postgres_root("qrsdp-test-pg-")
    cfg = private_stack.distributed_config(
        stack_config,
        pg_root=pg_root,
        code_location=f"-f {TEST_CODE_LOCATION}",
        extra_env={**PIPELINE_ENV, **private_stack.FAST_MONITORING},
        taken=_TAKEN_PORTS,
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


@pytest.fixture(scope="session")
def distributed_stack(
    distributed_config: stack.StackConfig,
    minio_stack: ServiceHandle,
    postgres_stack: ServiceHandle,
    redis_stack: ServiceHandle,
) -> Iterator[DistributedStack]:
    with private_stack.dagster_running(distributed_config) as dist:
        yield dist
