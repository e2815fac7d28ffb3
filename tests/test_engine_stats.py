"""Statistical behaviour of the event loop with a constant-rate test model.

Event-type frequencies must match the rates (chi-square), inter-arrival times must be
exponential with the total rate (KS), and the attribute rules (level weights, improving
adds, uniform choice of the cancelled order) must hold. Each test also checks that the
statistic *rejects* a slightly wrong hypothesis, so it cannot pass vacuously.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qrsdp_sim.engine import ConstantRates, SessionConfig
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.records import EventType

RATES = (10.0, 10.0, 6.0, 6.0, 5.0, 5.0)  # removals outpace adds: queues stay short, refills keep sides alive
TOTAL = sum(RATES)
OPEN_NS = 34_200 * 10**9


@pytest.fixture(scope="module")
def constant_session():
    # plain: one-share orders in calendar time, so the kernel's own rules are what is measured
    config = SessionConfig(seed=1234, session_seconds=3600, model=ConstantRates(RATES), realism=Realism.plain())
    driver = SessionDriver(config, top_of_book=True)
    parts = list(driver.batches())
    records = np.concatenate([r for r, _ in parts])
    tob = np.concatenate([t for _, t in parts])
    return config, records, tob


def model_events(records: np.ndarray) -> np.ndarray:
    """Indices of model events: the first record of each timestamp after the opening book.

    Refill ADDs share the timestamp of the event that triggered them. Derived from the
    records alone (not from engine diagnostics).
    """
    ts = records["ts_ns"].astype(np.int64)
    first = np.ones(len(ts), dtype=bool)
    first[1:] = ts[1:] != ts[:-1]
    first &= ts != OPEN_NS
    return np.flatnonzero(first)


def test_event_type_frequencies_match_the_rates(constant_session):
    _, records, _ = constant_session
    idx = model_events(records)
    counts = np.bincount(records["type"][idx], minlength=6)
    n = counts.sum()
    assert n > 140_000
    expected = n * np.asarray(RATES) / TOTAL
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # power: a 10% error on one rate is rejected
    wrong = np.asarray(RATES)
    wrong[2] *= 1.1
    assert stats.chisquare(counts, n * wrong / wrong.sum()).pvalue < 1e-6


def test_inter_arrival_times_are_exponential_with_the_total_rate(constant_session):
    config, records, _ = constant_session
    ts = records["ts_ns"][model_events(records)].astype(np.int64)
    gaps = np.diff(np.concatenate([[OPEN_NS], ts])) / 1e9
    assert abs(gaps.mean() * TOTAL - 1) < 0.01
    assert stats.kstest(gaps, "expon", args=(0, 1 / TOTAL)).pvalue > 1e-3
    # power: 3% off in the rate is rejected
    assert stats.kstest(gaps, "expon", args=(0, 1 / (1.03 * TOTAL))).pvalue < 1e-4
    # no event after the session end; the last one is close to it
    assert ts[-1] < OPEN_NS + config.session_seconds * 10**9
    assert ts[-1] > OPEN_NS + (config.session_seconds - 1) * 10**9


def _events_with_previous_state(records: np.ndarray, tob: np.ndarray):
    """(first record of each model event, top of book just before it), from the kernel's per-event marks.

    The kernel marks the last record of every event with the book after it; so event j
    starts right after mark j-1, and mark j-1 is the state it saw. The first event
    (which saw the opening book) is dropped.
    """
    marks = np.flatnonzero(tob[:, 0] != -1)
    return marks[:-1] + 1, tob[marks[:-1]]


def test_add_levels_and_improving_adds_follow_the_attribute_rules(constant_session):
    _, records, tob = constant_session
    idx, prev = _events_with_previous_state(records, tob)
    rec = records[idx]
    is_add = rec["type"] <= 1
    bid_add = rec["type"] == EventType.ADD_BID
    bb, ba = prev[:, 0], prev[:, 1]
    spread = ba - bb
    price = rec["price_ticks"].astype(np.int64)
    inside = np.where(bid_add, price > bb, price < ba)
    # improving adds land exactly one tick inside
    improving = is_add & inside
    assert np.all(price[improving] == np.where(bid_add, bb + 1, ba - 1)[improving])
    assert not np.any(inside[is_add & (spread == 1)])
    for s, p in ((2, 0.5), (3, 1.0)):
        sel = is_add & (spread == s)
        k, n = int(np.count_nonzero(inside[sel])), int(np.count_nonzero(sel))
        assert n > 200
        if p < 1:
            assert stats.binomtest(k, n, p).pvalue > 1e-3
            assert stats.binomtest(k, n, p + 0.1).pvalue < 1e-3
        else:
            assert k == n
    # non-improving adds: level k (ticks from the best) with weight exp(-0.5 k), k < 5
    outside = is_add & ~inside
    level = np.where(bid_add, bb - price, price - ba)[outside]
    assert level.min() == 0 and level.max() == 4
    counts = np.bincount(level, minlength=5)
    w = np.exp(-0.5 * np.arange(5))
    assert stats.chisquare(counts, counts.sum() * w / w.sum()).pvalue > 1e-3
    w_wrong = np.exp(-0.6 * np.arange(5))
    assert stats.chisquare(counts, counts.sum() * w_wrong / w_wrong.sum()).pvalue < 1e-6


def test_cancel_level_weight_is_the_queue_size(constant_session):
    _, records, tob = constant_session
    idx, prev = _events_with_previous_state(records, tob)
    rec = records[idx]
    bids = rec["type"] == EventType.CANCEL_BID
    at_best = (rec["price_ticks"] == prev[:, 0])[bids]
    p_best = (prev[:, 2] / prev[:, 4])[bids]  # qty at the best / window depth, before the cancel
    expected, var = p_best.sum(), (p_best * (1 - p_best)).sum()
    z = (at_best.sum() - expected) / np.sqrt(var)
    assert abs(z) < 4
    # power: a rule favouring the best by 15% would be visible
    assert abs(at_best.sum() - 1.15 * expected) / np.sqrt(var) > 4


def test_cancelled_order_is_uniform_within_its_queue(constant_session):
    """Replay FIFO queues and look at the position of each cancelled order in its queue."""
    _, records, _ = constant_session
    queues: dict[tuple[int, int], list[int]] = {}
    u = []
    rng = np.random.default_rng(0)
    for typ, side, price, oid in zip(
        records["type"].tolist(),
        records["side"].tolist(),
        records["price_ticks"].tolist(),
        records["order_id"].tolist(),
        strict=True,
    ):
        key = (side, price)
        if typ <= 1:
            queues.setdefault(key, []).append(oid)
        else:
            q = queues[key]
            pos = q.index(oid)
            if typ <= 3 and len(q) > 1:
                u.append((pos + rng.random()) / len(q))  # randomised PIT: U(0,1) if the choice is uniform
            q.pop(pos)
    u = np.asarray(u)
    assert len(u) > 20_000
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # power: a choice tilted towards the front by a few percent is rejected
    assert stats.kstest(u**1.05, "uniform").pvalue < 1e-3
