"""Summaries and full verification of ``.qrsdp`` files (used by ``qrsdp log-info``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from qrsdp_sim.eventlog.errors import EventLogError
from qrsdp_sim.eventlog.format import FILE_HEADER_SIZE
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import EVENT_TYPE_NAMES, N_EVENT_TYPES, RECORD_DTYPE, RECORD_SIZE, EventType, Side

# The side each event type must carry (executions: the resting order's side).
EXPECTED_SIDE = np.array([Side.BID, Side.ASK, Side.BID, Side.ASK, Side.ASK, Side.BID], dtype=np.uint8)
assert EXPECTED_SIDE[EventType.EXECUTE_BUY] == Side.ASK


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


@dataclass
class VerifyResult:
    path: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    records: int = 0


def verify(path: str | os.PathLike[str], *, require_index: bool = True) -> VerifyResult:
    """Check every invariant of the format and of the records' fields.

    Format: header, each chunk header, every LZ4 payload, timestamps non-decreasing
    within and across chunks, the index against the chunks (and present, unless
    ``require_index`` is false). Records: known event types, side consistent with
    the type, positive quantity, ADD order ids strictly increasing.
    """
    result = VerifyResult(path=str(path), ok=True)

    def fail(msg: str) -> VerifyResult:
        result.ok = False
        result.problems.append(msg)
        return result

    try:
        reader = EventLogReader(path)
        if require_index and reader.index is None:
            fail(f"{path}: at byte {FILE_HEADER_SIZE}: no index (HAS_INDEX not set): file was not closed properly")
        # Sequential scan and index must describe the same chunks.
        scanned = list(reader.scan_chunks())
        if reader.index is not None and [c.offset for c in scanned] != [c.offset for c in reader.chunks]:
            return fail(f"{path}: index and sequential scan disagree on chunk positions")
        parts = [reader._decode(c) for c in scanned]
    except EventLogError as exc:
        return fail(str(exc))
    records = np.concatenate(parts) if parts else np.empty(0, dtype=RECORD_DTYPE)
    result.records = len(records)
    if not len(records):
        return result
    ts = records["ts_ns"]
    if np.any(ts[1:] < ts[:-1]):
        k = int(np.argmax(ts[1:] < ts[:-1])) + 1
        fail(f"record {k}: timestamp decreases across chunks")
    types = records["type"]
    bad_type = types >= N_EVENT_TYPES
    if np.any(bad_type):
        k = int(np.argmax(bad_type))
        return fail(f"record {k}: unknown event type {int(types[k])}")
    bad_side = records["side"] != EXPECTED_SIDE[types]
    if np.any(bad_side):
        k = int(np.argmax(bad_side))
        fail(f"record {k}: side {int(records['side'][k])} does not match type {EVENT_TYPE_NAMES[types[k]]}")
    if np.any(records["qty"] == 0):
        fail(f"record {int(np.argmax(records['qty'] == 0))}: zero quantity")
    add_ids = records["order_id"][types <= EventType.ADD_ASK]
    if len(add_ids) > 1 and np.any(add_ids[1:] <= add_ids[:-1]):
        fail("ADD order ids do not increase strictly")
    return result

