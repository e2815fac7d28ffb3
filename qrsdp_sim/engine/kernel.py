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

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine._nrt import borrow
from qrsdp_sim.engine.book import (
    BASE,
    BB,
    ERROR,
    G_NORD,
    G_QSUM,
    LEVELS,
    MAX_FILLS,
    N_FREE,
    REFILL,
    WIN,
    add_at_level,
    add_improving,
    cancel_nth,
    execute_best,
    window_depth,
)
from qrsdp_sim.engine.clock import CK_INV_RATE, CK_THETA
from qrsdp_sim.engine.decorators import (
    DEC_EXCITE,
    DEC_HAWKES,
    DEC_NONE,
    dec_bound,
    dec_lower,
    dec_multiplier,
    dec_on_event,
)
from qrsdp_sim.engine.models.base import (
    MODEL_CONSTANT,
    MODEL_HLR,
    MODEL_SIMPLE,
    P_ADD_ALPHA,
    P_CANCEL_BEST,
    P_IMPROVE,
    P_LIQUIDITY,
    P_SPREAD_SENS,
)
from qrsdp_sim.engine.models.constant import constant_rates
from qrsdp_sim.engine.models.hlr import hlr_rates
from qrsdp_sim.engine.models.simple_imbalance import simple_constants, simple_rates_c
from qrsdp_sim.engine.rng import below, exponential_zig, uniform, uniform_pos
from qrsdp_sim.engine.sizes import draw_size

# return status
DONE = 0  # session end reached
FULL = 1  # output buffer or order pool too small for a worst-case next event
ERROR_GRID = 2  # the book left its price grid

# clock state (float64 array)
F_TIME = 0  # business time elapsed since the open (= calendar seconds without a business clock)
F_CAL = 1  # calendar seconds since the open of the last event
F_CELL = 2  # the business clock's current cell (an index, kept as a float)
F_EXO = 3  # the exogenous signal's current step (an index, kept as a float)
F_LAST_TS = 4  # timestamp (ns) of the last record written
F_META_SIGN = 5  # the active metaorder's side: 0 none yet, 1 buy, -1 sell
F_META_LEFT = 6  # children the active metaorder still has
F_BOUND = 7  # the thinning bound carried to the next call (0: compute it afresh)
N_FST = 8

# session parameters (float64 array ``spar``)
S_PARTIAL = 0  # share of cancels that are partial
S_LOT = 1  # round lot (shares) for partial cancels
S_UNIT = 2  # shares per queue unit (the models read queue sizes in this unit)
S_META_SHARE = 3  # probability that a market order is a child of the active metaorder (0: off)
S_META_TAIL = 4  # Pareto tail exponent of metaorder lengths
S_META_LIQ = 5  # liquidity response: add rates x (1 +- r) on the side the metaorder consumes / the other
#                (< 0: the model's own, params[P_LIQUIDITY])
N_SPAR = 6

TOB_COLS = 6  # best bid, best ask, qty at each, bid and ask window depth

SPREAD_TABLE = 64  # spreads below this use a precomputed exp(sS (s - 2)) and its reciprocal


def scratch_size(levels: int) -> int:
    """float64 work space the kernel needs: rates, spread multipliers and their reciprocals,
    add-level weights."""
    return 5 * levels + 2 + 2 * SPREAD_TABLE


def max_records_per_event(levels: int, refill_depth: int) -> int:
    """Worst case of any event but a market order: one removal that empties the best and refills a
    whole window. A market order adds one record per resting order it touches (at most ``MAX_FILLS``)."""
    return 1 + levels * refill_depth


