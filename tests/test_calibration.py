"""Calibration closed loop: simulate HLR with known curves, calibrate from the .qrsdp logs, and
recover every lambda(n) with at least 2,000 observed events within 5% -- for the plain seed's
one-share logs (calendar time) and for realistic logs of a run (order sizes in queue units,
market orders walking the queue, business clock and excitation rebuilt from the manifest;
metaorders off, since their sign is latent). The JSON feeds back into --hlr-curves; event and
time accounting against the engine; each part of the realistic estimator on hand-made logs;
manifest discovery and its bad inputs; the ``qrsdp calibrate`` command."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pytest
from scipy import integrate, optimize
from typer.testing import CliRunner

import qrsdp_sim.cli as cli
from qrsdp_sim.calibration import (
    QueueStatistics,
    SessionContext,
    accumulate_session,
    calibrate,
    collect_statistics,
    curve_errors,
    estimate_curves,
)
from qrsdp_sim.calibration_sessions import UNIT_MANIFEST, UNIT_MEAN_ADD, find_logs
from qrsdp_sim.cli import app
from qrsdp_sim.engine import HLR, HLRCurves, SessionConfig, SimpleImbalance, simulate_to_file
from qrsdp_sim.engine.clock import ClockGrid
from qrsdp_sim.engine.decorators import dec_integral, dec_multiplier, hawkes_decorator
from qrsdp_sim.engine.models.factory import model_from_dict
from qrsdp_sim.engine.models.hawkes import HawkesIntensity, HawkesParams, integrated_multiplier
from qrsdp_sim.engine.realism import Excitation, Metaorders, Realism
from qrsdp_sim.engine.runner import RunSpec, Security, run, session_path
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import RECORD_DTYPE

runner = CliRunner(env={"COLUMNS": "200"})
N_MAX = 100
OPEN_NS = 34_200 * 1_000_000_000


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


REALISTIC_NO_META = Realism(metaorders=Metaorders.off())  # sizes, clock and excitation on


@pytest.fixture(scope="module")
def hlr_logs(tmp_path_factory):
    """The plain seed path: one-share orders, calendar time, no excitation, no manifest."""
    d = tmp_path_factory.mktemp("hlr_logs")
    model = HLR(curves=known_curves())
    paths = []
    for seed in (101, 102):
        p = d / f"s{seed}.qrsdp"
        cfg = SessionConfig(seed=seed, session_seconds=23_400, model=model, realism=Realism.plain())
        simulate_to_file(cfg, p, fsync=False)
        paths.append(p)
    return d, paths


@pytest.fixture(scope="module")
def realistic_run(tmp_path_factory):
    """Two full realistic days of HLR with the known curves, as ``qrsdp run`` writes them."""
    d = tmp_path_factory.mktemp("hlr_run")
    spec = RunSpec(base_seed=7, days=2, model=HLR(curves=known_curves()), realism=REALISTIC_NO_META)
    run(spec, [Security("AAA")], d, workers=1)
    return d, spec


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A short realistic run (default realism) for manifest tests."""
    d = tmp_path_factory.mktemp("small_run")
    spec = RunSpec(base_seed=3, days=2, session_seconds=300, model=HLR())
    run(spec, [Security("AAA"), Security("BBB", 20_000)], d, workers=1)
    return d, spec


def _check_closed_loop(stats, curves, truth, min_events=2000):
    """Every entry with >= ``min_events`` events within 5 % of the truth. Realistic sessions are
    over-dispersed (business clock, excitation): their well-observed threshold is higher, so that
    5 % stays several standard errors (an entry of 2,000 events has a 2.2 % Poisson error alone)."""
    checked = 0
    for kind in ("add", "cancel", "market"):
        ev = stats.counts(kind)
        raw = stats.raw_rates(kind)
        ref = getattr(truth, kind)
        sel = ev >= min_events
        checked += int(sel.sum())
        rel = np.abs(raw[sel] / ref[sel] - 1)
        assert rel.max() < 0.05, (kind, rel.max())
        # the written curves carry exactly these estimates where they are well observed
        np.testing.assert_allclose(getattr(curves, kind)[sel], raw[sel])
    assert checked >= 150  # every curve contributes (see below)
    rows = curve_errors(stats, truth, min_events=min_events)
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


