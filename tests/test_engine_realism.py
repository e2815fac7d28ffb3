"""The realism layers on their own: order sizes (alias sampling), the business clock (time change,
seasonality, activity factor and its market-wide part), metaorders, (de)serialisation, validation."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from numba import njit
from scipy import stats

from qrsdp_sim.analysis import pooled_acf
from qrsdp_sim.engine import SessionConfig, simulate_session
from qrsdp_sim.engine.clock import ActivityFactor, BusinessClock, ClockGrid, IntradayProfile, market_seed
from qrsdp_sim.engine.realism import Excitation, Metaorders, Realism
from qrsdp_sim.engine.rng import seed_state
from qrsdp_sim.engine.runner import RunSpec
from qrsdp_sim.engine.sizes import OrderSizes, SizeDistribution, alias_table, draw_size, unit_size
from qrsdp_sim.facts import _trade_signs
from qrsdp_sim.sinks import InMemorySink


@njit(cache=False)
def _draw_many(tab, rng, n):
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = draw_size(tab, rng)
    return out


# -- order sizes ----------------------------------------------------------------------------------
def test_default_size_distribution_has_the_shape_of_us_equity_order_flow():
    sizes, p = SizeDistribution().pmf()
    assert p.sum() == pytest.approx(1.0)
    assert sizes[np.argmax(p)] == 100  # one round lot is the most common size
    assert p[sizes < 100].sum() == pytest.approx(0.2)  # odd lots
    assert p[sizes > 1000].sum() == pytest.approx(0.03)  # large orders
    assert np.all(sizes[sizes >= 100] % 100 == 0)
    assert len(sizes) >= 100 and SizeDistribution().mean() == pytest.approx(287, abs=1)


def test_alias_sampling_matches_the_distribution():
    sizes, p = SizeDistribution().pmf()
    tab = alias_table(sizes, p)
    n = 400_000
    draws = _draw_many(tab, seed_state(11), n)
    idx = np.searchsorted(sizes, draws)
    assert np.all(sizes[idx] == draws)
    counts = np.bincount(idx, minlength=len(sizes))
    # pool the rare sizes so every cell of the chi-square test has >= 50 expected draws
    order = np.argsort(p)
    cells, acc_c, acc_e = [], 0, 0.0
    for i in order:
        acc_c += counts[i]
        acc_e += n * p[i]
        if acc_e >= 50:
            cells.append((acc_c, acc_e))
            acc_c, acc_e = 0, 0.0
    obs = np.array([c for c, _ in cells], float)
    exp = np.array([e for _, e in cells])
    exp *= obs.sum() / exp.sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # power: a distribution with 10 % fewer round lots of 100 is rejected
    wrong = p.copy()
    wrong[sizes == 100] *= 0.9
    assert abs(counts[sizes == 100].sum() / n - p[sizes == 100].sum()) < 0.005
    assert abs(counts[sizes == 100].sum() / n - wrong[sizes == 100].sum() / wrong.sum()) > 0.02


def test_a_single_size_draws_no_random_number():
    rng = seed_state(3)
    before = rng.copy()
    assert _draw_many(unit_size().table(), rng, 100).tolist() == [1] * 100
    assert np.array_equal(rng, before)  # unit sizes keep the seed's random stream


@pytest.mark.parametrize(
    ("dist", "message"),
    [
        (SizeDistribution(odd_lot_share=1.5), "odd lot share"),
        (SizeDistribution(odd_lot_share=0.8, large_share=0.3), "must not exceed 1"),
        (SizeDistribution(lots=((0, 1.0),)), "integers >= 1"),
        (SizeDistribution(lots=((1, -1.0),)), ">= 0"),
        (SizeDistribution(round_lot=0), "round lot"),
        (SizeDistribution(large_min_lots=20, large_max_lots=10), "large_min_lots"),
        (SizeDistribution(large_max_lots=100_000), "exceed"),
    ],
)
def test_invalid_size_distributions_are_rejected(dist, message):
    with pytest.raises(ValueError, match=message):
        dist.validate()


def test_order_sizes_round_trip_and_unit():
    sizes = OrderSizes()
    assert sizes.unit_shares() == round(SizeDistribution().mean())
    back = OrderSizes.from_dict(sizes.to_dict())
    assert back.unit_shares() == sizes.unit_shares() and back.limit == sizes.limit
    assert OrderSizes.unit().is_unit and OrderSizes.unit().unit_shares() == 1.0


# -- the business clock ---------------------------------------------------------------------------
def test_profile_is_u_shaped_with_mean_one():
    prof = IntradayProfile()
    x = (np.arange(10_000) + 0.5) / 10_000
    u = prof.values(x)
    assert u.mean() == pytest.approx(1.0, rel=1e-3)
    mid = u[4_000:6_000].mean()
    assert u[0] / mid == pytest.approx(4.0, rel=0.1) and u[-1] / mid == pytest.approx(3.0, rel=0.1)
    assert np.all(IntradayProfile.flat().values(x) == 1.0)


def test_a_profile_that_is_not_a_positive_rate_is_rejected():
    with pytest.raises(ValueError, match="positive rate"):
        IntradayProfile(open_ratio=0.01, close_ratio=0.01, open_decay=1.0, close_decay=1.0).validate()
    with pytest.raises(ValueError, match="open ratio"):
        IntradayProfile(open_ratio=0.0).validate()


def test_time_change_is_exact_and_invertible():
    clock = BusinessClock().grid(seed=5, session_seconds=23_400, market_seed=9)
    t = np.sort(np.random.default_rng(0).uniform(0, 23_400, 10_000))
    tau = clock.to_business(t)
    assert np.all(np.diff(tau) > 0)
    np.testing.assert_allclose(clock.to_calendar(tau), t, rtol=0, atol=1e-7)
    # piecewise linear: Theta(t) = integral of g, exactly, at every cell boundary
    np.testing.assert_allclose(clock.to_business(np.arange(0, 23_400, 1.0)), clock.theta[:-1], rtol=1e-12)
    assert clock.business_end == pytest.approx(clock.rate.sum(), rel=1e-12)


def test_activity_factor_has_mean_one_and_the_documented_autocorrelation():
    act = ActivityFactor()
    h, n = 1.0, 2_000_000  # 23 days of 1-second cells: about 550 independent hours
    log_f = act.log_path(np.random.default_rng(1), np.random.default_rng(2), n, h)
    var = sum(s * s for s in act.sigmas)
    assert log_f.mean() == pytest.approx(-var / 2, abs=0.05)  # log-normal with E[F] = 1
    assert np.exp(log_f).mean() == pytest.approx(1.0, rel=0.1)
    assert log_f.var() == pytest.approx(var, rel=0.15)
    # the autocovariance of log F at lag L is sum_j s_j^2 exp(-L / T_j)
    for lag in (60, 600):
        x = log_f - log_f.mean()
        got = float(np.dot(x[:-lag], x[lag:]) / (n - lag))
        expected = sum(s * s * math.exp(-lag / tau) for s, tau in zip(act.sigmas, act.timescales, strict=True))
        assert got == pytest.approx(expected, rel=0.25), (lag, got, expected)


def test_market_wide_activity_is_shared_by_the_symbols_of_a_date():
    spec = RunSpec(session_seconds=23_400)
    date = dt.date(2026, 1, 5)
    a = spec.session_config("AAA", date, 10_000).clock_grid()
    b = spec.session_config("BBB", date, 10_000).clock_grid()
    la, lb = np.log(a.rate), np.log(b.rate)
    assert np.corrcoef(la, lb)[0, 1] > 0.8  # 90 % of the log-variance is common
    other = spec.session_config("AAA", dt.date(2026, 1, 6), 10_000).clock_grid()
    assert abs(np.corrcoef(la - la.mean(), np.log(other.rate) - np.log(other.rate).mean())[0, 1]) < 0.8
    assert spec.session_config("AAA", date, 10_000).market_seed == market_seed(spec.base_seed, 20260105)
    no_common = BusinessClock(activity=ActivityFactor(common=0.0))
    ga, gb = (no_common.grid(c.seed, 23_400, c.market_seed) for c in
              (spec.session_config("AAA", date, 1), spec.session_config("BBB", date, 1)))  # fmt: skip
    assert abs(np.corrcoef(np.log(ga.rate), np.log(gb.rate))[0, 1]) < 0.5


def test_identity_clock_keeps_calendar_time_byte_for_byte():
    plain = Realism.plain()
    assert plain.clock.is_identity and SessionConfig(seed=1, realism=plain).clock_grid() is None
    sinks = []
    for clock in (BusinessClock.identity(), BusinessClock(IntradayProfile.flat(), ActivityFactor.off())):
        sink = InMemorySink()
        simulate_session(SessionConfig(seed=4, session_seconds=300, realism=Realism(clock=clock)), sink)
        sinks.append(sink.records)
    assert sinks[0].tobytes() == sinks[1].tobytes()


def test_clock_grid_handles_a_partial_last_cell():
    grid = ClockGrid.from_rates(np.array([1.0, 2.0, 4.0]), 1.0, 2.5)
    assert grid.business_end == pytest.approx(1.0 + 2.0 + 4.0 * 0.5)
    assert grid.to_calendar(np.array([grid.business_end]))[0] == pytest.approx(2.5)


# -- metaorders -----------------------------------------------------------------------------------
def test_metaorders_give_trade_signs_long_memory_and_off_gives_none():
    acf = {}
    for name, meta in (("on", Metaorders()), ("off", Metaorders.off())):
        signs = []
        for seed in (1, 2):
            sink = InMemorySink()
            simulate_session(SessionConfig(seed=seed, session_seconds=7200, realism=Realism(metaorders=meta)), sink)
            signs.append(_trade_signs(sink.records))
        acf[name] = pooled_acf(signs, 50)
        n = sum(len(s) for s in signs)
    band = 4 / math.sqrt(n)
    assert acf["on"][0] > 0.15 and acf["on"][9] > 0.05 and acf["on"][49] > 0.02
    # power-law-like: the decay from lag 10 to 50 is far slower than an exponential fitted to lags 1-10
    assert acf["on"][49] / acf["on"][9] > (acf["on"][9] / acf["on"][0]) ** 4
    assert abs(acf["off"][9]) < band and abs(acf["off"][49]) < band


# -- serialisation and validation -----------------------------------------------------------------
def test_realism_round_trips_through_json():
    import json

    r = Realism(
        excitation=Excitation(branching=0.3, timescales=(0.1, 10.0), weights=(2.0, 1.0)),
        metaorders=Metaorders(share=0.4, tail=2.0, liquidity_response=0.1),
        clock=BusinessClock(IntradayProfile(2.0, 1.5), ActivityFactor((0.5,), (300.0,), common=0.5)),
    )
    back = Realism.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.to_dict() == r.to_dict()
    assert Realism.from_dict(Realism.plain().to_dict()).is_plain


@pytest.mark.parametrize(
    ("realism", "message"),
    [
        (Realism(excitation=Excitation(branching=1.0)), "n >= 1 explodes"),
        (Realism(excitation=Excitation(timescales=(1.0,), weights=(1.0, 2.0))), "one weight per time scale"),
        (Realism(metaorders=Metaorders(tail=1.0)), "tail exponent"),
        (Realism(metaorders=Metaorders(liquidity_response=1.0)), "liquidity response"),
        (Realism(clock=BusinessClock(activity=ActivityFactor((0.5,), (0.0,)))), "time scale"),
        (Realism(clock=BusinessClock(step_seconds=0.0)), "clock step"),
        (Realism(sizes=OrderSizes(partial_cancel_share=-0.1)), "partial-cancel share"),
    ],
)
def test_invalid_realism_is_rejected(realism, message):
    with pytest.raises(ValueError, match=message):
        SessionConfig(seed=1, realism=realism).validate()
