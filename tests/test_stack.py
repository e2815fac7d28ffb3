"""The real local services from infra/stack.sh: Kafka (KRaft) and MinIO start, answer, survive a
broker restart, and stop. Uses the session fixtures of tests/services.py (a private instance on free
ports under pytest's temp dir)."""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from qrsdp_sim import stack

pytestmark = [pytest.mark.services, pytest.mark.timeout(1800)]  # a cold MinIO build takes minutes


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"qrsdp.test.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    return name


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    for key, value in messages:
        p.produce(topic, value=value, key=key, headers={"seq": key}, on_delivery=on_delivery)
    assert p.flush(30) == 0, "messages still in flight after 30 s"
    assert not failed, failed


def _consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes]]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"qrsdp-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[tuple[bytes, bytes]] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value()))
    finally:
        c.close()
    return got


def test_topics_exist(kafka_stack) -> None:
    md = AdminClient({"bootstrap.servers": kafka_stack.bootstrap_servers}).list_topics(timeout=10)
    assert len(md.topics[stack.EVENTS_TOPIC].partitions) == 6
    assert len(md.topics[stack.DLQ_TOPIC].partitions) == 1


def test_kafka_produce_consume(kafka_stack) -> None:
    topic = _new_topic(kafka_stack.bootstrap_servers)
    sent = [(f"{i:04d}".encode(), bytes(range(26))) for i in range(100)]
    _produce(kafka_stack.bootstrap_servers, topic, sent)
    assert _consume_all(kafka_stack.bootstrap_servers, topic, len(sent)) == sent


def test_minio_put_get(minio_stack) -> None:
    s3 = minio_stack.s3_client()
    s3.head_bucket(Bucket=stack.BUCKET)  # created at start-up
    key = f"tests/{uuid.uuid4().hex}.bin"
    body = bytes(range(256)) * 1000
    s3.put_object(Bucket=stack.BUCKET, Key=key, Body=body)
    assert s3.get_object(Bucket=stack.BUCKET, Key=key)["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=stack.BUCKET, Prefix="tests/")
    assert key in [o["Key"] for o in listed.get("Contents", [])]
    s3.delete_object(Bucket=stack.BUCKET, Key=key)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_kafka_restart_recovers(kafka_stack, kill: bool) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic = _new_topic(bootstrap)
    before = [(b"before", b"x" * 26)]
    _produce(bootstrap, topic, before)

    kafka_stack.stop(kill=kill)
    assert not kafka_stack.is_running()
    assert not _port_open(kafka_stack.config.kafka_port)

    kafka_stack.start()
    assert kafka_stack.is_running()
    after = [(b"after", b"y" * 26)]
    _produce(bootstrap, topic, after)
    # What was acknowledged before the stop is still there, in order, followed by the new message.
    assert _consume_all(bootstrap, topic, 2) == before + after


def test_a_killed_minio_has_let_go_of_its_port_when_stop_returns(stack_installed, tmp_path) -> None:
    """SIGKILL of a multi-threaded server leaves its leader a zombie while the other threads still exit
    and its socket still listens; a stop that returned then let the restart find the port "in use by
    another process" (a CI chaos soak). Stop must return only when the process has let go of it."""
    taken: set[int] = set()
    cfg = dataclasses.replace(stack_installed, stack_dir=tmp_path / "stack", minio_port=stack.free_port_pair(taken))
    stack.start_service("minio", cfg)
    try:
        for _ in range(6):
            stack.stop_service("minio", cfg, kill=True)
            assert not _port_open(cfg.minio_port)
            stack.start_service("minio", cfg)  # raises StackError when it finds the port taken
            assert _port_open(cfg.minio_port)
    finally:
        stack.stop_service("minio", cfg)


def test_up_is_idempotent_and_status(kafka_stack, minio_stack) -> None:
    out = stack.up(kafka_stack.config)
    assert "kafka: already running" in out and "minio: already running" in out
    st = stack.status(kafka_stack.config)
    assert st.healthy, st.text
    assert st.kafka.address == kafka_stack.bootstrap_servers
    assert st.minio.address == minio_stack.endpoint


def test_down_stops_everything_then_up(kafka_stack, minio_stack) -> None:
    cfg = kafka_stack.config
    stack.down(cfg)
    st = stack.status(cfg)
    assert not st.kafka.running and not st.minio.running
    assert not _port_open(cfg.kafka_port) and not _port_open(cfg.minio_port)
    assert "not running" in stack.down(cfg)  # safe when nothing runs
    # Leave the session stack as the fixtures promise it to later tests.
    stack.up(cfg)
    assert stack.status(cfg).healthy
    s3 = minio_stack.s3_client()
    s3.head_bucket(Bucket=stack.BUCKET)


def test_failure_raises_with_log_tail(tmp_path) -> None:
    # A port held by someone else: the script refuses to start and says why.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        cfg = stack.StackConfig(stack_dir=tmp_path, kafka_port=port, minio_port=port, timeout_s=10)
        with pytest.raises(stack.StackError, match=f"port {port} is in use"):
            stack.start_service("minio", cfg)
