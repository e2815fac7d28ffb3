"""Crash safety and corrupt input: every bad byte pattern raises the one documented error.

The documented error is ``EventLogError`` (``path``, ``offset``, ``reason``; ``str`` names
the file and the byte offset); a file cut short raises its subclass
``TruncatedLogError`` after yielding every complete chunk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import lz4.block
import numpy as np
import pytest
from book_streams import random_session
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qrsdp_log_testutil import (
    encode_file,
    make_records,
    mutate,
    parse_file,
    same_records,
    split_chunks,
    strip_index,
    write_log,
)
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.eventlog import BinaryFileSink, EventLogError, LogHeader, TruncatedLogError
from qrsdp_sim.eventlog.inspect import verify
from qrsdp_sim.eventlog.reader import EventLogReader, read_records
from qrsdp_sim.records import RECORD_DTYPE

CAP = 64
N = 300  # chunks of 64, 64, 64, 64, 44


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[bytes, np.ndarray]:
    recs = make_records(N, seed=21, dup_prob=0.0)  # strictly increasing timestamps
    path = write_log(tmp_path_factory.mktemp("base") / "base.qrsdp", recs, CAP)
    return path.read_bytes(), recs


def flat(text: str) -> str:
    return "".join(text.split())


def assert_names_file_and_offset(exc: EventLogError, path: Path, size: int) -> None:
    assert exc.path == str(path)
    assert str(path) in str(exc)
    assert 0 <= exc.offset <= size
    assert f"byte {exc.offset}" in str(exc)
    assert exc.reason and exc.reason in str(exc)


def collect(reader: EventLogReader) -> tuple[list[np.ndarray], BaseException | None]:
    got: list[np.ndarray] = []
    try:
        for chunk in reader.iter_chunks():
            got.append(chunk.copy())
    except Exception as exc:
        return got, exc
    return got, None


# --- crash safety: truncation --------------------------------------------------
def cut_points(data: bytes) -> tuple[list[int], list[int], list[int]]:
    pf = parse_file(data)
    boundaries = [c.offset for c in pf.chunks] + [pf.index_start]
    mids = []
    for c in pf.chunks:
        mids += [
            c.offset + 1,
            c.offset + 16,
            c.offset + 31,
            c.payload_offset,
            c.payload_offset + 1,
            c.payload_offset + c.csize // 2,
            c.end - 1,
        ]
    size = len(data)
    in_index = [
        pf.index_start + 1,
        pf.index_start + 31,
        pf.index_start + 32,
        pf.index_start + 33,
        size - 16,
        size - 15,
        size - 1,
    ]
    return boundaries, mids, in_index


def test_truncated_finished_file_yields_complete_chunks_then_raises(base, tmp_path: Path) -> None:
    data, recs = base
    pf = parse_file(data)
    boundaries, mids, in_index = cut_points(data)
    path = tmp_path / "cut.qrsdp"
    for cut in boundaries + mids + in_index:
        path.write_bytes(data[:cut])
        complete = [c for c in pf.chunks if c.end <= cut]
        n_complete = sum(c.count for c in complete)
        got, exc = collect(EventLogReader(path))
        assert isinstance(exc, TruncatedLogError), (cut, exc)
        assert [len(g) for g in got] == [c.count for c in complete], cut
        assert same_records(np.concatenate(got) if got else recs[:0], recs[:n_complete]), cut
        assert_names_file_and_offset(exc, path, cut)
        assert exc.offset >= (complete[-1].end if complete else 64), cut
        # whole-file reads refuse a cut-short file rather than returning part of it silently
        with pytest.raises(TruncatedLogError):
            EventLogReader(path).read_all()
        res = verify(path)
        assert not res.ok and any(str(path) in p for p in res.problems), cut


def test_truncated_header(base, tmp_path: Path) -> None:
    data, _ = base
    path = tmp_path / "h.qrsdp"
    for cut in (0, 1, 8, 63):
        path.write_bytes(data[:cut])
        with pytest.raises(EventLogError) as ei:
            EventLogReader(path).read_all()
        assert_names_file_and_offset(ei.value, path, cut)


def test_truncated_file_without_index(base, tmp_path: Path) -> None:
    """No HAS_INDEX (a writer that never closed): a cut at a chunk boundary is a valid shorter log."""
    data, recs = base
    src = tmp_path / "src.qrsdp"
    src.write_bytes(data)
    stripped = strip_index(src).read_bytes()
    pf = parse_file(stripped)
    boundaries, mids, _ = cut_points(data)
    path = tmp_path / "cut.qrsdp"
    for cut in boundaries:
        path.write_bytes(stripped[:cut])
        n = sum(c.count for c in pf.chunks if c.end <= cut)
        got, exc = collect(EventLogReader(path))
        assert exc is None, (cut, exc)
        assert same_records(EventLogReader(path).read_all(), recs[:n])
    for cut in mids:
        path.write_bytes(stripped[:cut])
        complete = [c for c in pf.chunks if c.end <= cut]
        got, exc = collect(EventLogReader(path))
        assert isinstance(exc, TruncatedLogError), (cut, exc)
        assert [len(g) for g in got] == [c.count for c in complete]
        assert_names_file_and_offset(exc, path, cut)


def test_partial_file_of_live_writer_is_never_garbage(tmp_path: Path) -> None:
    """What a crash leaves: the .partial file as the OS has it, possibly cut mid-chunk."""
    recs = make_records(20_000, seed=22, dup_prob=0.3)
    final = tmp_path / "live.qrsdp"
    sink = BinaryFileSink(final, LogHeader(chunk_capacity=100), fsync=False)
    partial = tmp_path / ".live.qrsdp.partial"
    seen_truncated = False
    for a in range(0, len(recs), 1_337):
        sink.append(recs[a : a + 1_337])
        snap = tmp_path / "snap.qrsdp"
        shutil.copyfile(partial, snap)
        got, exc = collect(EventLogReader(snap))
        n = sum(len(g) for g in got)
        assert same_records(np.concatenate(got) if got else recs[:0], recs[:n])
        assert all(len(g) == 100 for g in got)
        if exc is not None:
            assert isinstance(exc, TruncatedLogError), exc
            seen_truncated = True
    sink.abort()
    assert seen_truncated  # buffered writes do leave the file cut mid-chunk; that case was exercised
    assert not final.exists() and not partial.exists()


# --- corrupt input -------------------------------------------------------------
def patch(data: bytes, fmt: str, offset: int, value) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, offset, value)
    return bytes(out)


Case = Callable[[bytes, np.ndarray], tuple[bytes, int | None]]


def chunk(data: bytes, k: int):
    return parse_file(data).chunks[k]


def index_entry(data: bytes, k: int) -> int:
    return parse_file(data).index_start + 32 * k


def _decreasing_within_chunk(data, recs):
    chunks = split_chunks(recs.copy(), CAP)
    c = chunks[1]
    ts = c["ts_ns"].copy()
    ts[10], ts[11] = ts[11], ts[10]  # first/last unchanged, order broken inside
    c["ts_ns"] = ts
    out = encode_file(chunks, CAP)
    return out, chunk(out, 1).offset


def _decreasing_across_chunks_no_index(data, recs):
    chunks = split_chunks(recs, CAP)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    out = encode_file(chunks, CAP, with_index=False)
    return out, chunk(out, 2).offset


def _decreasing_across_chunks_indexed(data, recs):
    chunks = split_chunks(recs, CAP)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    return encode_file(chunks, CAP), None


def _lz4_to_other_size(extra: int, with_index: bool):
    def build(data, recs):
        chunks = split_chunks(recs, CAP)
        k = 2
        raw = recs[k * CAP : (k + 1) * CAP + extra].tobytes() if extra > 0 else chunks[k][:extra].tobytes()
        out = encode_file(
            chunks,
            CAP,
            with_index=with_index,
            payload_override={k: lz4.block.compress(raw, store_size=False)},
        )
        return out, chunk(out, k).payload_offset

    return build


def _header_ts_disagree_with_payload(data, recs):
    chunks = split_chunks(recs, CAP)
    first = int(chunks[3]["ts_ns"][0]) + 1  # still <= last and > previous chunk's last
    out = encode_file(chunks, CAP, chunk_header_override={3: {"first": first}})
    return out, chunk(out, 3).offset


CASES: dict[str, Case] = {
    # header
    "bad magic": lambda d, r: (b"QRSDPLOX" + d[8:], 0),
    "lowercase magic": lambda d, r: (b"qrsdplog" + d[8:], 0),
    "major version 2": lambda d, r: (patch(d, "H", 8, 2), 8),
    "major version 0": lambda d, r: (patch(d, "H", 8, 0), 8),
    "record size 27": lambda d, r: (patch(d, "I", 12, 27), 12),
    "record size 0": lambda d, r: (patch(d, "I", 12, 0), 12),
    # chunk headers
    "chunk count 0": lambda d, r: (
        patch(patch(d, "I", chunk(d, 1).offset + 8, 0), "I", chunk(d, 1).offset, 0),
        chunk(d, 1).offset,
    ),
    "chunk count above capacity": lambda d, r: (
        patch(patch(d, "I", chunk(d, 1).offset + 8, CAP + 1), "I", chunk(d, 1).offset, (CAP + 1) * 26),
        chunk(d, 1).offset,
    ),
    "uncompressed size not count x 26": lambda d, r: (
        patch(d, "I", chunk(d, 2).offset, 64 * 26 + 1),
        chunk(d, 2).offset,
    ),
    "unknown chunk flags": lambda d, r: (patch(d, "I", chunk(d, 2).offset + 12, 1), chunk(d, 2).offset),
    "chunk first ts > last ts": lambda d, r: (
        patch(d, "Q", chunk(d, 2).offset + 16, chunk(d, 2).last + 1),
        chunk(d, 2).offset,
    ),
    "header ts disagree with payload": _header_ts_disagree_with_payload,
    # chunk running past EOF
    "middle chunk past EOF": lambda d, r: (patch(d, "I", chunk(d, 2).offset + 4, 10**8), chunk(d, 2).offset),
    "last chunk past EOF (no index)": lambda d, r: (
        (lambda s: patch(s, "I", chunk(s, 4).offset + 4, chunk(s, 4).csize + 1))(
            encode_file(split_chunks(r, CAP), CAP, with_index=False)
        ),
        chunk(d, 4).offset,
    ),
    "huge sizes from a tiny chunk": lambda d, r: (
        encode_file(
            [r[:1]] * 10,
            0xFFFFFFFF,
            with_index=False,
            chunk_header_override={i: {"count": 165_191_049, "usize": 165_191_049 * 26} for i in range(10)},
        ),
        64,
    ),
    # LZ4 payloads
    "payload of 0xff bytes": lambda d, r: (
        d[: chunk(d, 1).payload_offset] + b"\xff" * chunk(d, 1).csize + d[chunk(d, 1).end :],
        chunk(d, 1).payload_offset,
    ),
    "payload of zero bytes": lambda d, r: (
        d[: chunk(d, 3).payload_offset] + b"\x00" * chunk(d, 3).csize + d[chunk(d, 3).end :],
        chunk(d, 3).payload_offset,
    ),
    "payload decompresses short (index)": _lz4_to_other_size(-1, True),
    "payload decompresses short (no index)": _lz4_to_other_size(-1, False),
    "payload decompresses long (index)": _lz4_to_other_size(3, True),
    "payload decompresses long (no index)": _lz4_to_other_size(3, False),
    # timestamps
    "decreasing within a chunk": _decreasing_within_chunk,
    "decreasing across chunks (no index)": _decreasing_across_chunks_no_index,
    "decreasing across chunks (indexed)": _decreasing_across_chunks_indexed,
    # index disagreeing with the chunks
    "index count": lambda d, r: (patch(d, "I", index_entry(d, 2) + 24, CAP - 1), None),
    "index first ts": lambda d, r: (patch(d, "Q", index_entry(d, 2) + 8, chunk(d, 2).first + 1), None),
    "index last ts": lambda d, r: (patch(d, "Q", index_entry(d, 2) + 16, chunk(d, 2).last - 1), None),
    "index offset +1": lambda d, r: (patch(d, "Q", index_entry(d, 2), chunk(d, 2).offset + 1), None),
    "index offset of next chunk": lambda d, r: (patch(d, "Q", index_entry(d, 2), chunk(d, 3).offset), None),
    "index entry 0 offset": lambda d, r: (patch(d, "Q", index_entry(d, 0), 65), None),
    "index last entry count": lambda d, r: (patch(d, "I", index_entry(d, 4) + 24, 43), None),
    "index tail count": lambda d, r: (patch(d, "I", len(d) - 16, 4), None),
    "index tail start": lambda d, r: (patch(d, "Q", len(d) - 8, parse_file(d).index_start - 32), None),
    "index tail magic": lambda d, r: (d[:-12] + b"QIDY" + d[-8:], None),
    "index missing a chunk": lambda d, r: (
        (
            lambda pf: (
                d[: pf.index_start]
                + d[pf.index_start : pf.index_start + 4 * 32]
                + struct.pack("<I4sQ", 4, b"QIDX", pf.index_start)
            )
        )(parse_file(d)),
        None,
    ),
    "HAS_INDEX cleared with index present": lambda d, r: (patch(d, "I", 52, 0), parse_file(d).index_start),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def corrupt(request, base, tmp_path: Path) -> tuple[Path, int | None, str]:
    data, recs = base
    out, offset = CASES[request.param](data, recs)
    assert out != data
    path = tmp_path / "bad.qrsdp"
    path.write_bytes(out)
    return path, offset, request.param


def test_corrupt_input_raises_eventlogerror(corrupt) -> None:
    path, offset, _name = corrupt
    size = path.stat().st_size
    seen = []
    for op in (
        lambda: EventLogReader(path).read_all(),
        lambda: list(EventLogReader(path).iter_chunks()),
        lambda: EventLogReader(path).read_all(threads=2),
        lambda: read_records(path),
        lambda: EventLogReader(path).to_arrow(),
    ):
        with pytest.raises(EventLogError) as ei:
            op()
        assert_names_file_and_offset(ei.value, path, size)
        seen.append(ei.value.offset)
    if offset is not None:
        assert seen[0] == offset and seen[1] == offset


def test_corrupt_input_fails_verify_and_log_info(corrupt) -> None:
    path, _offset, _name = corrupt
    with pytest.raises(EventLogError) as ei:
        EventLogReader(path).read_all()
    reason = ei.value.reason
    res = verify(path)
    assert not res.ok and res.problems
    assert any(str(path) in p for p in res.problems)
    out = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["log-info", str(path), "--verify"])
    assert out.exit_code == 1, out.output
    assert flat(reason) in flat(out.output)
    assert flat(str(path)) in flat(out.output)


def test_range_read_does_not_trust_a_tampered_index(base, tmp_path: Path) -> None:
    """An index entry whose first_ts_ns is moved later would make the binary search skip the
    chunk's first records; the reader must notice instead of returning too few records."""
    data, recs = base
    k = 2
    second = int(recs["ts_ns"][k * CAP + 1])
    path = tmp_path / "ix.qrsdp"
    path.write_bytes(patch(data, "Q", index_entry(data, k) + 8, second))
    with pytest.raises(EventLogError):
        EventLogReader(path).read_range(chunk(data, k).first, second)
    with pytest.raises(EventLogError):
        EventLogReader(path).read_range(0, 2**63)


