"""``qrsdp run`` / ``qrsdp cli``: argument validation before any work, outputs, perf doc."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.engine import HLRCurves, SessionConfig, simulate_to_file
from qrsdp_sim.eventlog.reader import read_records

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "garch"], "unknown model 'garch'"),
        (["--depth", "-1"], "--depth must be >= 1"),
        (["--levels", "0"], "--levels must be in [1, 64]"),
        (["--start-date", "2026-02-30"], "invalid date '2026-02-30'"),
        (["--start-date", "tomorrow"], "invalid date"),
        (["--securities", "AAPL:100,msft:200"], "invalid symbol 'msft'"),
        (["--securities", "ABCDEFGHI:100"], "invalid symbol 'ABCDEFGHI'"),
        (["--securities", "AAPL"], "expected SYMBOL:P0_TICKS"),
        (["--symbol", "A.B"], "invalid symbol 'A.B'"),
        (["--days", "-1"], "--days must be >= 1, or 0 for a live run"),
        (["--days", "3", "--start-date", "9999-12-30"], "the calendar ends (9999-12-31) before 3 trading date(s)"),
        (["--days", "0", "--realtime", "--workers", "1", "--securities", "A:100,B:200"],
         "--workers must be >= the number of securities (2)"),
        (["--days", "0", "--workers", "0"], "--workers must be >= 1"),
        (["--kafka-brokers", "localhost:99999"], "--kafka-brokers 'localhost:99999'"),
        (["--kafka-brokers", "localhost"], "'localhost' is not HOST:PORT"),
        (["--kafka-brokers", "a:1,,b:2"], "expected HOST:PORT[,HOST:PORT...]"),
        (["--kafka-brokers", "a b:9092"], "'a b:9092' is not HOST:PORT"),
        (["--kafka-brokers", "h:1", "--kafka-topic", "bad topic"], "--kafka-topic 'bad topic'"),
        (["--kafka-brokers", "h:1", "--start-date", "1999-12-31"], "the years the Kafka consumers accept"),
        (["--kafka-brokers", "h:1", "--days", "0", "--start-date", "2101-01-03"], "from 2101-01-03"),
        (["--seconds", "0"], "--seconds must be >= 1"),
        (["--market-open", "9h30"], "invalid market open"),
        (["--realtime", "--speed", "0"], "--speed must be > 0"),
        (["--hlr-curves", "x.json"], "--hlr-curves needs --model hlr"),
        (["--model", "hlr", "--hlr-curves", "/nonexistent/c.json"], "cannot read"),
        (["--model", "hlr", "--levels", "3", "--hlr-curves", "{curves5}"], "define 5 levels per side"),
        (["--base-L", "-2"], "--base-L must be >= 0"),
        (["--p0", "2"], "no room for the opening book"),
        (["--market-open", "20:00"], "past midnight"),
    ],
)
def test_invalid_arguments_stop_with_one_line_before_any_work(tmp_path, args, message):
    curves = tmp_path / "c5.json"
    HLRCurves.default(5).save(curves)
    args = [a.replace("{curves5}", str(curves)) for a in args]
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--output", str(out), *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing simulated


def test_kafka_brokers_from_the_environment_are_checked_too(tmp_path):
    out = tmp_path / "out"
    res = CliRunner(env={"COLUMNS": "200", "QRSDP_KAFKA_BROKERS": "broker:port"}).invoke(
        app, ["run", "--output", str(out)])
    assert res.exit_code == 2
    assert res.stderr.strip() == ("Error: --kafka-brokers 'broker:port': 'broker:port' is not HOST:PORT "
                                  "(port 1-65535) (from QRSDP_KAFKA_BROKERS)")
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_is_rejected(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["run", "--output", str(blocker / "sub"), "--seconds", "5"])
    assert res.exit_code == 2
    assert "is not writable" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_run_multi_security_writes_files_manifest_table_and_perf_doc(tmp_path):
    out = tmp_path / "out"
    perf = tmp_path / "perf.md"
    res = runner.invoke(
        app,
        [
            "run",
            "--securities",
            "AAPL:10000,MSFT:15000",
            "--days",
            "2",
            "--seconds",
            "120",
            "--output",
            str(out),
            "--perf-doc",
            str(perf),
            "--seed",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "1.1" and m["base_seed"] == 5
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.qrsdp"))
    assert files == [
        "AAPL/2026-01-02.qrsdp",
        "AAPL/2026-01-05.qrsdp",
        "MSFT/2026-01-02.qrsdp",
        "MSFT/2026-01-05.qrsdp",
    ]
    for header in ("Date", "Events", "File size", "Compression", "Events/s", "Open", "Close"):
        assert header in res.stdout
    doc = perf.read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| AAPL") or line.startswith("| MSFT")]
    assert len(rows) == 4
    ev = m["securities"][0]["sessions"][0]["events"]
    assert f"{ev:,}" in rows[0]


def test_run_hlr_with_curves_file(tmp_path):
    curves = tmp_path / "c.json"
    HLRCurves.default(3).save(curves)
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        [
            "run",
            "--model",
            "hlr",
            "--levels",
            "3",
            "--hlr-curves",
            str(curves),
            "--seconds",
            "60",
            "--output",
            str(out),
            "--spread-sens",
            "0.1",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "1.0" and m["model"]["name"] == "hlr"
    assert m["model"]["params"]["curves"]["spread_sensitivity"] == 0.1
    assert m["model"]["params"]["curves_file"] == str(curves)
    assert len(read_records(out / m["sessions"][0]["file"])) == m["sessions"][0]["events"]


def test_cli_single_session_reproduces_the_api(tmp_path):
    out = tmp_path / "one.qrsdp"
    res = runner.invoke(app, ["cli", "7", "90", str(out)])
    assert res.exit_code == 0, res.output
    simulate_to_file(SessionConfig(seed=7, session_seconds=90), tmp_path / "api.qrsdp", fsync=False)
    assert out.read_bytes() == (tmp_path / "api.qrsdp").read_bytes()
    res = runner.invoke(app, ["cli", "7", "0", str(out)])
    assert res.exit_code == 2 and "SECONDS must be >= 1" in res.stderr


def test_console_aliases_exist():
    """``qrsdp_run`` / ``qrsdp_cli`` reach the same commands (help only: fast)."""
    for alias in ("run_alias", "cli_alias"):
        code = f"import sys; sys.argv=['x', '--help']; from qrsdp_sim.cli import {alias}; {alias}()"
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200"}
        )
        assert res.returncode == 0, res.stderr
        assert ("--securities" in res.stdout) == (alias == "run_alias")
        assert (re.search(r"SEED\W+SECONDS\W+\[OUT\]", res.stdout) is not None) == (alias == "cli_alias")
