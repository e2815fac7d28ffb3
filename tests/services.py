"""Pytest fixtures that run the real services (Kafka KRaft broker, MinIO) from ``infra/stack.sh``.

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

Services that cannot start make the test error with the script output and the service log tail
(no skip). Whatever was started is stopped at the end of the session, also after failures. The first
use on a new machine fetches the Kafka jars and builds MinIO (minutes; see docs/data-platform-services.md).

Mark tests that use them ``@pytest.mark.services``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from qrsdp_sim import stack


def _free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 that is free now, as is the one above it (MinIO's console address)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in taken or port + 1 in taken or port + 1 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        taken.update({port, port + 1})
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


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
        st = stack.status(self.config)
        return (st.kafka if self.name == "kafka" else st.minio).running


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> stack.StackConfig:
    taken: set[int] = set()
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
