"""Calibration closed loop: simulate HLR with known curves, calibrate from the .qrsdp logs, and
recover every lambda(n) with at least 2,000 observed events within 5%; the JSON feeds back
into --hlr-curves; event and time accounting; the ``qrsdp calibrate`` command."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import qrsdp_sim.cli as cli
from qrsdp_sim.calibration import (
    QueueStatistics,
    accumulate_session,
    calibrate,
    collect_statistics,
    curve_errors,
)
from qrsdp_sim.cli import app
from qrsdp_sim.engine import HLR, HLRCurves, SessionConfig, SimpleImbalance, simulate_to_file
from qrsdp_sim.engine.session import SessionDriver

runner = CliRunner(env={"COLUMNS": "200"})
N_MAX = 100


def known_curves() -> HLRCurves:
    """Different shapes on the two sides, so a side mix-up cannot go unnoticed."""
    n = np.arange(N_MAX + 1, dtype=np.float64)
    add = np.empty((2, 5, N_MAX + 1))
    add[0, 0] = 15.0 / (1 + 0.12 * n)
    add[0, 1:] = 5.0 / (1 + 0.2 * n)
    add[1, 0] = 12.0 / (1 + 0.08 * n)
    add[1, 1:] = 6.0 / (1 + 0.25 * n)
    cancel = np.empty((2, 5, N_MAX + 1))
    cancel[0] = 0.3 * n / (1 + 0.02 * n)
    cancel[1] = 0.25 * n / (1 + 0.01 * n)
    market = np.zeros((2, N_MAX + 1))
    market[0, 1:] = 8.0
    market[1, 1:] = 7.0 * (1 + 0.5 / n[1:])
    return HLRCurves(add=add, cancel=cancel, market=market, spread_sensitivity=0.3, imbalance_sensitivity=1.0)


@pytest.fixture(scope="module")
def hlr_logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("hlr_logs")
    model = HLR(curves=known_curves())
    paths = []
    for seed in (101, 102):
        p = d / f"s{seed}.qrsdp"
        simulate_to_file(SessionConfig(seed=seed, session_seconds=23_400, model=model), p, fsync=False)
        paths.append(p)
    return d, paths


def test_closed_loop_recovers_every_well_observed_rate_within_5_percent(hlr_logs, tmp_path):
    _, paths = hlr_logs
    truth = known_curves()
    out = tmp_path / "curves.json"
    png = tmp_path / "curves.png"
    curves, stats = calibrate(paths, out, plot=png, reference=truth)
    assert stats.unattributed == 0 and stats.sessions == 2
    checked = 0
    for kind in ("add", "cancel", "market"):
        ev = stats.counts(kind)
        raw = stats.raw_rates(kind)
        ref = getattr(truth, kind)
        sel = ev >= 2000
        checked += int(sel.sum())
        rel = np.abs(raw[sel] / ref[sel] - 1)
        assert rel.max() < 0.05, (kind, rel.max())
        # the written curves carry exactly these estimates where they are well observed
        np.testing.assert_allclose(getattr(curves, kind)[sel], raw[sel])
    assert checked >= 150  # every curve contributes (see below)
    rows = curve_errors(stats, truth)
    assert len(rows) == 22 and all(r.points >= 3 for r in rows), [(r.curve, r.points) for r in rows]
    assert max(r.max_rel_error for r in rows) < 0.05
    # no bias: standardised residuals of all entries with >= 200 events look like N(0, 1)
    z = []
    for kind in ("add", "cancel", "market"):
        ev, ex, ref = stats.counts(kind), stats.exposure(kind), getattr(truth, kind)
        mu = ref * ex
        sel = (ev >= 200) & (mu > 0)
        z.append((ev[sel] - mu[sel]) / np.sqrt(mu[sel]))
    z = np.concatenate(z)
    assert abs(z.mean()) < 4 / np.sqrt(len(z)) and 0.7 < z.var() < 1.4, (z.mean(), z.var(), len(z))
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # the JSON is a valid curves file and feeds straight back into the engine
    loaded = HLRCurves.load(out)
    np.testing.assert_allclose(loaded.add, curves.add)
    assert loaded.meta["sessions"] == 2 and loaded.meta["source"] == "qrsdp calibrate"
    assert loaded.spread_sensitivity == 0.3 and loaded.imbalance_sensitivity == 1.0
    res = runner.invoke(
        app,
        [
            "run",
            "--model",
            "hlr",
            "--hlr-curves",
            str(out),
            "--seconds",
            "120",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output


def test_unobserved_entries_are_interpolated_and_empty_queues_have_no_cancels(hlr_logs):
    _, paths = hlr_logs
    stats = collect_statistics(paths[:1])
    from qrsdp_sim.calibration import estimate_curves

    curves = estimate_curves(stats, min_events=10)
    assert np.all(curves.cancel[:, :, 0] == 0) and np.all(curves.market[:, 0] == 0)
    assert np.all(np.isfinite(curves.add)) and np.all(curves.add >= 0)
    # beyond the largest well-observed queue the curves are flat
    ev = stats.counts("add")[0, 0]
    last = int(np.flatnonzero(ev >= 10).max())
    assert np.all(curves.add[0, 0, last:] == curves.add[0, 0, last])


def test_event_and_time_accounting_matches_the_engine():
    """Model events counted by the calibration = events of the engine (opening book and refills
    excluded); cancel exposure of every level sums to the session length."""
    cfg = SessionConfig(seed=4, session_seconds=2000, model=SimpleImbalance())
    driver = SessionDriver(cfg, top_of_book=True)
    recs, n_events = [], 0
    for r, tob in driver.batches():
        recs.append(r)
        n_events += int(np.count_nonzero(tob[:, 0] >= 0))
    records = np.concatenate(recs)
    stats = QueueStatistics.empty(5, N_MAX, spread_sensitivity=0.0, imbalance_sensitivity=0.0)
    accumulate_session(stats, records, session_seconds=2000)
    assert stats.events == n_events
    counted = sum(int(stats.counts(k).sum()) for k in ("add", "cancel", "market")) + stats.improving_adds
    assert counted == n_events
    np.testing.assert_allclose(stats.cancel_exposure.sum(axis=2), 2000.0, rtol=1e-9)
    # with sS = iS = 0 the market exposure is plain time at the best queue size
    np.testing.assert_allclose(stats.market_exposure.sum(axis=1), 2000.0, rtol=1e-9)


def test_calibrate_command(hlr_logs, tmp_path):
    d, _ = hlr_logs
    out = tmp_path / "c" / "est.json"
    res = runner.invoke(app, ["calibrate", str(d), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert "2 session(s)" in res.output and "market ask" in res.output
    assert HLRCurves.load(out).levels == 5
    missing = runner.invoke(app, ["calibrate", str(tmp_path / "nope.qrsdp"), "-o", str(out)])
    assert missing.exit_code == 2 and "no such log file" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["calibrate", str(empty), "-o", str(out)])
    assert none.exit_code == 2 and "no .qrsdp files" in none.stderr
    assert cli.calibrate_alias.__name__ == "calibrate_alias"
