"""``BinaryFileSink``: writes one session as a ``.qrsdp`` file.

Records arrive in numpy batches; full chunks are compressed straight from the
batch (no per-event Python work). The file is written under a temporary name in
the same directory and renamed into place on ``close`` -- after the index has been
written and the HAS_INDEX flag set -- so a reader never sees a half-written
session under the final name.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor, Future
from pathlib import Path

import lz4.block
import numpy as np

from qrsdp_sim.eventlog.format import (
    CHUNK_HEADER,
    FLAG_HAS_INDEX,
    HEADER_FLAGS_OFFSET,
    INDEX_ENTRY,
    INDEX_MAGIC,
    INDEX_TAIL,
    LogHeader,
)
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

# Measured on engine output (benchmarks/bench_engine.py data): acceleration 4 compresses
# ~1.5x faster than the default *and* smaller (2.32x vs 2.12x): the records' repetitive
# fields match at short distances, which the faster search still finds.
LZ4_ACCELERATION = 4


# appends of one writer whose compression may be outstanding at once (each ≈ 16 chunks of a batch)
MAX_IN_FLIGHT = 4


def compress_chunks(chunks: list[np.ndarray]) -> list[bytes]:
    """Each chunk LZ4-compressed straight from its array's buffer (liblz4 releases the GIL)."""
    return [
        lz4.block.compress(np.ascontiguousarray(c), store_size=False, mode="fast", acceleration=LZ4_ACCELERATION)
        for c in chunks
    ]


def partial_path(path: Path) -> Path:
    """The temporary name a session is written under until it is complete."""
    return path.with_name(f".{path.name}.partial")


