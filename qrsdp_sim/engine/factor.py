"""MarketFactor: one Brownian path per trading date, shared by every security of that date.

The path W (unit variance per second, W(0) = 0 at the open) is sampled on a grid of
``step_seconds`` from ``SeedSequence([base_seed, FACTOR_DOMAIN, YYYYMMDD])`` -- from the
base seed and the date only, never from the symbol, the list of securities or the
worker. Symbol-date partitions simulated separately (orchestrator) therefore see the
same path and stay correlated.

Rule (the exogenous hook of the kernel, ``docs/models.md``): on the step
[j h, (j + 1) h), h = ``step_seconds``, every security reads the imbalance

    I' = clip(I - f * tanh((W(j h) - W(j h - w)) / sqrt(w)), -1, 1)

with f = ``loading`` and w = ``window_seconds``: minus a bounded (tanh), standardised
signal of the factor's increment over the last w seconds, known at the step's start.
A rising factor makes every book look ask-heavy, which in both models brings more
buy executions and bid-side adds, so prices follow the factor. The path extends w
seconds before the open (from a separate stream, so W after the open does not depend
on w), so the signal is stationary from the first second.

With ``loading = 0`` no signal is passed at all and sessions are byte-identical to runs
without the factor.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qrsdp_sim.engine.models.base import check_finite

FACTOR_DOMAIN = 0x4D4B5446  # "MKTF": separates the factor stream from the session seeds
FACTOR_STRATEGY = "SeedSequence([base_seed, 0x4D4B5446, yyyymmdd]).spawn(2): after the open, before it"
DEFAULT_WINDOW_SECONDS = 1.0


def _ymd(date: dt.date) -> int:
    return date.year * 10_000 + date.month * 100 + date.day


@dataclass(frozen=True)
class MarketFactor:
    """Factor loading f (0: independent securities), signal step h and increment window w (seconds)."""

    loading: float = 0.0
    step_seconds: float = 1.0
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def validate(self) -> None:
        check_finite("factor loading", self.loading)
        check_finite("factor step_seconds", self.step_seconds)
        check_finite("factor window_seconds", self.window_seconds)
        if not self.step_seconds > 0:
            raise ValueError(f"factor step_seconds must be > 0, got {self.step_seconds}")
        if self.window_steps < 1:
            raise ValueError("factor window_seconds must be at least one step")

    @property
    def enabled(self) -> bool:
        return self.loading != 0.0

    @property
    def window_steps(self) -> int:
        return round(self.window_seconds / self.step_seconds)

    def n_steps(self, session_seconds: float) -> int:
        return max(1, math.ceil(session_seconds / self.step_seconds))

    def path(self, base_seed: int, date: dt.date, session_seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, W): the factor on the grid from -w to the session end (W = 0 at the open)."""
        n = self.n_steps(session_seconds)
        m = self.window_steps
        h = self.step_seconds
        after, before = np.random.SeedSequence([int(base_seed), FACTOR_DOMAIN, _ymd(date)]).spawn(2)
        up = np.random.Generator(np.random.PCG64(after)).standard_normal(n) * math.sqrt(h)
        down = np.random.Generator(np.random.PCG64(before)).standard_normal(m) * math.sqrt(h)
        w = np.concatenate([-np.cumsum(down)[::-1], [0.0], np.cumsum(up)])
        times = np.arange(-m, n + 1, dtype=np.float64) * h
        return times, w

    def signal(self, base_seed: int, date: dt.date, session_seconds: float) -> np.ndarray:
        """x_j, the value added (times the loading) to the imbalance on step j: -tanh(increment / sqrt(w))."""
        _, w = self.path(base_seed, date, session_seconds)
        m = self.window_steps
        n = self.n_steps(session_seconds)
        inc = w[m : m + n] - w[0:n]  # W(j h) - W(j h - w) for j = 0 .. n - 1
        return -np.tanh(inc / math.sqrt(m * self.step_seconds))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strategy": FACTOR_STRATEGY}