def buffer_records(levels: int, refill_depth: int) -> int:
    """The smallest output buffer that always fits one event (a market order at its worst)."""
    return max_records_per_event(levels, refill_depth) + MAX_FILLS


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
def count_types(records, counts):
    """Add the records of each type (``counts[type]``, types 0-5) to ``counts``: one pass, no temporaries."""
    for i in range(records.shape[0]):
        t = records[i].type
        if t < 6:
            counts[t] += 1


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
    spar,
    sz_limit,
    sz_market,
    dec_kind,
    dec_params,
    dec_state,
    exo,
    exo_tau,
    clock,
    clock_step,
    t_end,
    open_ns,
    out,
    tob,
    scratch,
):
    """Simulate into ``out`` from ``fst[F_TIME]``; return ``(status, records_written)``.

    Time runs in business time (``t``, ``t_end``); with a business clock (``clock`` of shape
    (2, n + 1): Theta at the cell boundaries and 1 / g per cell of ``clock_step`` seconds) each
    event's business time is mapped to calendar time for its timestamp; an empty clock (shape
    (2, 0)) means business time is calendar time. ``exo`` is an optional piecewise-constant
    signal (value ``exo[j]`` from business time ``exo_tau[j]`` to ``exo_tau[j + 1]``, last value
    held), length 0 for none. ``sz_limit`` / ``sz_market``: alias tables of limit- and market-order
    sizes; ``spar``: session parameters (``S_*``). ``tob`` (rows >= ``out`` rows, or 0 rows to
    disable) receives the top of book after each event on the row of the event's last record.
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
    spar = borrow(spar)
    sz_limit = borrow(sz_limit)
    sz_market = borrow(sz_market)
    dec_params = borrow(dec_params)
    dec_state = borrow(dec_state)
    exo = borrow(exo)
    exo_tau = borrow(exo_tau)
    clock = borrow(clock)
    out = borrow(out)
    tob = borrow(tob)
    scratch = borrow(scratch)
    K = ist[LEVELS]
    need = 1 + K * ist[REFILL]
    cap = out.shape[0]
    room = cap - need - MAX_FILLS  # the last n at which any event still fits the buffer
    n = 0
    t = fst[F_TIME]
    status = DONE
    per_level = kind == MODEL_HLR
    nr = 4 * K + 2 if per_level else 6
    rates = scratch[: 4 * K + 2]
    mult = scratch[4 * K + 2 : 4 * K + 2 + SPREAD_TABLE]
    inv_mult = scratch[4 * K + 2 + SPREAD_TABLE : 4 * K + 2 + 2 * SPREAD_TABLE]
    for s in range(SPREAD_TABLE):
        mult[s] = np.exp(params[P_SPREAD_SENS] * (s - 2))
        inv_mult[s] = 1.0 / mult[s]
    alpha = params[P_ADD_ALPHA]
    wcum = scratch[4 * K + 2 + 2 * SPREAD_TABLE : 5 * K + 2 + 2 * SPREAD_TABLE]  # cumulative add-level weights
    acc = 0.0
    for k in range(K):
        acc += np.exp(-alpha * k)
        wcum[k] = acc
    improve = params[P_IMPROVE]
    kappa = params[P_CANCEL_BEST]
    partial = spar[S_PARTIAL]
    lot = np.int64(spar[S_LOT])
    unit = spar[S_UNIT]
    if kind == MODEL_SIMPLE:
        simple_c = simple_constants(params, unit)
    else:  # the other models' params vectors lack SimpleImbalance's slots
        simple_c = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    meta_share = spar[S_META_SHARE]
    meta_inv_tail = -1.0 / spar[S_META_TAIL] if meta_share > 0.0 else 0.0
    meta_sign = fst[F_META_SIGN]
    meta_left = fst[F_META_LEFT]
    meta_liq = spar[S_META_LIQ] if spar[S_META_LIQ] >= 0.0 else params[P_LIQUIDITY]
    if meta_share == 0.0:
        meta_liq = 0.0
    n_exo = exo.shape[0]
    with_tob = tob.shape[0] > 0
    n_cells = clock.shape[1] - 1
    with_clock = n_cells > 0
    cell = np.int64(fst[F_CELL])
    jx = np.int64(fst[F_EXO])
    last_ts = np.uint64(fst[F_LAST_TS])
    tcal = fst[F_CAL]
    m_hi = fst[F_BOUND]  # the thinning bound; 0: compute it at the current time

    while True:
        # room for the worst case of any next event (a market order touching MAX_FILLS orders): a fixed
        # test, no book reads (the batch ends up to MAX_FILLS records early; boundaries change nothing)
        if n > room or ist[N_FREE] < need:
            status = FULL
            break
        # -- the model's rates for the current book (and exogenous input)
        x = 0.0
        t_limit = t_end
        if n_exo > 0:
            while jx + 1 < n_exo and exo_tau[jx + 1] <= t:
                jx += 1
            x = exo[jx]
            if jx + 1 < n_exo:
                t_limit = min(t_end, exo_tau[jx + 1])
        if kind == MODEL_HLR:
            total = hlr_rates(grid, ist, params, tables, x, mult, unit, rates)
        elif kind == MODEL_CONSTANT:
            total = constant_rates(params, rates)
        else:  # MODEL_SIMPLE
            total = simple_rates_c(grid, ist, simple_c, ist[WIN], ist[WIN + 1], x, mult, inv_mult, rates)
        if meta_liq > 0.0 and meta_sign != 0.0:  # liquidity providers lean against the metaorder
            up = 1.0 + meta_liq  # the side it consumes: asks for a buy metaorder
            dn = 1.0 - meta_liq
            f_bid = dn if meta_sign > 0 else up
            f_ask = up if meta_sign > 0 else dn
            if per_level:
                for k in range(K):
                    total += (f_bid - 1.0) * rates[k] + (f_ask - 1.0) * rates[K + k]
                    rates[k] *= f_bid
                    rates[K + k] *= f_ask
            else:
                total += (f_bid - 1.0) * rates[0] + (f_ask - 1.0) * rates[1]
                rates[0] *= f_bid
                rates[1] *= f_ask
        # -- next event time: thinning against the decorator's bound
        # (Ogata): candidates from a Poisson process of rate total x bound, each accepted with
        # probability multiplier / bound; after a rejection the multiplier just computed at the
        # candidate is the new bound (the multiplier does not increase between triggers, so a
        # bound stays one until the next trigger: events that do not excite keep it)
        accepted = False
        if m_hi == 0.0:
            m_hi = dec_bound(dec_kind, dec_params, dec_state, t)
        while True:
            tc = t + exponential_zig(rng) / (total * m_hi)
            if tc >= t_limit:
                break
            if dec_kind == DEC_NONE:
                t = tc
                accepted = True
                break
            if dec_kind == DEC_EXCITE:
                # squeeze: most candidates are accepted on a lower bound, without an exponential
                u = uniform(rng) * m_hi
                t = tc
                if u < dec_lower(dec_kind, dec_params, dec_state, tc):
                    accepted = True
                    break
                m = dec_multiplier(dec_kind, dec_params, dec_state, tc)
                if u < m:
                    accepted = True
                    break
                m_hi = m
                continue
            m = dec_multiplier(dec_kind, dec_params, dec_state, tc)
            t = tc
            if m >= m_hi or uniform(rng) * m_hi < m:
                accepted = True
                break
            m_hi = m
        if not accepted:
            t = t_limit
            m_hi = 0.0  # a step of the exogenous signal: the bound is taken afresh there
            if t_limit >= t_end:
                status = DONE
                break
            continue  # crossed a step of the exogenous signal: rates change there
        # -- calendar time of the event (exact inverse of the piecewise-linear business clock)
        if with_clock:
            while cell + 1 < n_cells and clock[CK_THETA, cell + 1] <= t:
                cell += 1
            tcal = cell * clock_step + (t - clock[CK_THETA, cell]) * clock[CK_INV_RATE, cell]
        else:
            tcal = t
        ts = np.uint64(open_ns + np.int64(tcal * 1e9))
        if ts < last_ts:  # round-off at a cell boundary can never move time backwards
            ts = last_ts
        last_ts = ts
        mid_before = ist[BB] + ist[BB + 1]
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
            qty = draw_size(sz_limit, rng)
            spread = ist[BB + 1] - ist[BB]
            if spread > 1 and uniform(rng) < min(1.0, (spread - 1) * improve):
                n = add_improving(grid, pool, oid, ist, s, qty, out, n, ts)
            else:
                if level < 0:
                    target = uniform(rng) * wcum[K - 1]
                    level = 0
                    while level < K - 1 and wcum[level] <= target:
                        level += 1
                n = add_at_level(grid, pool, oid, ist, s, level, qty, out, n, ts)
        elif etype <= 3:
            s = etype - 2
            d = 2 * s - 1
            i0 = ist[BB + s] - ist[BASE]
            if level < 0:
                if kappa == 1.0:  # weight = queue quantity (integer draw: the seed's exact stream)
                    tot = 0
                    for k in range(K):
                        tot += grid[G_QSUM, s, i0 + d * k]
                    target = below(rng, tot)
                    level = 0
                    cum = grid[G_QSUM, s, i0]
                    while cum <= target:
                        level += 1
                        cum += grid[G_QSUM, s, i0 + d * level]
                else:  # weight = queue quantity, times kappa at the best
                    ftot = kappa * grid[G_QSUM, s, i0]
                    for k in range(1, K):
                        ftot += grid[G_QSUM, s, i0 + d * k]
                    ftarget = uniform(rng) * ftot
                    level = 0
                    fcum = kappa * grid[G_QSUM, s, i0]
                    while fcum <= ftarget and level < K - 1:
                        level += 1
                        fcum += grid[G_QSUM, s, i0 + d * level]
                    while grid[G_NORD, s, i0 + d * level] == 0:  # round-off landed on an empty tick
                        level -= 1
            cnt = grid[G_NORD, s, i0 + d * level]
            if cnt > 0:  # always true for validated models (cancel rate 0 on empty ticks)
                n = cancel_nth(
                    grid, pool, oid, ist, s, level, below(rng, cnt), partial, lot, sz_limit, rng, out, n, ts
                )
        else:
            if meta_share > 0.0 and uniform(rng) < meta_share:  # a child of the active metaorder
                if meta_left <= 0.0:  # start the next one: random side, Pareto length
                    meta_sign = 1.0 if uniform(rng) < 0.5 else -1.0
                    meta_left = min(np.floor(uniform_pos(rng) ** meta_inv_tail), 1e9)
                etype = 4 if meta_sign > 0 else 5
                meta_left -= 1.0
            qty = draw_size(sz_market, rng)
            n = execute_best(grid, pool, oid, ist, 5 - etype, qty, sz_limit, rng, out, n, ts)
        if ist[ERROR] != 0:
            status = ERROR_GRID
            break
        if with_tob:
            _top_of_book(grid, ist, tob, n - 1)
        if dec_kind != DEC_NONE:
            trigger = etype >= 4 or ist[BB] + ist[BB + 1] != mid_before
            if trigger or dec_kind == DEC_HAWKES:  # the seed's Hawkes form: every event excites
                dec_on_event(dec_kind, dec_params, dec_state, t, etype, trigger)
                m_hi = 0.0
    fst[F_TIME] = t
    fst[F_CAL] = tcal
    fst[F_CELL] = cell
    fst[F_EXO] = jx
    fst[F_LAST_TS] = last_ts
    fst[F_META_SIGN] = meta_sign
    fst[F_META_LEFT] = meta_left
    fst[F_BOUND] = m_hi
    return status, n
