"""Intensity decorators: a common, time-varying multiplier on every rate of the base model.

Only ``DEC_NONE`` exists today. The kernel already samples event times by thinning
against ``dec_bound`` so that a decorator whose multiplier decays between events
(Hawkes excitation) is sampled exactly, not frozen at the last event:

* ``dec_bound(t)`` must be >= the multiplier at every time after ``t`` until the next
  accepted event (a decaying multiplier: its value at ``t``);
* a candidate time ``tc`` is accepted with probability ``dec_multiplier(tc) / bound``;
  when the two are equal no uniform is drawn, so a decorator that is switched off
  consumes exactly the random numbers of the base model (byte-identical output);
* ``dec_on_event`` updates the decorator's state (``dec_state``, float64) after each event.

A new decorator adds a kind code and a branch in each of these three functions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DEC_NONE = 0


def no_decorator() -> tuple[int, np.ndarray, np.ndarray]:
    """(kind, params, state) for an undecorated model."""
    return DEC_NONE, np.zeros(1, dtype=np.float64), np.zeros(1, dtype=np.float64)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_bound(kind, params, state, t):
    return 1.0


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_multiplier(kind, params, state, t):
    return 1.0


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_on_event(kind, params, state, t, etype):
    return None
