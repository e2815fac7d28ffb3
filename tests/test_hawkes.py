"""HawkesIntensity: alpha = 0 is the base model byte for byte; excitation decays as
exp(-beta t) and is capped; hand-computed intensities; exact sampling (time-rescaling KS)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.engine import (
    HLR,
    ConstantRates,
    HawkesIntensity,
    HawkesParams,
    SessionConfig,
    SimpleImbalance,
    simulate_session,
)
from qrsdp_sim.engine.decorators import DEC_HAWKES, hawkes_decorator, replay_decorator
from qrsdp_sim.engine.models.hawkes import compensator_increments, integrated_multiplier
from qrsdp_sim.engine.realism import Excitation, Metaorders, Realism
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.sinks import InMemorySink

runner = CliRunner(env={"COLUMNS": "200"})


# the Hawkes decorator takes the place of the realism layer's excitation: compare with that layer off
NO_EXCITATION = Realism(excitation=Excitation.off())


def _records(model, seconds=1500, seed=3, realism=NO_EXCITATION):
    sink = InMemorySink()
    simulate_session(SessionConfig(seed=seed, session_seconds=seconds, model=model, realism=realism), sink)
    return sink.records


# -- alpha = 0 ------------------------------------------------------------------------
@pytest.mark.parametrize("realism", [NO_EXCITATION, Realism.plain()], ids=["realistic", "plain"])
@pytest.mark.parametrize("base", [SimpleImbalance(), HLR()], ids=["simple", "hlr"])
def test_alpha_zero_is_byte_identical_to_the_base_model(base, realism):
    plain = _records(base, realism=realism)
    for beta, cap in ((1.0, 5.0), (2.0, 0.5)):
        hawkes = _records(
            HawkesIntensity(base, HawkesParams(alpha=0.0, beta=beta, max_excitation=cap)), realism=realism
        )
        assert hawkes.tobytes() == plain.tobytes()
    # and the excitation does change the session when switched on
    changed = _records(HawkesIntensity(base, HawkesParams(alpha=0.01, beta=2.0)), realism=realism)
    assert not np.array_equal(changed, plain)


# -- the decorator itself ---------------------------------------------------------------
def _drive(params: HawkesParams, events, probes):
    kind, p, state = hawkes_decorator(params.alpha, params.beta, params.max_excitation)
    assert kind == DEC_HAWKES
    after = np.empty(len(events))
    at = np.empty(len(probes))
    replay_decorator(kind, p, state, np.asarray(events, float), np.asarray(probes, float), after, at)
    return after, at, state


def test_excitation_decays_as_exp_minus_beta_t():
    params = HawkesParams(alpha=0.8, beta=2.0, max_excitation=5.0)
    t = np.linspace(0.0, 4.0, 81)
    _, at, _ = _drive(params, [1.0], 1.0 + t)
    # a probe at exactly t = 1 sees the events strictly before it: none
    assert at[0] == 1.0
    np.testing.assert_allclose(at[1:] - 1.0, 0.8 * np.exp(-2.0 * t[1:]), rtol=1e-12)


def test_excitation_never_exceeds_the_cap_and_decays_from_it():
    params = HawkesParams(alpha=1.0, beta=3.0, max_excitation=2.0)
    burst = np.arange(20) * 0.001  # 20 events in 19 ms: E reaches about 19.4
    probes = np.linspace(0.0, 3.0, 3001)
    after, at, state = _drive(params, burst, probes)
    assert np.all(after <= 1.0 + 2.0) and np.all(at <= 1.0 + 2.0)
    e_last = state[0]
    assert e_last > 15  # the excitation itself is uncapped ...
    t_last = burst[-1]
    late = probes > t_last
    expected = 1.0 + np.minimum(e_last * np.exp(-3.0 * (probes[late] - t_last)), 2.0)
    np.testing.assert_allclose(at[late], expected, rtol=1e-12)
    # ... so the multiplier stays at 1 + cap until E has decayed to the cap: t = ln(E / cap) / beta
    t_cap = t_last + math.log(e_last / 2.0) / 3.0
    assert np.all(at[late & (probes < t_cap - 1e-9)] == 3.0)
    assert np.all(at[probes > t_cap + 1e-9] < 3.0)


def test_hand_computed_intensities_for_a_fixed_event_sequence():
    """alpha 0.6, beta 1.5, cap 1; events at 0.5, 0.7, 1.0, 2.5 s. By hand:
    E(0.5+) = 0.6
    probe 0.6:  1 + 0.6 e^-0.15                      = 1.516425
    E(0.7+) = 0.6 e^-0.3 + 0.6          = 1.044491 -> multiplier capped at 2
    E(1.0+) = 1.044491 e^-0.45 + 0.6    = 1.265997 -> 2
    probe 2.0:  1 + 1.265997 e^-1.5                  = 1.282482
    E(2.5+) = 1.265997 e^-2.25 + 0.6    = 0.733435 -> 1.733435
    probe 3.0:  1 + 0.733435 e^-0.75                 = 1.346450
    """
    params = HawkesParams(alpha=0.6, beta=1.5, max_excitation=1.0)
    after, at, state = _drive(params, [0.5, 0.7, 1.0, 2.5], [0.0, 0.6, 2.0, 3.0])
    np.testing.assert_allclose(after, [1.6, 2.0, 2.0, 1.733435], rtol=1e-6)
    np.testing.assert_allclose(at, [1.0, 1.516425, 1.282482, 1.346450], rtol=1e-6)
    assert state[0] == pytest.approx(0.733435, rel=1e-6) and state[1] == 2.5


def test_integrated_multiplier_matches_numerical_integration():
    params = HawkesParams(alpha=1.0, beta=2.0, max_excitation=1.5)
    for e0 in (0.0, 0.4, 1.5, 4.0):
        for dt in (0.01, 0.3, 2.0):
            s = np.linspace(0.0, dt, 200_001)
            f = 1.0 + np.minimum(e0 * np.exp(-2.0 * s), 1.5)
            expected = float(np.sum((f[1:] + f[:-1]) / 2.0 * np.diff(s)))
            got = float(integrated_multiplier(np.array([e0]), np.array([dt]), params)[0])
            assert got == pytest.approx(expected, rel=1e-6), (e0, dt)


# -- exact sampling: time-rescaling --------------------------------------------------------
def _simple_total(model: SimpleImbalance, tob: np.ndarray) -> np.ndarray:
    """SimpleImbalance's total rate for books given as rows (bb, ba, qb, qa, Db, Da) (docs/models.md)."""
    bb, ba, qb, qa, db, da = (tob[:, i].astype(np.float64) for i in range(6))
    imb = (qb - qa) / (qb + qa + 1e-9)
    a = np.exp(model.spread_sens * (ba - bb - 2))
    e = 1.0 / a
    si = model.imbalance_sens * imb
    fl = 1e-9
    rates = [
        np.maximum(model.base_L * (1 - si) * a, fl),
        np.maximum(model.base_L * (1 + si) * a, fl),
        np.maximum(model.base_C * model.cancel_sens * db, fl),
        np.maximum(model.base_C * model.cancel_sens * da, fl),
        np.maximum(model.base_M * (model.epsilon_exec + np.maximum(-si, 0)) * e, fl),
        np.maximum(model.base_M * (model.epsilon_exec + np.maximum(si, 0)) * e, fl),
    ]
    return np.sum(rates, axis=0)


