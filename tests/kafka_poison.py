"""Hostile Kafka messages for the Parquet consumer's tests (issue 12, defect 1): every kind of malformed
message we could think of, each with the dead-letter ``kind`` it must get. Shared by the decoder's unit
tests (tests/test_kafka_decode.py) and the consumer's test on the real broker
(tests/test_parquet_consumer_poison.py)."""

from __future__ import annotations

import json

from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka.bridge import RawMessage

MAX_SEQ = 1 << 31  # qrsdp_sim.kafka.message.MAX_SESSION_EVENTS (spelled out: the documented limit)

DAY = b"2026-01-05"
KINDS = {"key", "date", "value_size", "seq", "record", "eos", "session"}
SESSION = {"seed": 7, "open_ticks": 10_000, "close_ticks": 10_001, "events": 3, "tick_size": 100,
           "market_open_ns": 34_200 * 10**9, "session_seconds": 23_400}
RECS = make_records(8, seed=3)


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def event(seq: int, *, key: bytes | None = b"AAA", value: bytes | None = None, date: bytes | None = DAY,
           ts: bytes | None = None, seq_raw: bytes | str | None = "auto", offset: int = 0) -> RawMessage:
    rec = RECS[seq % len(RECS)]
    value = rec.tobytes() if value is None else value
    ts = u64(int(rec["ts_ns"])) if ts is None else ts
    headers = [("ts_ns", ts), ("date", date), ("seq", u64(seq) if seq_raw == "auto" else seq_raw),
               ("run_id", b"r")]
    return RawMessage("t", 0, offset, key, value, headers)


def marker(events_raw: bytes | None, *, session: bytes | str | None = "none", key: bytes = b"AAA",
            date: bytes | None = DAY, offset: int = 0) -> RawMessage:
    headers = [("date", date), ("seq", u64(3)), ("run_id", b"r"), ("eos", events_raw)]
    if session != "none":
        headers.append(("session", session))
    return RawMessage("t", 0, offset, key, b"", headers)


def record(**fields) -> bytes:
    rec = RECS[:1].copy()
    for name, v in fields.items():
        rec[name] = v
    return rec.tobytes()


def eos(events: int, close: int = 10_001) -> bytes:
    return events.to_bytes(8, "big") + close.to_bytes(8, "big", signed=True)


POISON = [  # (case, message, kind)
    # null header values: the fast path (len(None) used to raise TypeError) and the marker path
    ("null seq header", event(0, seq_raw=None), "seq"),
    ("null date header", event(0, date=None), "date"),
    ("null eos header", marker(None), "eos"),
    ("null session header", marker(eos(3), session=None), "session"),
    # markers whose session header is valid JSON without what a sessions row needs (KeyError in a writer)
    ("session {}", marker(eos(3), session=b"{}"), "session"),
    ("session []", marker(eos(3), session=b"[]"), "session"),
    ("session string", marker(eos(3), session=b'"x"'), "session"),
    ("session null", marker(eos(3), session=b"null"), "session"),
    ("session not JSON", marker(eos(3), session=b"{seed"), "session"),
    ("session not UTF-8", marker(eos(3), session=b"\xff\xfe{}"), "session"),
    ("session nested 100k deep", marker(eos(3), session=b"[" * 100_000 + b"]" * 100_000), "session"),
    ("session field a float", marker(eos(3), session=json.dumps({**SESSION, "seed": 1.5}).encode()), "session"),
    ("session field a bool", marker(eos(3), session=json.dumps({**SESSION, "tick_size": True}).encode()),
     "session"),
    ("session seed 2^64", marker(eos(3), session=json.dumps({**SESSION, "seed": 2**64}).encode()), "session"),
    ("session huge number", marker(eos(3), session=b'{"seed": 1' + b"0" * 5000 + b"}"), "session"),
    ("session tick size 0", marker(eos(3), session=json.dumps({**SESSION, "tick_size": 0}).encode()), "session"),
    ("session past midnight", marker(eos(3), session=json.dumps({**SESSION, "market_open_ns": 80_000 * 10**9,
                                                                   "session_seconds": 23_400}).encode()),
     "session"),
    ("session events disagree", marker(eos(3), session=json.dumps({**SESSION, "events": 4}).encode()),
     "session"),
    ("session 5 KB", marker(eos(3), session=json.dumps({**SESSION, "pad": "x" * 5000}).encode()), "session"),
    # end-of-session counts and closes
    ("eos count 0", marker(eos(0)), "eos"),
    ("eos count 2^63", marker(eos(2**63)), "eos"),
    ("eos count 2^64-1", marker(eos(2**64 - 1)), "eos"),
    ("eos close beyond int32", marker(eos(3, 2**40)), "eos"),
    ("eos 7 bytes", marker(eos(3)[:7]), "eos"),
    ("eos 17 bytes", marker(eos(3) + b"\x00"), "eos"),
    ("marker bad key", marker(eos(3), key=b"aaa"), "key"),
    ("marker bad date", marker(eos(3), date=b"2026-02-30"), "date"),
    # sizes and numbers
    ("value 25 bytes", event(0, value=RECS[0].tobytes()[:25]), "value_size"),
    ("value 27 bytes", event(0, value=RECS[0].tobytes() + b"x"), "value_size"),
    ("value empty, no eos", event(0, value=b""), "value_size"),
    ("value 900 KB garbage", event(0, value=bytes(900_000)), "value_size"),
    ("seq 7 bytes", event(0, seq_raw=b"\x00" * 7), "seq"),
    ("seq 2^63 + 5", event(0, seq_raw=u64(2**63 + 5)), "seq"),
    ("seq 2^31", event(0, seq_raw=u64(MAX_SEQ)), "seq"),
    ("record type 9", event(0, value=record(type=9, side=0)), "record"),
    ("record side mismatch", event(0, value=record(type=0, side=1)), "record"),
    ("record side NA", event(0, value=record(type=4, side=2)), "record"),
    ("record qty 0", event(0, value=record(qty=0)), "record"),
    ("record ts beyond the day", event(0, value=record(ts_ns=2**63)), "record"),
    # keys and dates
    ("key null", event(0, key=None), "key"),
    ("key empty", event(0, key=b""), "key"),
    ("key with space", event(0, key=b"bad key!"), "key"),
    ("key 9 characters", event(0, key=b"TOOLONGSY"), "key"),
    ("key lower case", event(0, key=b"aaa"), "key"),
    ("key not ASCII", event(0, key=b"\xff\xfe"), "key"),
    ("date month 13", event(0, date=b"2026-13-45"), "date"),
    ("date 30 February", event(0, date=b"2026-02-30"), "date"),
    ("date compact form", event(0, date=b"20260105"), "date"),
    ("date week form", event(0, date=b"2026-W02-1"), "date"),
    ("date 1899", event(0, date=b"1899-01-02"), "date"),
    ("date empty", event(0, date=b""), "date"),
    ("date not UTF-8", event(0, date=b"\xff\xff\xff\xff-\xff\xff-\xff\xff"), "date"),
    ("no headers at all", RawMessage("t", 0, 0, b"AAA", RECS[0].tobytes(), None), "date"),
]


