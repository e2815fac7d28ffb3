"""The realism layers that compose with every intensity model: sizes, business clock, excitation.

:class:`Realism` bundles

* :class:`~qrsdp_sim.engine.sizes.OrderSizes` -- share quantities of limit and market orders,
  partial cancels, and the queue unit the models read;
* :class:`~qrsdp_sim.engine.clock.BusinessClock` -- intraday seasonality times a random activity
  factor, applied as an exact time change (volatility clustering, fat tails, U-shaped activity);
* :class:`Excitation` -- a normalised, multi-timescale self-excitation in business time, excited by
  market orders and mid-price changes (short bursts, over-dispersed inter-arrival times);
* :class:`Metaorders` -- order splitting: market orders belong, with some probability, to a
  metaorder of power-law length whose sign they take (long memory of trade signs).

``Realism()`` is the default of ``qrsdp run``, ``qrsdp demo`` and the Dagster assets;
``Realism.plain()`` switches every layer off, which with the models' ``seed()`` parameters
reproduces the seed's models exactly (``qrsdp run --plain``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrsdp_sim.engine.clock import BusinessClock
from qrsdp_sim.engine.decorators import MAX_SCALES, excite_decorator, no_decorator
from qrsdp_sim.engine.sizes import OrderSizes


@dataclass(frozen=True)
class Excitation:
    """Self-excitation with branching ratio ``branching`` (n < 1) spread over exponential kernels.

    The multiplier on every rate is 1 + min(sum_j E_j(t), cap); each trigger (a market order, or
    an event after which the mid price differs) adds n w_j beta_j / lambda_hat to E_j, beta_j = 1 /
    ``timescales[j]``, where lambda_hat estimates the base model's trigger rate from the session so
    far (starting from ``prior_rate`` with the weight of ``prior_seconds``). So every trigger
    causes on average n further triggers, spread over the time scales with ``weights``.
    ``branching = 0`` switches it off.
    """

    branching: float = 0.6
    timescales: tuple[float, ...] = (0.05, 1.0, 30.0)
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    prior_rate: float = 5.0
    prior_seconds: float = 60.0
    cap: float = 50.0

    @classmethod
    def off(cls) -> Excitation:
        return cls(branching=0.0)

    @property
    def is_off(self) -> bool:
        return self.branching == 0.0

    def validate(self) -> None:
        n = self.branching
        if not (math.isfinite(n) and 0.0 <= n < 1.0):
            raise ValueError(f"excitation branching ratio must be in [0, 1) (n >= 1 explodes), got {n}")
        if self.is_off:
            return
        if not 1 <= len(self.timescales) <= MAX_SCALES or len(self.weights) != len(self.timescales):
            raise ValueError(
                f"excitation needs 1 to {MAX_SCALES} time scales and one weight per time scale "
                f"(got {len(self.timescales)} and {len(self.weights)})"
            )
        for t in self.timescales:
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"excitation time scales must be > 0 seconds, got {t}")
        for w in self.weights:
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"excitation weights must be >= 0, got {w}")
        if sum(self.weights) <= 0:
            raise ValueError("excitation weights must not all be 0")
        for name in ("prior_rate", "prior_seconds", "cap"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"excitation {name.replace('_', ' ')} must be > 0, got {v}")

    def decorator(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(kind, params, fresh state) for the kernel."""
        if self.is_off:
            return no_decorator()
        total = sum(self.weights)
        return excite_decorator(
            self.branching,
            [1.0 / t for t in self.timescales],
            [w / total for w in self.weights],
            self.prior_rate,
            self.prior_seconds,
            self.cap,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "branching": self.branching,
            "timescales": list(self.timescales),
            "weights": list(self.weights),
            "prior_rate": self.prior_rate,
            "prior_seconds": self.prior_seconds,
            "cap": self.cap,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Excitation:
        d = dict(d)
        for key in ("timescales", "weights"):
            if key in d:
                d[key] = tuple(float(x) for x in d[key])
        return cls(**d)


@dataclass(frozen=True)
class Metaorders:
    """Order splitting (Lillo, Mike & Farmer 2005): the long memory of trade signs.

    One metaorder is active at a time. Each market order, with probability ``share``, is a child
    of it and takes its sign (it is a buy or a sell regardless of the model's own split of the
    execution rate, which is unchanged); otherwise the model decides as it would. A metaorder of
    L children ends after its L-th child, and the next one starts with a random sign and a
    length with P(L >= l) = l^-``tail`` (Pareto, l >= 1). The autocorrelation of trade signs then
    decays as lag^-(tail - 1); ``tail`` = 1.6 gives the exponent 0.6 measured by Lillo & Farmer
    (2004). ``share = 0`` switches it off.

    Liquidity providers see the order flow too: while a buy (sell) metaorder is active, limit
    orders on the side it consumes arrive 1 + r times as often and on the other side 1 - r times
    as often (Lillo & Farmer's "asymmetric liquidity"). Without it, persistent trade signs would
    make prices trend (1-minute returns autocorrelated); with it the market stays efficient while
    the signs keep their long memory. How strongly liquidity must lean depends on how the base
    model forms prices, so r is the model's ``liquidity_response`` (SimpleImbalance 0.5, HLR 0.2)
    unless ``liquidity_response`` here overrides it.
    """

    share: float = 0.6
    tail: float = 1.6
    liquidity_response: float | None = None

    @classmethod
    def off(cls) -> Metaorders:
        return cls(share=0.0)

    @property
    def is_off(self) -> bool:
        return self.share == 0.0

    def validate(self) -> None:
        if not (math.isfinite(self.share) and 0.0 <= self.share <= 1.0):
            raise ValueError(f"metaorder share must be in [0, 1], got {self.share}")
        if not (math.isfinite(self.tail) and 1.0 < self.tail <= 5.0):
            raise ValueError(f"metaorder tail exponent must be in (1, 5], got {self.tail}")
        r = self.liquidity_response
        if r is not None and not (math.isfinite(r) and 0.0 <= r < 1.0):
            raise ValueError(f"metaorder liquidity response must be in [0, 1), got {r}")

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "tail": self.tail, "liquidity_response": self.liquidity_response}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metaorders:
        return cls(**d)


@dataclass(frozen=True)
class Realism:
    """Order sizes, business clock and excitation of a session (see the module docstring)."""

    sizes: OrderSizes = field(default_factory=OrderSizes)
    clock: BusinessClock = field(default_factory=BusinessClock)
    excitation: Excitation = field(default_factory=Excitation)
    metaorders: Metaorders = field(default_factory=Metaorders)

    @classmethod
    def plain(cls) -> Realism:
        """Every layer off: one-share orders, calendar time, no excitation, no order splitting."""
        return cls(
            sizes=OrderSizes.unit(),
            clock=BusinessClock.identity(),
            excitation=Excitation.off(),
            metaorders=Metaorders.off(),
        )

    @property
    def is_plain(self) -> bool:
        return (
            self.sizes.is_unit and self.clock.is_identity and self.excitation.is_off and self.metaorders.is_off
        )

    def validate(self) -> None:
        self.sizes.validate()
        self.clock.validate()
        self.excitation.validate()
        self.metaorders.validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes.to_dict(),
            "clock": self.clock.to_dict(),
            "excitation": self.excitation.to_dict(),
            "metaorders": self.metaorders.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Realism:
        return cls(
            sizes=OrderSizes.from_dict(d["sizes"]),
            clock=BusinessClock.from_dict(d["clock"]),
            excitation=Excitation.from_dict(d["excitation"]),
            metaorders=Metaorders.from_dict(d.get("metaorders", {"share": 0.0})),
        )
