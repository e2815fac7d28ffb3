"""The ITCH streamer as a daemon: the health rule of ``itch_streamer_health`` (pure), the sensor
against a real Kafka group, and ``infra/stack.sh itch-start|itch-stop``."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from qrsdp_dagster import sensors
from qrsdp_dagster.definitions import defs
from qrsdp_dagster.resources import KafkaResource
from qrsdp_dagster.sensors import ItchStreamerUnhealthy, itch_streamer_health, streamer_health
from qrsdp_sim import stack

# ------------------------------------------------------------------------------ the health rule


def test_no_member_with_lag_is_unhealthy():
    h = streamer_health(0, 120, None)
    assert not h.healthy and "no active consumer" in h.message and "120" in h.message


def test_no_member_without_lag_is_idle_not_failing():
    h = streamer_health(0, 0, 5)
    assert h.healthy and "not running" in h.message


def test_alive_and_falling_or_caught_up():
    h = streamer_health(1, 10, 50)
    assert h.healthy and h.message == "alive (1 member(s)), lag 10 (falling)" and h.growing == 0
    assert streamer_health(1, 0, 10).message.endswith("caught up (lag 0)")
    assert "first check" in streamer_health(1, 7, None).message


def test_growing_lag_fails_only_after_consecutive_evaluations():
    h = streamer_health(1, 10, 5)
    assert h.healthy and h.growing == 1 and "growing" in h.message
    h = streamer_health(1, 20, 10, h.growing)
    assert h.healthy and h.growing == 2
    h = streamer_health(1, 30, 20, h.growing)
    assert not h.healthy and h.growing == 3 and "grew over 3 consecutive" in h.message
    # a steady or falling evaluation resets the streak
    assert streamer_health(1, 30, 30, 2).growing == 0
    assert streamer_health(1, 25, 30, 2).growing == 0


def test_sensor_is_registered_and_skips_without_kafka():
    sensor = defs.resolve_sensor_def("itch_streamer_health")
    assert not sensor.targets  # requests no runs
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"kafka": KafkaResource(brokers="")})
        result = itch_streamer_health(ctx)
    assert isinstance(result, dg.SkipReason) and "not configured" in result.skip_message


# ------------------------------------------------------------------------------ against Kafka


def _evaluate(instance, brokers: str, topic: str, cursor: str | None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"kafka": KafkaResource(brokers=brokers, topic=topic)}
    )
    try:
        return itch_streamer_health(ctx), ctx.cursor
    except ItchStreamerUnhealthy as exc:
        return exc, ctx.cursor


@pytest.mark.services
def test_sensor_against_a_real_group(kafka_stack, monkeypatch):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    brokers = kafka_stack.bootstrap_servers
    topic = f"itch.health.{uuid.uuid4().hex[:8]}"
    group = f"itch-health-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(sensors, "ITCH_GROUP", group)
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": brokers})
    for i in range(10):
        producer.produce(topic, key=str(i % 2).encode(), value=b"x" * 26)
    assert producer.flush(30) == 0

    with dg.instance_for_test() as instance:
        # nobody consumes, 10 messages waiting: the tick fails with a clear message
        result, cursor = _evaluate(instance, brokers, topic, None)
        assert isinstance(result, ItchStreamerUnhealthy), result
        assert "no active consumer" in str(result) and "lag is 10" in str(result) and group in str(result)

        consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False, "session.timeout.ms": 6000})  # fmt: skip
        try:
            consumer.subscribe([topic])
            got = 0
            deadline = time.monotonic() + 30
            while got < 6 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    got += 1
                    consumer.commit(message=msg, asynchronous=False)
            assert got >= 6
            result, cursor = _evaluate(instance, brokers, topic, json.dumps({"lag": 10, "growing": 0}))
            assert isinstance(result, dg.SkipReason), result
            assert result.skip_message.startswith("ITCH streamer alive (1 member(s)), lag ")
            assert "(falling)" in result.skip_message
            assert json.loads(cursor)["lag"] < 10
        finally:
            consumer.close()
    admin.delete_topics([topic])


# ------------------------------------------------------------------------------ infra/stack.sh


def _free_udp_port() -> int:
    return stack.free_port(kind=socket.SOCK_DGRAM)


def _alive(pid: int) -> bool:
    """Running and not a zombie (the detached process is reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.services
def test_stack_itch_start_and_stop(kafka_stack):
    """The streamer starts as a background process with a pid file and log, and stops on SIGTERM.
    It sends unicast to a private port (never on the multicast group other ITCH tests use)."""
    cfg = kafka_stack.config
    extra = {
        "QRSDP_ITCH_ARGS": f"--unicast 127.0.0.1:{_free_udp_port()} --retransmit-port {_free_udp_port()}",
        "QRSDP_ITCH_GROUP": f"itch-stack-{uuid.uuid4().hex[:8]}",
    }
    cfg = dataclasses.replace(cfg, itch=True, extra_env=extra)
    pidfile = stack.project_root() / "infra" / ".run" / f"itch-{cfg.kafka_port}.pid"
    try:
        out = stack.start_itch(cfg)
        assert "itch: started pid" in out
        pid = int(pidfile.read_text())
        assert _alive(pid)
        assert b"itch-stream" in Path(f"/proc/{pid}/cmdline").read_bytes()
        again = stack.run_script("itch-start", config=cfg, timeout_s=30).stdout
        assert f"already running (pid {pid})" in again
        st = stack.run_script("status", config=cfg, check=False, timeout_s=60).stdout
        assert f"itch running pid={pid}" in st
        assert sensors._local_streamer_alive(cfg.bootstrap_servers)
        # stop it once it is running (it logs its position), not while Python is still importing
        log_path = cfg.data_dir / "itch" / "itch-stream.log"
        deadline = time.monotonic() + 60
        while "resuming at offsets" not in log_path.read_text() and time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert "resuming at offsets" in log_path.read_text()
    finally:
        out = stack.stop_itch(cfg)
    assert "itch: stopped" in out or "itch: not running" in out
    assert not pidfile.exists()
    assert not _alive(pid)
    log = (cfg.data_dir / "itch" / "itch-stream.log").read_text()
    assert "=== start " in log
    assert "itch-stream: 0 Kafka messages" in log  # the summary of a graceful (SIGTERM) exit
    assert "itch: not running" in stack.run_script("itch-stop", config=cfg, timeout_s=30).stdout
    # without the opt-in, status does not mention the streamer
    plain = dataclasses.replace(cfg, itch=False)
    assert (
        "itch"
        not in stack.run_script("status", config=plain, check=False, timeout_s=60).stdout.split("data")[0]
    )


def test_stack_script_itch_commands_exist():
    text = subprocess.run(["bash", str(stack.project_root() / "infra" / "stack.sh"), "help"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "itch-start|itch-stop" in text and "QRSDP_STACK_ITCH" in text
