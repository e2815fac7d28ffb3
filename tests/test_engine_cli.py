"""``qrsdp run`` / ``qrsdp cli``: argument validation before any work, outputs, perf doc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--excitation", "1.0"], "--excitation: excitation branching ratio must be in [0, 1)"),
        (["--excitation", "-0.1"], "--excitation"),
        (["--odd-lot-share", "2"], "--odd-lot-share must be a number in [0, 1]"),
        (["--odd-lot-share", "0.9", "--large-order-share", "0.2"], "must not exceed 1"),
        (["--partial-cancel-share", "nan"], "--partial-cancel-share"),
        (["--seasonality", "0,2"], "--seasonality"),
        (["--seasonality", "sideways"], "--seasonality: expected 'u', 'flat' or OPEN,CLOSE"),
        (["--activity", "0.5@-3"], "--activity"),
        (["--activity", "loud"], "--activity: expected SIGMA@SECONDS"),
        (["--activity-common", "1.5"], "--activity-common must be a number in [0, 1]"),
        (["--excitation-timescales", "0,1"], "--excitation-timescales"),
        (["--metaorder-share", "1.2"], "--metaorder-share"),
        (["--metaorder-tail", "1"], "--metaorder-tail"),
        (["--plain", "--excitation", "0.3"], "--plain switches every realism layer off; drop --excitation"),
        (["--realism", "/nonexistent/r.json"], "--realism /nonexistent/r.json: cannot read"),
        (["--realism", "{garbage}"], "invalid JSON"),
        (["--realism", "{wrong}"], "not a valid realism document"),
    ],
)
def test_invalid_realism_options_stop_with_one_line_naming_the_option(tmp_path, args, message):
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text('{"sizes": 3}')
    args = [a.replace("{garbage}", str(tmp_path / "garbage.json")).replace("{wrong}", str(tmp_path / "wrong.json"))
            for a in args]  # fmt: skip
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--output", str(out), "--seconds", "30", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_plain_reproduces_the_seed_models(tmp_path):
    from qrsdp_sim.engine import SimpleImbalance
    from qrsdp_sim.engine.realism import Realism

    out = tmp_path / "plain"
    res = runner.invoke(app, ["run", "--plain", "--seconds", "120", "--output", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["params"]["base_L"] == 20.0 and Realism.from_dict(m["realism"]).is_plain
    rec = read_records(out / m["sessions"][0]["file"])
    assert np.all(rec["qty"] == 1)
    cfg = SessionConfig(seed=m["sessions"][0]["seed"], session_seconds=120, model=SimpleImbalance.seed(),
                        realism=Realism.plain())  # fmt: skip
    simulate_to_file(cfg, tmp_path / "api.qrsdp", fsync=False)
    assert (tmp_path / "api.qrsdp").read_bytes() == (out / m["sessions"][0]["file"]).read_bytes()


def test_realism_file_reproduces_a_run_from_its_manifest(tmp_path):
    first = tmp_path / "a"
    args = ["run", "--seconds", "300", "--securities", "AAA:10000,BBB:20000", "--odd-lot-share", "0.3",
            "--seasonality", "3,2", "--activity", "0.5@120", "--excitation", "0.4", "--metaorder-share", "0.3"]
    res = runner.invoke(app, [*args, "--output", str(first)])
    assert res.exit_code == 0, res.output
    m = json.loads((first / "manifest.json").read_text())
    realism = m["securities"][0]["realism"]
    assert realism["sizes"]["limit"]["odd_lot_share"] == 0.3
    assert realism["clock"]["profile"]["open_ratio"] == 3.0
    assert realism["clock"]["activity"]["sigmas"] == [0.5]
    assert realism["excitation"]["branching"] == 0.4 and realism["metaorders"]["share"] == 0.3
    (tmp_path / "realism.json").write_text(json.dumps(realism))
    second = tmp_path / "b"
    res = runner.invoke(app, ["run", "--seconds", "300", "--securities", "AAA:10000,BBB:20000", "--realism",
                              str(tmp_path / "realism.json"), "--output", str(second)])  # fmt: skip
    assert res.exit_code == 0, res.output
    for f in ("AAA/2026-01-02.qrsdp", "BBB/2026-01-02.qrsdp"):
        assert (first / f).read_bytes() == (second / f).read_bytes()
    # and the defaults differ from these settings (the options did something)
    third = tmp_path / "c"
    assert runner.invoke(app, ["run", "--seconds", "300", "--securities", "AAA:10000,BBB:20000", "--output",
                               str(third)]).exit_code == 0  # fmt: skip
    assert (third / "AAA/2026-01-02.qrsdp").read_bytes() != (first / "AAA/2026-01-02.qrsdp").read_bytes()


def test_the_command_line_does_not_load_the_engine_until_a_command_needs_it():
    """Services (parquet-consumer, itch-stream, republish ...) start without numba (about 1 s)."""
    code = "import sys, qrsdp_sim.cli; print('numba' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stdout + res.stderr


def test_every_command_is_registered_by_the_module_the_table_names():
    """``qrsdp COMMAND`` builds an app with only ``COMMAND_MODULES[COMMAND]``'s commands: the table must
    cover every command of the full app, and each module must register the commands it is named for."""
    from qrsdp_sim.cli import COMMAND_MODULES, build_app

    def names(typer_app) -> set[str]:
        return {c.name for c in typer_app.registered_commands} | {g.name for g in typer_app.registered_groups}

    assert names(app) == set(COMMAND_MODULES)
    for command in COMMAND_MODULES:
        assert command in names(build_app(command))


def test_the_run_command_does_not_import_the_platform_commands():
    """Start-up of ``qrsdp run`` imports only its own command module (not Kafka, ITCH, lake ...)."""
    code = (
        "import sys; from qrsdp_sim.cli import _app_for; _app_for(['run', '--days', '1']); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('qrsdp_sim.cli.'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(res.stdout.split())
    assert "qrsdp_sim.cli.run" in loaded
    assert not loaded & {"qrsdp_sim.cli.kafka", "qrsdp_sim.cli.itch", "qrsdp_sim.cli.platform", "qrsdp_sim.cli.log_info"}


def test_the_command_line_starts_no_blas_threads():
    """numpy's and scipy's OpenBLAS (numba loads the latter) each start busy-waiting worker threads at
    load; the command line loads them single-threaded so they do not compete with its start-up."""
    code = (
        "import os; import qrsdp_sim.cli; import numpy; import scipy.linalg; "
        "print(len(os.listdir('/proc/self/task')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert int(res.stdout) == 1


RUN_ON = """
import os, pty, sys
out = sys.argv[1]
qrsdp = os.path.join(os.path.dirname(sys.executable), "qrsdp")  # the installed entry point
argv = [qrsdp, "run", "--days", "2", "--seconds", "30",
        "--securities", "AAA:10000,BBB:20000", "--output", out]
