"""One figure with every stylized fact against the literature (``qrsdp facts --plot``, notebook 08)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qrsdp_sim.analysis import pooled_acf
from qrsdp_sim.facts import MAX_LAG, SessionFacts

LAGS = np.arange(1, MAX_LAG + 1)


def plot_facts(sessions: list[SessionFacts], path: str | Path | None = None):
    """Draw the facts of ``sessions``; save to ``path`` (PNG) when given; return the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 4, figsize=(18, 8))
    ax = ax.ravel()
    _message_mix(ax[0], sessions)
    _sizes(ax[1], sessions)
    _acf_abs(ax[2], sessions)
    _tails(ax[3], sessions)
    _intraday(ax[4], sessions)
    _interarrivals(ax[5], sessions)
    _signs(ax[6], sessions)
    _acf_returns(ax[7], sessions)
    fig.suptitle(f"QRSDP stylized facts: {len(sessions)} sessions, {sum(s.events for s in sessions):,} events")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig


def _message_mix(ax, sessions):
    counts = np.sum([s.counts for s in sessions], axis=0).astype(float)
    share = np.array([counts[0] + counts[1], counts[2] + counts[3], counts[4] + counts[5]]) / counts.sum()
    ax.bar(["adds", "cancels", "executions"], 100 * share, color=["#4c72b0", "#dd8452", "#55a868"])
    ax.axhspan(2, 7, color="#55a868", alpha=0.15, label="real executions: 2-7 %")
    ax.set_ylabel("% of events")
    ax.set_title("message mix")
    ax.legend(loc="upper right", fontsize=8)


def _sizes(ax, sessions):
    sizes: dict[int, int] = {}
    for s in sessions:
        for k, v in s.add_sizes.items():
            sizes[k] = sizes.get(k, 0) + v
    k = np.array(sorted(sizes))
    v = np.array([sizes[x] for x in k], dtype=float)
    ax.loglog(k, v / v.sum(), ".", ms=4)
    for lot in (100, 200, 500, 1000):
        ax.axvline(lot, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("limit order size (shares)")
    ax.set_ylabel("share of orders")
    ax.set_title("order sizes: round lots dominate")


def _acf_abs(ax, sessions):
    rets = [s.returns for s in sessions if len(s.returns) > MAX_LAG + 1]
    a = pooled_acf([np.abs(r) for r in rets], MAX_LAG)
    ax.plot(LAGS, a, "o-", label="QRSDP |1-min returns|")
    ax.fill_between([1, MAX_LAG], 0.15, 0.4, color="C1", alpha=0.12, label="real, lag 1: 0.15-0.4")
    ax.plot(LAGS, 0.3 * LAGS**-0.3, "k--", lw=1, label="power-law decay (illustrative)")
    ax.axhline(0.08, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("lag (minutes)")
    ax.set_title("volatility clustering")
    ax.legend(fontsize=8)


def _tails(ax, sessions):
    z = [(s.returns - s.returns.mean()) / s.returns.std() for s in sessions if len(s.returns) > 2 and s.returns.std() > 0]
    x = np.sort(np.abs(np.concatenate(z)))[::-1]
    ccdf = np.arange(1, len(x) + 1) / len(x)
    ax.loglog(x, ccdf, ".", ms=3, label="QRSDP (day-standardised)")
    g = np.sort(np.abs(np.random.default_rng(0).standard_normal(len(x))))[::-1]
    ax.loglog(g, ccdf, color="grey", lw=1, label="Gaussian")
    xs = np.array([2.0, 10.0])
    ax.loglog(xs, 0.05 * (xs / 2.0) ** -3, "k--", lw=1, label="tail exponent 3 (inverse cubic law)")
    ax.set_ylim(1.0 / len(x), 1)
    ax.set_xlabel("|1-min return| / std")
    ax.set_title("fat tails")
    ax.legend(fontsize=8)


def _intraday(ax, sessions):
    bins = 26
    rates = np.zeros(bins)
    for s in sessions:
        rates += np.asarray(s.activity_profile(bins), dtype=float)
    rates /= rates[bins // 2 - 2 : bins // 2 + 2].mean()
    x = (np.arange(bins) + 0.5) / bins * 6.5
    ax.plot(x, rates, "o-")
    ax.axhline(1.5, color="C1", ls=":", label="real: ends >= 1.5x midday")
    ax.set_xlabel("hours since the open (scaled to a 6.5 h day)")
    ax.set_ylabel("events per second / midday")
    ax.set_title("intraday U shape")
    ax.legend(fontsize=8)


def _interarrivals(ax, sessions):
    dt = np.concatenate([s.interarrivals for s in sessions])
    dt = dt[dt > 0]
    x = np.sort(dt / dt.mean())[::-1]
    ccdf = np.arange(1, len(x) + 1) / len(x)
    idx = np.unique(np.logspace(0, np.log10(len(x)), 400).astype(int)) - 1
    ax.loglog(x[idx], ccdf[idx], label=f"QRSDP (CV {dt.std() / dt.mean():.2f})")
    xs = np.logspace(-3, np.log10(max(x.max(), 10)), 100)
    ax.loglog(xs, np.exp(-xs), "k--", lw=1, label="Poisson (CV 1)")
    ax.set_ylim(1.0 / len(x), 1)
    ax.set_xlabel("inter-arrival / mean")
    ax.set_title("inter-arrival times")
    ax.legend(fontsize=8)


def _signs(ax, sessions):
    signs = [s.trade_signs for s in sessions if len(s.trade_signs) > 100]
    lags = np.unique(np.logspace(0, 2, 15).astype(int))
    a = pooled_acf(signs, int(lags.max()))[lags - 1]
    pos = a > 0
    ax.loglog(lags[pos], a[pos], "o", label="QRSDP trade signs")
    ax.loglog(lags, a[0] * lags**-0.6, "k--", lw=1, label="lag^-0.6 (Lillo & Farmer 2004)")
    ax.set_xlabel("lag (market orders)")
    ax.set_title("long memory of trade signs")
    ax.legend(fontsize=8)


def _acf_returns(ax, sessions):
    rets = [s.returns for s in sessions if len(s.returns) > MAX_LAG + 1]
    a = pooled_acf(rets, MAX_LAG)
    n = sum(len(r) for r in rets)
    ax.bar(LAGS, a)
    ax.axhspan(-0.1, 0.1, color="C2", alpha=0.12, label="real: about 0")
    ax.axhline(2 / np.sqrt(n), color="grey", ls=":", lw=0.8)
    ax.axhline(-2 / np.sqrt(n), color="grey", ls=":", lw=0.8)
    ax.set_xlabel("lag (minutes)")
    ax.set_title("returns are uncorrelated")
    ax.legend(fontsize=8)
