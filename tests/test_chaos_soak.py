"""The chaos soak's short mode (benchmarks/chaos.py --short), as a whole process on its own private stack:
>= 20 faults (broker, MinIO, consumer, streamer and Kafka bridges SIGKILLed and restarted, poison Kafka
messages, hostile UDP datagrams), each triggered by observed progress, over >= 10 sessions -- and at the
end nothing lost: every event exactly once in the lake and the marts (dbt build green), every ITCH message
received in order, every poison message dead-lettered, every service up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def test_chaos_soak_short_mode_loses_nothing(stack_installed, tmp_path) -> None:
    out = tmp_path / "figures.json"
    # --work-dir keeps the services' logs (consumer.log, streamer.log, producer.log) for a failure's report
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--short", "--seed", "11",
                           "--json", str(out), "--timeout", "780", "--work-dir", str(tmp_path / "soak")],
                          capture_output=True, text=True, timeout=840, cwd=ROOT)  # fmt: skip
    assert out.exists(), proc.stderr[-4000:]
    f = json.loads(out.read_text())
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert f["errors"] == [], report
    fired = [x for x in f["faults"] if x["fired"]]
    assert len(fired) >= 20 and f["sessions"] >= 10, report
    kinds = {x["kind"] for x in fired}
    assert {"kill-broker", "kill-minio", "kill-consumer", "kill-streamer", "poison-kafka", "hostile-udp"} <= kinds
    assert kinds & {"kill-consumer-bridge", "kill-streamer-bridge", "kill-producer-bridge"}, report
    # the lake and the marts: every event of the files exactly once
    lake = f["lake"]
    assert lake["events"] > 0 and lake["missing"] == lake["conflicting"] == lake["foreign"] == 0, report
    assert lake["complete_markers"] == f["sessions"], report
    assert f["dbt"]["returncode"] == 0 and f["dbt"]["tests_failed"] == 0 and f["dbt"]["tests_passed"] >= 10
    assert f["marts_lost"] == f["marts_duplicated"] == 0, report
    # the feed: every message of every day, in order
    assert f["itch_messages_expected"] > 0 and f["itch_messages_missing"] == 0, report
    assert f["itch_messages_received"] == f["itch_messages_expected"], report
    assert all(d["complete"] and d["unrecovered"] == 0 and d["stocks_in_order"] == d["stocks"] for d in f["feed"])
    # hostile inputs were set aside, never landed
    assert sum(f["poison_sent"].values()) > 0 and f["poison_missed_by_consumer"] == 0, report
    assert f["poison_set_aside_by_consumer"] == sum(f["poison_sent"].values())
    assert f["real_messages_dead_lettered"] == 0, report
    assert sum(f["datagrams_sent"].values()) > 0
    # no service down at the end, and the two services stopped cleanly
    assert all(f["services_up_at_end"].values()), report
    assert f["graceful_exits"] == {"consumer": 0, "streamer": 0}, report
    assert f["ok"] and proc.returncode == 0, report
