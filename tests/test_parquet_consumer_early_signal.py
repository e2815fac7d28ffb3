"""``qrsdp parquet-consumer`` stopped by SIGTERM while it is still starting exits cleanly (status 0, its
stats printed), as ``qrsdp itch-stream`` does -- found by the chaos soak (benchmarks/chaos.py), where a
supervisor stopping a consumer it had just restarted got status -15. The SIGTERM is sent by the process
itself from inside the consumer's constructor: exactly "while it starts", with no timing guess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from qrsdp_sim import stack

SIGTERM_WHILE_STARTING = """
import os, signal
from qrsdp_sim.kafka import consumer
init = consumer.ParquetConsumer.__init__
def starting(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    init(self, *args, **kwargs)
consumer.ParquetConsumer.__init__ = starting
from qrsdp_sim.cli import main
main()
"""


def test_sigterm_while_the_consumer_starts_is_a_clean_stop(tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{stack.free_port()}"  # no broker needed: it stops before reading anything
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_WHILE_STARTING, "parquet-consumer", "--kafka-brokers", nobody,
         "--lake-uri", str(tmp_path / "lake")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "QRSDP_KAFKA_CLIENT": "python"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, -signal.SIGTERM, proc.stderr[-2000:])
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["messages"] == 0 and stats["commits"] == 0