def test_minor_version_is_compatible(base, tmp_path: Path) -> None:
    data, recs = base
    path = tmp_path / "minor.qrsdp"
    path.write_bytes(patch(data, "H", 10, 7))
    assert same_records(EventLogReader(path).read_all(), recs)


def test_verify_record_level_problems(tmp_path: Path) -> None:
    recs = random_session(50, seed=23)  # a valid book stream (partial fills and cancels included)
    good = write_log(tmp_path / "good.qrsdp", recs, 16)
    assert verify(good).ok and verify(good).records == 50

    problems = {
        "zero qty": ("qty", 7, 0),
        "unknown type": ("type", 9, 6),
        "side inconsistent with type": ("side", 11, None),
    }
    for name, (field, i, value) in problems.items():
        bad = recs.copy()
        bad[field][i] = (1 - bad["side"][i]) if value is None else value
        path = write_log(tmp_path / f"{name.replace(' ', '_')}.qrsdp", bad, 16)
        res = verify(path)
        assert not res.ok, name
        out = CliRunner().invoke(app, ["log-info", str(path), "--verify"])
        assert out.exit_code == 1, name
        assert "FAILED" in out.output

    bad = recs.copy()
    adds = np.flatnonzero(bad["type"] <= 1)
    bad["order_id"][adds[3]] = bad["order_id"][adds[2]]
    assert not verify(write_log(tmp_path / "ids.qrsdp", bad, 16)).ok

    stripped = strip_index(write_log(tmp_path / "noidx.qrsdp", recs, 16))
    res = verify(stripped)
    assert not res.ok and any("index" in p.lower() for p in res.problems)
    assert verify(stripped, require_index=False).ok
    out = CliRunner().invoke(app, ["log-info", str(stripped), "--verify", "--json"])
    assert out.exit_code == 1


