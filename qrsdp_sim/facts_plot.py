"""Every stylized fact drawn against the literature (``qrsdp facts --plot``, notebook 08).

:func:`plot_facts` draws one figure with a panel per fact; :func:`plot_fact` draws one panel
(notebook 08 draws them one at a time). Both can draw other samples into the same panels
(``compare``, e.g. the seed's plain market next to the realistic one). Each panel's title gives the range reported for real
equity order books and its source, taken from the scorecard (:func:`qrsdp_sim.facts.scorecard`)
so the figure and the table never disagree on the references; the legends give each sample's
own figure.

Reference curves are drawn where the literature gives a shape (a power law, the Gaussian, the
exponential of a Poisson process); they are anchored as each legend says, never fitted to make
the sample look better.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qrsdp_sim.analysis import pooled_acf, pooled_acf_at
from qrsdp_sim.facts import MAX_LAG, FactResult, SessionFacts, cross_correlation, scorecard

LAGS = np.arange(1, MAX_LAG + 1)
SIGN_LAGS = np.unique(np.round(np.logspace(0, np.log10(300), 18)).astype(int))
SIGN_FIT = (10, 300)  # lags over which the trade-sign exponent is estimated
COLORS = ("C0", "C1", "C2", "C3", "C4")


@dataclass(frozen=True)
class Sample:
    """One labelled set of sessions drawn into the panels, with its scorecard (by fact key)."""

    label: str
    sessions: list[SessionFacts]
    color: str
    facts: dict[str, FactResult]


def samples(
    sessions: list[SessionFacts],
    *,
    label: str = "QRSDP",
    compare: dict[str, list[SessionFacts]] | None = None,
    factor_loading: float | None = None,
) -> list[Sample]:
    """``sessions`` and the ``compare`` samples (label -> sessions), each scored once, for
    :func:`plot_fact` and :func:`draw_facts`. ``factor_loading``: the market factor's loading of
    the runs, which sets the reference of the cross-security correlation (None: not known)."""
    out = []
    for i, (name, ss) in enumerate([(label, sessions), *(compare or {}).items()]):
        if not ss:
            raise ValueError(f"{name}: no sessions to plot")
        facts = {r.key: r for r in scorecard(ss, factor_loading=factor_loading)}
        out.append(Sample(name, ss, COLORS[i % len(COLORS)], facts))
    return out


Panel = Callable[[object, list[Sample]], None]


def plot_facts(
    sessions: list[SessionFacts],
    path: str | Path | None = None,
    *,
    label: str = "QRSDP",
    compare: dict[str, list[SessionFacts]] | None = None,
    factor_loading: float | None = None,
):
    """Draw every fact of ``sessions`` (and of the ``compare`` samples) in one figure; save it to
    ``path`` (PNG) when given; return the figure."""
    if path is not None:
        import matplotlib

        matplotlib.use("Agg")
    return draw_facts(samples(sessions, label=label, compare=compare, factor_loading=factor_loading), path)


def draw_facts(drawn: list[Sample], path: str | Path | None = None, title: str | None = None):
    """One figure with a panel per fact (:data:`PANELS`) for ``drawn``; saved to ``path`` when given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(27, 12))
    for ax, key in zip(axes.ravel(), PANELS, strict=True):
        _draw(key, ax, drawn)
    if title is None:
        title = "QRSDP stylized facts: " + "; ".join(
            f"{s.label} {len(s.sessions)} sessions, {sum(x.events for x in s.sessions):,} events"
            for s in drawn
        )
    fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig


def plot_fact(key: str, drawn: list[Sample], ax=None):
    """Draw the panel ``key`` (one of :data:`PANELS`) for ``drawn`` into ``ax`` (a new figure when
    None); return the axis."""
    if key not in PANELS:
        raise ValueError(f"unknown fact panel {key!r}; expected one of {', '.join(PANELS)}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 5))
    _draw(key, ax, drawn)
    return ax


def _draw(key: str, ax, samples: list[Sample]) -> None:
    name, fact_keys, draw = PANELS[key]
    draw(ax, samples)
    ref = samples[0].facts
    lines = [f"real: {ref[k].real} ({ref[k].source})" for k in fact_keys if k in ref]
    sub = "\n".join(textwrap.fill(s, 52) for s in lines)
    ax.set_title(f"{name}\n{sub}" if sub else name, fontsize=9.5, loc="left")
    ax.grid(alpha=0.25, which="both", lw=0.5)


# --------------------------------------------------------------------------- panels


def _grouped_bars(ax, x: np.ndarray, samples: list[Sample], values, label) -> None:
    """One bar per sample at each position of ``x``, side by side: ``values(sample)`` the heights,
    ``label(sample, heights)`` the legend entry."""
    width = 0.8 / len(samples)
    for i, s in enumerate(samples):
        v = np.asarray(values(s), dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), v, width, color=s.color, label=label(s, v))


