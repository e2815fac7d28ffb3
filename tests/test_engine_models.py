"""Model rate functions against the formulas of the spec, on hand-built books."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qrsdp_sim.engine import HLR, HLRCurves, SessionConfig, SimpleImbalance
from qrsdp_sim.engine.book import BA, BB, new_book, push_order
from qrsdp_sim.engine.kernel import SPREAD_TABLE
from qrsdp_sim.engine.models.base import P_SPREAD_SENS
from qrsdp_sim.engine.models.hlr import hlr_rates
from qrsdp_sim.engine.models.simple_imbalance import simple_rates
from qrsdp_sim.engine.realism import Metaorders, Realism
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.records import RECORD_DTYPE, EventType


def build(
    levels: int, bids: dict[int, int], asks: dict[int, int], best_bid: int, best_ask: int, order_qty: int = 1
):
    """A book with the given quantities per price, in orders of ``order_qty`` shares (the last one smaller)."""
    book = new_book(100, levels, 1, pool_size=4096)
    out = np.zeros(4096, dtype=RECORD_DTYPE)
    book.ist[BB], book.ist[BA] = best_bid, best_ask
    for side, levels_ in ((0, bids), (1, asks)):
        for price, q in levels_.items():
            while q > 0:
                take = min(q, order_qty)
                push_order(book.grid, book.pool, book.oid, book.ist, side, price, take, out, 0, np.uint64(0))
                q -= take
    return book


def mult_table(params: np.ndarray) -> np.ndarray:
    return np.exp(params[P_SPREAD_SENS] * (np.arange(SPREAD_TABLE) - 2))


def simple_expected(m: SimpleImbalance, qb, qa, db, da, s, shift=0.0, unit=1.0):
    """The spec: cancels count window depth in queue units, the best tick kappa times; the factor's
    imbalance shift d also scales cancels by (1 + 2d) on the bid and (1 - 2d) on the ask."""
    raw = (qb - qa) / (qb + qa + 1e-9)
    imb = min(1, max(-1, raw + shift))
    d = imb - raw
    a, e = math.exp(m.spread_sens * (s - 2)), math.exp(-m.spread_sens * (s - 2))
    si = m.imbalance_sens * imb
    k = m.cancel_best_mult
    r = [
        m.base_L * (1 - si) * a,
        m.base_L * (1 + si) * a,
        m.base_C * m.cancel_sens * (db + (k - 1) * qb) / unit * max(1 + 2 * d, 0),
        m.base_C * m.cancel_sens * (da + (k - 1) * qa) / unit * max(1 - 2 * d, 0),
        m.base_M * (m.epsilon_exec + max(-si, 0)) * e,
        m.base_M * (m.epsilon_exec + max(si, 0)) * e,
    ]
    return np.maximum(r, 1e-9)


@pytest.mark.parametrize(
    ("bids", "asks", "bb", "ba"),
    [
        ({99: 3, 98: 2, 96: 4}, {101: 1, 103: 5}, 99, 101),  # bid-heavy, gaps in the windows
        ({99: 1}, {100: 7, 101: 2, 110: 9}, 99, 100),  # spread 1, an ask outside the window
        ({95: 2, 94: 1}, {105: 2}, 95, 105),  # wide spread (10)
        ({95: 2}, {95 + 80: 1}, 95, 175),  # spread beyond the precomputed table
    ],
)
def test_simple_imbalance_rates_match_the_formulas(bids, asks, bb, ba):
    for kappa, unit, lot in ((1.0, 1.0, 1), (7.0, 1.0, 1), (7.0, 100.0, 60)):
        m = SimpleImbalance(
            base_L=17, base_C=0.7, base_M=11, imbalance_sens=0.8, cancel_sens=1.3, epsilon_exec=0.25,
            cancel_best_mult=kappa,
        )  # fmt: skip
        shares = lambda d, u=unit: {p: 100 * q for p, q in d.items()} if u > 1 else d  # noqa: E731
        book = build(5, shares(bids), shares(asks), bb, ba, order_qty=lot)
        p = m.params_vector()
        rates = np.zeros(22)
        total = simple_rates(book.grid, book.ist, p, 0.0, mult_table(p), unit, rates)
        db = sum(q for price, q in shares(bids).items() if bb - 5 < price <= bb)
        da = sum(q for price, q in shares(asks).items() if ba <= price < ba + 5)
        exp = simple_expected(m, shares(bids)[bb], shares(asks)[ba], db, da, ba - bb, unit=unit)
        np.testing.assert_allclose(rates[:6], exp, rtol=1e-12)
        assert total == pytest.approx(exp.sum(), rel=1e-12)
        if unit > 1:  # the same book in 100-share units has the rates of the one-share book
            np.testing.assert_allclose(
                rates[:6], simple_expected(m, bids[bb], asks[ba], db / 100, da / 100, ba - bb), rtol=1e-8
            )  # (the 1e-9 guard of the imbalance's denominator is in shares)


def test_simple_imbalance_rates_are_floored_and_the_exogenous_shift_applies():
    m = SimpleImbalance(imbalance_sens=3.0, epsilon_exec=0.0)
    book = build(5, {99: 9}, {101: 1}, 99, 101)
    p = m.params_vector()
    rates = np.zeros(6)
    simple_rates(book.grid, book.ist, p, 0.0, mult_table(p), 1.0, rates)
    assert rates[EventType.ADD_BID] == 1e-9  # L (1 - 3 * 0.8) < 0 -> floor
    assert rates[EventType.EXECUTE_BUY] == 1e-9  # eps 0 and imbalance > 0
    # exogenous signal x with loading 0.5 shifts the imbalance by 0.5 x (and the cancels with it)
    p2 = p.copy()
    p2[2] = 0.5
    simple_rates(book.grid, book.ist, p2, -1.0, mult_table(p2), 1.0, rates)
    np.testing.assert_allclose(rates[:6], simple_expected(m, 9, 1, 9, 1, 2, shift=-0.5), rtol=1e-12)
    # a shift that meets the clip moves the cancels only by what was applied
    simple_rates(book.grid, book.ist, p2, 1.0, mult_table(p2), 1.0, rates)
    np.testing.assert_allclose(rates[:6], simple_expected(m, 9, 1, 9, 1, 2, shift=0.5), rtol=1e-12)
    assert rates[EventType.CANCEL_ASK] < simple_expected(m, 9, 1, 9, 1, 2)[EventType.CANCEL_ASK]


@pytest.mark.parametrize("unit", [1, 100])
def test_hlr_rates_match_the_curves(unit):
    """The seed's curves (spec) on a book whose queues hold the same number of queue units."""
    curves = HLRCurves.seed(levels=3, n_max=4)
    m = HLR(curves)
    # level 0: 2 units, level 1: 0, level 2: 6 (beyond n_max -> flat tail); a partly filled unit
    # counts as a whole one (n = ceil(shares / unit))
    bids = {99: 2 * unit, 97: 6 * unit - (unit - 1)}
    asks = {102: unit - (unit // 2), 103: 3 * unit}  # spread 3
    book = build(3, bids, asks, 99, 102, order_qty=max(1, unit // 3))
    p = m.params_vector()
    rates = np.zeros(14)
    total = hlr_rates(book.grid, book.ist, p, curves.kernel_table(), 0.0, mult_table(p), float(unit), rates)
    s, K = 3, 3
    a, e = math.exp(0.3 * (s - 2)), math.exp(-0.3 * (s - 2))
    nb, na = [2, 0, 6], [1, 3, 0]
    add = lambda i, n: (15 / (1 + 0.12 * min(n, 4))) if i == 0 else 5 / (1 + 0.2 * min(n, 4))  # noqa: E731
    canc = lambda n: 0.3 * min(n, 4) / (1 + 0.02 * min(n, 4))  # noqa: E731
    db, da = sum(bids.values()), sum(asks.values())
    it = (db - da) / (db + da + 1e-9)  # the imbalance is read in shares
    exp = (
        [add(i, nb[i]) * a for i in range(K)]
        + [add(i, na[i]) * a for i in range(K)]
        + [canc(nb[i]) for i in range(K)]
        + [canc(na[i]) for i in range(K)]
        + [8 * e * (1 + max(-it, 0)), 8 * e * (1 + max(it, 0))]  # execute buy, execute sell
    )
    np.testing.assert_allclose(rates, exp, rtol=1e-12)
    assert total == pytest.approx(sum(exp), rel=1e-12)
    assert rates[2 * K + 1] == 0.0  # no cancel on an empty level


def test_hlr_event_and_level_are_drawn_jointly_from_the_per_level_rates():
    """Curves with a single non-zero rate per event kind: every model event lands where the curves say."""
    K, n_max = 4, 10
    z = np.zeros((2, K, n_max + 1))
    n = np.arange(n_max + 1)
    add, cancel = z.copy(), z.copy()
    add[0, 2, :] = 6.0  # bid adds only at level 2
    add[1, 1, :] = 6.0  # ask adds only at level 1
    cancel[0, 2, :] = 0.4 * n  # bid cancels only at level 2
    cancel[1, 1, :] = 0.4 * n
    market = np.zeros((2, n_max + 1))
    market[1, 1:] = 3.0  # only buys
    curves = HLRCurves(add=add, cancel=cancel, market=market, spread_sensitivity=0.0)
    config = SessionConfig(
        seed=5,
        session_seconds=600,
        levels_per_side=K,
        model=HLR(curves, improve_per_tick=0.0),
        realism=Realism(metaorders=Metaorders.off()),  # metaorders would turn some buys into sells
    )
    parts = list(SessionDriver(config, top_of_book=True).batches())
    rec = np.concatenate([r for r, _ in parts])
    tob = np.concatenate([t for _, t in parts])
    marks = np.flatnonzero(tob[:, 0] != -1)
    first, prev = marks[:-1] + 1, tob[marks[:-1]]
    ev = rec[first]
    price = ev["price_ticks"].astype(np.int64)
    typ = ev["type"]
    assert set(np.unique(typ)) == {0, 1, 2, 3, 4}
    assert np.all(price[typ == 0] == prev[typ == 0, 0] - 2)
    assert np.all(price[typ == 1] == prev[typ == 1, 1] + 1)
    assert np.all(price[typ == 2] == prev[typ == 2, 0] - 2)
    assert np.all(price[typ == 3] == prev[typ == 3, 1] + 1)
    assert np.all(price[typ == 4] == prev[typ == 4, 1])


def test_hlr_validation_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="3 levels per side but the session uses 5"):
        SessionConfig(seed=1, model=HLR(HLRCurves.default(levels=3))).validate()