def test_log_info_missing_file(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["log-info", str(tmp_path / "nope.qrsdp")])
    assert out.exit_code == 1
    assert "nope.qrsdp" in flat(out.output)


# --- garbage ---------------------------------------------------------------------
def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.qrsdp"
    path.write_bytes(b"")
    with pytest.raises(EventLogError) as ei:
        EventLogReader(path)
    assert_names_file_and_offset(ei.value, path, 0)
    assert not verify(path).ok
    assert CliRunner().invoke(app, ["log-info", str(path), "--verify"]).exit_code == 1


def test_random_bytes_file(tmp_path: Path) -> None:
    path = tmp_path / "rand.qrsdp"
    path.write_bytes(np.random.default_rng(24).bytes(5000))
    with pytest.raises(EventLogError) as ei:
        EventLogReader(path).read_all()
    assert_names_file_and_offset(ei.value, path, 5000)
    res = CliRunner().invoke(app, ["log-info", str(path), "--verify"])
    assert res.exit_code == 1
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback


def _only_eventlogerror(path: Path) -> None:
    """Every read path either succeeds or raises EventLogError: nothing else escapes."""
    ops = (
        lambda r: r.read_all(),
        lambda r: list(r.iter_chunks()),
        lambda r: r.read_range(0, 2**63),
        lambda r: r.read_chunk(0) if r.chunk_count else None,
        lambda r: r.read_chunk(-1) if r.chunk_count else None,
        lambda r: r.to_polars(),
    )
    for op in ops:
        with contextlib.suppress(EventLogError):
            op(EventLogReader(path))
    res = verify(path)  # never raises
    assert isinstance(res.ok, bool)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(blob=st.binary(max_size=400), with_magic=st.booleans())
