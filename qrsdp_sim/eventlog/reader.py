"""Reading ``.qrsdp`` files: validation, sequential and random access, time ranges.

Every problem with the bytes on disk raises :class:`EventLogError` (naming the file
and byte offset); a file cut short raises its subclass :class:`TruncatedLogError`
after yielding every complete chunk. Reads never trust a length field before
checking it against the file size, so corrupt input cannot make the reader
allocate huge buffers, hang, or return wrong records silently.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import lz4.block
import numpy as np

from qrsdp_sim.eventlog.errors import EventLogError, TruncatedLogError
from qrsdp_sim.eventlog.format import (
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    FILE_HEADER_SIZE,
    INDEX_ENTRY_SIZE,
    INDEX_MAGIC,
    INDEX_TAIL,
    INDEX_TAIL_SIZE,
    MAGIC,
    VERSION_MAJOR,
    ChunkInfo,
    LogHeader,
)
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE, allocate_records, prefault

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

INDEX_DTYPE = np.dtype(
    [("file_offset", "<u8"), ("first_ts_ns", "<u8"), ("last_ts_ns", "<u8"), ("record_count", "<u4"), ("reserved", "<u4")]
)


class EventLogReader:
    """Reads one ``.qrsdp`` session file.

    The whole file is memory-mapped lazily through a single ``bytes`` read on
    first use (sessions are tens of MB); chunk payloads are decompressed on demand.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data = _map_file(self.path)
        self.file_size = len(self._data)
        self.header = self._read_header()
        self._chunks: list[ChunkInfo] | None = None
        self._index_start = self.file_size
        # HAS_INDEX set but no index tail at the end: the file was cut short after it
        # was published (e.g. a partial copy). Complete chunks stay readable by scan.
        self.index_missing = False
        self.index: np.ndarray | None = None
        if self.header.has_index:
            if self._has_index_tail():
                self.index = self._read_index()
            else:
                self.index_missing = True

    # -- header and index -------------------------------------------------
    def _err(self, offset: int, reason: str) -> EventLogError:
        return EventLogError(self.path, offset, reason)

    def _read_header(self) -> LogHeader:
        if self.file_size < FILE_HEADER_SIZE:
            raise TruncatedLogError(
                self.path, self.file_size, f"file is {self.file_size} bytes, shorter than the 64-byte header"
            )
        magic, header, _reserved = LogHeader.unpack(self._data[:FILE_HEADER_SIZE])
        if magic != MAGIC:
            raise self._err(0, f"bad magic {magic!r}, expected {MAGIC!r}: not a .qrsdp file")
        if header.version_major != VERSION_MAJOR:
            raise self._err(
                8, f"unsupported format version {header.version_major}.{header.version_minor} (this reader reads 1.x)"
            )
        if header.record_size != RECORD_SIZE:
            raise self._err(12, f"record_size is {header.record_size}, expected {RECORD_SIZE}")
        if header.chunk_capacity == 0:
            raise self._err(48, "chunk_capacity is 0")
        return header

    def _has_index_tail(self) -> bool:
        tail_at = self.file_size - INDEX_TAIL_SIZE
        return tail_at >= FILE_HEADER_SIZE and self._data[tail_at + 4 : tail_at + 8] == INDEX_MAGIC

    def _read_index(self) -> np.ndarray:
        """Parse and check the index footer (HAS_INDEX is set)."""
        size = self.file_size
        tail_at = size - INDEX_TAIL_SIZE
        if tail_at < FILE_HEADER_SIZE:
            raise self._err(size, "HAS_INDEX is set but the file is too short to hold an index tail")
        count, magic, start = INDEX_TAIL.unpack(self._data[tail_at:])
        if magic != INDEX_MAGIC:
            raise self._err(tail_at + 4, f"HAS_INDEX is set but the index tail magic is {magic!r}, expected b'QIDX'")
        if start < FILE_HEADER_SIZE or start + count * INDEX_ENTRY_SIZE != tail_at:
            raise self._err(
                tail_at, f"index tail says {count} entries at offset {start}, which does not end at the tail ({tail_at})"
            )
        index = np.frombuffer(self._data, dtype=INDEX_DTYPE, count=count, offset=start)
        # Structural checks that are cheap and vectorised: offsets strictly increase
        # inside the chunk area, counts within capacity, timestamps ordered.
        offs = index["file_offset"].astype(np.int64)
        if count:
            if offs[0] != FILE_HEADER_SIZE:
                raise self._err(start, f"index entry 0 points at {offs[0]}, expected the first chunk at 64")
            if np.any(np.diff(offs) <= CHUNK_HEADER_SIZE) or offs[-1] + CHUNK_HEADER_SIZE > start:
                raise self._err(start, "index chunk offsets are not increasing inside the chunk area")
            bad = (index["record_count"] == 0) | (index["record_count"] > self.header.chunk_capacity)
            if np.any(bad):
                k = int(np.argmax(bad))
                raise self._err(start + k * INDEX_ENTRY_SIZE, f"index entry {k} has record_count outside 1..capacity")
            if np.any(index["first_ts_ns"] > index["last_ts_ns"]) or np.any(
                index["first_ts_ns"][1:] < index["last_ts_ns"][:-1]
            ):
                raise self._err(start, "index timestamps decrease")
        elif start != FILE_HEADER_SIZE:
            raise self._err(start, "index has no entries but chunks are present")
        self._index_start = int(start)
        return index

    # -- chunk discovery --------------------------------------------------
    def _chunk_at(self, offset: int, limit: int) -> ChunkInfo:
        """Parse and sanity-check the chunk header at ``offset``; the chunk must end by ``limit``."""
        if offset + CHUNK_HEADER_SIZE > limit:
            raise TruncatedLogError(self.path, offset, "file ends inside a chunk header")
        usize, csize, count, flags, first, last = CHUNK_HEADER.unpack_from(self._data, offset)
        if count == 0 or count > self.header.chunk_capacity:
            raise self._err(offset, f"chunk record_count {count} outside 1..{self.header.chunk_capacity}")
        if usize != count * RECORD_SIZE:
            raise self._err(offset, f"chunk uncompressed_size {usize} != record_count {count} x {RECORD_SIZE}")
        if flags != 0:
            raise self._err(offset, f"chunk_flags is {flags:#x}; format 1.0 defines none")
        if first > last:
            raise self._err(offset, f"chunk first_ts_ns {first} > last_ts_ns {last}")
        if usize > _LZ4_MAX_RATIO * csize:
            # No LZ4 block expands by more than 255x: reject before allocating anything.
            raise self._err(offset, f"chunk uncompressed_size {usize} cannot come from a {csize}-byte LZ4 block")
        if offset + CHUNK_HEADER_SIZE + csize > limit:
            raise TruncatedLogError(
                self.path, offset, f"chunk payload of {csize} bytes runs past the end of the chunk area ({limit})"
            )
        return ChunkInfo(offset, usize, csize, count, flags, first, last)

    def scan_chunks(self) -> Iterator[ChunkInfo]:
        """Walk chunk headers from the start of the file (no index needed)."""
        limit = self._index_start
        offset = FILE_HEADER_SIZE
        prev_last = 0
        while offset < limit:
            if self.index_missing and self._data[offset : offset + 8] == _FIRST_INDEX_ENTRY_PREFIX:
                # Index entry 0 (file_offset 64) where a chunk header would be: cut inside the index.
                raise TruncatedLogError(self.path, offset, "HAS_INDEX is set but the file ends inside its index")
            info = self._chunk_at(offset, limit)
            if info.first_ts_ns < prev_last:
                raise self._err(offset, "timestamps decrease across chunks")
            prev_last = info.last_ts_ns
            yield info
            offset = info.end_offset
        if self.index_missing:
            raise TruncatedLogError(
                self.path, self.file_size, "HAS_INDEX is set but the file ends without its index: truncated"
            )

    @property
    def chunks(self) -> list[ChunkInfo]:
        """Every chunk, from the index when there is one (each entry checked against its header)."""
        if self._chunks is None:
            if self.index is None:
                self._chunks = list(self.scan_chunks())
            else:
                self._chunks = [self._chunk_from_index(k) for k in range(len(self.index))]
                if self._chunks and self._chunks[-1].end_offset != self._index_start:
                    raise self._err(self._chunks[-1].offset, "index does not cover the chunks: data after last chunk")
        return self._chunks

    def _chunk_from_index(self, k: int) -> ChunkInfo:
        entry = self.index[k]
        info = self._chunk_at(int(entry["file_offset"]), self._index_start)
        if (
            info.record_count != entry["record_count"]
            or info.first_ts_ns != entry["first_ts_ns"]
            or info.last_ts_ns != entry["last_ts_ns"]
        ):
            raise self._err(info.offset, f"index entry {k} disagrees with the chunk header it points at")
        if k + 1 < len(self.index) and info.end_offset != int(self.index[k + 1]["file_offset"]):
            raise self._err(info.offset, f"chunk {k} does not end where index entry {k + 1} starts")
        return info

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    @property
    def record_count(self) -> int:
        if self.index is not None:
            return int(self.index["record_count"].sum(dtype=np.int64))
        return sum(c.record_count for c in self.chunks)

    # -- decoding ---------------------------------------------------------
    def _decode(self, info: ChunkInfo) -> np.ndarray:
        payload = memoryview(self._data)[info.payload_offset : info.end_offset]
        try:
            raw = lz4.block.decompress(payload, uncompressed_size=info.uncompressed_size)
        except (lz4.block.LZ4BlockError, OverflowError, MemoryError) as exc:
            raise self._err(info.payload_offset, f"LZ4 payload does not decompress: {exc}") from exc
        if len(raw) != info.uncompressed_size:
            raise self._err(
                info.payload_offset,
                f"LZ4 payload decompressed to {len(raw)} bytes, header says {info.uncompressed_size}",
            )
        records = np.frombuffer(raw, dtype=RECORD_DTYPE)
        ts = records["ts_ns"]
        if ts[0] != info.first_ts_ns or ts[-1] != info.last_ts_ns or np.any(ts[1:] < ts[:-1]):
            raise self._err(info.offset, "chunk timestamps disagree with its header or decrease")
        return records

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Yield each chunk's records in file order (sequential scan; works without an index).

        A truncated file yields every complete chunk, then raises TruncatedLogError.
        """
        if self.index is not None:
            for info in self.chunks:
                yield self._decode(info)
        else:
            for info in self.scan_chunks():
                yield self._decode(info)

    def read_chunk(self, k: int) -> np.ndarray:
        """Random access to chunk ``k`` (via the index when present)."""
        n = len(self.index) if self.index is not None else len(self.chunks)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"chunk {k} out of range (file has {n})")
        if self.index is not None:
            return self._decode(self._chunk_from_index(k))
        return self._decode(self.chunks[k])

    def read_all(self, *, threads: int | None = None) -> np.ndarray:
        """The whole session as one record array.

        Chunks are decoded by ``threads`` workers (default: one per core, at most 2
        for small files); LZ4 releases the GIL, so this scales with cores.
        """
        infos = self.chunks
        counts = np.fromiter((c.record_count for c in infos), dtype=np.int64, count=len(infos))
        starts = np.concatenate(([0], np.cumsum(counts)))
        total = int(starts[-1])
        out = allocate_records(total)
        if threads is None:
            threads = min(os.cpu_count() or 1, 8) if total > 1_000_000 else 1
        threads = max(1, min(threads, len(infos)))
        bounds = np.linspace(0, len(infos), threads + 1).astype(int)

        def decode_range(lo: int, hi: int) -> None:
            prefault(out, int(starts[lo]), int(starts[hi]))
            for k in range(lo, hi):
                out[starts[k] : starts[k + 1]] = self._decode(infos[k])

        if threads == 1:
            decode_range(0, len(infos))
        else:
            with ThreadPoolExecutor(threads) as pool:
                futures = [pool.submit(decode_range, bounds[i], bounds[i + 1]) for i in range(threads)]
                for fut in futures:
                    fut.result()
        return out

    def read_range(self, start_ns: int, end_ns: int) -> np.ndarray:
        """Records with ``start_ns <= ts_ns < end_ns``.

        Uses binary search over the index (only overlapping chunks are decoded);
        without an index, a sequential scan.
        """
        if end_ns <= start_ns:
            return np.empty(0, dtype=RECORD_DTYPE)
        if self.index is not None:
            lo = int(np.searchsorted(self.index["last_ts_ns"], start_ns, side="left"))
            hi = int(np.searchsorted(self.index["first_ts_ns"], end_ns, side="left"))
            candidates = self.chunks[lo:hi]  # every index entry checked against its chunk header
        else:
            candidates = [c for c in self.chunks if c.last_ts_ns >= start_ns and c.first_ts_ns < end_ns]
        parts = []
        for info in candidates:
            rec = self._decode(info)
            ts = rec["ts_ns"]
            a = int(np.searchsorted(ts, start_ns, side="left"))
            b = int(np.searchsorted(ts, end_ns, side="left"))
            if b > a:
                parts.append(rec[a:b])
        if not parts:
            return np.empty(0, dtype=RECORD_DTYPE)
        return np.concatenate(parts)

    def to_arrow(self) -> pa.Table:
        return records_to_arrow(self.read_all())

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        return pl.from_arrow(self.to_arrow())


def _map_file(path: Path) -> bytes | mmap.mmap:
    """The file's bytes: memory-mapped (read-only) when large, read into memory when small.

    Sessions are published by rename and never rewritten, so a mapping cannot be
    truncated under the reader by our own writers.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < _MAP_THRESHOLD:
                return fh.read()
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except OSError as exc:
        raise EventLogError(path, 0, f"cannot read file: {exc}") from exc


_MAP_THRESHOLD = 1 << 20
_FIRST_INDEX_ENTRY_PREFIX = FILE_HEADER_SIZE.to_bytes(8, "little")  # never a valid chunk header start
_LZ4_MAX_RATIO = 255  # each byte of an LZ4 block decodes to at most 255 bytes


def records_to_arrow(records: np.ndarray) -> pa.Table:
    """Columnar pyarrow Table of a record array (one zero-copy-able column per field)."""
    import pyarrow as pa

    return pa.table({name: np.ascontiguousarray(records[name]) for name in RECORD_DTYPE.names})


def read_records(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a whole ``.qrsdp`` file into one record array."""
    return EventLogReader(path).read_all()
