"""The business clock: intraday seasonality and a random activity factor, as a time change.

Real order flow is far from a constant-rate process: activity is U-shaped over the day and
wanders over minutes to hours (Andersen & Bollerslev 1997), and volatility follows it,
which is where volatility clustering and fat tails of minute returns come from (Clark 1973;
Ané & Geman 2000). QRSDP models this as a random *business clock*: every rate of the
event process is multiplied by the same positive factor

    g(t) = u(t) * F(t),    F(t) = exp(sum_j s_j X_j(t) - 1/2 sum_j s_j^2)

with u the intraday profile (:class:`IntradayProfile`, mean 1 over the session) and X_j
independent stationary Ornstein-Uhlenbeck processes with unit variance and time scales
T_j (:class:`ActivityFactor`; E[F] = 1). Because g multiplies every rate, the whole event
process is simulated in business time tau = Theta(t) = integral_0^t g(s) ds with the base
model's rates (the book, the Hawkes excitation and the exogenous signal all live there), and
each event's business time is mapped back to calendar time, t = Theta^-1(tau). This is an
exact time change, not an approximation, for the piecewise-constant g the clock defines:
g is constant on cells of ``step_seconds`` (u at the cell's midpoint times F at the cell's
start; the OU components are sampled exactly on the grid), so Theta is piecewise linear and
its inverse is exact.

The idiosyncratic part of a session's clock is drawn from its session seed
(``SeedSequence([seed, CLOCK_DOMAIN])``), the market-wide part from the date's market seed
(``SeedSequence([market_seed, CLOCK_DOMAIN])``, derived from the base seed and the date, as the
market factor is), so a symbol-date simulated alone has the same clock as inside any run.
A flat profile without activity factor is the identity: the kernel then does no mapping
and the session is byte-identical to one without a clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qrsdp_sim.engine import entry_points
from qrsdp_sim.engine._jit import njit

CLOCK_DOMAIN = 0x434C4B31  # "CLK1": separates the clock's random stream from the kernel's
MARKET_DOMAIN = 0x4D4B5441  # "MKTA": the market-wide activity of a date


def market_seed(base_seed: int, ymd: int) -> int:
    """The seed of a date's market-wide activity (shared by every symbol of the date)."""
    return int(np.random.SeedSequence([int(base_seed), MARKET_DOMAIN, int(ymd)]).generate_state(1, np.uint64)[0])


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), CLOCK_DOMAIN, stream])))

# rows of the compiled clock array (float64, shape (2, n + 1))
CK_THETA = 0  # business time at the start of cell k (k = 0 .. n)
CK_INV_RATE = 1  # 1 / g on cell k (k = 0 .. n - 1; entry n repeats the last cell)


@dataclass(frozen=True)
class IntradayProfile:
    """The U-shaped intraday activity profile u(t), normalised to mean 1 over the session.

        u(x) ~ 1 + (open_ratio - 1) exp(-x / open_decay) + (close_ratio - 1) exp(-(1 - x) / close_decay)

    with x = t / session length. ``open_ratio`` and ``close_ratio`` are the activity at the
    open and at the close relative to midday; the decays are fractions of the session (so a
    short session keeps its U shape). ``IntradayProfile.flat()`` is u = 1.
    """

    open_ratio: float = 4.0
    close_ratio: float = 3.0
    open_decay: float = 0.08
    close_decay: float = 0.06

    @classmethod
    def flat(cls) -> IntradayProfile:
        return cls(open_ratio=1.0, close_ratio=1.0)

    @property
    def is_flat(self) -> bool:
        return self.open_ratio == 1.0 and self.close_ratio == 1.0

    def validate(self) -> None:
        for name in ("open_ratio", "close_ratio"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"seasonality {name.replace('_', ' ')} must be a finite number > 0, got {v}")
        for name in ("open_decay", "close_decay"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v <= 1):
                raise ValueError(
                    f"seasonality {name.replace('_', ' ')} must be in (0, 1] (a fraction of the session), got {v}"
                )
        self.values(np.array([0.5]))  # raises if the profile is not a positive rate everywhere

    def shape(self, x: np.ndarray) -> np.ndarray:
        """The unnormalised profile at fractions ``x`` of the session (positive for valid parameters)."""
        x = np.asarray(x, dtype=np.float64)
        return (
            1.0
            + (self.open_ratio - 1.0) * np.exp(-x / self.open_decay)
            + (self.close_ratio - 1.0) * np.exp(-(1.0 - x) / self.close_decay)
        )

    def values(self, x: np.ndarray) -> np.ndarray:
        """u at fractions ``x`` of the session, normalised so that its mean over the session is 1."""
        fine = self.shape((np.arange(20_000) + 0.5) / 20_000)
        mean = float(fine.mean())
        if not (math.isfinite(mean) and mean > 0) or np.any(fine <= 0):
            raise ValueError("the seasonality profile does not integrate to a positive rate")
        return self.shape(x) / mean


