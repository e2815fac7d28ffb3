"""Worker heartbeats in Redis: how the run launcher tells a busy worker from a dead one.

A Celery task whose worker was killed keeps the state ``STARTED`` in the result backend forever
(nobody is left to write ``FAILURE``), so Dagster's run monitoring, asking the stock launcher, would
see a run that is still "running" until its maximum runtime. Each worker process therefore keeps a
key ``qrsdp:celery-worker:<worker name>`` alive with a time-to-live; the key outlives a missed beat or
two, and disappears ``ttl`` seconds after the worker stops beating. The beat runs in the worker's main
(consumer) process, which stays idle while the run executes in its pool child, so a long run never
delays it; the child cannot outlive the main process (Celery's prefork pool sets ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

KEY_PREFIX = "qrsdp:celery-worker:"


def worker_key(worker_name: str) -> str:
    return KEY_PREFIX + worker_name


def beat(client: Any, worker_name: str, ttl_s: int, info: dict[str, Any]) -> None:
    """Say ``worker_name`` is alive for the next ``ttl_s`` seconds (a redis-py client)."""
    client.set(worker_key(worker_name), json.dumps(info, sort_keys=True), ex=max(1, int(ttl_s)))


def read(client: Any, worker_name: str) -> dict[str, Any] | None:
    """The last heartbeat of a worker, or None when it has expired (or never beat)."""
    raw = client.get(worker_key(worker_name))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unparsable": repr(raw[:200])}


def live_workers(client: Any) -> dict[str, dict[str, Any]]:
    """Every worker with an unexpired heartbeat: name -> its last heartbeat."""
    out: dict[str, dict[str, Any]] = {}
    for key in client.scan_iter(match=KEY_PREFIX + "*", count=100):
        name = (key.decode() if isinstance(key, bytes) else key)[len(KEY_PREFIX) :]
        info = read(client, name)
        if info is not None:
            out[name] = info
    return out


class HeartbeatThread(threading.Thread):
    """Beats every ``ttl_s / 4`` seconds until stopped; a failed beat is logged and counted, never fatal
    (the key's time-to-live absorbs a short Redis outage)."""

    def __init__(self, client: Any, worker_name: str, ttl_s: int, extra: dict[str, Any] | None = None):
        super().__init__(name="qrsdp-heartbeat", daemon=True)
        self.client = client
        self.worker_name = worker_name
        self.ttl_s = max(4, int(ttl_s))
        self.extra = dict(extra or {})
        self.failures = 0
        self.beats = 0
        self._stop_event = threading.Event()

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cwd": os.getcwd(),
            "ts": time.time(),
            "ttl_s": self.ttl_s,
            **self.extra,
        }

    def run(self) -> None:
        interval = self.ttl_s / 4
        while not self._stop_event.is_set():
            try:
                beat(self.client, self.worker_name, self.ttl_s, self.info())
                self.beats += 1
            except Exception as exc:  # a Redis hiccup must not kill the worker
                self.failures += 1
                log.warning("heartbeat of %s failed (%d so far): %s", self.worker_name, self.failures, exc)
            self._stop_event.wait(interval)

    def stop(self) -> None:
        """Stop beating and remove the key (a clean shutdown says so at once)."""
        self._stop_event.set()
        try:
            self.client.delete(worker_key(self.worker_name))
        except Exception as exc:
            log.warning("could not remove the heartbeat of %s: %s", self.worker_name, exc)
