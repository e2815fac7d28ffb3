"""``qrsdp itch-export``: a run's sessions merged into one length-prefixed ITCH 5.0 file, checked with an
independent decoder written from the specification's offsets."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.engine.runner import RunSpec, Security, run
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.itch.export import read_itch_file


def decode(msg: bytes) -> dict:
    """Spec-offset decoder (independent of qrsdp_sim.itch)."""
    t = msg[:1]
    locate, tracking = struct.unpack_from(">HH", msg, 1)
    out = {
        "type": t,
        "locate": locate,
        "tracking": tracking,
        "ts": int.from_bytes(msg[5:11], "big"),
        "len": len(msg),
    }
    if t == b"S":
        out["code"] = msg[11:12]
    elif t == b"R":
        out["stock"] = msg[11:19].decode().strip()
        out["round_lot"] = struct.unpack_from(">I", msg, 21)[0]
    elif t == b"A":
        ref, side, shares, stock, price = struct.unpack_from(">QcI8sI", msg, 11)
        out.update(ref=ref, side=side, shares=shares, stock=stock.decode().strip(), price=price)
    elif t == b"D":
        out["ref"] = struct.unpack_from(">Q", msg, 11)[0]
    elif t == b"E":
        out["ref"], out["shares"], out["match"] = struct.unpack_from(">QIQ", msg, 11)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(
        RunSpec(base_seed=3, days=2, session_seconds=120),
        [Security("MSFT", 15_000), Security("AAPL", 10_000)],
        out,
    )
    return out


def test_export_of_a_run_day(run_dir, tmp_path) -> None:
    target = tmp_path / "day.itch"
    result = CliRunner().invoke(app, ["itch-export", str(run_dir), "--date", "2026-01-02", "-o", str(target)])
    assert result.exit_code == 0, result.output
    msgs = [decode(x) for x in read_itch_file(target)]
    src = {s: read_records(run_dir / s / "2026-01-02.qrsdp") for s in ("AAPL", "MSFT")}
    n_events = sum(len(r) for r in src.values())
    assert len(msgs) == 2 + 2 + 1 + n_events + 3  # O, S, two R, Q ... M, E, C
    assert [(m["type"], m.get("code"), m.get("stock")) for m in msgs[:5]] == [
        (b"S", b"O", None),
        (b"S", b"S", None),
        (b"R", None, "AAPL"),
        (b"R", None, "MSFT"),
        (b"S", b"Q", None),
    ]
    assert msgs[5]["type"] == b"A"
    assert msgs[2]["locate"] == 1 and msgs[3]["locate"] == 2 and msgs[2]["round_lot"] == 100
    assert [m["code"] for m in msgs[-3:]] == [b"M", b"E", b"C"]
    ts = np.array([m["ts"] for m in msgs], dtype=np.uint64)
    assert (np.diff(ts.astype(np.int64)) >= 0).all(), "merged by timestamp"
    assert all(m["tracking"] == 0 for m in msgs)
    orders = msgs[5:-3]
    for symbol, locate in (("AAPL", 1), ("MSFT", 2)):
        recs = src[symbol]
        mine = [m for m in orders if m["locate"] == locate]
        assert len(mine) == len(recs)
        types = np.array([{b"A": 0, b"D": 2, b"E": 4}[m["type"]] for m in mine])
        np.testing.assert_array_equal(types, recs["type"] // 2 * 2)
        np.testing.assert_array_equal([m["ts"] for m in mine], recs["ts_ns"])
        np.testing.assert_array_equal([m["ref"] for m in mine], (recs["order_id"] - 1) * 2 + locate)
        adds = [m for m in mine if m["type"] == b"A"]
        add_recs = recs[recs["type"] <= 1]
        assert [m["side"] for m in adds] == [b"BS"[t : t + 1] for t in add_recs["type"]]
        np.testing.assert_array_equal(
            [m["price"] for m in adds], add_recs["price_ticks"].astype(np.int64) * 100
        )
        assert all(m["stock"] == symbol for m in adds)
    # match numbers: the message's 1-based position in the file (= its feed sequence number)
    for pos, m in enumerate(msgs, start=1):
        if m["type"] == b"E":
            assert m["match"] == pos
    assert "2026-01-02 AAPL,MSFT" in result.output


def test_export_single_session_and_errors(run_dir, tmp_path) -> None:
    runner = CliRunner()
    one = tmp_path / "one.itch"
    res = runner.invoke(
        app,
        [
            "itch-export",
            str(run_dir / "AAPL" / "2026-01-05.qrsdp"),
            "-o",
            str(one),
            "--symbols",
            "AAPL,MSFT,ZZZ",
        ],
    )
    assert res.exit_code == 0, res.output
    msgs = [decode(x) for x in read_itch_file(one)]
    assert [m["stock"] for m in msgs if m["type"] == b"R"] == ["AAPL", "MSFT", "ZZZ"]
    assert {m["locate"] for m in msgs if m["type"] in (b"A", b"D", b"E")} == {1}
    res = runner.invoke(app, ["itch-export", str(run_dir), "-o", str(tmp_path / "x.itch")])
    assert res.exit_code == 1 and "several dates" in res.output
    res = runner.invoke(
        app,
        [
            "itch-export",
            str(run_dir),
            "--date",
            "2026-01-02",
            "--symbols",
            "AAPL",
            "-o",
            str(tmp_path / "x.itch"),
        ],
    )
    assert res.exit_code == 1 and "not in the directory" in res.output
    assert not (tmp_path / "x.itch").exists()
    assert dt.date(2026, 1, 5).weekday() == 0
