"""Health checks and provisioning for the local stack, called by infra/stack.sh.

Run with the project's Python (it needs confluent_kafka and boto3):

    probe.py kafka-wait   --bootstrap HOST:PORT --timeout S [--pid PID]
    probe.py kafka-health --bootstrap HOST:PORT
    probe.py kafka-topics --bootstrap HOST:PORT --timeout S NAME:PARTITIONS[:key=value,...] ...
    probe.py minio-wait   --endpoint URL --timeout S [--pid PID]
    probe.py minio-health --endpoint URL
    probe.py minio-bucket --endpoint URL --timeout S NAME ...
    probe.py http-wait    --endpoint URL --timeout S [--pid PID]   (GET URL answers 200)
    probe.py pg-databases --endpoint POSTGRES_URL --timeout S NAME ...   (create the missing ones)
    probe.py http-health  --endpoint URL

Exit code 0 on success, 1 on failure (the reason goes to stderr). Credentials for MinIO come from
MINIO_ROOT_USER / MINIO_ROOT_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    # log_level 0: librdkafka's connection-refused chatter while the broker starts stays quiet;
    # failures still surface as exceptions.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "reconnect.backoff.max.ms": 500})


def _kafka_ping(bootstrap: str, timeout: float, admin=None) -> str | None:
    """None when the broker answers a metadata request, else the error text."""
    admin = admin or _admin(bootstrap)
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException on timeout / transport failure
        return str(exc)
    if not md.brokers:
        return "metadata has no brokers"
    return None


def kafka_wait(bootstrap: str, timeout: float, pid: int | None) -> int:
    deadline = time.monotonic() + timeout
    err = "not tried"
    admin = _admin(bootstrap)
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"kafka process {pid} exited before becoming healthy", file=sys.stderr)
            return 1
        err = _kafka_ping(bootstrap, min(3.0, max(0.5, deadline - time.monotonic())), admin) or ""
        if not err:
            return 0
        time.sleep(0.5)
    print(f"kafka at {bootstrap} not healthy after {timeout:.0f}s: {err}", file=sys.stderr)
    return 1


def kafka_topics(bootstrap: str, timeout: float, specs: list[str]) -> int:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap)
    wanted: list[NewTopic] = []
    for spec in specs:
        parts = spec.split(":", 2)
        name, partitions = parts[0], int(parts[1])
        config = dict(kv.split("=", 1) for kv in parts[2].split(",")) if len(parts) > 2 and parts[2] else {}
        wanted.append(NewTopic(name, num_partitions=partitions, replication_factor=1, config=config))
    existing = admin.list_topics(timeout=timeout).topics
    todo = [t for t in wanted if t.topic not in existing]
    rc = 0
    for t in wanted:
        if t.topic in existing:
            have = len(existing[t.topic].partitions)
            note = "" if have == t.num_partitions else f" (has {have} partitions, wanted {t.num_partitions})"
            print(f"topic {t.topic}: exists{note}")
    if todo:
        for name, fut in admin.create_topics(
            todo, operation_timeout=timeout, request_timeout=timeout
        ).items():
            try:
                fut.result(timeout=timeout)
                print(f"topic {name}: created")
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    print(f"topic {name}: exists")
                else:
                    print(f"topic {name}: FAILED {exc}", file=sys.stderr)
                    rc = 1
    return rc


def _http_ok(url: str, timeout: float) -> str | None:
    """None when GET url answers 200, else the error text."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return str(exc)


def _minio_live(endpoint: str, timeout: float) -> str | None:
    return _http_ok(f"{endpoint}/minio/health/live", timeout)


def http_wait(name: str, url: str, timeout: float, pid: int | None) -> int:
    deadline = time.monotonic() + timeout
    err = "not tried"
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"{name} process {pid} exited before becoming healthy", file=sys.stderr)
            return 1
        err = _http_ok(url, timeout=2.0) or ""
        if not err:
            return 0
        time.sleep(0.3)
    print(f"{name} at {url} not healthy after {timeout:.0f}s: {err}", file=sys.stderr)
    return 1


def minio_wait(endpoint: str, timeout: float, pid: int | None) -> int:
    return http_wait("minio", f"{endpoint}/minio/health/live", timeout, pid)


def _s3(endpoint: str, timeout: float):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("MINIO_ROOT_USER", "qrsdp"),
        aws_secret_access_key=os.environ.get("MINIO_ROOT_PASSWORD", "qrsdp-secret"),
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def minio_buckets(endpoint: str, timeout: float, names: list[str]) -> int:
    from botocore.exceptions import ClientError

    s3 = _s3(endpoint, timeout)
    rc = 0
    for name in names:
        try:
            s3.create_bucket(Bucket=name)
            print(f"bucket {name}: created")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                print(f"bucket {name}: exists")
            else:
                print(f"bucket {name}: FAILED {exc}", file=sys.stderr)
                rc = 1
    return rc


def pg_databases(url: str, timeout: float, names: list[str]) -> int:
    """Create the databases that do not exist yet (waits for the server up to ``timeout``)."""
    import psycopg2
    from psycopg2 import sql

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg2.connect(url, connect_timeout=3)
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                print(f"postgres not reachable after {timeout:.0f}s: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction (nor in `with conn`)
    with conn.cursor() as cur:
        for name in names:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone():
                print(f"database {name}: exists")
            else:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
                print(f"database {name}: created")
    conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "action",
        choices=[
            "kafka-wait",
            "kafka-health",
            "kafka-topics",
            "minio-wait",
            "minio-health",
            "minio-bucket",
            "http-wait",
            "http-health",
            "pg-databases",
        ],
    )
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--endpoint", default="http://127.0.0.1:9000")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--pid", type=int, default=None)
    p.add_argument("items", nargs="*")
    a = p.parse_intermixed_args(argv)
    if a.action == "kafka-wait":
        return kafka_wait(a.bootstrap, a.timeout, a.pid)
    if a.action == "kafka-health":
        err = _kafka_ping(a.bootstrap, timeout=min(a.timeout, 3.0))
        if err:
            print(err, file=sys.stderr)
        return 1 if err else 0
    if a.action == "kafka-topics":
        return kafka_topics(a.bootstrap, a.timeout, a.items)
    if a.action == "minio-wait":
        return minio_wait(a.endpoint, a.timeout, a.pid)
    if a.action == "minio-health":
        err = _minio_live(a.endpoint, timeout=min(a.timeout, 3.0))
        if err:
            print(err, file=sys.stderr)
        return 1 if err else 0
    if a.action == "pg-databases":
        return pg_databases(a.endpoint, a.timeout, a.items)
    if a.action == "http-wait":
        return http_wait("service", a.endpoint, a.timeout, a.pid)
    if a.action == "http-health":
        err = _http_ok(a.endpoint, timeout=min(a.timeout, 3.0))
        if err:
            print(err, file=sys.stderr)
        return 1 if err else 0
    return minio_buckets(a.endpoint, a.timeout, a.items)


if __name__ == "__main__":
    sys.exit(main())
