"""SimpleImbalance: aggregate rates driven by the best-queue imbalance and the spread.

    I = (q_bid - q_ask) / (q_bid + q_ask + 1e-9)           (queues at the best)
    a = exp(sS (s - 2)),  e = exp(-sS (s - 2))             (s = spread in ticks)
    add_bid  = L (1 - sI I) a          add_ask  = L (1 + sI I) a
    exec_sell = M (eps + max(sI I, 0)) e     exec_buy = M (eps + max(-sI I, 0)) e
    cancel_bid = C sC D_bid            cancel_ask = C sC D_ask
    D = (kappa q_0 + q_1 + ... + q_(K-1)) / unit     (depth over the K-tick window, in queue units)

every rate clamped to >= 1e-9. Levels are picked by the kernel's attribute rules (a cancel's tick
with weight kappa q_0 at the best and q_k deeper: kappa > 1 makes orders at the best shorter-lived,
as they are in real books). Queue sizes are in queue units (``OrderSizes.queue_unit``, shares per
unit), so the rates mean the same whatever the order sizes.

``SimpleImbalance()`` carries the realistic defaults (a large-tick US equity: cancels dominate,
executions are a few percent of events, the spread is one tick most of the time);
``SimpleImbalance.seed()`` the seed's parameters (used with ``Realism.plain()`` by ``--plain``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine.book import BASE, BB, G_QSUM, window_depth
from qrsdp_sim.engine.models.base import (
    MODEL_SIMPLE,
    N_SHARED,
    P_CANCEL_BEST,
    P_LOADING,
    P_SPREAD_SENS,
    check_finite,
    no_tables,
    shared_params,
)

# model-specific slots
P_L = N_SHARED + 0
P_C = N_SHARED + 1
P_M = N_SHARED + 2
P_SI = N_SHARED + 3
P_SC = N_SHARED + 4
P_EPS = N_SHARED + 5
N_PARAMS = N_SHARED + 6

RATE_FLOOR = 1e-9


@dataclass(frozen=True)
class SimpleImbalance:
    """Parameters of the SimpleImbalance model (defaults from the spec)."""

    base_L: float = 16.0
    base_C: float = 0.1
    base_M: float = 0.42
    imbalance_sens: float = 1.0
    cancel_sens: float = 1.0
    epsilon_exec: float = 0.5
    spread_sens: float = 0.4
    add_decay_alpha: float = 0.5
    improve_per_tick: float = 0.7
    cancel_best_mult: float = 25.0
    liquidity_response: float = 0.5  # add rates x (1 -+ this) while a metaorder is active (realism layer)
    exo_loading: float = 0.0  # weight of the exogenous signal in the imbalance (market factor hook)

    name = "simple"

    @classmethod
    def seed(cls) -> SimpleImbalance:
        """The seed's parameters (one-share order flow, executions a third of events)."""
        return cls(base_L=20.0, base_C=0.5, base_M=15.0, improve_per_tick=0.5, cancel_best_mult=1.0)

    @property
    def kind(self) -> int:
        return MODEL_SIMPLE

    def validate(self, levels: int) -> None:
        for field, value in asdict(self).items():
            check_finite(field, value, minimum=None if field == "exo_loading" else 0.0)

    def params_vector(self) -> np.ndarray:
        p = shared_params(
            self.spread_sens,
            self.improve_per_tick,
            self.add_decay_alpha,
            self.exo_loading,
            self.cancel_best_mult,
            self.liquidity_response,
        )
        p += [0.0] * (N_PARAMS - N_SHARED)
        p[P_L] = self.base_L
        p[P_C] = self.base_C
        p[P_M] = self.base_M
        p[P_SI] = self.imbalance_sens
        p[P_SC] = self.cancel_sens
        p[P_EPS] = self.epsilon_exec
        return np.asarray(p, dtype=np.float64)

    def tables(self, levels: int) -> np.ndarray:
        return no_tables()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": asdict(self)}


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def simple_constants(p, unit):
    """The per-session constants of ``simple_rates_c``, read from ``p`` once per kernel call.

    As scalars in a tuple they stay in registers: array loads inside the event loop cannot be
    hoisted by the compiler (the loop writes float64 arrays that could alias ``p``), and the cancel
    coefficient would cost a division per event.
    """
    return (
        p[P_L],
        p[P_SI],
        p[P_C] * p[P_SC] / unit,  # cancel rate per share of window depth
        p[P_CANCEL_BEST] - 1.0,
        p[P_M],
        p[P_EPS],
        p[P_LOADING],
        p[P_SPREAD_SENS],
    )


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def simple_rates(grid, ist, p, x, mult, unit, rates):
    """Fill ``rates[0:6]`` (by EventType) and return their sum.

    ``x`` is the exogenous signal value (0 without one); ``mult[s]`` caches exp(sS (s - 2));
    ``unit``: shares per queue unit. (The kernel calls ``simple_rates_c`` with the constants, the
    reciprocals of ``mult`` and the window depths the book keeps; this form computes them here.)
    """
    inv = np.empty(mult.shape[0])
    for i in range(mult.shape[0]):
        inv[i] = 1.0 / mult[i]
    db = window_depth(grid, ist, 0)
    da = window_depth(grid, ist, 1)
    return simple_rates_c(grid, ist, simple_constants(p, unit), db, da, x, mult, inv, rates)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def simple_rates_c(grid, ist, c, db, da, x, mult, inv_mult, rates):
    """``simple_rates`` with the constants ``c = simple_constants(p, unit)``, the window depths
    ``db``/``da`` (shares over each side's window) and ``inv_mult[s] = 1 / mult[s]`` given (bit for
    bit the same rates)."""
    L, si_sens, cs, kb, M, eps, loading, spread_sens = c
    base = ist[BASE]
    bb = ist[BB]
    ba = ist[BB + 1]
    ib = bb - base
    ia = ba - base
    qb = grid[G_QSUM, 0, ib]
    qa = grid[G_QSUM, 1, ia]
    imb = (qb - qa) / (qb + qa + 1e-9)
    shift = 0.0
    if x != 0.0:
        raw = imb
        imb = min(1.0, max(-1.0, imb + loading * x))
        shift = imb - raw
    s = ba - bb
    if s < mult.shape[0]:
        a = mult[s]
        e = inv_mult[s]
    else:
        a = np.exp(spread_sens * (s - 2))
        e = 1.0 / a
    si = si_sens * imb
    r0 = max(L * (1.0 - si) * a, RATE_FLOOR)
    r1 = max(L * (1.0 + si) * a, RATE_FLOOR)
    # the market factor leans on cancels too: a rising market takes offers away and keeps bids
    r2 = max(cs * (db + kb * qb) * max(1.0 + 2.0 * shift, 0.0), RATE_FLOOR)
    r3 = max(cs * (da + kb * qa) * max(1.0 - 2.0 * shift, 0.0), RATE_FLOOR)
    r4 = max(M * (eps + max(-si, 0.0)) * e, RATE_FLOOR)
    r5 = max(M * (eps + max(si, 0.0)) * e, RATE_FLOOR)
    rates[0] = r0
    rates[1] = r1
    rates[2] = r2
    rates[3] = r3
    rates[4] = r4
    rates[5] = r5
    return r0 + r1 + r2 + r3 + r4 + r5