def _message_mix(ax, samples: list[Sample]) -> None:
    def shares(s: Sample) -> np.ndarray:
        c = np.sum([x.counts for x in s.sessions], axis=0).astype(float)
        return 100 * np.array([c[0] + c[1], c[2] + c[3], c[4] + c[5]]) / c.sum()

    _grouped_bars(
        ax,
        np.arange(3),
        samples,
        shares,
        lambda s, v: (
            f"{s.label}: executions {v[2]:.1f} %, {s.facts['cancels_per_execution'].value} cancels per execution"
        ),
    )
    ax.fill_between([1.6, 2.4], 2, 7, color="k", alpha=0.15, label="real: executions 2-7 % of events")
    ax.set_xticks(range(3), ["adds", "cancels", "executions"])
    ax.set_ylim(0, 85)
    ax.set_ylabel("% of events")
    ax.legend(fontsize=8, loc="upper right")


def _lifecycle(ax, samples: list[Sample]) -> None:
    def shares(s: Sample) -> list[float]:
        raw = s.facts["cancelled_share"].raw
        ended = max(raw["ended_cancelled"] + raw["ended_filled"], 1)
        quoted = max(sum(x.two_sided_seconds for x in s.sessions), 1e-9)
        return [
            100 * raw["ended_cancelled"] / ended,
            100 * sum(x.one_tick_seconds for x in s.sessions) / quoted,
        ]

    _grouped_bars(ax, np.arange(2), samples, shares, lambda s, v: f"{s.label}: {v[0]:.1f} % / {v[1]:.1f} %")
    ax.fill_between([-0.4, 0.4], 90, 100, color="k", alpha=0.15, label="real: >= 90 % (NASDAQ day 96 %)")
    ax.fill_between([0.6, 1.4], 90, 100, color="k", alpha=0.07, hatch="//", label="real, large-tick: > 90 %")
    ax.set_xticks(range(2), ["orders that end\ncancelled, not filled", "time with a\none-tick spread"])
    ax.set_ylim(0, 140)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("%")
    ax.legend(fontsize=8, loc="upper center")


def _sizes(ax, samples: list[Sample]) -> None:
    for s in samples:
        sizes: dict[int, int] = {}
        for x in s.sessions:
            for k, v in x.add_sizes.items():
                sizes[k] = sizes.get(k, 0) + v
        k = np.array(sorted(sizes))
        v = np.array([sizes[x] for x in k], dtype=float)
        raw = s.facts["order_sizes"].raw
        ax.loglog(
            k,
            v / v.sum(),
            ".",
            ms=5,
            color=s.color,
            label=f"{s.label}: {raw['distinct_sizes']} sizes, mode {raw['mode']}",
        )
    for lot in (100, 200, 500, 1000):
        ax.axvline(lot, color="grey", lw=0.6, ls=":")
    ax.text(100, 1.5, "round lots", fontsize=8, color="grey", ha="center", va="bottom")
    ax.set_ylim(top=3)
    ax.set_xlabel("limit order size (shares; dotted: 100, 200, 500, 1000)")
    ax.set_ylabel("share of limit orders")
    ax.legend(fontsize=8, loc="lower left")


def _acf_returns(ax, samples: list[Sample]) -> None:
    _grouped_bars(
        ax,
        LAGS,
        samples,
        lambda s: s.facts["acf_returns_lag1"].raw["acf"],
        lambda s, a: f"{s.label}: lag 1 {a[0]:+.3f}",
    )
    ax.axhspan(-0.1, 0.1, color="k", alpha=0.08, label="real: about 0 (|ACF| <= 0.1)")
    n = _fewest_returns(samples)
    ax.axhline(
        2 / math.sqrt(n), color="grey", ls=":", lw=0.9, label=f"+-2/sqrt(n): sampling noise (n = {n:,})"
    )
    ax.axhline(-2 / math.sqrt(n), color="grey", ls=":", lw=0.9)
    _minute_lags(ax, (-0.2, 0.2), "autocorrelation of 1-min returns")
    ax.legend(fontsize=8, loc="lower right")


