"""session_log dual-writes when the kafka resource has brokers: every event of the partition reaches
the topic (plus its end-of-session marker), the delivery totals are in the materialisation metadata,
and the .qrsdp file is byte-identical to the embedded default's."""

from __future__ import annotations

import dagster as dg
import pytest
from kafka_lake_testutil import create_topics, high_watermarks
from test_dagster_pipeline import DATES, SYMBOLS, latest_metadata, run_config

from qrsdp_dagster.definitions import defs
from qrsdp_dagster.partitions import session_key

pytestmark = [pytest.mark.services, pytest.mark.timeout(600)]


def _materialise(tmp, kafka: dict | None):
    config = run_config(tmp)
    if kafka is not None:
        config["resources"]["kafka"] = {"config": kafka}
    key = str(session_key(SYMBOLS[0], DATES[0]))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [defs.get_assets_def("session_log")], instance=instance, partition_key=key, run_config=config,
            resources=defs.resources,
        )  # fmt: skip
        assert result.success
        return latest_metadata(instance, "session_log", key)


def test_session_log_dual_writes_to_kafka(kafka_stack, tmp_path):
    bootstrap = kafka_stack.bootstrap_servers
    topic, _dlq = create_topics(bootstrap, "dagster")
    meta = _materialise(tmp_path / "kafka", {"brokers": bootstrap, "topic": topic})
    events = meta["events"].value
    assert meta["kafka_delivered"].value == events + 1  # + the end-of-session marker
    assert meta["kafka_failed"].value == 0
    assert sum(high_watermarks(bootstrap, topic).values()) == events + 1

    plain = _materialise(tmp_path / "plain", None)
    assert "kafka_delivered" not in plain
    sym, day = SYMBOLS[0], DATES[0].isoformat()
    with_kafka = (tmp_path / "kafka" / "sessions" / sym / f"{day}.qrsdp").read_bytes()
    without = (tmp_path / "plain" / "sessions" / sym / f"{day}.qrsdp").read_bytes()
    assert with_kafka == without
