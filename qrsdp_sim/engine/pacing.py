"""Real-time pacing: hand records to a sink no earlier than their event time / speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from qrsdp_sim.sinks.base import EventSink

TICK_SECONDS = 0.05  # granularity of paced emission (wall clock)


class Pacer:
    """Splits batches so each record reaches the sink at ``(ts - open) / speed`` after the start.

    The simulation itself runs ahead (the kernel fills a whole buffer); only the
    hand-over to the sink is delayed, so paced and unpaced runs produce identical data.

    With a ``stop`` event the waits end as soon as it is set (a paced batch of a slow
    session can take many minutes to hand over, so waiting for its end is no way to stop).
    """

    def __init__(
        self,
        speed: float,
        open_ns: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.open_ns = int(open_ns)
        self._clock = clock
        self._stop = stop
        self._sleep = sleep if sleep is not None else (stop.wait if stop is not None else time.sleep)
        self._start = clock()

    def deliver(self, sink: EventSink, batch: np.ndarray) -> int:
        """Hand ``batch`` to ``sink`` in time; returns how many records were handed over (all of them
        unless ``stop`` was set first)."""
        ts = batch["ts_ns"]
        due = (ts.astype(np.float64) - self.open_ns) / 1e9 / self.speed  # seconds after start
        pos = 0
        n = len(batch)
        while pos < n:
            if self._stop is not None and self._stop.is_set():
                return pos
            now = self._clock() - self._start
            if due[pos] > now:
                self._sleep(min(due[pos] - now, 1.0))
                continue
            end = int(np.searchsorted(due, now + TICK_SECONDS, side="right"))
            end = max(end, pos + 1)
            sink.append(batch[pos:end])
            pos = end
        return n
