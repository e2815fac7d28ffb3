"""The compiled event loop: a continuous-time competing-risk simulation over the book.

``run_kernel`` advances one session until its output buffer (or the order pool) could
overflow on the next event, the session ends, or the book leaves its grid, and returns.
All state lives in numpy arrays owned by the caller (book, generator, clock), so the
Python driver streams each full buffer to its sink and calls again: memory does not
grow with session length, and where the buffer boundaries fall does not change a single
random draw (the output is identical for any buffer size).

Per event: rates from the model (reading the book) -> candidate time by thinning
(exponential with the total rate times the decorator bound; with no decorator every
candidate is accepted) -> stop at the session end -> event (and level) in proportion
to the rates -> attributes (level, improving add, order to cancel) -> apply to the book,
which emits the event's record and any refill ADDs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qrsdp_sim.engine._nrt import borrow
from qrsdp_sim.engine.book import (
    BASE,
    BB,
    ERROR,
    G_NORD,
    G_QSUM,
    LEVELS,
    N_FREE,
    REFILL,
    add_at_level,
    add_improving,
    cancel_nth,
    execute_best,
    window_depth,
)
from qrsdp_sim.engine.decorators import DEC_NONE, dec_bound, dec_multiplier, dec_on_event
from qrsdp_sim.engine.models.base import MODEL_CONSTANT, MODEL_HLR, P_ADD_ALPHA, P_IMPROVE, P_SPREAD_SENS
from qrsdp_sim.engine.models.constant import constant_rates
from qrsdp_sim.engine.models.hlr import hlr_rates
from qrsdp_sim.engine.models.simple_imbalance import simple_rates
from qrsdp_sim.engine.rng import below, exponential, uniform

# return status
DONE = 0  # session end reached
FULL = 1  # output buffer or order pool too small for a worst-case next event
ERROR_GRID = 2  # the book left its price grid

# clock state (float64 array)
F_TIME = 0  # elapsed seconds since the open
N_FST = 1

TOB_COLS = 6  # best bid, best ask, qty at each, bid and ask window depth

SPREAD_TABLE = 64  # spreads below this use a precomputed exp(sS (s - 2))


def scratch_size(levels: int) -> int:
    """float64 work space the kernel needs: rates, spread multipliers, add-level weights."""
    return 5 * levels + 2 + SPREAD_TABLE


def max_records_per_event(levels: int, refill_depth: int) -> int:
    """Worst case: one removal that empties the best and refills a whole window."""
    return 1 + levels * refill_depth


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _pick(rates, nr, target):
    """First index whose cumulative rate exceeds ``target`` (``target`` < the sum of the rates).

    Branch-free: counts the cumulative sums that do not exceed the target, so the
    unpredictable comparison never becomes a mispredicted jump. A zero rate adds
    nothing to the sum and so can never be picked, except as the last index on
    round-off (harmless: every event is valid in every book state).
    """
    acc = 0.0
    idx = 0
    for i in range(nr - 1):
        acc += rates[i]
        idx += acc <= target
    return idx


@njit(nogil=True, cache=True, error_model="numpy")
def _top_of_book(grid, ist, tob, row):
    base = ist[BASE]
    bb = ist[BB]
    ba = ist[BB + 1]
    tob[row, 0] = bb
    tob[row, 1] = ba
    tob[row, 2] = grid[G_QSUM, 0, bb - base]
    tob[row, 3] = grid[G_QSUM, 1, ba - base]
    tob[row, 4] = window_depth(grid, ist, 0)
    tob[row, 5] = window_depth(grid, ist, 1)


@njit(nogil=True, cache=True, error_model="numpy")
def run_kernel(
    grid,
    pool,
    oid,
    ist,
    rng,
    fst,
    kind,
    params,
    tables,
    dec_kind,
    dec_params,
    dec_state,
    exo,
    exo_step,
    t_end,
    open_ns,
    out,
    tob,
    scratch,
):
    """Simulate into ``out`` from ``fst[F_TIME]``; return ``(status, records_written)``.

    ``exo`` is an optional piecewise-constant signal (value ``exo[j]`` on
    ``[j * exo_step, (j + 1) * exo_step)``, last value held), length 0 for none.
    ``tob`` (rows >= ``out`` rows, or 0 rows to disable) receives the top of book after
    each event on the row of the event's last record (diagnostics for tests).
    ``scratch`` is float64 work space of at least ``scratch_size(K)`` elements.
    """
    # views without reference counting (see _nrt.borrow): the caller keeps the arrays alive
    grid = borrow(grid)
    pool = borrow(pool)
    oid = borrow(oid)
    ist = borrow(ist)
    rng = borrow(rng)
    params = borrow(params)
    tables = borrow(tables)
    dec_params = borrow(dec_params)
    dec_state = borrow(dec_state)
    exo = borrow(exo)
    out = borrow(out)
    tob = borrow(tob)
    scratch = borrow(scratch)
    K = ist[LEVELS]
    need = 1 + K * ist[REFILL]
    cap = out.shape[0]
    n = 0
    t = fst[F_TIME]
    status = DONE
    per_level = kind == MODEL_HLR
    nr = 4 * K + 2 if per_level else 6
    rates = scratch[: 4 * K + 2]
    mult = scratch[4 * K + 2 : 4 * K + 2 + SPREAD_TABLE]
    for s in range(SPREAD_TABLE):
        mult[s] = np.exp(params[P_SPREAD_SENS] * (s - 2))
    alpha = params[P_ADD_ALPHA]
    wcum = scratch[4 * K + 2 + SPREAD_TABLE : 5 * K + 2 + SPREAD_TABLE]  # cumulative add-level weights
    acc = 0.0
    for k in range(K):
        acc += np.exp(-alpha * k)
        wcum[k] = acc
    improve = params[P_IMPROVE]
    n_exo = exo.shape[0]
    with_tob = tob.shape[0] > 0

    while True:
        if n + need > cap or ist[N_FREE] < need:
            status = FULL
            break
        # -- the model's rates for the current book (and exogenous input)
        x = 0.0
        t_limit = t_end
        if n_exo > 0:
            j = int(t / exo_step)
            if (j + 1) * exo_step <= t:  # t sits on a step boundary that division rounded down
                j += 1
            if j >= n_exo - 1:
                x = exo[n_exo - 1]
            else:
                x = exo[j]
                t_limit = min(t_end, (j + 1) * exo_step)
        if kind == MODEL_HLR:
            total = hlr_rates(grid, ist, params, tables, x, mult, rates)
        elif kind == MODEL_CONSTANT:
            total = constant_rates(params, rates)
        else:
            total = simple_rates(grid, ist, params, x, mult, rates)
        # -- next event time: thinning against the decorator's bound
        # (Ogata): candidates from a Poisson process of rate total x bound, each accepted with
        # probability multiplier / bound; after a rejection the multiplier just computed at the
        # candidate is the new bound (the multiplier does not increase between events)
        accepted = False
        m_hi = dec_bound(dec_kind, dec_params, dec_state, t)
        while True:
            tc = t + exponential(rng) / (total * m_hi)
            if tc >= t_limit:
                break
            if dec_kind == DEC_NONE:
                t = tc
                accepted = True
                break
            m = dec_multiplier(dec_kind, dec_params, dec_state, tc)
            t = tc
            if m >= m_hi or uniform(rng) * m_hi < m:
                accepted = True
                break
            m_hi = m
        if not accepted:
            t = t_limit
            if t_limit >= t_end:
                status = DONE
                break
            continue  # crossed a step of the exogenous signal: rates change there
        ts = np.uint64(open_ns + np.int64(t * 1e9))
        # -- which event
        idx = _pick(rates, nr, uniform(rng) * total)
        if per_level:
            if idx < 4 * K:
                etype = idx // K
                level = idx - etype * K
            else:
                etype = 4 + (idx - 4 * K)
                level = 0
        else:
            etype = idx
            level = -1
        # -- attributes and application
        if etype <= 1:
            s = etype
            spread = ist[BB + 1] - ist[BB]
            if spread > 1 and uniform(rng) < min(1.0, (spread - 1) * improve):
                n = add_improving(grid, pool, oid, ist, s, 1, out, n, ts)
            else:
                if level < 0:
                    target = uniform(rng) * wcum[K - 1]
                    level = 0
                    while level < K - 1 and wcum[level] <= target:
                        level += 1
                n = add_at_level(grid, pool, oid, ist, s, level, 1, out, n, ts)
        elif etype <= 3:
            s = etype - 2
            d = 2 * s - 1
            i0 = ist[BB + s] - ist[BASE]
            if level < 0:
                tot = 0
                for k in range(K):
                    tot += grid[G_QSUM, s, i0 + d * k]
                target = below(rng, tot)
                level = 0
                cum = grid[G_QSUM, s, i0]
                while cum <= target:
                    level += 1
                    cum += grid[G_QSUM, s, i0 + d * level]
            cnt = grid[G_NORD, s, i0 + d * level]
            if cnt > 0:  # always true for validated models (cancel rate 0 on empty ticks)
                n = cancel_nth(grid, pool, oid, ist, s, level, below(rng, cnt), out, n, ts)
        else:
            n = execute_best(grid, pool, oid, ist, 5 - etype, out, n, ts)
        if ist[ERROR] != 0:
            status = ERROR_GRID
            break
        if with_tob:
            _top_of_book(grid, ist, tob, n - 1)
        dec_on_event(dec_kind, dec_params, dec_state, t, etype)
    fst[F_TIME] = t
    return status, n
