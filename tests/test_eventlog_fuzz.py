"""Fuzzing the ``.qrsdp`` reader (issue 12, "Fuzzing"): only ``EventLogError`` escapes, and the reader's
state stays consistent afterwards.

A valid session file (a book stream with partial fills and cancels) is mutated by hypothesis: bytes
overwritten, the index stripped, the file cut short. For every mutant: each read either succeeds or
raises EventLogError; a failed read fails again the same way on the same reader (nothing half-built is
kept); reads that succeed agree with each other (whole file, chunk by chunk, chunk by index, time
ranges, counts); and ``verify`` never raises and never calls a container sound whose records cannot be
read -- when it does, its stream report covers exactly the records the reader returns.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from book_streams import random_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qrsdp_log_testutil import mutate, write_log

from qrsdp_sim.eventlog import EventLogError
from qrsdp_sim.eventlog.inspect import verify
from qrsdp_sim.eventlog.reader import EventLogReader

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[bytes, np.ndarray]:
    recs = random_session(700, seed=31)
    path = write_log(tmp_path_factory.mktemp("fz") / "base.qrsdp", recs, 64)
    return path.read_bytes(), recs


def _attempt(fn):
    """(result, None) or (None, (type, offset, reason)) -- anything but EventLogError fails the test."""
    try:
        return fn(), None
    except EventLogError as exc:
        return None, (type(exc), exc.offset, exc.reason)


def _check(path: Path) -> None:
    opened, err = _attempt(lambda: EventLogReader(path))
    if err is not None:
        assert _attempt(lambda: EventLogReader(path))[1] == err  # the same refusal every time
        assert not verify(path).container_ok
        return
    reader: EventLogReader = opened
    everything, err_all = _attempt(reader.read_all)
    assert _attempt(reader.read_all)[1] == err_all  # a failed read leaves nothing behind that changes it
    chunks, err_chunks = _attempt(lambda: list(reader.iter_chunks()))
    if everything is not None:
        assert len(everything) == reader.record_count
        if chunks is not None:
            assert np.array_equal(np.concatenate(chunks) if chunks else everything[:0], everything)
        n = reader.chunk_count
        got = [_attempt(lambda k=k: reader.read_chunk(k)) for k in range(n)]
        if all(e is None for _, e in got) and n:
            assert np.array_equal(np.concatenate([c for c, _ in got]), everything)
        if len(everything):
            ts = everything["ts_ns"]
            lo, hi = int(ts[len(ts) // 3]), int(ts[2 * len(ts) // 3]) + 1
            part, err_range = _attempt(lambda: reader.read_range(lo, hi))
            if err_range is None:
                assert np.array_equal(part, everything[(ts >= lo) & (ts < hi)])
    report = verify(path)  # never raises
    if report.container_ok:
        assert everything is not None and err_chunks is None
        assert report.stream is not None and report.stream.records == len(everything)
    else:
        assert report.stream is None or report.records == report.stream.records


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_file_only_eventlogerror_and_consistent_state(base, data) -> None:
    orig, _recs = base
    tmp = Path(tempfile.mkdtemp(prefix="qrsdp-fz-"))
    try:
        path = tmp / "m.qrsdp"
        path.write_bytes(mutate(orig, data.draw))
        _check(path)
    finally:
        shutil.rmtree(tmp)


def test_the_unmutated_file_passes_everything(base, tmp_path: Path) -> None:
    orig, recs = base
    path = tmp_path / "ok.qrsdp"
    path.write_bytes(orig)
    _check(path)
    assert np.array_equal(EventLogReader(path).read_all(), recs)
    assert verify(path).ok
