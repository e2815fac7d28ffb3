"""``BackgroundCloser``: finishes ``.qrsdp`` files on a thread of its own.

Closing a session file writes its index, fsyncs it, renames it into place and fsyncs the
directory: tens of milliseconds in which the simulating thread would only wait for the disk.
A run hands each finished session's sink to one closer thread and goes on with its next
session; before it writes the run's manifest it waits for every close (``wait``), which
re-raises the first failure. A file whose close fails is aborted (its partial file removed),
so the final name still only ever holds a complete session.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from qrsdp_sim.eventlog.writer import BinaryFileSink


class BackgroundCloser:
    """Closes sinks in submission order on one background thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrsdp-close")
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    def close_later(self, sink: BinaryFileSink) -> None:
        """Close ``sink`` (already flushed) in the background."""
        fut = self._pool.submit(_close_or_abort, sink)
        with self._lock:
            self._futures.append(fut)

    def wait(self) -> None:
        """Wait for every close submitted so far; raise the first failure (after all have ended)."""
        with self._lock:
            futures, self._futures = self._futures, []
        first: BaseException | None = None
        for fut in futures:
            exc = fut.exception()
            if exc is not None and first is None:
                first = exc
        if first is not None:
            raise first

    def shutdown(self) -> None:
        """Let the closes in flight finish and stop the thread."""
        self._pool.shutdown(wait=True)


def _close_or_abort(sink: BinaryFileSink) -> None:
    try:
        sink.close()
    except BaseException:
        sink.abort()
        raise
