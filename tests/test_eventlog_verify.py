"""``qrsdp log-info --verify`` replays the order book (issue 12, defect 6).

It used to say "every invariant holds" for streams that describe no possible book: a cancel of an order
that never existed, an execution away from the best, a crossed book. Now container integrity (header,
chunks, LZ4, index) and stream consistency (record fields and a replay of the book) are reported
separately; the stream report names the first violation with its record number, ``--json`` lists the
checks that ran. Streams with partial fills and partial cancels (issue 11's quantities: an order keeps its
place in the queue after a partial cancel; a walk through the queue is several EXECUTEs, the last one
possibly partial) must pass, as must engine output and the reference generator's random sessions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from book_streams import random_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qrsdp_log_testutil import strip_index, write_log
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.eventlog.consistency import CHECKS, check_stream
from qrsdp_sim.eventlog.inspect import verify
from qrsdp_sim.records import RECORD_DTYPE

ADD_BID, ADD_ASK, CANCEL_BID, CANCEL_ASK, EXEC_BUY, EXEC_SELL = range(6)
BID, ASK = 0, 1
T0 = 34_200 * 10**9


def stream(*rows: tuple[int, int, int, int, int]) -> np.ndarray:
    """Records from (type, side, price, qty, order_id) rows, one ns apart."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, (t, side, price, qty, oid) in enumerate(rows):
        out[i] = (T0 + i, t, side, price, qty, oid)
    return out


# A book: bids 99 (ids 1, 2: 100 shares each), 98 (id 3); asks 101 (ids 4, 5), 102 (id 6).
OPEN = [(ADD_BID, BID, 99, 100, 1), (ADD_BID, BID, 99, 100, 2), (ADD_BID, BID, 98, 100, 3),
        (ADD_ASK, ASK, 101, 100, 4), (ADD_ASK, ASK, 101, 100, 5), (ADD_ASK, ASK, 102, 100, 6)]

PARTIALS = stream(
    *OPEN,
    (CANCEL_BID, BID, 99, 30, 1),  # partial cancel: order 1 keeps its place with 70
    (EXEC_SELL, BID, 99, 50, 1),  # partial fill of the front order
    (EXEC_SELL, BID, 99, 20, 1),  # ... and the rest of it: order 2 is at the front now
    (EXEC_SELL, BID, 99, 100, 2),  # a walk: the bid level empties
    (EXEC_SELL, BID, 98, 40, 3),  # ... and goes on at the next best, partly
    (EXEC_BUY, ASK, 101, 100, 4),
    (CANCEL_ASK, ASK, 101, 100, 5),  # full cancel: the ask level empties
    (EXEC_BUY, ASK, 102, 1, 6),
    (ADD_BID, BID, 100, 5, 7),  # improves the bid without crossing
    (CANCEL_BID, BID, 98, 60, 3),
)

VIOLATIONS = {  # check -> (the stream, the record number of the first violation)
    "unknown_order": (stream(*OPEN, (CANCEL_BID, BID, 99, 10, 42)), 6),
    "overfill": (stream(*OPEN, (CANCEL_ASK, ASK, 101, 101, 4)), 6),
    "order_mismatch": (stream(*OPEN, (CANCEL_ASK, ASK, 102, 10, 4)), 6),
    "duplicate_order": (stream(*OPEN[:3], (ADD_BID, BID, 97, 1, 3), *OPEN[3:]), 3),
    "crossed_book": (stream(*OPEN, (ADD_BID, BID, 101, 10, 7)), 6),
    "execution_at_best": (stream(*OPEN, (EXEC_SELL, BID, 98, 10, 3)), 6),
    "queue_priority": (stream(*OPEN, (EXEC_BUY, ASK, 101, 10, 5)), 6),
    "quantities": (stream(*OPEN, (CANCEL_BID, BID, 99, 0, 1)), 6),
    "event_types": (stream(*OPEN, (7, BID, 99, 1, 1)), 6),
    "sides": (stream(*OPEN, (EXEC_BUY, BID, 99, 1, 1)), 6),
    "add_ids": (stream(*OPEN, (ADD_BID, BID, 97, 1, 5)), 6),
}