@dataclass(frozen=True)
class ActivityFactor:
    """F(t) = exp(sum_j s_j X_j(t) - 1/2 sum_j s_j^2): independent stationary OU components X_j with
    unit variance, volatilities ``sigmas`` s_j and time scales ``timescales`` T_j (seconds)."""

    sigmas: tuple[float, ...] = (0.75, 0.6, 0.35)
    timescales: tuple[float, ...] = (60.0, 600.0, 3600.0)
    common: float = 0.9

    @classmethod
    def off(cls) -> ActivityFactor:
        return cls(sigmas=(), timescales=())

    @property
    def is_off(self) -> bool:
        return all(s == 0 for s in self.sigmas)

    def validate(self) -> None:
        if len(self.sigmas) != len(self.timescales):
            raise ValueError(
                f"activity factor: {len(self.sigmas)} volatilities but {len(self.timescales)} time scales"
            )
        if len(self.sigmas) > 8:
            raise ValueError("activity factor: at most 8 components")
        for s in self.sigmas:
            if not (math.isfinite(s) and 0 <= s <= 3):
                raise ValueError(f"activity factor volatility must be in [0, 3], got {s}")
        for t in self.timescales:
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"activity factor time scale must be > 0 seconds, got {t}")
        if not (math.isfinite(self.common) and 0.0 <= self.common <= 1.0):
            raise ValueError(f"activity factor common share must be in [0, 1], got {self.common}")

    def log_path(self, own: np.random.Generator, market: np.random.Generator, n: int, step: float) -> np.ndarray:
        """log F at the start of each of ``n`` cells of ``step`` seconds (exact OU transitions);
        ``own``: the symbol's generator, ``market``: the date's (shared by every symbol)."""
        out = np.zeros(n, dtype=np.float64)
        a, b = math.sqrt(self.common), math.sqrt(1.0 - self.common)
        for s, tau in zip(self.sigmas, self.timescales, strict=True):
            z = a * market.standard_normal(n) + b * own.standard_normal(n)
            if s == 0:
                continue
            rho = math.exp(-step / tau)
            path = np.empty_like(z)
            entry_points.ar1(z, rho, math.sqrt(1.0 - rho * rho), path)
            out += s * path
        return out - 0.5 * sum(s * s for s in self.sigmas)


