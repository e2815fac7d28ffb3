"""``qrsdp run --days 0`` as a process: SIGTERM / SIGINT end it cleanly (exit 0), SIGKILL leaves a readable
manifest of the finished sessions, and with ``--kafka-brokers`` (real broker) every finished session is on
the topic with its end-of-session marker while the interrupted one has none.

Every signal is sent after observed progress -- the manifest listing N finished sessions, or the
"started" lines of the sessions -- never after a sleep; the assertions hold wherever the signal lands
(a session is either finished, with its file and manifest entry, or interrupted/never started, with
neither). The reference is the same command with ``--days N``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_SEQ

pytestmark = pytest.mark.timeout(600)

QRSDP = str(Path(sys.executable).with_name("qrsdp"))  # the console script itself: the signal reaches it
BASE = ["--seed", "3", "--securities", "AAA:10000,BBB:2000", "--seconds", "300", "--start-date", "2026-01-01"]
WAIT = 300.0  # a guard against a hung process, not a timing assumption


class LiveRun:
    """``qrsdp run --days 0`` in the background, its stdout and stderr in files."""

    def __init__(self, out: Path, *extra: str) -> None:
        self.out = out
        self.stdout = out.parent / f"{out.name}.stdout"
        self.stderr = out.parent / f"{out.name}.stderr"
        with open(self.stdout, "wb") as so, open(self.stderr, "wb") as se:
            self.proc = subprocess.Popen([QRSDP, "run", "--days", "0", "--output", str(out), *BASE, *extra],
                                         stdout=so, stderr=se, env={**os.environ, "COLUMNS": "200"})

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def manifest(self) -> dict[str, Any] | None:
        """The manifest as it stands (replaced atomically: never half-written), None before the first."""
        try:
            return json.loads((self.out / "manifest.json").read_text())
        except FileNotFoundError:
            return None

    def wait_for(self, what: str, ready) -> None:
        deadline = time.monotonic() + WAIT
        while not ready():
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}:\n{self.err()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {WAIT:.0f} s:\n{self.err()[-3000:]}"
            time.sleep(0.02)

    def wait_finished(self, n: int) -> None:
        self.wait_for(f"{n} finished sessions",
                      lambda: (m := self.manifest()) is not None and m["live"]["sessions_finished"] >= n)

    def end(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill_if_running(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live_runs():
    runs: list[LiveRun] = []
    yield lambda out, *extra: runs.append(LiveRun(out, *extra)) or runs[-1]
    for r in runs:
        r.kill_if_running()


def listed(manifest: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(sec["symbol"], s["date"]): s for sec in manifest["securities"] for s in sec["sessions"]}


def on_disk(out: Path) -> set[tuple[str, str]]:
    return {(p.parent.name, p.stem) for p in out.glob("*/*.qrsdp")}


def reference(tmp_path: Path, days: int) -> Path:
    """The same command with ``--days days`` (in process)."""
    out = tmp_path / f"ref{days}"
    res = CliRunner().invoke(app, ["run", "--days", str(days), "--output", str(out), *BASE])
    assert res.exit_code == 0, res.output
    return out


def assert_sessions_are_the_finite_runs(tmp_path: Path, out: Path, manifest: dict[str, Any]) -> None:
    sessions = listed(manifest)
    days = len({d for _, d in sessions})
    ref = reference(tmp_path, days)
    ref_sessions = listed(json.loads((ref / "manifest.json").read_text()))
    for key, entry in sessions.items():
        assert entry == ref_sessions[key], key
        assert (out / entry["file"]).read_bytes() == (ref / entry["file"]).read_bytes(), key


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_live_run_cleanly(tmp_path, live_runs, sig):
    run = live_runs(tmp_path / "live")
    run.wait_finished(4)
    assert run.end(sig) == 0, run.err()[-3000:]
    manifest = run.manifest()
    live = manifest["live"]
    assert live["state"] == "stopped" and live["stop_reason"] == sig.name, live
    assert live["in_progress"] == [] and live["current_date"] is None
    sessions = listed(manifest)
    assert len(sessions) >= 4 and live["sessions_finished"] == len(sessions)
    # nothing unfinished is presented as finished: the files on disk are exactly the listed sessions
    assert on_disk(run.out) == set(sessions)
    assert [p.name for p in run.out.rglob(".*")] == []  # no partial file, no temporary manifest
    for entry in live["interrupted"]:
        key = (entry["symbol"], entry["date"])
        assert key not in sessions and entry["file"] is None
        assert not (run.out / entry["symbol"] / f"{entry['date']}.qrsdp").exists()
        assert f"interrupted: {entry['symbol']} {entry['date']}" in run.err()
    # the dates are chained as in a finite run: every listed session equals the --days N run's
    assert_sessions_are_the_finite_runs(tmp_path, run.out, manifest)
    err = run.err()
    assert f"{sig.name}: stopping at the next batch boundary" in err
    assert f"live run stopped by {sig.name}: {len(sessions)} finished session(s)" in err
    assert "Traceback" not in err


def test_sigterm_interrupts_paced_sessions_that_would_take_hours(tmp_path, live_runs):
    """At --speed 1 a 23,400 s session takes 6.5 h of wall clock: once both sessions have started,
    SIGTERM must end them within a pacing step, leave no file, and name both as interrupted."""
    run = live_runs(tmp_path / "paced", "--realtime", "--speed", "1", "--seconds", "23400")
    run.wait_for("both sessions started", lambda: all(
        f"{s} 2026-01-01: started" in run.err() for s in ("AAA", "BBB")))
    assert run.end(signal.SIGTERM) == 0, run.err()[-3000:]
    live = run.manifest()["live"]
    assert live["state"] == "stopped" and live["realtime_speed"] == 1.0
    assert listed(run.manifest()) == {} and on_disk(run.out) == set()
    assert sorted((e["symbol"], e["date"], e["file"]) for e in live["interrupted"]) == [
        ("AAA", "2026-01-01", None), ("BBB", "2026-01-01", None)]
    for e in live["interrupted"]:
        assert e["delivered_seconds"] < 23_400 and e["records_delivered"] <= e["records_simulated"]
    assert [p.name for p in run.out.rglob(".*")] == []


def test_sigkill_leaves_a_readable_manifest_of_the_finished_sessions(tmp_path, live_runs):
    run = live_runs(tmp_path / "killed")
    run.wait_finished(4)
    assert run.end(signal.SIGKILL) == -signal.SIGKILL
    manifest = run.manifest()  # valid JSON: it is only ever replaced whole
    live = manifest["live"]
    assert live["state"] == "running" and live["pid"] == run.proc.pid  # what a killed run leaves
    sessions = listed(manifest)
    assert len(sessions) >= 4 and live["sessions_finished"] == len(sessions)
    assert set(sessions) <= on_disk(run.out)  # at most the sessions in progress are lost
    for s in live["in_progress"]:  # named: the sessions that were running when it died
        assert (s, live["current_date"]) not in sessions
    assert_sessions_are_the_finite_runs(tmp_path, run.out, manifest)


@pytest.mark.services
def test_live_run_with_kafka_delivers_every_finished_session(tmp_path, live_runs, kafka_stack):
    from kafka_lake_testutil import consume_all, create_topics

    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "live", partitions=2)
    # paced at 300x: a 300 s session takes about a second, which bounds what reaches the topic
    run = live_runs(tmp_path / "kafka", "--realtime", "--speed", "300", "--kafka-brokers", bootstrap,
                    "--kafka-topic", topic)
    run.wait_finished(4)
    assert run.end(signal.SIGTERM) == 0, run.err()[-3000:]
    manifest = run.manifest()
    sessions = listed(manifest)
    interrupted = {f"{e['symbol']}/{e['date']}": e for e in manifest["live"]["interrupted"]}
    publish = manifest["publish"]
    assert publish["topic"] == topic and publish["failed"] == 0
    assert publish["produced"] == publish["delivered"]
    # complete on Kafka: exactly the finished sessions; the interrupted ones are listed as incomplete
    assert sorted(publish["incomplete_sessions"]) == sorted(interrupted)
    for (symbol, day), entry in sessions.items():
        st = publish["sessions"][f"{symbol}/{day}"]
        assert st["complete"] and st["delivered"] == entry["events"] + 1, (symbol, day, st)

    expected = sum(e["events"] + 1 for e in sessions.values()) + sum(
        publish["sessions"][k]["produced"] for k in interrupted)
    messages = consume_all(bootstrap, topic, expected)
    assert len(messages) == expected
    events: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    markers: Counter[tuple[str, str]] = Counter()
    for m in messages:
        headers = dict(m.headers())
        key = (m.key().decode(), headers[H_DATE].decode())
        if H_EOS in headers:
            markers[key] += 1
        else:
            events.setdefault(key, []).append((int.from_bytes(headers[H_SEQ], "big"), m.value()))
    assert set(markers) == set(sessions) and set(markers.values()) == {1}  # no marker for an interrupted one
    for key, entry in sessions.items():  # every event of every finished session, as in its file
        got = sorted(events[key])
        assert [s for s, _ in got] == list(range(entry["events"]))
        records = read_records(run.out / entry["file"])
        assert b"".join(v for _, v in got) == np.ascontiguousarray(records).tobytes()
    for k, e in interrupted.items():
        got = events.get(tuple(k.split("/")), [])
        assert len(got) == publish["sessions"][k]["produced"] <= e["records_delivered"]
    err = " ".join(run.err().split())
    assert f"{publish['delivered']:,} delivered, 0 failed" in err
    if interrupted:
        assert "stay incomplete: no file, no end-of-session marker" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_requests_a_stop_the_second_ends_the_process(sig):
    """What ``qrsdp run --days 0`` installs: the first signal only sets the stop (the run then finishes
    cleanly); a second one, for a shutdown that takes too long, ends the process as the signal's default
    action would. Outside the block the previous handlers are back."""
    code = f"""
import os, signal
from qrsdp_sim.cli.run_live import stop_on_signals
from qrsdp_sim.engine.live import StopRequest
before = signal.getsignal({int(sig)})
stop = StopRequest()
with stop_on_signals(stop):
    os.kill(os.getpid(), {int(sig)})
    print("first:", stop.is_set(), stop.reason, flush=True)
print("restored:", signal.getsignal({int(sig)}) is before, flush=True)
with stop_on_signals(StopRequest()):
    os.kill(os.getpid(), {int(sig)})
    os.kill(os.getpid(), {int(sig)})
    print("survived the second signal", flush=True)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines() == [f"first: True {sig.name}", "restored: True"], (res.stdout, res.stderr)
    assert res.returncode == -sig, res.stderr
