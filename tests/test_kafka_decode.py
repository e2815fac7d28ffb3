"""The Kafka event decoder against hostile messages (issue 12, defect 1 and "Fuzzing"), without services.

Every malformed message is returned as a rejection with its kind and a reason -- null header values on
the fast path and on the marker path, markers whose ``session`` header is valid JSON without the
expected fields, count-0 markers, absurd numbers, bad keys and dates, garbage -- and never raises; the
well-formed messages around it still decode. Hypothesis then throws arbitrary messages and bridge runs
at the decoder: nothing escapes, every message is accounted for exactly once, and a good batch decodes
correctly afterwards (the decoder's date cache stays bounded and unpoisoned).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_poison import DAY, KINDS, POISON, RECS, SESSION, eos, event, marker, record, u64
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka import decode as decode_module
from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.decode import decode_items, decode_messages, run_messages
from qrsdp_sim.kafka.message import (
    MAX_SESSION_EVENTS,
    EndOfSession,
    MalformedMessage,
    SessionDescription,
)
from qrsdp_sim.records import RECORD_DTYPE


@pytest.mark.parametrize("case, message, kind", POISON, ids=[c for c, _, _ in POISON])
def test_each_malformed_message_is_rejected_with_its_kind_between_good_ones(case, message, kind) -> None:
    good_before = [event(s, offset=s) for s in range(3)]
    message = RawMessage("t", 0, 3, message.key(), message.value(), message.headers())
    good_after = [event(3, key=b"BBB", offset=4)]
    out = decode_messages([*good_before, message, *good_after])
    assert [(r.message.offset(), r.kind) for r in out.rejected] == [(3, kind)], (case, out.rejected)
    assert out.rejected[0].reason
    assert not out.markers
    rows = {s.symbol: s for s in out.sessions}
    assert sorted(rows) == ["AAA", "BBB"]
    np.testing.assert_array_equal(rows["AAA"].seq, [0, 1, 2])
    np.testing.assert_array_equal(rows["AAA"].records, RECS[:3])
    assert (rows["BBB"].first_offset, rows["BBB"].last_offset) == (4, 4)


def test_well_formed_marker_and_session_description() -> None:
    out = decode_messages([marker(eos(3), session=json.dumps(SESSION).encode(), offset=9)])
    assert not out.rejected
    [m] = out.markers
    assert (m.symbol, m.date, m.eos, m.offset) == ("AAA", dt.date(2026, 1, 5), EndOfSession(3, 10_001), 9)
    assert m.session == SessionDescription(7, 10_000, 100, 34_200 * 10**9, 23_400)
    assert m.message.offset() == 9
    assert decode_messages([marker(eos(3))]).markers[0].session is None  # the header is optional


def _run(first_offset: int, first_seq: int, records: np.ndarray, *, key: bytes = b"AAA", date: bytes = DAY) -> Run:
    return Run(0, first_offset, first_seq, key, date, b"r", records)


def test_run_with_impossible_records_keeps_the_rest_and_rebuilds_the_bad_messages() -> None:
    recs = make_records(10, seed=5)
    recs["type"][3], recs["side"][3] = 9, 0
    recs["qty"][7] = 0
    run = _run(100, 40, recs)
    out = decode_items([run], "t")
    assert [(r.message.offset(), r.kind) for r in out.rejected] == [(103, "record"), (107, "record")]
    originals = {m.offset(): m for m in run_messages(run, "t")}
    for r in out.rejected:  # dead-lettered exactly as they were produced
        o = originals[r.message.offset()]
        assert (r.message.key(), r.message.value(), r.message.headers()) == (o.key(), o.value(), o.headers())
    [rows] = out.sessions
    keep = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_array_equal(rows.seq, np.array(keep) + 40)
    np.testing.assert_array_equal(rows.records, recs[keep])
    assert (rows.first_offset, rows.last_offset) == (100, 109)


def test_run_with_absurd_seqs_is_rejected_without_overflow() -> None:
    recs = make_records(4, seed=6)
    for first_seq in (MAX_SESSION_EVENTS - 2, 2**63 - 1, 2**64 - 2):
        out = decode_items([_run(0, first_seq, recs)], "t")
        kinds = Counter(r.kind for r in out.rejected)
        kept = sum(len(s.records) for s in out.sessions)
        assert kept + kinds["seq"] == 4 and set(kinds) <= {"seq"}, (first_seq, out)
        for s in out.sessions:
            assert s.seq.min() >= 0 and s.seq.max() < MAX_SESSION_EVENTS


@pytest.mark.parametrize("raw", [None, b"", b"\x00" * 15, eos(0), eos(2**64 - 1), eos(1, 2**31), 7, "text"])
def test_end_of_session_decode_raises_only_malformed_message(raw) -> None:
    with pytest.raises(MalformedMessage) as ei:
        EndOfSession.decode(raw)
    assert ei.value.kind == "eos"


# -- fuzzing --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER_NAMES = st.sampled_from(["ts_ns", "date", "seq", "run_id", "eos", "session", "x", ""])
HEADER_VALUES = st.one_of(
    st.none(), st.binary(max_size=24), st.sampled_from([DAY, b"2026-13-45", u64(0), u64(2**63), eos(0), eos(3),
                                                        b"{}", json.dumps(SESSION).encode()]),
)
MESSAGES = st.builds(
    lambda key, value, headers: (key, value, headers),
    st.one_of(st.none(), st.sampled_from([b"AAA", b"BBB", b"", b"aaa"]), st.binary(max_size=10)),
    st.one_of(st.none(), st.binary(max_size=30), st.sampled_from([RECS[0].tobytes(), record(type=9)])),
    st.one_of(st.none(), st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6),
              # the producer's shape with fuzzed values, so the fast path sees them too
              st.tuples(HEADER_VALUES, HEADER_VALUES, HEADER_VALUES, HEADER_VALUES).map(
                  lambda v: [("ts_ns", v[0]), ("date", v[1]), ("seq", v[2]), ("run_id", v[3])])),
)


def _good_batch_still_decodes() -> None:
    out = decode_messages([event(s, offset=s) for s in range(3)] + [marker(eos(3), offset=3)])
    assert not out.rejected and len(out.markers) == 1
    np.testing.assert_array_equal(out.sessions[0].records, RECS[:3])
    assert len(decode_module._dates) <= 4097


@FUZZ
@given(st.lists(MESSAGES, max_size=40))
def test_fuzz_messages_never_raise_and_every_message_is_accounted_once(specs) -> None:
    messages = [RawMessage("t", 0, i, k, v, h) for i, (k, v, h) in enumerate(specs)]
    out = decode_messages(messages)
    rows = sum(len(s.records) for s in out.sessions)
    assert rows + len(out.markers) + len(out.rejected) == len(messages)
    assert {r.kind for r in out.rejected} <= KINDS
    seen = [r.message.offset() for r in out.rejected] + [m.offset for m in out.markers]
    assert len(seen) == len(set(seen))
    for s in out.sessions:
        assert s.records.dtype == RECORD_DTYPE and len(s.seq) == len(s.records)
        assert s.seq.min() >= 0 and s.seq.max() < MAX_SESSION_EVENTS
    _good_batch_still_decodes()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.sampled_from([b"AAA", b"x y", b""]),
                          st.sampled_from([DAY, b"2026-13-45", b""]), st.binary(min_size=0, max_size=26 * 6)),
                max_size=6))
def test_fuzz_runs_never_raise_and_every_record_is_accounted_once(specs) -> None:
    items, offset, total = [], 0, 0
    for first_seq, key, date, blob in specs:
        blob = blob[: len(blob) // 26 * 26]
        records = np.frombuffer(blob, dtype=RECORD_DTYPE)
        if not len(records):
            continue
        items.append(_run(offset, first_seq, records, key=key, date=date))
        offset += len(records)
        total += len(records)
    out = decode_items(items, "t")
    assert sum(len(s.records) for s in out.sessions) + len(out.rejected) == total
    assert {r.kind for r in out.rejected} <= KINDS
    _good_batch_still_decodes()


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 2**20))
def test_fuzz_session_header_raises_only_malformed_message(raw, events) -> None:
    try:
        SessionDescription.decode(raw, EndOfSession(events, 0))
    except MalformedMessage as exc:
        assert exc.kind == "session"