def test_fuzz_random_bytes_raise_only_eventlogerror(blob: bytes, with_magic: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qrsdp-fz-"))
    try:
        path = tmp / "f.qrsdp"
        if with_magic:  # a plausible header start, then garbage (may even be a valid empty log)
            path.write_bytes(b"QRSDPLOG\x01\x00\x00\x00\x1a\x00\x00\x00" + blob)
        else:
            assume(not blob.startswith(b"QRSDPLOG"))
            path.write_bytes(blob)
            with pytest.raises(EventLogError):
                EventLogReader(path).read_all()
        _only_eventlogerror(path)
    finally:
        shutil.rmtree(tmp)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_file_raises_only_eventlogerror(base, data) -> None:
    orig, _recs = base
    tmp = Path(tempfile.mkdtemp(prefix="qrsdp-fz-"))
    try:
        path = tmp / "m.qrsdp"
        path.write_bytes(mutate(orig, data.draw))
        _only_eventlogerror(path)
    finally:
        shutil.rmtree(tmp)


# --- the writer refuses bad input --------------------------------------------------
def test_writer_rejects_decreasing_timestamps(tmp_path: Path) -> None:
    recs = make_records(40, seed=25, dup_prob=0.0)
    path = tmp_path / "w.qrsdp"
    sink = BinaryFileSink(path, LogHeader(chunk_capacity=8), fsync=False)
    sink.append(recs[:20])
    with pytest.raises(ValueError):
        sink.append(recs[10:15])  # starts before the last accepted timestamp
    inside = recs[20:30].copy()
    inside["ts_ns"][5] = inside["ts_ns"][4] - 1
    with pytest.raises(ValueError):
        sink.append(inside)  # decreases inside the batch
    sink.append(recs[20:])  # the sink still works, nothing of the rejected batches was written
    sink.close()
    assert same_records(EventLogReader(path).read_all(), recs)
    assert verify(path).container_ok  # (the records are random field values, not a book)


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda r: r.astype(RECORD_DTYPE.newbyteorder(">")),
        lambda r: r.astype(np.dtype(RECORD_DTYPE.descr, align=True)),
        lambda r: np.frombuffer(r.tobytes(), dtype=np.uint8),
        lambda r: r["ts_ns"].copy(),
        lambda r: np.zeros(
            len(r),
            dtype=[
                ("ts_ns", "<u8"),
                ("type", "u1"),
                ("side", "u1"),
                ("price_ticks", "<i4"),
                ("qty", "<u4"),
                ("order_id", "<i8"),
            ],
        ),
    ],
    ids=["big-endian", "aligned", "raw-bytes", "ts-only", "signed-order-id"],
)
def test_writer_rejects_wrong_dtype(tmp_path: Path, make_bad) -> None:
    recs = make_records(10, seed=26)
    path = tmp_path / "d.qrsdp"
    sink = BinaryFileSink(path, LogHeader(chunk_capacity=4), fsync=False)
    with pytest.raises((TypeError, ValueError)):
        sink.append(make_bad(recs))
    sink.append(recs)
    sink.close()
    assert same_records(EventLogReader(path).read_all(), recs)


def test_error_type_is_documented_valueerror() -> None:
    err = TruncatedLogError("/x/y.qrsdp", 123, "cut short")
    assert isinstance(err, EventLogError) and isinstance(err, ValueError)
    assert (err.path, err.offset, err.reason) == ("/x/y.qrsdp", 123, "cut short")
    assert "/x/y.qrsdp" in str(err) and "123" in str(err) and "cut short" in str(err)
    assert os.fspath(Path(err.path)) == "/x/y.qrsdp"
