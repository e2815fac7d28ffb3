"""Extension hooks of the kernel: the exogenous per-session signal (reserved for the market factor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qrsdp_sim.analysis import sample_mid
from qrsdp_sim.engine import HLR, SessionConfig, SimpleImbalance, simulate_session
from qrsdp_sim.engine.realism import Metaorders, Realism
from qrsdp_sim.records import EventType
from qrsdp_sim.sinks import InMemorySink

SECONDS = 1200


def _run(model, exo=None, step=1.0, seed=21, realism=None):
    sink = InMemorySink()
    config = SessionConfig(seed=seed, session_seconds=SECONDS, model=model, realism=realism or Realism())
    simulate_session(config, sink, exo=exo, exo_step_seconds=step)
    return sink.records


@pytest.mark.parametrize("model", [SimpleImbalance(), HLR()], ids=["simple", "hlr"])
def test_a_signal_without_loading_changes_nothing(model):
    base = _run(model)
    signal = np.random.default_rng(0).uniform(-1, 1, SECONDS)
    assert np.array_equal(_run(model, exo=signal), base)


def _sell_share(sessions: list[np.ndarray], lo: float, hi: float) -> float:
    """Share of sell executions among all executions between ``lo`` and ``hi`` seconds after each
    session's open, pooled over the sessions."""
    sells = buys = 0
    for records in sessions:
        t = (records["ts_ns"].astype(np.int64) - records["ts_ns"][0].astype(np.int64)) / 1e9
        sel = (t >= lo) & (t < hi)
        sells += np.count_nonzero(records["type"][sel] == EventType.EXECUTE_SELL)
        buys += np.count_nonzero(records["type"][sel] == EventType.EXECUTE_BUY)
    return sells / (sells + buys)


@pytest.mark.parametrize(
    "model",
    [dataclasses.replace(SimpleImbalance(), exo_loading=0.8), HLR(exo_loading=0.8)],
    ids=["simple", "hlr"],
)
def test_the_signal_shifts_the_imbalance_piecewise(model):
    """+1 for the first half, -1 for the second (60-second steps): sells dominate and the price falls,
    then buys dominate and it rises. Metaorders off: they would override some market orders' sides.

    The sell shares are pooled over six seeds: the shift is about 0.07, and one 1,200 s session's
    share has a standard error of about 0.04, so a single seed passes or fails by luck."""
    no_meta = Realism(metaorders=Metaorders.off())
    signal = np.where(np.arange(SECONDS // 60) < SECONDS // 120, 1.0, -1.0)
    rec = _run(model, exo=signal, step=60.0, realism=no_meta)
    if isinstance(model, SimpleImbalance):  # its executions read the shifted imbalance directly
        seeds = range(21, 27)
        runs = [rec] + [_run(model, exo=signal, step=60.0, realism=no_meta, seed=s) for s in seeds[1:]]
        plain = [_run(dataclasses.replace(model, exo_loading=0.0), realism=no_meta, seed=s) for s in seeds]
        first = _sell_share(runs, 0, SECONDS / 2)
        second = _sell_share(runs, SECONDS / 2, SECONDS)
        neutral = _sell_share(plain, 0, SECONDS)
        assert first > neutral + 0.04
        assert second < neutral - 0.04
    # HLR's market orders also read its window depths, which the shifted limit order flow thins on the
    # bid side, so for both models the test that matters is the price
    mid = sample_mid(rec, SECONDS / 2, SECONDS)  # at the open, half-way, the close
    assert mid[1] < mid[0] and mid[2] > mid[1]
    ts = rec["ts_ns"].astype(np.int64)
    assert np.all(np.diff(ts) >= 0)


def test_signal_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        _run(dataclasses.replace(SimpleImbalance(), exo_loading=1.0), exo=np.array([0.0, np.nan]))


@pytest.mark.parametrize("step", [0.1, 0.7, 1 / 3])
def test_many_small_signal_steps_terminate_and_stay_ordered(step):
    """Step boundaries that are not exactly representable must not stall the clock."""
    n = int(SECONDS / step) + 1
    signal = np.sin(np.arange(n) * 0.01)
    rec = _run(dataclasses.replace(SimpleImbalance(), exo_loading=0.3), exo=signal, step=step)
    ts = rec["ts_ns"].astype(np.int64)
    assert np.all(np.diff(ts) >= 0)
    assert (ts[-1] - ts[0]) / 1e9 > SECONDS - 5
