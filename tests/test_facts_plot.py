"""The stylized-facts figure (``qrsdp facts --plot``, notebook 08): every fact has a panel with its
real-data reference, the per-symbol clustering and the trade-sign power law are measured right."""

from __future__ import annotations

import datetime as dt
import math

import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

from qrsdp_sim.analysis import pooled_acf, pooled_acf_at
from qrsdp_sim.cli import app
from qrsdp_sim.engine import SimpleImbalance, simulate_session
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.runner import RunSpec, Security, run
from qrsdp_sim.facts import MAX_LAG, SessionFacts, measure_session, scorecard
from qrsdp_sim.facts_plot import PANELS, draw_facts, plot_fact, power_law_fit, samples, symbol_acf
from qrsdp_sim.sinks import InMemorySink

matplotlib.use("Agg")  # before any figure: the panels import pyplot when they draw
runner = CliRunner(env={"COLUMNS": "200"})
SECONDS = 900


def _sessions(model, realism: Realism, days: int = 2) -> list[SessionFacts]:
    """Short in-memory sessions of two symbols at different price levels (as the default run has)."""
    spec = RunSpec(base_seed=3, days=days, session_seconds=SECONDS, model=model, realism=realism)
    out = []
    for symbol, p0 in (("AAA", 10_000), ("BBB", 20_000)):
        for date in spec.dates():
            sink = InMemorySink()
            simulate_session(spec.session_config(symbol, date, p0), sink)
            out.append(measure_session(sink.records, SECONDS, symbol, date.isoformat()))
    return out


@pytest.fixture(scope="module")
def realistic() -> list[SessionFacts]:
    return _sessions(SimpleImbalance(), Realism())


@pytest.fixture(scope="module")
def plain() -> list[SessionFacts]:
    return _sessions(SimpleImbalance.seed(), Realism.plain(), days=1)


def test_every_scorecard_fact_has_a_panel(realistic):
    keys = {r.key for r in scorecard(realistic, factor_loading=0.0)}
    assert "cross_correlation" in keys and "one_tick_spread" in keys
    shown = {k for _, fact_keys, _ in PANELS.values() for k in fact_keys}
    assert keys <= shown, keys - shown


def test_figure_has_every_panel_with_its_real_range_and_each_samples_figure(realistic, plain, tmp_path):
    drawn = samples(realistic, label="realistic", compare={"plain seed": plain}, factor_loading=0.0)
    path = tmp_path / "facts.png"
    fig = draw_facts(drawn)
    fig.savefig(path, dpi=30)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == len(PANELS)
    cards = {s.label: s.facts for s in drawn}
    for ax, (name, fact_keys, _) in zip(fig.axes, PANELS.values(), strict=True):
        title = ax.get_title(loc="left")
        assert title.startswith(name)
        for key in fact_keys:  # the scorecard's real-data range, in the title
            assert cards["realistic"][key].real[:25] in title.replace("\n", " "), (name, key)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        for label in ("realistic", "plain seed"):
            assert any(text.startswith(label) for text in labels), (name, label, labels)
    # the legends carry each sample's own figures from its scorecard
    texts = {t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()}
    assert f"realistic: excess kurtosis {cards['realistic']['excess_kurtosis'].value}" in texts
    assert f"plain seed: CV {cards['plain seed']['interarrival_cv'].value}" in texts


def test_plot_fact_draws_one_panel_and_rejects_unknown_names(realistic):
    drawn = samples(realistic)
    ax = plot_fact("trade_signs", drawn)
    assert ax.get_title(loc="left").startswith("Long memory of trade signs")
    with pytest.raises(ValueError, match="unknown fact panel 'tails'"):
        plot_fact("tails", drawn)
    with pytest.raises(ValueError, match="empty: no sessions"):
        samples(realistic, compare={"empty": []})


def _facts(symbol: str, date: str, returns: np.ndarray) -> SessionFacts:
    return SessionFacts(
        symbol=symbol, date=date, session_seconds=23_400.0, events=1, counts=np.zeros(6, np.int64),
        orders_cancelled=0, orders_filled=0, partial_executions=0, partial_cancels=0, add_sizes={},
        returns=returns, interarrivals=np.ones(3), segment_counts=(1, 1, 1), segment_seconds=(1.0, 2.0, 1.0),
        trade_signs=np.ones(3), one_tick_seconds=1.0, two_sided_seconds=1.0, activity_bins=np.ones(78),
    )  # fmt: skip


def test_symbol_acf_is_not_fooled_by_symbols_of_different_price_levels():
    """Independent returns, one symbol at twice the other's price (half the log return per tick):
    pooled together with one mean, |returns| look clustered; each symbol alone does not."""
    rng = np.random.default_rng(7)
    sessions = [
        _facts(symbol, f"2026-01-0{d}", scale * rng.standard_normal(390))
        for symbol, scale in (("AAA", 2e-4), ("BBB", 1e-4))
        for d in range(1, 6)
    ]
    mixed = pooled_acf([np.abs(s.returns) for s in sessions], MAX_LAG)
    assert mixed[0] > 0.1 and mixed[9] > 0.1  # the artefact the per-symbol curves avoid
    per = symbol_acf(sessions, lambda s: np.abs(s.returns), MAX_LAG)
    assert sorted(per) == ["AAA", "BBB"]
    noise = 4 / math.sqrt(5 * 390)
    for acf in per.values():
        assert np.all(np.abs(acf) < noise), acf


def test_power_law_fit_recovers_the_exponent_and_stops_at_the_noise():
    lags = np.unique(np.round(np.logspace(0, np.log10(300), 18)).astype(int))
    acf = 0.3 * lags**-0.6
    fit = power_law_fit(lags, acf, 10, 300)
    assert fit is not None and fit.exponent == pytest.approx(0.6) and fit.amplitude == pytest.approx(0.3)
    assert (fit.lo, fit.hi) == (10, int(lags[-1]))
    # a small sample: beyond some lag the values are noise, one of them <= 0; the fit stops before it
    noisy = acf.copy()
    noisy[-3:] = [0.004, -0.002, 0.006]
    fit = power_law_fit(lags, noisy, 10, 300, noise=0.005)
    assert fit is not None and fit.exponent == pytest.approx(0.6) and fit.hi == int(lags[-4])
    # no memory: the values are noise from the first lag on
    assert power_law_fit(lags, np.full(len(lags), 0.001), 10, 300, noise=0.005) is None


def test_pooled_acf_at_matches_pooled_acf():
    rng = np.random.default_rng(1)
    series = [rng.standard_normal(500).cumsum() for _ in range(3)]
    lags = np.array([1, 3, 10, 40])
    assert np.allclose(pooled_acf_at(series, lags), pooled_acf(series, 40)[lags - 1])


def test_cli_facts_plot_writes_the_figure(tmp_path):
    spec = RunSpec(base_seed=5, days=1, session_seconds=600, start_date=dt.date(2026, 1, 5))
    run(spec, [Security("AAA", 10_000), Security("BBB", 20_000)], tmp_path / "run")
    png = tmp_path / "facts.png"
    res = runner.invoke(app, ["facts", str(tmp_path / "run"), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["facts", str(tmp_path / "run"), "--plot", str(tmp_path / "facts.txt")])
    assert res.exit_code == 2
    assert "expected a .png file name" in res.stderr
