"""HawkesIntensity: exponential self-excitation over any base model.

Every rate of the base model is multiplied by the same factor:

    rates(t) = base rates(book) x (1 + min(E(t), cap))
    E(t)     = sum over past events t_i of alpha e^(-beta (t - t_i))

kept in O(1) per event as E <- E e^(-beta dt) + alpha (``decorators.DEC_HAWKES``). Every
model event excites (adds, cancels, executions; refill ADDs are not events). E decays
between events, so the time to the next event is sampled exactly by thinning (Ogata)
against the multiplier at the current time, which bounds it until the next event.

With ``alpha = 0`` the multiplier is exactly 1 and no extra random number is drawn:
the output is byte-identical to the base model's for the same seed.

Note on the branching ratio: one event raises the future intensity by
base total x alpha e^(-beta s), i.e. it triggers base total x alpha / beta further events on
average. With the default models (about 70 events/s) that is far above 1 for any
alpha that is not tiny compared with beta: the excitation then saturates and the
multiplier stays at 1 + cap (see docs/models.md for what this does to the statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrsdp_sim.engine.decorators import hawkes_decorator
from qrsdp_sim.engine.models.base import IntensityModel, check_finite
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance


@dataclass(frozen=True)
class HawkesParams:
    """alpha: excitation added per event; beta: decay rate (1/s); max_excitation: cap on E.

    The defaults (alpha 0.03, beta 2) give a branching ratio of about 0.55 over the realistic base
    models (base rate about 37 events per second of business time); ``seed()`` has the seed's."""

    alpha: float = 0.03
    beta: float = 2.0
    max_excitation: float = 5.0

    @classmethod
    def seed(cls) -> HawkesParams:
        """The seed's defaults: alpha 0 (the base model exactly), beta 1, cap 5."""
        return cls(alpha=0.0, beta=1.0, max_excitation=5.0)

    def validate(self) -> None:
        check_finite("hawkes alpha", self.alpha)
        check_finite("hawkes beta", self.beta)
        if not self.beta > 0:
            raise ValueError(f"hawkes beta must be > 0, got {self.beta}")
        check_finite("hawkes max_excitation", self.max_excitation)


@dataclass(frozen=True)
class HawkesIntensity:
    """A base model (SimpleImbalance by default, or HLR) with Hawkes excitation on all its rates."""

    base: IntensityModel = field(default_factory=SimpleImbalance)
    hawkes: HawkesParams = field(default_factory=HawkesParams)

    name = "hawkes"

    @property
    def kind(self) -> int:
        return self.base.kind

    @property
    def exo_loading(self) -> float:
        return float(getattr(self.base, "exo_loading", 0.0))

    def validate(self, levels: int) -> None:
        if isinstance(self.base, HawkesIntensity):
            raise ValueError("a Hawkes model cannot wrap another Hawkes model")
        self.base.validate(levels)
        self.hawkes.validate()

    def params_vector(self) -> np.ndarray:
        return self.base.params_vector()

    def tables(self, levels: int) -> np.ndarray:
        return self.base.tables(levels)

    def decorator(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(kind, params, state) for the kernel; a fresh state (E = 0) on every call."""
        h = self.hawkes
        return hawkes_decorator(h.alpha, h.beta, h.max_excitation)

    def to_dict(self) -> dict[str, Any]:
        h = self.hawkes
        return {
            "name": self.name,
            "params": {
                "alpha": h.alpha,
                "beta": h.beta,
                "max_excitation": h.max_excitation,
                "base": self.base.to_dict(),
            },
        }


def integrated_multiplier(e0: np.ndarray, dt: np.ndarray, params: HawkesParams) -> np.ndarray:
    """integral over [0, dt] of 1 + min(e0 e^(-beta s), cap) ds, elementwise (closed form).

    With a base total rate that is constant between events (the book only changes at
    events), base total x this is the compensator increment of an inter-arrival.
    """
    e0 = np.asarray(e0, dtype=np.float64)
    dt = np.asarray(dt, dtype=np.float64)
    beta, cap = params.beta, params.max_excitation
    # time for the excitation to decay to the cap (0 when it starts below)
    if cap > 0:
        t_cap = np.where(e0 > cap, np.log(np.maximum(e0, cap) / cap) / beta, 0.0)
    else:  # multiplier 1 throughout
        t_cap = np.where(e0 > 0, np.inf, 0.0)
    capped = np.minimum(dt, t_cap)
    rest = dt - capped
    e_start = np.minimum(e0, cap)
    return dt + cap * capped + e_start * (-np.expm1(-beta * rest)) / beta


def excitation_after_events(event_times: np.ndarray, params: HawkesParams) -> np.ndarray:
    """E just after each event (uncapped), by the O(1) recursion, for analysis."""
    t = np.asarray(event_times, dtype=np.float64)
    out = np.empty(len(t))
    e, last = 0.0, 0.0
    a, b = params.alpha, params.beta
    for i, ti in enumerate(t):
        e = e * math.exp(-b * (ti - last)) + a
        last = ti
        out[i] = e
    return out


def compensator_increments(
    event_times: np.ndarray, base_totals: np.ndarray, params: HawkesParams, t0: float = 0.0
) -> np.ndarray:
    """Lambda(t_i) - Lambda(t_{i-1}) for each event: ``base_totals[i]`` is the base model's total
    rate in force on (t_{i-1}, t_i] (the book after event i - 1; after the opening for i = 0).

    For a correctly sampled session these are i.i.d. Exp(1) (time-rescaling theorem).
    """
    t = np.asarray(event_times, dtype=np.float64)
    prev = np.concatenate([[t0], t[:-1]])
    e_after = excitation_after_events(t, params)
    e_prev = np.concatenate([[0.0], e_after[:-1]])
    return np.asarray(base_totals, dtype=np.float64) * integrated_multiplier(e_prev, t - prev, params)