def test_closed_loop_plain_seed_logs_recover_every_well_observed_rate_within_5_percent(hlr_logs, tmp_path):
    _, paths = hlr_logs
    truth = known_curves()
    out = tmp_path / "curves.json"
    png = tmp_path / "curves.png"
    curves, stats = calibrate(paths, out, plot=png, reference=truth)
    assert stats.unattributed == 0 and stats.sessions == 2
    # no manifest: calendar time, and the mean ADD size of one-share logs is one share
    assert stats.queue_unit == 1.0 and stats.business_seconds == stats.seconds == 2 * 23_400
    assert {r.unit_source for r in stats.replays} == {UNIT_MEAN_ADD}
    assert {r.time_basis for r in stats.replays} == {"calendar time (no manifest)"}
    _check_closed_loop(stats, curves, truth)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # the JSON is a valid curves file and feeds straight back into the engine
    loaded = HLRCurves.load(out)
    np.testing.assert_allclose(loaded.add, curves.add)
    assert loaded.meta["sessions"] == 2 and loaded.meta["source"] == "qrsdp calibrate"
    assert loaded.meta["queue_unit"] == 1.0
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


def test_closed_loop_realistic_run_recovers_every_well_observed_rate_within_5_percent(
    realistic_run, tmp_path
):
    """Sizes (queue units, walking market orders, partial cancels), business clock and excitation on."""
    d, spec = realistic_run
    truth = known_curves()
    out = tmp_path / "curves.json"
    curves, stats = calibrate([d], out, reference=truth)
    assert stats.unattributed == 0 and stats.sessions == 2
    unit = spec.realism.sizes.unit_shares()
    assert unit > 100 and stats.queue_unit == unit
    assert {r.unit_source for r in stats.replays} == {UNIT_MANIFEST}
    assert {r.excitation for r in stats.replays} == {"excitation"}
    # the business clock is not the identity and the multiplier is well above 1 on average
    for r in stats.replays:
        assert abs(r.business_seconds - r.calendar_seconds) > 100
        assert r.weighted_seconds > 1.5 * r.business_seconds
    _check_closed_loop(stats, curves, truth, min_events=5000)
    assert HLRCurves.load(out).meta["queue_unit"] == unit
    # the same logs calibrated without their manifest (calendar time, no excitation) are far off:
    # the closed loop above depends on the clock and the excitation being replayed
    _, bare = calibrate([d], use_manifests=False)
    assert bare.queue_unit == unit  # the mean ADD size rounds to the engine's unit here
    assert max(r.max_rel_error for r in curve_errors(bare, truth) if r.points) > 0.5


def test_unobserved_entries_are_interpolated_and_empty_queues_have_no_cancels(hlr_logs):
    _, paths = hlr_logs
    stats = collect_statistics(paths[:1])
    curves = estimate_curves(stats, min_events=10)
    assert np.all(curves.cancel[:, :, 0] == 0) and np.all(curves.market[:, 0] == 0)
    assert np.all(np.isfinite(curves.add)) and np.all(curves.add >= 0)
    # beyond the largest well-observed queue the curves are flat
    ev = stats.counts("add")[0, 0]
    last = int(np.flatnonzero(ev >= 10).max())
    assert np.all(curves.add[0, 0, last:] == curves.add[0, 0, last])


def _engine_session(cfg: SessionConfig):
    """Records, model events (rows with a top of book) and the kernel's final decorator state."""
    driver = SessionDriver(cfg, top_of_book=True)
    recs, n_events = [], 0
    for r, tob in driver.batches():
        recs.append(r)
        n_events += int(np.count_nonzero(tob[:, 0] >= 0))
    return np.concatenate(recs), n_events, driver.decorator_state


