"""The Kafka message format for QRSDP events (specified in docs/kafka-message-format.md).

value  = the 26-byte little-endian record, unchanged (empty for the end-of-session marker)
key    = the symbol (ASCII)
headers: ts_ns (u64 big-endian), date (YYYY-MM-DD), seq (u64 big-endian, 0-based position
         in the session), run_id (ASCII); the end-of-session marker carries ``eos``
         (event count u64 BE + close price in ticks i64 BE) instead of ts_ns, and optionally
         ``session`` (JSON description of the session).

Everything a consumer reads from a message is checked here or in :mod:`qrsdp_sim.kafka.decode`:
a message that breaks the format raises :class:`MalformedMessage` (with a short ``kind`` for
counters and the dead-letter topic), never anything else.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import ClassVar

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

DAY_NS = 86_400 * 10**9
"""Record timestamps are ns since midnight and a session never runs past midnight."""
MAX_SESSION_EVENTS = 1 << 31
"""Largest event count (and seq + 1) accepted: a full session has a few million events; anything
near 2^63 is garbage (and would overflow the int64 ``seq`` column)."""
MAX_SESSION_HEADER_BYTES = 4096
_INT32 = (-(2**31), 2**31 - 1)


class MalformedMessage(ValueError):
    """A message that does not follow the format. ``kind`` is a short stable name for counters
    (``key``, ``date``, ``value_size``, ``seq``, ``record``, ``eos``, ``session``); ``str()`` is the
    readable reason."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class EndOfSession:
    events: int
    close_ticks: int

    def encode(self) -> bytes:
        return EOS_STRUCT.pack(self.events, self.close_ticks)

    @classmethod
    def decode(cls, data: bytes | None) -> EndOfSession:
        """The marker's ``eos`` header; raises :class:`MalformedMessage` unless it is 16 bytes with an
        event count in 1..MAX_SESSION_EVENTS and a close that fits the lake's int32 price column."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessage("eos", f"eos header is {'null' if data is None else type(data).__name__}")
        if len(data) != EOS_STRUCT.size:
            raise MalformedMessage("eos", f"eos header must be {EOS_STRUCT.size} bytes, got {len(data)}")
        events, close = EOS_STRUCT.unpack(data)
        if events == 0:
            raise MalformedMessage("eos", "end-of-session count 0: a session has at least one event")
        if events > MAX_SESSION_EVENTS:
            raise MalformedMessage("eos", f"end-of-session count {events} exceeds {MAX_SESSION_EVENTS}")
        if not _INT32[0] <= close <= _INT32[1]:
            raise MalformedMessage("eos", f"close price {close} ticks does not fit 32 bits")
        return cls(events, close)


@dataclass(frozen=True)
class SessionDescription:
    """The ``session`` header of an end-of-session marker: what the lake's ``raw/sessions`` row needs
    besides the marker's own count and close."""

    seed: int
    open_ticks: int
    tick_size: int
    market_open_ns: int
    session_seconds: int

    # field -> (lowest, highest) accepted
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "seed": (0, 2**64 - 1),
        "open_ticks": _INT32,
        "tick_size": (1, _INT32[1]),
        "market_open_ns": (0, DAY_NS - 1),
        "session_seconds": (1, 86_400),
    }

    @classmethod
    def decode(cls, raw: bytes | None, eos: EndOfSession) -> SessionDescription:
        """Parse and check the JSON header against ``eos``; raises :class:`MalformedMessage`."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise MalformedMessage("session", f"session header is {'null' if raw is None else type(raw).__name__}")
        if len(raw) > MAX_SESSION_HEADER_BYTES:
            raise MalformedMessage("session", f"session header of {len(raw)} bytes exceeds {MAX_SESSION_HEADER_BYTES}")
        try:
            doc = json.loads(bytes(raw))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise MalformedMessage("session", f"session header is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MalformedMessage("session", f"session header is JSON {type(doc).__name__}, not an object")
        values: dict[str, int] = {}
        for name, (lo, hi) in cls.RANGES.items():
            value = doc.get(name)
            if type(value) is not int:  # bool, float, str, None: not an integer
                raise MalformedMessage("session", f"session header field {name!r} is missing or not an integer")
            if not lo <= value <= hi:
                raise MalformedMessage("session", f"session header field {name!r} = {value} is outside {lo}..{hi}")
            values[name] = value
        if values["market_open_ns"] + values["session_seconds"] * 10**9 > DAY_NS:
            raise MalformedMessage("session", "session header: the session would run past midnight")
        events = doc.get("events")
        if events is not None and events != eos.events:
            raise MalformedMessage("session", f"session header says {events!r} events, the eos header {eos.events}")
        return cls(**values)


def big_endian_u64(values: np.ndarray) -> bytes:
    """Concatenated 8-byte big-endian encodings of ``values`` (slice per message)."""
    return np.ascontiguousarray(values, dtype=">u8").tobytes()