def test_partial_fills_and_partial_cancels_pass_every_check() -> None:
    report = check_stream(PARTIALS)
    assert report.ok, report.violations
    assert report.checks == list(CHECKS) and not report.skipped


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_random_sessions_pass(seed: int) -> None:
    report = check_stream(random_session(5_000, seed=seed, partial=True))
    assert report.ok, report.violations


@pytest.mark.parametrize("check", sorted(VIOLATIONS))
def test_each_violation_is_found_with_its_first_record(check: str, tmp_path: Path) -> None:
    records, first = VIOLATIONS[check]
    path = write_log(tmp_path / f"{check}.qrsdp", records, 4)
    res = verify(path)
    assert res.container_ok, res.container_problems  # the bytes are fine: it is the stream that is wrong
    assert not res.ok and res.stream is not None
    assert check in {v.check for v in res.stream.violations}, res.stream.violations
    assert res.stream.first.record == first, res.stream.first
    assert res.stream.first.message.startswith(f"record {first}:")

    out = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["log-info", str(path), "--verify"])
    assert out.exit_code == 1
    assert "container OK" in out.output and "stream FAILED" in out.output
    assert f"record {first}:" in out.output


def test_json_says_which_checks_ran(tmp_path: Path) -> None:
    records, first = VIOLATIONS["unknown_order"]
    path = write_log(tmp_path / "u.qrsdp", records, 4)
    out = CliRunner().invoke(app, ["log-info", str(path), "--verify", "--json"])
    assert out.exit_code == 1
    v = json.loads(out.output.strip().splitlines()[-1])["verify"]
    assert v["container"] == {"ok": True, "checks": ["header", "index_present", "chunks", "payloads"],
                              "problems": []}
    assert v["stream"]["checks"] == list(CHECKS) and v["stream"]["skipped"] == {}
    assert v["stream"]["first_violation"]["check"] == "unknown_order"
    assert v["stream"]["first_violation"]["record"] == first
    assert v["stream"]["violations"]["unknown_order"]["count"] == 1

    # A file without its index: a container problem, and the stream is still checked (and fine).
    good = strip_index(write_log(tmp_path / "good.qrsdp", PARTIALS, 4))
    out = CliRunner().invoke(app, ["log-info", str(good), "--verify", "--json"])
    v = json.loads(out.output.strip().splitlines()[-1])["verify"]
    assert out.exit_code == 1 and v["container"]["ok"] is False and v["stream"]["ok"] is True

    # Garbage: the container fails, the stream is not checked, and JSON says so (one object, no traceback).
    junk = tmp_path / "junk.qrsdp"
    junk.write_bytes(b"QRSDPLOG" + bytes(100))
    out = CliRunner().invoke(app, ["log-info", str(junk), "--verify", "--json"])
    v = json.loads(out.output.strip().splitlines()[-1])
    assert out.exit_code == 1 and v["error"] and v["verify"]["container"]["ok"] is False
    assert v["verify"]["stream"]["ok"] is None and v["verify"]["stream"]["checks"] == []


def test_engine_session_passes(tmp_path: Path) -> None:
    from qrsdp_sim.engine.runner import RunSpec, Security, run

    result = run(RunSpec(session_seconds=300), [Security("AAA", 10_000)], tmp_path / "run", workers=1)
    res = verify(tmp_path / "run" / result.sessions[0].file)
    assert res.ok, res.problems
    assert res.stream.checks == list(CHECKS)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = st.tuples(st.integers(0, 7), st.integers(0, 2), st.integers(95, 105), st.integers(0, 120),
                   st.integers(0, 12))


@FUZZ
@given(st.lists(FIELDS, max_size=60), st.integers(-(2**31), 2**31 - 1))
def test_fuzz_check_stream_never_raises_and_agrees_with_itself(rows, far_price) -> None:
    records = stream(*OPEN, *rows)
    if rows and far_price % 7 == 0:
        records[-1]["price_ticks"] = far_price  # sometimes an absurd price too
    report = check_stream(records)
    assert set(report.checks) | set(report.skipped) == set(CHECKS)
    for v in report.violations:
        assert 0 <= v.record < len(records) and v.count >= 1 and v.message.startswith(f"record {v.record}:")
    assert report.ok == (not report.violations)
    assert check_stream(records).to_dict() == report.to_dict()  # no state carried between runs
