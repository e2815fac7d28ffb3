"""Byte layout of the ``.qrsdp`` event log, version 1.0 (see docs/event-log-format.md).

All integers are little-endian. A file is a 64-byte header, a sequence of chunks
(32-byte chunk header + one LZ4 *block* holding packed 26-byte records) and an
optional index footer (32 bytes per chunk + a 16-byte tail).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, replace

from qrsdp_sim.records import RECORD_SIZE

MAGIC = b"QRSDPLOG"
VERSION_MAJOR = 1
VERSION_MINOR = 0
DEFAULT_CHUNK_CAPACITY = 4096
FLAG_HAS_INDEX = 1

FILE_HEADER = struct.Struct("<8sHHIQiIIIIIIIQ")
CHUNK_HEADER = struct.Struct("<IIIIQQ")
INDEX_ENTRY = struct.Struct("<QQQII")
INDEX_TAIL = struct.Struct("<I4sQ")
INDEX_MAGIC = b"QIDX"

FILE_HEADER_SIZE = FILE_HEADER.size
CHUNK_HEADER_SIZE = CHUNK_HEADER.size
INDEX_ENTRY_SIZE = INDEX_ENTRY.size
INDEX_TAIL_SIZE = INDEX_TAIL.size
HEADER_FLAGS_OFFSET = 52  # byte offset of header_flags inside the file header

assert FILE_HEADER_SIZE == 64 and CHUNK_HEADER_SIZE == 32
assert INDEX_ENTRY_SIZE == 32 and INDEX_TAIL_SIZE == 16


@dataclass(frozen=True)
class LogHeader:
    """The session parameters stored in a file header."""

    seed: int = 0
    p0_ticks: int = 10_000
    tick_size: int = 100
    session_seconds: int = 23_400
    levels_per_side: int = 5
    initial_spread_ticks: int = 2
    initial_depth: int = 5
    chunk_capacity: int = DEFAULT_CHUNK_CAPACITY
    header_flags: int = 0
    version_major: int = VERSION_MAJOR
    version_minor: int = VERSION_MINOR
    record_size: int = RECORD_SIZE

    @property
    def has_index(self) -> bool:
        return bool(self.header_flags & FLAG_HAS_INDEX)

    def pack(self) -> bytes:
        return FILE_HEADER.pack(
            MAGIC,
            self.version_major,
            self.version_minor,
            self.record_size,
            self.seed,
            self.p0_ticks,
            self.tick_size,
            self.session_seconds,
            self.levels_per_side,
            self.initial_spread_ticks,
            self.initial_depth,
            self.chunk_capacity,
            self.header_flags,
            0,
        )

    @classmethod
    def unpack(cls, data: bytes) -> tuple[bytes, LogHeader, int]:
        """Return (magic, header, reserved) without validating anything."""
        (magic, vmaj, vmin, rsize, seed, p0, tick, secs, levels, spread, depth, cap, flags, reserved) = (
            FILE_HEADER.unpack(data)
        )
        header = cls(
            seed=seed,
            p0_ticks=p0,
            tick_size=tick,
            session_seconds=secs,
            levels_per_side=levels,
            initial_spread_ticks=spread,
            initial_depth=depth,
            chunk_capacity=cap,
            header_flags=flags,
            version_major=vmaj,
            version_minor=vmin,
            record_size=rsize,
        )
        return magic, header, reserved

    def with_flags(self, flags: int) -> LogHeader:
        return replace(self, header_flags=flags)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk as described by its header (and its position in the file)."""

    offset: int  # byte offset of the chunk header
    uncompressed_size: int
    compressed_size: int
    record_count: int
    chunk_flags: int
    first_ts_ns: int
    last_ts_ns: int

    @property
    def payload_offset(self) -> int:
        return self.offset + CHUNK_HEADER_SIZE

    @property
    def end_offset(self) -> int:
        return self.payload_offset + self.compressed_size


@dataclass(frozen=True)
class IndexEntry:
    file_offset: int
    first_ts_ns: int
    last_ts_ns: int
    record_count: int
    reserved: int = 0

assert FILE_HEADER.pack(MAGIC, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFFFFFFFF, 0)[
    HEADER_FLAGS_OFFSET : HEADER_FLAGS_OFFSET + 4
] == b"\xff\xff\xff\xff"