def _fewest_returns(samples: list[Sample]) -> int:
    """The smallest number of 1-min returns among the samples (for the widest noise band; >= 1)."""
    return max(1, min(s.facts["acf_returns_lag1"].raw["returns"] for s in samples))


def _minute_lags(ax, ylim: tuple[float, float], ylabel: str) -> None:
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(*ylim)
    ax.set_xticks(LAGS)
    ax.set_xlabel("lag (minutes)")
    ax.set_ylabel(ylabel)


def symbol_acf(
    sessions: list[SessionFacts], series: Callable[[SessionFacts], np.ndarray], max_lag: int
) -> dict[str, np.ndarray]:
    """The autocorrelation of ``series(session)`` for each symbol, pooled over that symbol's sessions
    (one mean per symbol; no lagged pair spans two sessions)."""
    by_symbol: dict[str, list[np.ndarray]] = {}
    for s in sessions:
        x = series(s)
        if len(x) > max_lag + 1:
            by_symbol.setdefault(s.symbol, []).append(x)
    return {sym: pooled_acf(xs, max_lag) for sym, xs in sorted(by_symbol.items())}


def _acf_abs(ax, samples: list[Sample]) -> None:
    for s in samples:
        raw_a = s.facts["acf_abs_returns"].raw
        a = np.asarray(raw_a["acf"])
        ax.plot(
            LAGS, a, "o-", color=s.color, lw=2, label=f"{s.label}, sessions pooled: {a[0]:.3f} / {a[9]:.3f}"
        )
        per = symbol_acf(s.sessions, lambda x: np.abs(x.returns), MAX_LAG)
        if len(per) > 1:  # each symbol alone: pooling symbols of different price levels mixes return scales
            for j, (sym, b) in enumerate(per.items()):
                ax.plot(
                    LAGS,
                    b,
                    ("--", ":", "-.")[j % 3],
                    color=s.color,
                    lw=1,
                    label=f"    {sym} alone: {b[0]:.3f} / {b[9]:.3f}",
                )
    ax.fill_between(
        [0.7, 1.3], 0.15, 0.4, color="k", alpha=0.15, label="real: lag 1 0.15-0.4, lag 10 >= 0.08"
    )
    ax.fill_between([9.7, 10.3], 0.08, 0.4, color="k", alpha=0.15)
    ax.plot(LAGS, 0.3 * LAGS**-0.3, "k--", lw=1, label="typical real decay: 0.3 lag^-0.3")
    band = 2 / math.sqrt(_fewest_returns(samples))
    ax.axhspan(-band, band, color="grey", alpha=0.12, label="+-2/sqrt(n): no clustering")
    _minute_lags(ax, (-0.1, 0.85), "autocorrelation of |1-min returns| (lag 1 / lag 10 in the legend)")
    ax.legend(fontsize=7, loc="upper right")


def _tails(ax, samples: list[Sample]) -> None:
    top = 1.0
    for k, s in enumerate(samples):
        z = [
            (x.returns - x.returns.mean()) / x.returns.std()
            for x in s.sessions
            if len(x.returns) > 2 and x.returns.std() > 0
        ]
        x = np.sort(np.abs(np.concatenate(z)))[::-1]
        ccdf = np.arange(1, len(x) + 1) / len(x)
        kurt = s.facts["excess_kurtosis"].value
        ax.loglog(x, ccdf, ".", ms=3, color=s.color, label=f"{s.label}: excess kurtosis {kurt}")
        if k == 0:  # the power law through the first sample's share beyond 2 standard deviations
            p2 = float(np.mean(x > 2.0))
            xs = np.array([2.0, max(10.0, x.max())])
            ax.loglog(
                xs,
                p2 * (xs / 2.0) ** -3,
                "k--",
                lw=1,
                label="tail exponent 3 (inverse cubic law), through P(>2)",
            )
            top = len(x)
    g = np.logspace(-1, math.log10(6), 100)
    ax.loglog(
        g,
        [math.erfc(v / math.sqrt(2)) for v in g],
        color="grey",
        lw=1.5,
        label="Gaussian (excess kurtosis 0)",
    )
    ax.set_xlim(0.1, None)
    ax.set_ylim(0.5 / top, 1.5)
    ax.set_xlabel("|1-min return| / its session's standard deviation")
    ax.set_ylabel("share of returns beyond (P(|r| > x))")
    ax.legend(fontsize=8, loc="lower left")


