"""Summaries and full verification of ``.qrsdp`` files (used by ``qrsdp log-info``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from qrsdp_sim.eventlog.consistency import StreamReport, check_stream
from qrsdp_sim.eventlog.errors import EventLogError
from qrsdp_sim.eventlog.format import FILE_HEADER_SIZE
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import EVENT_TYPE_NAMES, N_EVENT_TYPES, RECORD_DTYPE, RECORD_SIZE


@dataclass
class LogSummary:
    path: str
    header: dict[str, int]
    has_index: bool
    chunk_count: int
    records: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    counts_by_type: dict[str, int]
    raw_bytes: int
    file_bytes: int

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.file_bytes if self.file_bytes else 0.0

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["compression_ratio"] = round(self.compression_ratio, 3)
        return d


def summarize(path: str | os.PathLike[str]) -> LogSummary:
    """Read a file once and describe it. Raises EventLogError on corrupt input."""
    reader = EventLogReader(path)
    records = reader.read_all()
    counts = np.bincount(records["type"], minlength=N_EVENT_TYPES)
    return LogSummary(
        path=str(path),
        header=reader.header.to_dict(),
        has_index=reader.index is not None,
        chunk_count=reader.chunk_count,
        records=len(records),
        first_ts_ns=int(records["ts_ns"][0]) if len(records) else None,
        last_ts_ns=int(records["ts_ns"][-1]) if len(records) else None,
        counts_by_type={
            (EVENT_TYPE_NAMES[i] if i < N_EVENT_TYPES else f"UNKNOWN_{i}"): int(c) for i, c in enumerate(counts)
        },
        raw_bytes=len(records) * RECORD_SIZE,
        file_bytes=reader.file_size,
    )


CONTAINER_CHECKS: dict[str, str] = {
    "header": "magic, version, record size, chunk capacity (and the index tail when HAS_INDEX is set)",
    "index_present": "the index is there (the file was closed properly)",
    "chunks": "every chunk header (counts, sizes, flags, timestamps) and the index against the chunks",
    "payloads": "every LZ4 payload decompresses to its size and its timestamps match the chunk header",
}


@dataclass
class VerifyResult:
    """``qrsdp log-info --verify``: container integrity (the file's bytes) and stream consistency (what
    the records say about the book) are reported separately."""

    path: str
    container_checks: list[str] = field(default_factory=list)  # the container checks that ran
    container_problems: list[str] = field(default_factory=list)
    stream: StreamReport | None = None  # None: the records could not be read
    records: int = 0

    @property
    def container_ok(self) -> bool:
        return not self.container_problems

    @property
    def ok(self) -> bool:
        return self.container_ok and self.stream is not None and self.stream.ok

    @property
    def problems(self) -> list[str]:
        """Every problem, container first, then the first record of each stream check that fails."""
        stream = [v.message for v in self.stream.violations] if self.stream else []
        return [*self.container_problems, *stream]

    def to_dict(self) -> dict[str, object]:
        stream: dict[str, object]
        if self.stream is None:
            stream = {"ok": None, "checks": [], "skipped": "the records could not be read"}
        else:
            stream = self.stream.to_dict()
        return {
            "ok": self.ok,
            "records": self.records,
            "container": {"ok": self.container_ok, "checks": list(self.container_checks),
                          "problems": list(self.container_problems)},
            "stream": stream,
        }


def verify(path: str | os.PathLike[str], *, require_index: bool = True) -> VerifyResult:
    """Check the file's container, then (when its records can be read) the stream's consistency.

    Container (:data:`CONTAINER_CHECKS`): header, index present (unless ``require_index`` is false), each
    chunk header and the index against the sequential scan, every LZ4 payload. Stream
    (:data:`qrsdp_sim.eventlog.consistency.CHECKS`): record fields, ADD ids, and a replay of the order book
    (unknown orders, overfills, crossed book, executions away from the best or behind older orders at
    their price). Never raises for any file content.
    """
    result = VerifyResult(path=str(path))

    def fail(msg: str) -> VerifyResult:
        result.container_problems.append(msg)
        return result

    try:
        result.container_checks.append("header")
        reader = EventLogReader(path)
        if require_index:
            result.container_checks.append("index_present")
            if reader.index is None:
                fail(f"{path}: at byte {FILE_HEADER_SIZE}: no index (HAS_INDEX not set): file was not closed properly")
        # Sequential scan and index must describe the same chunks.
        result.container_checks.append("chunks")
        scanned = list(reader.scan_chunks())
        if reader.index is not None and [c.offset for c in scanned] != [c.offset for c in reader.chunks]:
            return fail(f"{path}: index and sequential scan disagree on chunk positions")
        result.container_checks.append("payloads")
        parts = [reader._decode(c) for c in scanned]
    except EventLogError as exc:
        return fail(str(exc))
    except OSError as exc:  # unreadable (permissions, a directory, ...): a container problem too
        return fail(f"{path}: cannot read the file: {exc}")
    records = np.concatenate(parts) if parts else np.empty(0, dtype=RECORD_DTYPE)
    result.records = len(records)
    result.stream = check_stream(records)
    return result
