"""The interface between the engine kernel and its intensity models.

A model is described to the compiled kernel by plain data:

* ``kind`` -- an integer code selecting the compiled rate function;
* ``params`` -- a float64 vector; the first ``N_SHARED`` slots have the same meaning
  for every model (they drive the attribute rules the kernel applies itself);
* ``tables`` -- a float64 2-D array for models defined by curves (HLR), else a 1x1 dummy.

Queue sizes are read in the session's *queue unit* (shares per unit, ``S_UNIT`` of the kernel's
session parameters; 1 with one-share orders), so a model's rates mean the same whatever the
order sizes.

The rate function reads the book and writes the rates of the events it can
produce into a scratch vector, returning their sum. Two layouts exist:

* *aggregate* (6 rates, indexed by ``EventType``): the kernel then picks the level
  itself (adds: weight ``exp(-alpha k)``; cancels: weight = queue size);
* *per level* (``4K + 2`` rates: add bid levels 0..K-1, add ask, cancel bid, cancel ask,
  then execute buy, execute sell): the event and its level are drawn jointly.

Two hooks are reserved for time-varying and exogenous inputs (see docs/engine.md):
an intensity *decorator* (``dec_kind``/``dec_params``/``dec_state``; the kernel samples
event times by thinning against the decorator's bound), and an exogenous per-session
signal (piecewise constant on a fixed step) whose value, times the shared ``loading``
parameter, shifts the imbalance a model reads.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

# model kinds
MODEL_SIMPLE = 0
MODEL_HLR = 1
MODEL_CONSTANT = 2

# shared parameter slots (every model's params vector starts with these)
P_IMPROVE = 0  # improving-add probability per tick of spread beyond one: p = min(1, (s - 1) * P_IMPROVE)
P_ADD_ALPHA = 1  # add level weight exp(-alpha * k) when the model does not give the level
P_LOADING = 2  # weight of the exogenous signal in the imbalance input (0: signal ignored)
P_SPREAD_SENS = 3  # spread sensitivity sS of the add/execute multipliers exp(+-sS (s - 2))
P_CANCEL_BEST = 4  # cancel weight per unit of queue at the best relative to deeper ticks (aggregate models)
P_LIQUIDITY = 5  # how the model's limit order flow leans against an active metaorder (realism.Metaorders)
N_SHARED = 6

DEFAULT_IMPROVE = 0.5
DEFAULT_ADD_ALPHA = 0.5


class IntensityModel(Protocol):
    """What the engine needs from a model (implemented by frozen dataclasses)."""

    name: str

    @property
    def kind(self) -> int: ...

    def params_vector(self) -> np.ndarray: ...

    def tables(self, levels: int) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...

    def validate(self, levels: int) -> None: ...


def shared_params(
    spread_sens: float,
    improve: float = DEFAULT_IMPROVE,
    add_alpha: float = DEFAULT_ADD_ALPHA,
    loading: float = 0.0,
    cancel_best: float = 1.0,
    liquidity: float = 0.0,
) -> list[float]:
    out = [0.0] * N_SHARED
    out[P_IMPROVE] = improve
    out[P_ADD_ALPHA] = add_alpha
    out[P_LOADING] = loading
    out[P_SPREAD_SENS] = spread_sens
    out[P_CANCEL_BEST] = cancel_best
    out[P_LIQUIDITY] = liquidity
    return out


def no_tables() -> np.ndarray:
    return np.zeros((1, 1), dtype=np.float64)


def check_finite(name: str, value: float, *, minimum: float | None = 0.0) -> None:
    """Raise ValueError unless ``value`` is a finite number (and >= ``minimum``)."""
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