def _events_and_base_totals(model: HawkesIntensity, seconds: int, seed: int):
    """Event times and, for each, the base total rate in force on the interval before it
    (the seed's plain order flow, in calendar time: the formula above is the seed model's)."""
    cfg = SessionConfig(seed=seed, session_seconds=seconds, model=model, realism=Realism.plain())
    driver = SessionDriver(cfg, top_of_book=True)
    recs, tobs = [], []
    for r, tob in driver.batches():
        recs.append(r)
        tobs.append(tob)
    rec, tob = np.concatenate(recs), np.concatenate(tobs)
    is_event = tob[:, 0] >= 0
    t = (rec["ts_ns"][is_event].astype(np.int64) - cfg.market_open_ns) / 1e9
    books = tob[is_event]
    K, D = cfg.levels_per_side, cfg.initial_depth
    p0, s0 = cfg.p0_ticks, cfg.initial_spread_ticks
    opening = np.array([[p0 - s0 // 2, p0 - s0 // 2 + s0, D, D, K * D, K * D]])
    before = np.concatenate([opening, books[:-1]])  # the book each waiting time was drawn in
    base = model.base
    if isinstance(base, ConstantRates):
        totals = np.full(len(t), float(sum(base.rates)))
    else:
        totals = _simple_total(base, before)
    return t, totals


@pytest.mark.parametrize(
    ("base", "params", "seconds", "frozen_rejected"),
    [
        # branching ratio base total x alpha / beta: 0.85, about 0.35, saturated at the cap, fast decay
        (ConstantRates(), HawkesParams(alpha=0.05, beta=2.0), 1500, False),
        (SimpleImbalance.seed(), HawkesParams(alpha=0.01, beta=2.0), 1500, False),
        (SimpleImbalance.seed(), HawkesParams(alpha=0.5, beta=2.0), 300, False),
        (SimpleImbalance.seed(), HawkesParams(alpha=0.4, beta=40.0, max_excitation=3.0), 600, True),
    ],
    ids=["constant-0.85", "simple-0.35", "simple-a0.5-b2", "simple-fast"],
)
def test_time_rescaled_interarrivals_are_exponential(base, params, seconds, frozen_rejected):
    """Lambda(t_i) - Lambda(t_{i-1}) ~ Exp(1) i.i.d. for the exact compensator (KS test), and the
    'frozen excitation' approximation is rejected by the same test where E moves between events."""
    model = HawkesIntensity(base, params)
    t, totals = _events_and_base_totals(model, seconds, seed=17)
    assert len(t) > 20_000
    z = compensator_increments(t, totals, params)
    ks = stats.kstest(z, "expon")
    assert ks.pvalue > 1e-3, ks
    assert z.mean() == pytest.approx(1.0, abs=4 / math.sqrt(len(z)))
    # also the 1-lag correlation of the rescaled times (independence)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4 / math.sqrt(len(z))
    # the 'frozen excitation' approximation (multiplier held at its value just after the previous
    # event) is not Exp(1) where E decays noticeably between events: the test can tell them apart
    e_after = np.concatenate([[0.0], _excitation(t, params)[:-1]])
    frozen = totals * (1 + np.minimum(e_after, params.max_excitation)) * np.diff(np.concatenate([[0], t]))
    p_frozen = stats.kstest(frozen, "expon").pvalue
    print(f"KS p exact {ks.pvalue:.3g}, frozen {p_frozen:.3g}, events {len(t)}")
    if frozen_rejected:
        assert p_frozen < 1e-6


def _excitation(t, params):
    out = np.empty(len(t))
    e, last = 0.0, 0.0
    for i, ti in enumerate(t):
        e = e * math.exp(-params.beta * (ti - last)) + params.alpha
        last = ti
        out[i] = e
    return out


# -- configuration ------------------------------------------------------------------------
def test_invalid_parameters_are_rejected():
    for bad in (HawkesParams(alpha=-1), HawkesParams(beta=0.0), HawkesParams(max_excitation=float("inf"))):
        with pytest.raises(ValueError):
            HawkesIntensity(SimpleImbalance(), bad).validate(5)
    with pytest.raises(ValueError, match="cannot wrap"):
        HawkesIntensity(HawkesIntensity()).validate(5)


def test_cli_hawkes_run_and_manifest(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        ["run", "--model", "hawkes", "--hawkes-alpha", "0.02", "--hawkes-beta", "2", "--hawkes-cap", "4",
         "--hawkes-base", "hlr", "--seconds", "60", "--output", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["name"] == "hawkes"
    p = m["model"]["params"]
    assert (p["alpha"], p["beta"], p["max_excitation"]) == (0.02, 2.0, 4.0)
    assert p["base"]["name"] == "hlr"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hawkes-alpha", "0.5"], "--hawkes-alpha needs --model hawkes"),
        (["--model", "hlr", "--hawkes-beta", "2"], "--hawkes-beta needs --model hawkes"),
        (["--model", "hawkes", "--hawkes-base", "garch"], "unknown --hawkes-base 'garch'"),
        (["--model", "hawkes", "--hawkes-beta", "0"], "--hawkes-beta must be a finite number > 0"),
        (["--model", "hawkes", "--hawkes-alpha", "-1"], "--hawkes-alpha must be a finite number >= 0"),
        (["--model", "hawkes", "--hlr-curves", "c.json"], "--hlr-curves needs --model hlr"),
    ],
)
def test_cli_hawkes_argument_errors(tmp_path, args, message):
    res = runner.invoke(app, ["run", "--output", str(tmp_path / "o"), "--seconds", "5", *args])
    assert res.exit_code == 2
    assert message in res.stderr, res.stderr


# -- the realism layer's excitation, in business time ----------------------------------------
def _realistic_events(realism: Realism, seconds: int, seed: int):
    """Model events of a ConstantRates session with realism layers: business times and triggers
    (market orders and events that move the mid), reconstructed from the records and the clock."""
    rates = (10.0, 10.0, 6.0, 6.0, 5.0, 5.0)
    cfg = SessionConfig(seed=seed, session_seconds=seconds, model=ConstantRates(rates), realism=realism)
    driver = SessionDriver(cfg, top_of_book=True)
    parts = list(driver.batches())
    rec = np.concatenate([r for r, _ in parts])
    tob = np.concatenate([t for _, t in parts])
    marks = np.flatnonzero(tob[:, 0] >= 0)
    first = np.concatenate([[marks[0]], marks[:-1] + 1])  # first record of each model event
    t_cal = (rec["ts_ns"][first].astype(np.int64) - cfg.market_open_ns) / 1e9
    clock = cfg.clock_grid()
    tau = clock.to_business(t_cal) if clock is not None else t_cal
    mid = tob[marks, 0] + tob[marks, 1]
    p0, s0 = cfg.p0_ticks, cfg.initial_spread_ticks
    mid_before = np.concatenate([[2 * (p0 - s0 // 2) + s0], mid[:-1]])
    triggers = (rec["type"][first] >= 4) | (mid != mid_before)
    t_end = clock.business_end if clock is not None else float(seconds)
    return tau, triggers, sum(rates), t_end, t_cal


@pytest.mark.parametrize(
    "realism",
    [
        Realism(metaorders=Metaorders.off()),
        Realism(
            metaorders=Metaorders.off(),
            excitation=Excitation(branching=0.9, timescales=(0.02, 5.0), weights=(1, 1), cap=1000.0),
        ),
    ],
    ids=["default", "n0.9"],
)
def test_excitation_and_business_clock_are_sampled_exactly(realism):
    """Time-rescaling in business time: with the clock rebuilt from the seed and the multiplier
    replayed through the events, base total x integral of the multiplier between events ~ Exp(1).
    Dropping either the clock or the excitation from the compensator is rejected."""
    from qrsdp_sim.engine.decorators import replay_integrals

    tau, triggers, total, _, t_cal = _realistic_events(realism, 1800, seed=29)
    assert len(tau) > 50_000 and 0.05 < triggers.mean() < 0.8
    kind, params, state = realism.excitation.decorator()
    w = np.empty(len(tau))
    top = replay_integrals(kind, params, state, tau, triggers, w)
    assert top < realism.excitation.cap  # the cap never bound: the closed form is exact
    z = total * w
    ks = stats.kstest(z, "expon")
    assert ks.pvalue > 1e-3, ks
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4 / math.sqrt(len(z))
    # power: without the excitation, or in calendar time, the rescaled times are not Exp(1)
    assert stats.kstest(total * np.diff(np.concatenate([[0.0], tau])), "expon").pvalue < 1e-6
    kind, params, state = realism.excitation.decorator()
    w_cal = np.empty(len(t_cal))
    replay_integrals(kind, params, state, t_cal, triggers, w_cal)
    assert stats.kstest(total * w_cal, "expon").pvalue < 1e-6


def test_excitation_mean_multiplier_is_one_over_one_minus_n():
    """The normalised excitation is stationary with mean multiplier 1 / (1 - n), whatever the rates."""
    from qrsdp_sim.engine.decorators import replay_integrals

    for n in (0.3, 0.7):
        realism = Realism(metaorders=Metaorders.off(), excitation=Excitation(branching=n))
        tau, triggers, _, _, _ = _realistic_events(realism, 3600, seed=31)
        kind, params, state = realism.excitation.decorator()
        w = np.empty(len(tau))
        replay_integrals(kind, params, state, tau, triggers, w)
        mean_multiplier = w.sum() / tau[-1]
        assert mean_multiplier == pytest.approx(1 / (1 - n), rel=0.1), (n, mean_multiplier)
