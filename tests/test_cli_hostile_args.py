"""``qrsdp republish``, ``qrsdp parquet-consumer`` and ``qrsdp log-info`` treat every argument and file as
hostile (issue 12): each bad one gets a one-line error that names the flag or the file and says what is
wrong -- exit 2, no traceback -- and ``republish`` publishes nothing when any of its files is refused.
No services needed: everything here is refused before a broker would be contacted (except the one
unreachable-broker case, which needs nobody listening)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from book_streams import random_session
from qrsdp_log_testutil import write_log
from typer.testing import CliRunner

from qrsdp_sim import stack
from qrsdp_sim.cli import app

RUNNER = CliRunner(env={"COLUMNS": "120"})


def _invoke(*args: str):
    res = RUNNER.invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception  # no traceback
    return res


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    assert not any("Traceback" in ln for ln in lines), res.output
    return errors[0]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with one good session file: OUT/AAA/2026-01-05.qrsdp."""
    out = tmp_path / "out"
    write_log(out / "AAA" / "2026-01-05.qrsdp", random_session(200, seed=1), 64)
    return out


def _republish(*args: str):
    return _invoke("republish", *args, "--kafka-brokers", "127.0.0.1:1")


def test_republish_refuses_bad_files_and_arguments(run_dir: Path, tmp_path: Path) -> None:
    good = str(run_dir / "AAA" / "2026-01-05.qrsdp")
    (tmp_path / "out" / "BBB" / "2026-01-05.qrsdp").mkdir(parents=True)
    garbage = tmp_path / "out" / "CCC" / "2026-01-05.qrsdp"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a session at all")
    empty = write_log(tmp_path / "out" / "DDD" / "2026-01-05.qrsdp", random_session(0, seed=2), 64)
    impossible = random_session(50, seed=3)
    impossible["type"][17], impossible["side"][17] = 9, 0
    bad_record = write_log(tmp_path / "out" / "EEE" / "2026-01-05.qrsdp", impossible, 64)
    lower = write_log(tmp_path / "out" / "aaa" / "2026-01-05.qrsdp", random_session(20, seed=4), 64)
    undated = write_log(tmp_path / "misc" / "session.qrsdp", random_session(20, seed=5), 64)

    cases = [  # (arguments, what the error must mention)
        ((str(tmp_path / "out" / "ZZZ" / "2026-01-05.qrsdp"),), "no such file"),
        ((str(tmp_path / "out" / "BBB" / "2026-01-05.qrsdp"),), "a directory"),
        ((str(garbage),), "log-info"),
        ((str(empty),), "no events"),
        ((str(bad_record),), "record 17 cannot be published"),
        ((str(lower),), "invalid symbol 'aaa'"),
        ((str(undated),), "pass --symbol and --date"),
        ((str(undated), "--symbol", "AAA", "--date", "2026-13-45"), "--date: invalid date '2026-13-45'"),
        ((str(undated), "--symbol", "AAA", "--date", "1899-01-02"), "--date: invalid date '1899-01-02'"),
        ((str(undated), "--symbol", "bad key!", "--date", "2026-01-05"), "--symbol: invalid symbol"),
        ((good, str(undated), "--symbol", "AAA", "--date", "2026-01-05"), "--symbol and --date name one session"),
        ((good, good), "list each session once"),
        ((good, "--kafka-topic", "bad topic!"), "--kafka-topic 'bad topic!'"),
    ]
    for args, mention in cases:
        res = _republish(*args)
        assert res.exit_code == 2, (args, res.output)
        line = _one_error_line(res)
        assert mention in line, (args, line)
    # the broker flag itself (validated before anything else touches the network)
    for brokers in ("", "nohost", "host:99999", "host:port", "a:1,,b:2"):
        res = _invoke("republish", good, "--kafka-brokers", brokers)
        assert res.exit_code == 2 and "--kafka-brokers" in _one_error_line(res), (brokers, res.output)


@pytest.mark.parametrize("manifest, mention", [
    (b"{not json", "not a run manifest"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"securities": "AAA"}).encode(), "'securities' is not a list"),
    (json.dumps({"symbol": "AAA", "sessions": [{"date": "2026-01-05", "close_ticks": "10000"}]}).encode(),
     "close_ticks '10000'"),
    (json.dumps({"symbol": "AAA", "market_open": "25:99", "sessions": []}).encode(), "invalid market open"),
])
def test_republish_refuses_a_manifest_that_is_not_one(run_dir: Path, manifest: bytes, mention: str) -> None:
    (run_dir / "manifest.json").write_bytes(manifest)
    res = _republish(str(run_dir / "AAA" / "2026-01-05.qrsdp"))
    assert res.exit_code == 2
    line = _one_error_line(res)
    assert "manifest.json" in line and mention in line, line


def test_republish_to_an_unreachable_broker_is_one_line_exit_1(run_dir: Path) -> None:
    port = stack.free_port()  # nothing listens there
    res = _invoke("republish", str(run_dir / "AAA" / "2026-01-05.qrsdp"), "--kafka-brokers", f"127.0.0.1:{port}")
    assert res.exit_code == 1
    assert "unreachable" in _one_error_line(res)


@pytest.mark.parametrize("args, mention", [
    (("--batch-records", "0"), "--batch-records"),
    (("--batch-seconds", "nan"), "--batch-seconds"),
    (("--batch-seconds", "-1"), "--batch-seconds"),
    (("--batch-seconds", "inf"), "--batch-seconds"),
    (("--idle-exit", "-5"), "--idle-exit"),
    (("--consumer-group", " "), "--consumer-group"),
    (("--lake-uri", "ftp://somewhere/lake"), "--lake-uri"),
    (("--s3-endpoint", "not a url"), "--s3-endpoint"),
    (("--kafka-brokers", "localhost"), "--kafka-brokers"),
    (("--kafka-topic", "a b"), "--kafka-topic"),
])
def test_parquet_consumer_refuses_bad_flags(args, mention) -> None:
    res = _invoke("parquet-consumer", *args)
    assert res.exit_code == 2, res.output
    assert mention in _one_error_line(res)


def test_log_info_names_a_directory_and_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "dir.qrsdp").mkdir()
    junk = tmp_path / "junk.qrsdp"
    junk.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    res = _invoke("log-info", str(tmp_path / "dir.qrsdp"), str(junk), "--verify")
    assert res.exit_code == 1
    assert "dir.qrsdp: a directory" in res.output and "junk.qrsdp" in res.output
    assert "container FAILED" in res.output
