"""What users type for Kafka: checks of bootstrap servers and topic names (one-line errors), and the
Parquet consumer's default object size (here, so the CLI's --help needs no heavy import)."""

from __future__ import annotations

import datetime as dt
import re

# the trading dates the platform's Kafka consumers accept (the ``date`` header; docs/kafka-message-format.md)
FIRST_KAFKA_DATE = dt.date(2000, 1, 1)
LAST_KAFKA_DATE = dt.date(2100, 12, 31)

# Records per object by default. Each object costs a fixed ~2 ms of CPU in the consumer (Parquet writer, PUT) and in
# MinIO: measured with benchmarks/bench_kafka.py --batch-records on one full session, 10,000 records per
# object took 1.25-1.30 us of CPU per record landed (Python, bridge, broker, MinIO together) and 50,000 took
# 0.95-0.98 (100,000: 0.84-0.93, little more). 50,000 keeps a re-landing after a crash and a chunk in
# memory small (about 1.3 MB of records).
DEFAULT_BATCH_RECORDS = 50_000

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def check_brokers(text: str, flag: str = "--kafka-brokers") -> str:
    """``HOST:PORT[,HOST:PORT...]`` with ports 1-65535, else ValueError naming ``flag``."""
    servers = [s.strip() for s in (text or "").split(",")]
    if not text or not all(servers):
        raise ValueError(f"{flag} {text!r}: expected HOST:PORT[,HOST:PORT...]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not _HOST_RE.fullmatch(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{flag} {text!r}: {server!r} is not HOST:PORT (port 1-65535)")
    return ",".join(servers)


def check_topic(name: str, flag: str = "--kafka-topic") -> str:
    """A legal Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -, not '.' or '..'), else ValueError."""
    if not _TOPIC_RE.fullmatch(name or "") or name in (".", ".."):
        raise ValueError(f"{flag} {name!r}: a topic name is 1-249 characters of A-Z a-z 0-9 . _ -")
    return name
