"""Byte-level layout of ``.qrsdp`` files written by BinaryFileSink (format 1.0).

Offsets and struct formats below come from the spec tables, never from
``qrsdp_sim.eventlog.format``; a drift in the package's layout must fail here.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import lz4.block
import numpy as np
import pytest
from book_streams import random_session
from qrsdp_log_testutil import (
    SPEC_CHUNK_HEADER,
    SPEC_INDEX_ENTRY,
    SPEC_INDEX_TAIL,
    SPEC_RECORD,
    encode_file,
    make_records,
    parse_file,
    same_records,
    split_chunks,
    write_log,
)
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.eventlog import BinaryFileSink, LogHeader
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import RECORD_DTYPE, EventType, Side

REPO = Path(__file__).resolve().parents[1]

SESSION = {
    "seed": 0x1122334455667788,
    "p0_ticks": -123_456,  # signed on purpose
    "tick_size": 100,
    "session_seconds": 23_400,
    "levels_per_side": 7,
    "initial_spread_ticks": 3,
    "initial_depth": 9,
}
CAP = 50
N = 237  # 4 full chunks + one of 37


def u(fmt: str, data: bytes, off: int) -> int:
    return struct.unpack_from("<" + fmt, data, off)[0]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, np.ndarray, bytes]:
    recs = make_records(N, seed=1)
    path = write_log(tmp_path / "s.qrsdp", recs, CAP, splits=[3, 60, 61, 200], **SESSION)
    return path, recs, path.read_bytes()


def test_record_dtype_matches_spec_table() -> None:
    assert RECORD_DTYPE.itemsize == 26
    expected = {
        "ts_ns": (0, "<u8"),
        "type": (8, "u1"),
        "side": (9, "u1"),
        "price_ticks": (10, "<i4"),
        "qty": (14, "<u4"),
        "order_id": (18, "<u8"),
    }
    assert list(RECORD_DTYPE.names) == list(expected)
    for name, (off, code) in expected.items():
        dt, field_off = RECORD_DTYPE.fields[name][:2]
        assert field_off == off, name
        assert dt == np.dtype(code), name
    assert [e.value for e in EventType] == [0, 1, 2, 3, 4, 5]
    assert [e.name for e in EventType] == [
        "ADD_BID", "ADD_ASK", "CANCEL_BID", "CANCEL_ASK", "EXECUTE_BUY", "EXECUTE_SELL",
    ]
    assert (Side.BID, Side.ASK, Side.NA) == (0, 1, 2)


def test_file_header_fields_at_spec_offsets(written) -> None:
    _path, _recs, data = written
    assert data[0:8] == b"QRSDPLOG"
    assert u("H", data, 8) == 1  # version_major
    assert u("H", data, 10) == 0  # version_minor
    assert u("I", data, 12) == 26  # record_size
    assert u("Q", data, 16) == SESSION["seed"]
    assert u("i", data, 24) == SESSION["p0_ticks"]
    assert u("I", data, 28) == SESSION["tick_size"]
    assert u("I", data, 32) == SESSION["session_seconds"]
    assert u("I", data, 36) == SESSION["levels_per_side"]
    assert u("I", data, 40) == SESSION["initial_spread_ticks"]
    assert u("I", data, 44) == SESSION["initial_depth"]
    assert u("I", data, 48) == CAP  # chunk_capacity
    assert u("I", data, 52) == 1  # header_flags: HAS_INDEX after close
    assert u("Q", data, 56) == 0  # reserved


def test_default_chunk_capacity_is_4096(tmp_path: Path) -> None:
    path = tmp_path / "d.qrsdp"
    with BinaryFileSink(path, LogHeader(), fsync=False) as sink:
        sink.append(make_records(5000))
    data = path.read_bytes()
    assert u("I", data, 48) == 4096
    assert u("I", data, 64 + 8) == 4096  # first chunk is full
    assert u("I", data, len(data) - 16) == 2  # chunk_count in the tail


def test_chunks_hold_lz4_blocks_of_packed_records(written) -> None:
    _path, recs, data = written
    off = 64
    expected = split_chunks(recs, CAP)
    for k, chunk in enumerate(expected):
        usize, csize, count, flags, first, last = SPEC_CHUNK_HEADER.unpack_from(data, off)
        assert count == len(chunk) == min(CAP, N - k * CAP)
        assert usize == count * 26
        assert flags == 0
        assert first == int(chunk["ts_ns"][0]) and last == int(chunk["ts_ns"][-1])
        payload = data[off + 32 : off + 32 + csize]
        assert len(payload) == csize
        assert payload[:4] != b"\x04\x22\x4d\x18"  # not an LZ4 *frame*
        raw = lz4.block.decompress(payload, uncompressed_size=usize)
        assert len(raw) == usize
        # Decode each packed record with the spec's struct, independently of numpy.
        for i in (0, count // 2, count - 1):
            fields = SPEC_RECORD.unpack_from(raw, 26 * i)
            rec = chunk[i]
            assert fields == (
                int(rec["ts_ns"]),
                int(rec["type"]),
                int(rec["side"]),
                int(rec["price_ticks"]),
                int(rec["qty"]),
                int(rec["order_id"]),
            )
        assert raw == chunk.tobytes()
        off += 32 + csize
    # right after the last chunk: the index
    count, _magic, index_start = SPEC_INDEX_TAIL.unpack_from(data, len(data) - 16)
    assert index_start == off


def test_index_entries_and_tail(written) -> None:
    _path, _recs, data = written
    count, magic, index_start = SPEC_INDEX_TAIL.unpack_from(data, len(data) - 16)
    assert data[-12:-8] == b"QIDX" and magic == b"QIDX"
    n_chunks = -(-N // CAP)
    assert count == n_chunks
    assert len(data) == index_start + 32 * n_chunks + 16
    off = 64
    for k in range(n_chunks):
        _usize, csize, rcount, _flags, first, last = SPEC_CHUNK_HEADER.unpack_from(data, off)
        entry = SPEC_INDEX_ENTRY.unpack_from(data, index_start + 32 * k)
        assert entry == (off, first, last, rcount, 0)
        off += 32 + csize
    assert off == index_start


def test_writer_output_is_byte_identical_to_spec_encoder(written) -> None:
    _path, recs, data = written
    expected = encode_file(split_chunks(recs, CAP), CAP, header_fields=SESSION)
    assert data == expected


def test_empty_session_is_header_plus_empty_index(tmp_path: Path) -> None:
    path = write_log(tmp_path / "e.qrsdp", make_records(0), 16)
    data = path.read_bytes()
    assert len(data) == 64 + 16
    assert u("I", data, 52) == 1
    assert SPEC_INDEX_TAIL.unpack_from(data, 64) == (0, b"QIDX", 64)
    r = EventLogReader(path)
    assert r.chunk_count == 0 and len(r.read_all()) == 0 and list(r.iter_chunks()) == []
    assert len(r.read_range(0, 2**63)) == 0


def test_flush_writes_short_chunk(tmp_path: Path) -> None:
    recs = make_records(25, seed=3)
    path = tmp_path / "f.qrsdp"
    sink = BinaryFileSink(path, LogHeader(chunk_capacity=10), fsync=False)
    sink.append(recs[:7])
    sink.flush()
    sink.flush()  # nothing pending: no empty chunk
    sink.append(recs[7:])
    sink.close()
    counts = [c.count for c in parse_file(path.read_bytes()).chunks]
    assert counts == [7, 10, 8]
    assert same_records(EventLogReader(path).read_all(), recs)


def test_has_index_only_after_close_and_atomic_publish(tmp_path: Path) -> None:
    recs = make_records(130, seed=4)
    final = tmp_path / "sub" / "sess.qrsdp"
    partial = tmp_path / "sub" / ".sess.qrsdp.partial"
    # Caller-supplied header_flags must be ignored: HAS_INDEX is the writer's to set.
    sink = BinaryFileSink(final, LogHeader(chunk_capacity=40, header_flags=1), fsync=True)
    sink.append(recs[:100])
    sink.flush()
    assert partial.exists()
    assert not final.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == [partial.name]
    data = partial.read_bytes()
    assert u("I", data, 52) == 0  # no HAS_INDEX while open
    assert b"QIDX" not in data[-16:]
    # The partial file is readable by a sequential scan of its complete chunks.
    r = EventLogReader(partial)
    assert r.index is None
    assert same_records(np.concatenate(list(r.iter_chunks())), recs[:100])
    sink.append(recs[100:])
    sink.close()
    assert final.exists() and not partial.exists()
    data = final.read_bytes()
    assert u("I", data, 52) == 1
    assert data[-12:-8] == b"QIDX"
    assert same_records(EventLogReader(final).read_all(), recs)
    sink.close()  # idempotent
    with pytest.raises(ValueError):
        sink.append(recs[:1])


def test_abort_and_failed_context_leave_nothing(tmp_path: Path) -> None:
    recs = make_records(20, seed=5)
    path = tmp_path / "a.qrsdp"
    sink = BinaryFileSink(path, LogHeader(chunk_capacity=8), fsync=False)
    sink.append(recs)
    sink.abort()
    assert list(tmp_path.iterdir()) == []

    class Boom(Exception):
        pass

    with pytest.raises(Boom), BinaryFileSink(path, LogHeader(chunk_capacity=8), fsync=False) as s2:
        s2.append(recs)
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_abort_keeps_previously_published_file(tmp_path: Path) -> None:
    path = tmp_path / "p.qrsdp"
    old = make_records(10, seed=6)
    write_log(path, old, 4)
    before = path.read_bytes()
    sink = BinaryFileSink(path, LogHeader(chunk_capacity=4), fsync=False)
    sink.append(make_records(9, seed=7))
    sink.flush()
    assert path.read_bytes() == before  # the published session is untouched while writing
    sink.abort()
    assert path.read_bytes() == before


def test_chunk_capacity_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BinaryFileSink(tmp_path / "z.qrsdp", LogHeader(chunk_capacity=0), fsync=False)


# --- qrsdp log-info ------------------------------------------------------------
def _expected_summary(recs: np.ndarray, path: Path) -> dict:
    counts = {name: int((recs["type"] == code).sum()) for code, name in enumerate(
        ["ADD_BID", "ADD_ASK", "CANCEL_BID", "CANCEL_ASK", "EXECUTE_BUY", "EXECUTE_SELL"])}
    return {
        "records": len(recs),
        "first_ts_ns": int(recs["ts_ns"].min()),
        "last_ts_ns": int(recs["ts_ns"].max()),
        "counts_by_type": counts,
        "raw_bytes": 26 * len(recs),
        "file_bytes": os.path.getsize(path),
    }


def test_log_info_json(written) -> None:
    path, recs, _data = written
    res = CliRunner().invoke(app, ["log-info", str(path), "--json", "--verify"])
    assert res.exit_code == 1, res.output  # the stream checks fail (below)
    d = json.loads(next(line for line in res.output.splitlines() if line.startswith("{")))
    exp = _expected_summary(recs, path)
    for key, value in exp.items():
        assert d[key] == value, key
    assert d["chunk_count"] == -(-N // CAP)
    assert d["has_index"] is True
    assert d["compression_ratio"] == pytest.approx(exp["raw_bytes"] / exp["file_bytes"], abs=1e-3)
    for key in ("seed", "p0_ticks", "levels_per_side", "initial_spread_ticks", "initial_depth"):
        assert d["header"][key] == SESSION[key]
    assert d["header"]["chunk_capacity"] == CAP
    assert (d["header"]["version_major"], d["header"]["version_minor"], d["header"]["record_size"]) == (1, 0, 26)
    # The container is fine; the records are random field values, not a book: the stream checks say so.
    v = d["verify"]
    assert v["container"] == {"ok": True, "checks": ["header", "index_present", "chunks", "payloads"],
                              "problems": []}
    assert v["ok"] is False and v["stream"]["ok"] is False
    assert v["stream"]["first_violation"]["check"] in v["stream"]["checks"]


def test_log_info_table_several_files(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a.qrsdp", random_session(30, seed=8), 8)
    b = write_log(tmp_path / "b.qrsdp", random_session(5, seed=9), 8)
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["log-info", str(a), str(b), "--verify"])
    assert res.exit_code == 0, res.output
    flat = "".join(res.output.split())
    assert flat.count("containerOK") == 2 and flat.count("streamOK") == 2
    assert "a.qrsdp" in flat and "b.qrsdp" in flat
    assert "30records" in flat and "5records" in flat


def test_log_info_via_uv_run(written) -> None:
    path, recs, _data = written
    uv = os.environ.get("UV") or shutil.which("uv")  # uv exports UV to the processes it runs
    if uv is None:
        pytest.skip("uv executable not found")
    proc = subprocess.run(
        [uv, "run", "--no-sync", "qrsdp", "log-info", str(path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    assert d["records"] == len(recs)
    assert d["counts_by_type"] == _expected_summary(recs, path)["counts_by_type"]
