"""The Kafka message format for QRSDP events (specified in docs/kafka-message-format.md).

value  = the 26-byte little-endian record, unchanged (empty for the end-of-session marker)
key    = the symbol (ASCII)
headers: ts_ns (u64 big-endian), date (YYYY-MM-DD), seq (u64 big-endian, 0-based position
         in the session), run_id (ASCII); the end-of-session marker carries ``eos``
         (event count u64 BE + close price in ticks i64 BE) instead of ts_ns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

DEFAULT_TOPIC = "exchange.events"
DEAD_LETTER_TOPIC = "exchange.events.dlq"

H_TS_NS = "ts_ns"
H_DATE = "date"
H_SEQ = "seq"
H_RUN_ID = "run_id"
H_EOS = "eos"
H_SESSION = "session"  # on the end-of-session marker: JSON description of the session

EOS_STRUCT = struct.Struct(">Qq")


@dataclass(frozen=True)
class EndOfSession:
    events: int
    close_ticks: int

    def encode(self) -> bytes:
        return EOS_STRUCT.pack(self.events, self.close_ticks)

    @classmethod
    def decode(cls, data: bytes) -> EndOfSession:
        if len(data) != EOS_STRUCT.size:
            raise ValueError(f"eos header must be {EOS_STRUCT.size} bytes, got {len(data)}")
        events, close = EOS_STRUCT.unpack(data)
        return cls(events, close)


def big_endian_u64(values: np.ndarray) -> bytes:
    """Concatenated 8-byte big-endian encodings of ``values`` (slice per message)."""
    return np.ascontiguousarray(values, dtype=">u8").tobytes()