def test_event_and_time_accounting_matches_the_engine():
    """Plain seed path: model events counted by the calibration = events of the engine (opening
    book and refills excluded); cancel exposure of every level sums to the session length."""
    cfg = SessionConfig(seed=4, session_seconds=2000, model=SimpleImbalance(), realism=Realism.plain())
    records, n_events, _ = _engine_session(cfg)
    stats = QueueStatistics.empty(5, N_MAX, spread_sensitivity=0.0, imbalance_sensitivity=0.0)
    accumulate_session(stats, records, session_seconds=2000)
    assert stats.events == n_events
    counted = sum(int(stats.counts(k).sum()) for k in ("add", "cancel", "market")) + stats.improving_adds
    assert counted == n_events
    np.testing.assert_allclose(stats.cancel_exposure.sum(axis=2), 2000.0, rtol=1e-9)
    # with sS = iS = 0 the market exposure is plain time at the best queue size
    np.testing.assert_allclose(stats.market_exposure.sum(axis=1), 2000.0, rtol=1e-9)


def test_realistic_accounting_and_excitation_replay_match_the_kernel():
    """Realistic session: one event per market order however many EXECUTE records it has; the
    replayed excitation ends in the kernel's own state (same trigger count, same integral of the
    multiplier, same excitation); every level's exposure is that integral over the business day."""
    cfg = SessionConfig(
        seed=4, session_seconds=2000, model=HLR(), realism=Realism(excitation=Excitation(cap=1e6))
    )
    records, n_events, kernel_state = _engine_session(cfg)
    walks = np.count_nonzero(
        (records["type"][1:] >= 4)
        & (records["type"][1:] == records["type"][:-1])
        & (records["ts_ns"][1:] == records["ts_ns"][:-1])
    )
    assert walks > 1000  # many market orders touched several resting orders
    stats = QueueStatistics.empty(5, N_MAX, spread_sensitivity=0.0, imbalance_sensitivity=0.0)
    replay = accumulate_session(stats, records, SessionContext.from_config(cfg), session_seconds=2000)
    assert stats.events == replay.events == n_events
    counted = sum(int(stats.counts(k).sum()) for k in ("add", "cancel", "market")) + stats.improving_adds
    assert counted == n_events
    J = 3
    state = replay.decorator_state
    assert state[J + 1] == kernel_state[J + 1] > 1000  # triggers: market orders and mid changes
    np.testing.assert_allclose(state[J], kernel_state[J], rtol=0, atol=1e-7)  # the last trigger's business time (the state changes at triggers only)
    np.testing.assert_allclose(state[J + 2], kernel_state[J + 2], rtol=1e-7)  # integral of the multiplier
    np.testing.assert_allclose(state[:J], kernel_state[:J], rtol=1e-4, atol=1e-9)
    clock = cfg.clock_grid()
    assert replay.business_seconds == clock.business_end != 2000.0
    tail = clock.business_end - state[J]
    assert (
        kernel_state[J + 2]
        <= replay.weighted_seconds
        <= kernel_state[J + 2] + tail * (1 + state[:J].sum()) + 1e-6
    )
    assert replay.weighted_seconds > 1.5 * replay.business_seconds
    np.testing.assert_allclose(stats.cancel_exposure.sum(axis=2), replay.weighted_seconds, rtol=1e-9)
    np.testing.assert_allclose(stats.market_exposure.sum(axis=1), replay.weighted_seconds, rtol=1e-9)


def test_hawkes_replay_over_the_business_clock_matches_the_kernel():
    """The seed's form (every model event excites, market orders once however many fills) in
    business time, over realistic HLR: the replayed excitation is the kernel's after the last event."""
    model = HawkesIntensity(base=HLR(), hawkes=HawkesParams(alpha=0.01, beta=2.0, max_excitation=5.0))
    cfg = SessionConfig(seed=9, session_seconds=1500, model=model, realism=REALISTIC_NO_META)
    records, n_events, kernel_state = _engine_session(cfg)
    stats = QueueStatistics.empty(5, N_MAX)
    ctx = SessionContext.from_config(cfg)
    assert ctx.excitation == "Hawkes" and ctx.clock is not None
    replay = accumulate_session(stats, records, ctx, session_seconds=1500)
    assert replay.events == n_events
    np.testing.assert_allclose(replay.decorator_state[1], kernel_state[1], rtol=0, atol=1e-7)
    np.testing.assert_allclose(replay.decorator_state[0], kernel_state[0], rtol=1e-5)
    assert replay.weighted_seconds > 1.2 * replay.business_seconds
    np.testing.assert_allclose(stats.cancel_exposure.sum(axis=2), replay.weighted_seconds, rtol=1e-9)