def _intraday(ax, samples: list[Sample]) -> None:
    bins = 26  # quarter hours of a 6.5-hour day; the midday reference is the middle 2/13 (4 bins)
    x = (np.arange(bins) + 0.5) / bins * 6.5
    for s in samples:
        rates = np.sum([np.asarray(x.activity_profile(bins), dtype=float) for x in s.sessions], axis=0)
        rates /= rates[bins // 2 - 2 : bins // 2 + 2].mean()
        ax.plot(
            x, rates, "o-", ms=4, color=s.color, label=f"{s.label}: ends {s.facts['intraday_u'].value} midday"
        )
    ax.axhline(1.5, color="k", ls="--", lw=1, label="real: first and last half hour >= 1.5x midday")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.axvspan(0, 0.5, color="k", alpha=0.06)
    ax.axvspan(6.0, 6.5, color="k", alpha=0.06)
    ax.axvspan(2.75, 3.75, color="grey", alpha=0.06)
    ax.set_ylim(0, max(ax.get_ylim()[1], 2.0) * 1.3)
    ax.set_xlim(0, 6.5)
    ax.set_xlabel("hours since the open (15-min bins, scaled to a 6.5-hour day)")
    ax.set_ylabel("events per second / midday")
    ax.legend(fontsize=8, loc="upper center")


def _interarrivals(ax, samples: list[Sample]) -> None:
    lo, hi, bins = math.log(1e-4), math.log(10**2.5), 65
    width = (hi - lo) / bins
    centers = np.exp(lo + width * (np.arange(bins) + 0.5))
    for s in samples:
        n = sum(len(x.interarrivals) for x in s.sessions)
        mean = sum(float(x.interarrivals.sum()) for x in s.sessions) / max(n, 1)
        hist = np.zeros(bins)
        for x in s.sessions:  # uniform bins of log(dt / mean), session by session (no 10^7-element copies)
            hist += np.histogram(
                np.log(x.interarrivals[x.interarrivals > 0] / mean), bins=bins, range=(lo, hi)
            )[0]
        dens = hist / (max(n, 1) * width)  # density of log(dt / mean)
        ok = hist > 0
        cv = s.facts["interarrival_cv"].value
        ax.loglog(centers[ok], dens[ok], "o-", ms=3, color=s.color, label=f"{s.label}: CV {cv}")
    ax.loglog(centers, centers * np.exp(-centers), "k--", lw=1, label="Poisson (exponential, CV 1)")
    ax.set_ylim(1e-5, 2)
    ax.set_xlabel("inter-arrival time / its mean")
    ax.set_ylabel("density of log(inter-arrival / mean)")
    ax.legend(fontsize=8, loc="lower center")


def sign_acf(sessions: list[SessionFacts], lags: np.ndarray = SIGN_LAGS) -> np.ndarray:
    """Autocorrelation of trade signs at ``lags`` (market orders), pooled over sessions."""
    signs = [x.trade_signs for x in sessions if len(x.trade_signs) > int(lags.max()) + 1]
    if not signs:
        return np.full(len(lags), np.nan)
    return pooled_acf_at(signs, lags)


@dataclass(frozen=True)
class PowerLaw:
    """acf ~ amplitude lag^-exponent, fitted over lags ``lo`` to ``hi``."""

    exponent: float
    amplitude: float
    lo: int
    hi: int


def power_law_fit(lags: np.ndarray, acf: np.ndarray, lo: int, hi: int, noise: float = 0.0) -> PowerLaw | None:
    """Least squares in log-log over the lags from ``lo`` to ``hi``, stopping before the first value at
    or below ``noise`` (the autocorrelation's sampling noise, e.g. 2/sqrt(n): beyond it the values are
    noise, and a stray positive one must not bend the fit); None when fewer than three lags qualify."""
    sel: list[int] = []
    for i in np.flatnonzero((lags >= lo) & (lags <= hi)):
        if not acf[i] > max(noise, 0.0):
            break
        sel.append(int(i))
    if len(sel) < 3:
        return None
    slope, icpt = np.polyfit(np.log(lags[sel]), np.log(acf[sel]), 1)
    return PowerLaw(float(-slope), float(np.exp(icpt)), int(lags[sel[0]]), int(lags[sel[-1]]))


def _signs(ax, samples: list[Sample]) -> None:
    lags = SIGN_LAGS
    ref: tuple[float, PowerLaw] | None = None
    for k, s in enumerate(samples):
        a = sign_acf(s.sessions, lags)
        n = sum(len(x.trade_signs) for x in s.sessions)
        fit = power_law_fit(lags, a, *SIGN_FIT, noise=2 / math.sqrt(max(n, 1)))
        desc = f"exponent {fit.exponent:.2f} over lags {fit.lo}-{fit.hi}" if fit else "about 0, no power law"
        pos = a > 0
        ax.loglog(
            lags[pos],
            a[pos],
            "o",
            color=s.color,
            label=f"{s.label}: lag 1 {a[0]:.3f}, {desc}" + ("" if pos.all() else " (<= 0 not shown)"),
        )
        if k == 0:
            ax.axhline(
                2 / math.sqrt(max(n, 1)), color="grey", ls=":", lw=0.9, label="2/sqrt(n): sampling noise"
            )
        if k == 0 and fit:
            sel = (lags >= fit.lo) & (lags <= fit.hi)
            ref = (float(np.exp(np.mean(np.log(a[sel]) + 0.6 * np.log(lags[sel])))), fit)
    if ref is not None:
        amp, fit = ref
        ax.loglog(
            lags,
            amp * lags**-0.6,
            "k--",
            lw=1,
            label=f"real: lag^-0.6, level matched over lags {fit.lo}-{fit.hi}",
        )
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("lag (market orders)")
    ax.set_ylabel("autocorrelation of trade signs")
    ax.legend(fontsize=8, loc="lower left")


def _cross(ax, samples: list[Sample]) -> None:
    drawn = False
    for s in samples:
        by_symbol: dict[str, dict[str, np.ndarray]] = {}
        for x in s.sessions:
            if len(x.returns) > 2 and x.returns.std() > 0:
                by_symbol.setdefault(x.symbol, {})[x.date] = (x.returns - x.returns.mean()) / x.returns.std()
        syms = sorted(by_symbol)
        corr = cross_correlation(s.sessions)
        if len(syms) < 2 or corr is None:
            continue
        a, b = syms[:2]
        dates = sorted(set(by_symbol[a]) & set(by_symbol[b]))
        m = [min(len(by_symbol[a][d]), len(by_symbol[b][d])) for d in dates]
        xa = np.concatenate([by_symbol[a][d][:n] for d, n in zip(dates, m, strict=True)])
        xb = np.concatenate([by_symbol[b][d][:n] for d, n in zip(dates, m, strict=True)])
        ax.plot(
            xa,
            xb,
            ".",
            ms=2.5,
            alpha=0.5,
            color=s.color,
            label=f"{s.label}: rho {corr[0]:+.3f} ({corr[1]:,} returns)",
        )
        ax.set_xlabel(f"{a} 1-min return / its session's std")
        ax.set_ylabel(f"{b} 1-min return / its session's std")
        drawn = True
    if not drawn:
        ax.text(
            0.5, 0.5, "needs two symbols on the same dates", ha="center", va="center", transform=ax.transAxes
        )
        return
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.legend(fontsize=8, loc="upper left", markerscale=4)


# key -> (panel name, scorecard facts it shows, drawing function), in figure order
PANELS: dict[str, tuple[str, tuple[str, ...], Panel]] = {
    "message_mix": ("Message mix", ("exec_share", "cancels_per_execution"), _message_mix),
    "lifecycle": ("Order lifecycle and spread", ("cancelled_share", "one_tick_spread"), _lifecycle),
    "order_sizes": ("Order sizes", ("order_sizes",), _sizes),
    "acf_returns": ("Returns are uncorrelated", ("acf_returns_lag1",), _acf_returns),
    "volatility_clustering": ("Volatility clustering", ("acf_abs_returns",), _acf_abs),
    "fat_tails": ("Fat tails of 1-min returns", ("excess_kurtosis",), _tails),
    "intraday": ("Intraday U shape of activity", ("intraday_u",), _intraday),
    "interarrivals": ("Inter-arrival times", ("interarrival_cv",), _interarrivals),
    "trade_signs": ("Long memory of trade signs", ("trade_sign_acf",), _signs),
    "cross_correlation": ("Co-movement of two symbols", ("cross_correlation",), _cross),
}
