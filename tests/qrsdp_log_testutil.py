"""Shared helpers for the ``.qrsdp`` event-log tests.

Everything here is written from the format specification (issue 2 /
docs/event-log-format.md), *not* from the code under test: the struct layouts, the
side-by-type rule and the file encoder/parser are independent re-implementations, so
the tests compare the package against the spec rather than against itself.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import numpy as np

from qrsdp_sim.eventlog import BinaryFileSink, LogHeader
from qrsdp_sim.eventlog.writer import LZ4_ACCELERATION
from qrsdp_sim.records import RECORD_DTYPE

# --- layouts straight from the spec tables ------------------------------------
SPEC_FILE_HEADER = struct.Struct("<8sHHIQiIIIIIIIQ")  # 64 bytes
SPEC_CHUNK_HEADER = struct.Struct("<IIIIQQ")  # 32 bytes
SPEC_INDEX_ENTRY = struct.Struct("<QQQII")  # 32 bytes
SPEC_INDEX_TAIL = struct.Struct("<I4sQ")  # 16 bytes
SPEC_RECORD = struct.Struct("<QBBiIQ")  # 26 bytes
assert (SPEC_FILE_HEADER.size, SPEC_CHUNK_HEADER.size, SPEC_INDEX_ENTRY.size, SPEC_INDEX_TAIL.size) == (64, 32, 32, 16)
assert SPEC_RECORD.size == 26

HDR = 64
CHDR = 32
# Type -> side of the order concerned (an execution carries the *resting* order's side:
# a buy execution hits a resting ask).
SPEC_SIDE_OF_TYPE = {0: 0, 1: 1, 2: 0, 3: 1, 4: 1, 5: 0}


def make_records(
    n: int,
    seed: int = 0,
    *,
    ts_start: int = 34_200_000_000_000,
    max_step: int = 5,
    dup_prob: float = 0.4,
) -> np.ndarray:
    """``n`` valid records: non-decreasing timestamps with many ties, sides consistent
    with types, positive quantities, strictly increasing ADD ids."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=RECORD_DTYPE)
    if n == 0:
        return out
    steps = rng.integers(1, max_step + 1, size=n, dtype=np.uint64)
    steps[rng.random(n) < dup_prob] = 0
    steps[0] = 0
    out["ts_ns"] = np.uint64(ts_start) + np.cumsum(steps, dtype=np.uint64)
    types = rng.integers(0, 6, size=n).astype(np.uint8)
    out["type"] = types
    out["side"] = np.array([SPEC_SIDE_OF_TYPE[int(t)] for t in types], dtype=np.uint8)
    out["price_ticks"] = rng.integers(-(2**31), 2**31, size=n, dtype=np.int64).astype(np.int32)
    out["qty"] = rng.integers(1, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    ids = rng.integers(1, 2**63, size=n, dtype=np.uint64)
    is_add = types <= 1
    ids[is_add] = np.arange(1, int(is_add.sum()) + 1, dtype=np.uint64) * np.uint64(7)
    out["order_id"] = ids
    return out


def header(capacity: int = 4096, **kw: int) -> LogHeader:
    return LogHeader(chunk_capacity=capacity, **kw)


def write_log(
    path: Path,
    records: np.ndarray,
    capacity: int,
    *,
    splits: list[int] | None = None,
    flush_after: set[int] | None = None,
    fsync: bool = False,
    **header_fields: int,
) -> Path:
    """Write ``records`` with BinaryFileSink, appending in batches cut at ``splits``;
    ``flush_after`` holds indices of batches after which ``flush()`` is called."""
    bounds = [0, *sorted(set(splits or [])), len(records)]
    sink = BinaryFileSink(path, header(capacity, **header_fields), fsync=fsync)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        sink.append(records[a:b])
        if flush_after and i in flush_after:
            sink.flush()
    sink.close()
    return path


def expected_chunk_sizes(n: int, capacity: int, splits: list[int] | None, flush_after: set[int] | None) -> list[int]:
    """Chunk sizes the spec implies: full chunks, cut short only where the producer flushed."""
    bounds = [0, *sorted(set(splits or [])), n]
    cuts = [bounds[i + 1] for i in sorted(flush_after or ()) if i + 1 < len(bounds)]
    segments = [0, *sorted(set(cuts)), n]
    sizes: list[int] = []
    for a, b in itertools.pairwise(segments):
        length = b - a
        sizes += [capacity] * (length // capacity)
        if length % capacity:
            sizes.append(length % capacity)
    return sizes


# --- independent encoder / parser ---------------------------------------------
def encode_file(
    chunks: list[np.ndarray],
    capacity: int,
    *,
    with_index: bool = True,
    header_fields: dict[str, int] | None = None,
    chunk_header_override: dict[int, dict[str, int]] | None = None,
    payload_override: dict[int, bytes] | None = None,
) -> bytes:
    """Build a ``.qrsdp`` file from explicit chunks, straight from the spec.

    Overrides let tests forge inconsistent chunk headers or payloads; the index (if any)
    always describes the chunk headers as written, so it agrees with them."""
    h = {
        "seed": 0,
        "p0_ticks": 10_000,
        "tick_size": 100,
        "session_seconds": 23_400,
        "levels_per_side": 5,
        "initial_spread_ticks": 2,
        "initial_depth": 5,
        "version_major": 1,
        "version_minor": 0,
        "record_size": 26,
    }
    h.update(header_fields or {})
    body = bytearray()
    index = []
    offset = HDR
    for k, recs in enumerate(chunks):
        raw = recs.tobytes()
        # The format fixes the LZ4 *block* encoding, not the compressor's effort: use the writer's
        # setting so byte-for-byte comparison with BinaryFileSink is meaningful.
        payload = (payload_override or {}).get(
            k, lz4.block.compress(raw, store_size=False, mode="fast", acceleration=LZ4_ACCELERATION)
        )
        f = {
            "usize": len(raw),
            "csize": len(payload),
            "count": len(recs),
            "flags": 0,
            "first": int(recs["ts_ns"][0]) if len(recs) else 0,
            "last": int(recs["ts_ns"][-1]) if len(recs) else 0,
        }
        f.update((chunk_header_override or {}).get(k, {}))
        body += SPEC_CHUNK_HEADER.pack(f["usize"], f["csize"], f["count"], f["flags"], f["first"], f["last"])
        body += payload
        index.append(SPEC_INDEX_ENTRY.pack(offset, f["first"], f["last"], f["count"], 0))
        offset += CHDR + len(payload)
    flags = 1 if with_index else 0
    head = SPEC_FILE_HEADER.pack(
        b"QRSDPLOG",
        h["version_major"],
        h["version_minor"],
        h["record_size"],
        h["seed"],
        h["p0_ticks"],
        h["tick_size"],
        h["session_seconds"],
        h["levels_per_side"],
        h["initial_spread_ticks"],
        h["initial_depth"],
        capacity,
        flags,
        0,
    )
    out = bytearray(head) + body
    if with_index:
        out += b"".join(index)
        out += SPEC_INDEX_TAIL.pack(len(index), b"QIDX", offset)
    return bytes(out)


def split_chunks(records: np.ndarray, capacity: int) -> list[np.ndarray]:
    return [records[i : i + capacity] for i in range(0, len(records), capacity)]


@dataclass
class ParsedChunk:
    offset: int
    usize: int
    csize: int
    count: int
    flags: int
    first: int
    last: int

    @property
    def payload_offset(self) -> int:
        return self.offset + CHDR

    @property
    def end(self) -> int:
        return self.offset + CHDR + self.csize


@dataclass
class ParsedFile:
    header: tuple
    chunks: list[ParsedChunk]
    index_start: int | None
    index: list[tuple] | None
    tail: tuple | None


def parse_file(data: bytes) -> ParsedFile:
    """Walk a well-formed file by the spec (used to locate bytes to corrupt)."""
    head = SPEC_FILE_HEADER.unpack_from(data, 0)
    flags = head[12]
    if flags & 1:
        tail = SPEC_INDEX_TAIL.unpack_from(data, len(data) - 16)
        count, magic, index_start = tail
        assert magic == b"QIDX"
        index = [SPEC_INDEX_ENTRY.unpack_from(data, index_start + 32 * k) for k in range(count)]
    else:
        tail, index, index_start = None, None, None
    limit = index_start if index_start is not None else len(data)
    chunks = []
    off = HDR
    while off < limit:
        c = ParsedChunk(off, *SPEC_CHUNK_HEADER.unpack_from(data, off))
        chunks.append(c)
        off = c.end
    assert off == limit
    return ParsedFile(head, chunks, index_start, index, tail)


def strip_index(path: Path) -> Path:
    """Turn a closed file into its index-less equivalent: cut at the index start, clear HAS_INDEX."""
    data = bytearray(path.read_bytes())
    _count, magic, index_start = SPEC_INDEX_TAIL.unpack_from(data, len(data) - 16)
    assert magic == b"QIDX"
    del data[index_start:]
    struct.pack_into("<I", data, 52, 0)
    path.write_bytes(bytes(data))
    return path


def same_records(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == RECORD_DTYPE and b.dtype == RECORD_DTYPE and len(a) == len(b) and a.tobytes() == b.tobytes()


def mutate(orig: bytes, draw) -> bytes:
    """A hypothesis-mutated copy of a valid log: maybe without its index (HAS_INDEX cleared), a few bytes
    overwritten, maybe cut short. ``draw`` is ``data.draw`` of ``st.data()``."""
    from hypothesis import strategies as st

    buf = bytearray(orig)
    if draw(st.booleans()):  # the same session without its index
        del buf[parse_file(orig).index_start :]
        struct.pack_into("<I", buf, 52, 0)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(buf) - 1))
        buf[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del buf[draw(st.integers(0, len(buf))) :]
    return bytes(buf)