# --- each part of the estimator on a hand-made log -------------------------------------------


def _records(rows):
    out = np.zeros(len(rows), RECORD_DTYPE)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def _hand_made_log():
    """K = 2, two orders per tick; then a market buy that walks the best ask (2 EXECUTE records at
    one timestamp), a partial cancel at the best bid, and an add one tick below the best bid."""
    t0 = OPEN_NS
    rows = [
        (t0, 0, 0, 99, 150, 1), (t0, 0, 0, 99, 150, 2), (t0, 0, 0, 98, 100, 3), (t0, 0, 0, 98, 100, 4),
        (t0, 1, 1, 101, 200, 5), (t0, 1, 1, 101, 120, 6), (t0, 1, 1, 102, 100, 7), (t0, 1, 1, 102, 100, 8),
        (t0 + 500_000_000, 4, 1, 101, 200, 5), (t0 + 500_000_000, 4, 1, 101, 50, 6),
        (t0 + 1_500_000_000, 2, 0, 99, 50, 1),
        (t0 + 2_500_000_000, 0, 0, 98, 30, 9),
    ]  # fmt: skip
    return _records(rows)


def _hand_stats(context=None):
    stats = QueueStatistics.empty(2, 10, spread_sensitivity=0.0, imbalance_sensitivity=0.0)
    replay = accumulate_session(stats, _hand_made_log(), context, session_seconds=3, initial_depth=2)
    return stats, replay


def test_a_market_order_that_walks_the_queue_is_one_event_at_the_queue_size_before_it():
    stats, _ = _hand_stats(SessionContext(unit=100.0))
    assert stats.events == 3 and stats.unattributed == 0 and stats.improving_adds == 0
    # 320 shares at the best ask before the buy: ceil(3.2) = 4 units; one event, not two
    assert stats.market_events.sum() == 1 and stats.market_events[1, 4] == 1
    # partial cancel of 50 at the best bid (300 shares -> 3 units); add at level 1 (200 -> 2 units)
    assert stats.cancel_events.sum() == 1 and stats.cancel_events[0, 0, 3] == 1
    assert stats.add_events.sum() == 1 and stats.add_events[0, 1, 2] == 1


def test_queue_sizes_are_read_in_queue_units():
    stats, _ = _hand_stats(SessionContext(unit=100.0))
    # best ask: 320 shares (4 units) until the buy at 0.5 s, then 70 (1 unit)
    np.testing.assert_allclose(stats.cancel_exposure[1, 0, [4, 1]], [0.5, 2.5])
    # level 1 bid: 200 shares (2 units), then 230 (3 units) after the add at 2.5 s
    np.testing.assert_allclose(stats.cancel_exposure[0, 1, [2, 3]], [2.5, 0.5])
    np.testing.assert_allclose(stats.market_exposure[1, [4, 1]], [0.5, 2.5])
    # in shares (unit 1) the same log lands on other entries: the unit is not a no-op
    shares, _ = _hand_stats(SessionContext(unit=1.0))
    assert shares.market_events[1, 10] == 1 and shares.cancel_exposure[1, 0, 4] == 0


def test_exposure_is_business_time_of_the_sessions_clock():
    # g = 2, 0.5, 4 on the three seconds: business times of the events 1.0, 2.25, 4.5; end 6.5
    clock = ClockGrid.from_rates(np.array([2.0, 0.5, 4.0]), 1.0, 3.0)
    stats, replay = _hand_stats(SessionContext(unit=100.0, clock=clock))
    assert replay.business_seconds == 6.5 and replay.weighted_seconds == pytest.approx(6.5)
    np.testing.assert_allclose(stats.cancel_exposure[1, 0, [4, 1]], [1.0, 5.5])
    np.testing.assert_allclose(stats.cancel_exposure[0, 1, [2, 3]], [4.5, 2.0])
    np.testing.assert_allclose(stats.cancel_exposure.sum(axis=2), 6.5)