@dataclass(frozen=True)
class BusinessClock:
    """Seasonality x activity factor, piecewise constant on cells of ``step_seconds``."""

    profile: IntradayProfile = field(default_factory=IntradayProfile)
    activity: ActivityFactor = field(default_factory=ActivityFactor)
    step_seconds: float = 1.0

    @classmethod
    def identity(cls) -> BusinessClock:
        return cls(profile=IntradayProfile.flat(), activity=ActivityFactor.off())

    @property
    def is_identity(self) -> bool:
        return self.profile.is_flat and self.activity.is_off

    def validate(self) -> None:
        self.profile.validate()
        self.activity.validate()
        if not (math.isfinite(self.step_seconds) and 0.01 <= self.step_seconds <= 60):
            raise ValueError(f"clock step must be in [0.01, 60] seconds, got {self.step_seconds}")

    def rates(self, seed: int, session_seconds: float, market_seed: int | None = None) -> np.ndarray:
        """g on each cell of the session (length ceil(session / step)). Without a ``market_seed``
        (a session simulated on its own, ``qrsdp cli``) the market-wide part comes from the
        session seed too: the same law, shared with nobody."""
        h = self.step_seconds
        n = max(1, math.ceil(session_seconds / h - 1e-9))
        mid = (np.arange(n) + 0.5) * h
        u = self.profile.values(np.minimum(mid, session_seconds) / session_seconds)
        if self.activity.is_off:
            return u
        own = _generator(seed, 0)
        market = _generator(market_seed, 0) if market_seed is not None else _generator(seed, 1)
        return u * np.exp(self.activity.log_path(own, market, n, h))

    def grid(self, seed: int, session_seconds: float, market_seed: int | None = None) -> ClockGrid:
        return ClockGrid.from_rates(
            self.rates(seed, session_seconds, market_seed), self.step_seconds, session_seconds
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": asdict(self.profile),
            "activity": {
                "sigmas": list(self.activity.sigmas),
                "timescales": list(self.activity.timescales),
                "common": self.activity.common,
            },
            "step_seconds": self.step_seconds,
            "seed_strategy": (
                f"own: SeedSequence([session_seed, {CLOCK_DOMAIN:#x}, 0]); market-wide: "
                f"SeedSequence([market_seed, {CLOCK_DOMAIN:#x}, 0]), market_seed = "
                f"SeedSequence([base_seed, {MARKET_DOMAIN:#x}, yyyymmdd]).generate_state(1, uint64)[0]"
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BusinessClock:
        act = d.get("activity", {})
        return cls(
            profile=IntradayProfile(**d.get("profile", {})),
            activity=ActivityFactor(
                sigmas=tuple(float(x) for x in act.get("sigmas", ())),
                timescales=tuple(float(x) for x in act.get("timescales", ())),
                common=float(act.get("common", 0.0)),
            ),
            step_seconds=float(d.get("step_seconds", 1.0)),
        )


@dataclass(frozen=True)
class ClockGrid:
    """One session's clock: Theta at the cell boundaries and 1 / g per cell (the kernel's array)."""

    theta: np.ndarray  # business time at t = k * step (k = 0 .. n), the last boundary at the session end
    rate: np.ndarray  # g per cell (n)
    step: float
    session_seconds: float

    @classmethod
    def from_rates(cls, rate: np.ndarray, step: float, session_seconds: float) -> ClockGrid:
        n = len(rate)
        widths = np.full(n, step)
        widths[-1] = session_seconds - step * (n - 1)
        theta = np.concatenate([[0.0], np.cumsum(rate * widths)])
        return cls(theta=theta, rate=np.asarray(rate, dtype=np.float64), step=float(step),
                   session_seconds=float(session_seconds))  # fmt: skip

    @property
    def business_end(self) -> float:
        return float(self.theta[-1])

    def kernel_array(self) -> np.ndarray:
        out = np.empty((2, len(self.theta)), dtype=np.float64)
        out[CK_THETA] = self.theta
        out[CK_INV_RATE, :-1] = 1.0 / self.rate
        out[CK_INV_RATE, -1] = 1.0 / self.rate[-1]
        return out

    def to_business(self, t: np.ndarray) -> np.ndarray:
        """Business time of calendar times ``t`` (seconds since the open)."""
        t = np.asarray(t, dtype=np.float64)
        k = np.clip((t / self.step).astype(np.int64), 0, len(self.rate) - 1)
        return self.theta[k] + self.rate[k] * (t - k * self.step)

    def to_calendar(self, tau: np.ndarray) -> np.ndarray:
        """Calendar times (seconds since the open) of business times ``tau``."""
        tau = np.asarray(tau, dtype=np.float64)
        k = np.clip(np.searchsorted(self.theta, tau, side="right") - 1, 0, len(self.rate) - 1)
        return k * self.step + (tau - self.theta[k]) / self.rate[k]


@njit(cache=True, nogil=True)
def ar1(z, rho, c, x):
    """Stationary AR(1) path into ``x``: x_0 = z_0, x_k = rho x_(k-1) + c z_k (exact OU transitions).
    Writes into the caller's array (no allocation: the native library has no allocator)."""
    prev = z[0]
    x[0] = prev
    for k in range(1, z.shape[0]):
        prev = rho * prev + c * z[k]
        x[k] = prev