class BinaryFileSink:
    """Append record batches to a ``.qrsdp`` file (format 1.0).

    ``header.header_flags`` is ignored: the writer clears it at start and sets
    HAS_INDEX itself once the index is on disk. ``fsync`` makes ``close`` durable
    (file data and directory entry) before it returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: LogHeader,
        *,
        fsync: bool = True,
        compressor: Executor | None = None,
    ) -> None:
        if header.chunk_capacity <= 0:
            raise ValueError(f"chunk_capacity must be positive, got {header.chunk_capacity}")
        self.path = Path(path)
        self.header = header.with_flags(0)
        self._fsync = fsync
        self._tmp_path = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self._tmp_path, "wb")  # noqa: SIM115 -- closed in close()
        self._fh.write(self.header.pack())
        self._offset = len(self.header.pack())
        self._capacity = header.chunk_capacity
        self._pending = np.empty(self._capacity, dtype=RECORD_DTYPE)
        self._n_pending = 0
        self._index: list[bytes] = []
        self._last_ts = 0
        # with a compressor: the chunks of each append are compressed on its threads, written in order
        self._compressor = compressor
        self._in_flight: deque[tuple[Future[list[bytes]], list[tuple[int, int, int]]]] = deque()
        self.records_written = 0
        self.bytes_compressed = 0
        self.closed = False

    # -- sink interface -------------------------------------------------
    def append(self, batch: np.ndarray) -> None:
        if self.closed:
            raise ValueError(f"{self.path}: append after close")
        if batch.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {batch.dtype}")
        n = len(batch)
        if n == 0:
            return
        ts = batch["ts_ns"]
        if ts[0] < self._last_ts or (n > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            raise ValueError(f"{self.path}: timestamps must never decrease (batch starting at ts {int(ts[0])})")
        self._last_ts = int(ts[-1])
        offload = self._offloading()  # decided once per append: the pending buffer depends on it
        chunks: list[np.ndarray] = []
        pos = 0
        if self._n_pending:
            take = min(self._capacity - self._n_pending, n)
            self._pending[self._n_pending : self._n_pending + take] = batch[:take]
            self._n_pending += take
            pos = take
            if self._n_pending == self._capacity:
                chunks.append(self._pending)
                if offload:  # the full buffer is compressed later, elsewhere: a fresh one
                    self._pending = np.empty(self._capacity, dtype=RECORD_DTYPE)
                self._n_pending = 0
        while n - pos >= self._capacity:
            chunks.append(batch[pos : pos + self._capacity])
            pos += self._capacity
        if chunks:
            self._write_chunks(chunks, offload)
        if pos < n:
            rest = n - pos
            self._pending[:rest] = batch[pos:]
            self._n_pending = rest

    def flush(self) -> None:
        """Write any buffered records as a (short) chunk and flush the OS buffer."""
        if self.closed:
            return
        if self._n_pending:
            self._write_chunks([self._pending[: self._n_pending]], offload=False)
            self._n_pending = 0
        self._drain(wait=True)
        self._fh.flush()

    def close(self) -> None:
        """Write the last chunk and the index, set HAS_INDEX and publish the file."""
        if self.closed:
            return
        self.flush()
        index_start = self._offset
        self._fh.write(b"".join(self._index))
        self._fh.write(INDEX_TAIL.pack(len(self._index), INDEX_MAGIC, index_start))
        self._fh.seek(HEADER_FLAGS_OFFSET)
        self._fh.write(FLAG_HAS_INDEX.to_bytes(4, "little"))
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp_path, self.path)
        if self._fsync:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.header = self.header.with_flags(FLAG_HAS_INDEX)
        self.closed = True

    def abort(self) -> None:
        """Stop without publishing: the partial file is removed."""
        if self.closed:
            return
        self._fh.close()
        self._tmp_path.unlink(missing_ok=True)
        self.closed = True

    # -- internals ------------------------------------------------------
    def _offloading(self) -> bool:
        """Compress on the compressor's threads (a compressor with ``active`` False is not used yet)."""
        return self._compressor is not None and bool(getattr(self._compressor, "active", True))

    def _write_chunks(self, chunks: list[np.ndarray], offload: bool) -> None:
        metas = [(len(c), int(c[0]["ts_ns"]), int(c[-1]["ts_ns"])) for c in chunks]
        if not offload:
            self._drain(wait=True)  # what went to the compressor before comes first
            self._write_payloads(compress_chunks(chunks), metas)
            return
        assert self._compressor is not None
        self._in_flight.append((self._compressor.submit(compress_chunks, chunks), metas))
        self._drain(wait=False)

    def _drain(self, *, wait: bool) -> None:
        """Write the compressed appends in order: those already done, or all of them with ``wait``.
        A writer more than ``MAX_IN_FLIGHT`` appends ahead of its compression waits for the oldest."""
        while self._in_flight:
            future, metas = self._in_flight[0]
            if not (wait or future.done() or len(self._in_flight) > MAX_IN_FLIGHT):
                return
            self._in_flight.popleft()
            self._write_payloads(future.result(), metas)

    def _write_payloads(self, payloads: list[bytes], metas: list[tuple[int, int, int]]) -> None:
        for payload, (count, first_ts, last_ts) in zip(payloads, metas, strict=True):
            self._fh.write(CHUNK_HEADER.pack(count * RECORD_SIZE, len(payload), count, 0, first_ts, last_ts))
            self._fh.write(payload)
            self._index.append(INDEX_ENTRY.pack(self._offset, first_ts, last_ts, count, 0))
            self._offset += CHUNK_HEADER.size + len(payload)
            self.records_written += count
            self.bytes_compressed += len(payload)

    @property
    def file_size(self) -> int:
        return self._offset

    @property
    def closed_size(self) -> int:
        """The file's size once ``close`` has written the index (after ``flush``: no records pending)."""
        if self._n_pending:
            raise ValueError(f"{self.path}: flush before asking for the closed size")
        return self._offset + len(self._index) * INDEX_ENTRY.size + INDEX_TAIL.size

    def __enter__(self) -> BinaryFileSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