def test_exposure_is_weighted_by_the_replayed_multiplier():
    """Hawkes (every event excites) over the clock, with the cap binding after the second event:
    the weights are the integrals of 1 + min(E, cap) between events, from the independent closed
    form of ``models.hawkes``."""
    clock = ClockGrid.from_rates(np.array([2.0, 0.5, 4.0]), 1.0, 3.0)
    params = HawkesParams(alpha=2.0, beta=1.5, max_excitation=1.5)
    ctx = SessionContext(
        unit=100.0, clock=clock, decorator=hawkes_decorator(params.alpha, params.beta, params.max_excitation)
    )
    stats, replay = _hand_stats(ctx)
    tau = np.array([1.0, 2.25, 4.5])
    e = np.zeros(3)  # excitation just after each event
    for i in range(3):
        e[i] = (e[i - 1] * np.exp(-params.beta * (tau[i] - tau[i - 1])) if i else 0.0) + params.alpha
    assert e[1] > params.max_excitation
    w = integrated_multiplier(np.r_[0.0, e], np.diff(np.r_[0.0, tau, 6.5]), params)
    np.testing.assert_allclose(stats.cancel_exposure[1, 0, [4, 1]], [w[0], w[1:].sum()], rtol=1e-12)
    np.testing.assert_allclose(stats.cancel_exposure[0, 1, [2, 3]], [w[:3].sum(), w[3]], rtol=1e-12)
    assert replay.weighted_seconds == pytest.approx(w.sum(), rel=1e-12)
    assert replay.decorator_state[0] == pytest.approx(e[2]) and replay.decorator_state[1] == 4.5


@pytest.mark.parametrize("cap", [1e9, 3.0, 0.4])
def test_dec_integral_is_the_exact_integral_of_the_multiplier(cap):
    """``dec_integral`` against adaptive quadrature of ``dec_multiplier`` (cap never / sometimes /
    always binding over the interval), for the excitation and for Hawkes; the state is not touched."""
    kind, params, state = Excitation(cap=cap).decorator()
    J = int(params[0])
    state[:J] = [2.0, 1.5, 0.5]
    state[J] = 10.0  # time of the last update
    excite_sum = lambda t: sum(state[i] * np.exp(-params[5 + i] * (t - state[J])) for i in range(J))  # noqa: E731
    hawkes = hawkes_decorator(0.5, 2.0, cap)
    hawkes[2][:] = [3.0, 10.0]
    hawkes_sum = lambda t: 3.0 * np.exp(-2.0 * (t - 10.0))  # noqa: E731
    for (k, p, s), uncapped in (((kind, params, state), excite_sum), (hawkes, hawkes_sum)):
        for t0, t1 in ((10.0, 10.01), (10.0, 10.7), (10.2, 14.0), (11.0, 90.0)):
            before = s.copy()
            got = dec_integral(k, p, s, t0, t1)
            assert np.array_equal(s, before)
            # quadrature needs the kink where the excitation falls below the cap (found by bisection)
            kink = []
            if uncapped(t0) > cap > uncapped(t1):
                kink = [optimize.brentq(lambda t, f=uncapped: f(t) - cap, t0, t1, xtol=1e-14)]
            want, _ = integrate.quad(
                lambda t, k=k, p=p, s=s: dec_multiplier(k, p, s.copy(), t),
                t0, t1, points=kink or None, limit=500, epsabs=1e-13, epsrel=1e-12,
            )  # fmt: skip
            assert got == pytest.approx(want, rel=1e-10), (k, cap, t0, t1)
            if cap == 0.4 and t1 - t0 < 1:  # the multiplier sits at the cap throughout
                assert got == pytest.approx((t1 - t0) * 1.4, rel=1e-12)


# --- manifests --------------------------------------------------------------------------------


