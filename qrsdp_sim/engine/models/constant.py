"""ConstantRates: six fixed event rates, independent of the book.

A reference model for statistical tests of the event loop (frequencies must match
the rates, inter-arrival times must be exponential with the total rate) and a
baseline for benchmarks. Levels follow the kernel's attribute rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine.models.base import MODEL_CONSTANT, N_SHARED, check_finite, shared_params

N_PARAMS = N_SHARED + 6


@dataclass(frozen=True)
class ConstantRates:
    """Rates per second, in EventType order: add bid, add ask, cancel bid, cancel ask, execute buy, execute sell."""

    rates: tuple[float, float, float, float, float, float] = (10.0, 10.0, 4.0, 4.0, 3.0, 3.0)
    add_decay_alpha: float = 0.5
    improve_per_tick: float = 0.5

    name = "constant"

    @property
    def kind(self) -> int:
        return MODEL_CONSTANT

    def validate(self, levels: int) -> None:
        if len(self.rates) != 6:
            raise ValueError(f"ConstantRates needs 6 rates, got {len(self.rates)}")
        for i, r in enumerate(self.rates):
            check_finite(f"rates[{i}]", r)
        if sum(self.rates) <= 0:
            raise ValueError("ConstantRates needs a positive total rate")
        check_finite("add_decay_alpha", self.add_decay_alpha)
        check_finite("improve_per_tick", self.improve_per_tick)

    def params_vector(self) -> np.ndarray:
        p = shared_params(0.0, self.improve_per_tick, self.add_decay_alpha) + [float(r) for r in self.rates]
        return np.asarray(p, dtype=np.float64)

    def tables(self, levels: int) -> np.ndarray:
        return np.zeros((1, 1), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {
                "rates": list(self.rates),
                "add_decay_alpha": self.add_decay_alpha,
                "improve_per_tick": self.improve_per_tick,
            },
        }


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def constant_rates(p, rates):
    total = 0.0
    for i in range(6):
        rates[i] = p[N_SHARED + i]
        total += rates[i]
    return total