if sys.argv[2] == "terminal":
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(qrsdp, argv)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    sys.stdout.write(b"".join(chunks).decode(errors="replace"))
else:
    os.execv(qrsdp, argv)
"""


@pytest.mark.parametrize("where", ["pipe", "terminal"])
def test_the_sessions_table_is_plain_text_in_a_pipe_and_drawn_on_a_terminal(tmp_path, where):
    res = subprocess.run([sys.executable, "-c", RUN_ON, str(tmp_path / "out"), where], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    events = [s["events"] for sec in manifest["securities"] for s in sec["sessions"]]
    if where == "pipe":  # a header, one aligned line per session, the summary on one line
        assert re.fullmatch(r"Symbol +Date +Events +File size +Compression +Events/s +Open +Close", lines[1]), lines
        rows = lines[2:6]
        assert [r.split()[0] for r in rows] == ["AAA", "AAA", "BBB", "BBB"]
        assert [int(r.split()[2].replace(",", "")) for r in rows] == events
        assert len({len(r) for r in rows}) == 1  # aligned
        assert lines[6].startswith(f"4 sessions, {sum(events):,} events in ") and lines[6].endswith("manifest.json")
        assert "┃" not in res.stdout and "│" not in res.stdout
    else:
        assert "┃" in res.stdout and "│" in res.stdout  # rich's table
        assert all(f"{e:,}" in res.stdout for e in events)


def test_the_plain_table_of_a_run_that_finished_no_session_is_its_header():
    from qrsdp_sim.cli.run import HEADERS, _plain_table

    assert _plain_table("QRSDP run x", []).splitlines() == ["QRSDP run x", "  ".join(HEADERS)]