def test_logs_of_a_run_get_their_sessions_clock_decorator_and_unit_from_the_manifest(small_run):
    d, spec = small_run
    logs = find_logs([d])
    assert len(logs) == 4 and all(log.config is not None for log in logs)
    for log in logs:
        symbol, date = log.path.parent.name, log.path.stem
        header = EventLogReader(log.path).header
        assert log.config.seed == header.seed
        cfg = spec.session_config(symbol, dt.date.fromisoformat(date), log.config.p0_ticks)
        ctx = SessionContext.from_config(log.config)
        assert ctx.unit == spec.realism.sizes.unit_shares() and ctx.unit_source == UNIT_MANIFEST
        np.testing.assert_array_equal(ctx.clock.theta, cfg.clock_grid().theta)
        np.testing.assert_array_equal(ctx.decorator[1], cfg.decorator()[1])
        assert log.notes and "metaorders" in log.notes[0]  # the default realism has them
    # a file given alone finds its run's manifest too (OUTPUT/SYMBOL/DATE.qrsdp)
    one = session_path(d, "BBB", spec.dates()[1])
    (log,) = find_logs([one])
    from_run = next(x.config for x in logs if x.path == one)
    assert log.config is not None and log.config == from_run  # day 2's chained session, as the run lists it
    (bare,) = find_logs([one], use_manifests=False)
    assert bare.config is None


def test_model_from_dict_inverts_to_dict():
    models = [
        SimpleImbalance(),
        HLR(curves=known_curves(), improve_per_tick=0.3, liquidity_response=0.1, exo_loading=0.2),
        HawkesIntensity(base=HLR(), hawkes=HawkesParams(0.01, 3.0, 4.0)),
        HawkesIntensity(),
    ]
    for m in models:
        assert model_from_dict(json.loads(json.dumps(m.to_dict()))) == m
    with pytest.raises(ValueError, match="unknown name"):
        model_from_dict({"name": "nope", "params": {}})
    with pytest.raises(ValueError, match="invalid parameters"):
        model_from_dict({"name": "simple", "params": {"bogus": 1}})


def _copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst, json.loads((dst / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: "{not json", "cannot read the run's manifest"),
        (lambda m: json.dumps([1, 2]), "not a run manifest"),
        (lambda m: json.dumps({**m, "securities": "x"}), "'securities' must be a list"),
        (lambda m: json.dumps({**m, "base_seed": m["base_seed"] + 1}), "is not the recorded one"),
        (
            lambda m: json.dumps(
                {**m, "securities": [{**s, "realism": {"sizes": 1}} for s in m["securities"]]}
            ),
            "security AAA",
        ),
        (lambda m: json.dumps({**m, "securities": [{**s, "model": 3} for s in m["securities"]]}), "model"),
        (
            lambda m: json.dumps(
                {
                    **m,
                    "securities": [
                        {**s, "sessions": [{"file": x["file"]} for x in s["sessions"]]}
                        for s in m["securities"]
                    ],
                }
            ),
            "missing 'date'",
        ),
    ],
)
def test_a_bad_manifest_is_a_clear_error_naming_it(small_run, tmp_path, damage, message):
    d, m = _copy_run(small_run[0], tmp_path / "run")
    (d / "manifest.json").write_text(damage(m))
    with pytest.raises(ValueError, match=message) as exc:
        collect_statistics([d])
    assert "manifest.json" in str(exc.value) and "--no-manifest" in str(exc.value)
    res = runner.invoke(app, ["calibrate", str(d), "-o", str(tmp_path / "c.json"), "--no-plot"])
    assert res.exit_code == 2 and "--no-manifest" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # the escape hatch: the same logs in calendar time
    res = runner.invoke(
        app, ["calibrate", str(d), "-o", str(tmp_path / "c.json"), "--no-plot", "--no-manifest"]
    )
    assert res.exit_code == 0, res.output
    assert "calendar time (no manifest), 4 session(s)" in res.output


def test_a_log_whose_header_does_not_match_its_manifest_entry_is_refused(small_run, tmp_path):
    d, m = _copy_run(small_run[0], tmp_path / "run")
    aaa = next(s for s in m["securities"] if s["symbol"] == "AAA")["sessions"]
    # swap the two days' files: each is now listed under the other's date, seed and open
    a, b = (d / aaa[0]["file"]), (d / aaa[1]["file"])
    a.rename(tmp_path / "x.qrsdp")
    b.rename(a)
    (tmp_path / "x.qrsdp").rename(b)
    with pytest.raises(ValueError, match="differs from its entry in"):
        collect_statistics([a])


def test_unlisted_logs_and_bare_logs_are_calibrated_in_calendar_time(small_run, tmp_path):
    d, _ = _copy_run(small_run[0], tmp_path / "run")
    spec = small_run[1]
    extra = d / "AAA" / "extra.qrsdp"
    shutil.copy(session_path(d, "AAA", spec.dates()[0]), extra)
    mean = collect_statistics([extra])
    assert mean.replays[0].time_basis == "calendar time (no manifest)"
    assert any("not listed" in n for n in mean.notes)
    # without a manifest: --queue-unit, else the mean ADD size rounded
    unit = spec.realism.sizes.unit_shares()
    assert mean.replays[0].unit_source == UNIT_MEAN_ADD and abs(mean.queue_unit / unit - 1) < 0.1
    given = collect_statistics([extra], queue_unit=150)
    assert given.queue_unit == 150 and given.replays[0].unit_source == "--queue-unit"
    # a run's log keeps the run's unit whatever --queue-unit says (and says so)
    mixed = collect_statistics([d / "AAA"], queue_unit=150)
    units = {(r.source.endswith("extra.qrsdp"), r.unit) for r in mixed.replays}
    assert units == {(True, 150.0), (False, unit)} and mixed.queue_unit is None
    assert any("--queue-unit 150 not used" in n for n in mixed.notes)
    assert any("different queue units" in line for line in mixed.describe())
    with pytest.raises(ValueError, match="queue unit must be > 0"):
        collect_statistics([extra], queue_unit=0)


# --- the command ------------------------------------------------------------------------------


def test_calibrate_command(hlr_logs, tmp_path):
    d, _ = hlr_logs
    out = tmp_path / "c" / "est.json"
    res = runner.invoke(app, ["calibrate", str(d), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert "2 session(s)" in res.output and "market ask" in res.output
    assert "queue unit: 1 shares (mean ADD size of the logs)" in res.output
    assert "calendar time (no manifest), 2 session(s)" in res.output
    assert HLRCurves.load(out).levels == 5
    missing = runner.invoke(app, ["calibrate", str(tmp_path / "nope.qrsdp"), "-o", str(out)])
    assert missing.exit_code == 2 and "no such log file" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["calibrate", str(empty), "-o", str(out)])
    assert none.exit_code == 2 and "no .qrsdp files" in none.stderr
    for bad in ("0", "-3", "nan"):
        r = runner.invoke(app, ["calibrate", str(d), "-o", str(out), "--queue-unit", bad])
        assert r.exit_code == 2 and "--queue-unit must be" in r.stderr, r.output
    assert cli.calibrate_alias.__name__ == "calibrate_alias"


def test_calibrate_command_on_a_run_directory(small_run, tmp_path):
    d, spec = small_run
    out = tmp_path / "est.json"
    res = runner.invoke(app, ["calibrate", str(d), "-o", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    unit = spec.realism.sizes.unit_shares()
    assert f"queue unit: {unit:g} shares (run manifest), 4 session(s)" in res.output
    assert "business time x the excitation multiplier replayed (run manifest), 4 session(s)" in res.output
    assert "note: metaorders were on" in res.output
    meta = HLRCurves.load(out).meta
    assert meta["queue_unit"] == unit and meta["queue_units"][0]["source"] == UNIT_MANIFEST
    assert "sensitivity" not in res.output  # the run's HLR sensitivities are the ones assumed
    other = runner.invoke(app, ["calibrate", str(d), "-o", str(out), "--no-plot", "--spread-sens", "0.1"])
    assert "note: the run's HLR model has spread sensitivity 0.3" in other.output
    help_text = runner.invoke(app, ["calibrate", "--help"]).output
    for words in ("--queue-unit", "--no-manifest", "queue units", "business time", "Metaorders"):
        assert words in help_text
