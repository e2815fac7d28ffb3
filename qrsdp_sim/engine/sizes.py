"""Order sizes: realistic share quantities for limit orders, market orders and cancels.

A :class:`SizeDistribution` is a discrete distribution over share quantities built from
three parts, the shape US equity order flow has (round lots dominate, odd lots are common,
large orders are rare but carry much of the volume):

* **round lots** -- ``round_lot`` x m shares for the listed multiples m, with their weights;
* **odd lots** -- 1 .. ``round_lot`` - 1 shares, share ``odd_lot_share`` of all orders, each
  size with weight proportional to 1 / size (small odd lots are the most common);
* **large orders** -- ``large_min_lots`` .. ``large_max_lots`` round lots, share
  ``large_share``, log-uniform in the number of lots.

The compiled kernel samples it in O(1) with one uniform by Walker's alias method
(:func:`alias_table`, :func:`draw_size`), exactly (no quantisation of the probabilities).

:class:`OrderSizes` bundles the distribution of limit-order sizes, that of market
orders, and the share of cancels that are partial. ``OrderSizes.unit()`` (``plain``)
reproduces the seed's one-share order flow.

Queue sizes the models read are expressed in the *queue unit* (``OrderSizes.queue_unit``,
by default the mean limit-order size, HLR's "average event size"), so the intensity models
keep their meaning when orders carry real quantities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine.rng import uniform

MAX_ORDER_SHARES = 1_000_000  # a single order never exceeds this (uint32 qty; the grid sums int32)

# layout of a compiled size table (float64, 3 rows x n): probability, alias index, size
SZ_PROB = 0
SZ_ALIAS = 1
SZ_SIZE = 2


@dataclass(frozen=True)
class SizeDistribution:
    """Round lots with weights, odd lots and large orders (see the module docstring)."""

    round_lot: int = 100
    lots: tuple[tuple[int, float], ...] = ((1, 0.56), (2, 0.15), (3, 0.07), (4, 0.04), (5, 0.07), (10, 0.04))
    odd_lot_share: float = 0.2
    large_share: float = 0.03
    large_min_lots: int = 11
    large_max_lots: int = 100

    def validate(self, what: str = "order sizes") -> None:
        if not 1 <= self.round_lot <= 10_000:
            raise ValueError(f"{what}: round lot must be in [1, 10000] shares, got {self.round_lot}")
        for name in ("odd_lot_share", "large_share"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{what}: {name.replace('_', ' ')} must be in [0, 1], got {v}")
        if self.odd_lot_share + self.large_share > 1.0:
            raise ValueError(f"{what}: odd-lot share + large share must not exceed 1")
        if self.odd_lot_share > 0 and self.round_lot < 2:
            raise ValueError(f"{what}: odd lots need a round lot of at least 2 shares")
        total = 0.0
        for m, w in self.lots:
            if not (isinstance(m, int) and m >= 1):
                raise ValueError(f"{what}: round-lot multiples must be integers >= 1, got {m!r}")
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"{what}: round-lot weights must be finite and >= 0, got {w!r}")
            total += w
        rest = 1.0 - self.odd_lot_share - self.large_share
        if rest > 0 and total <= 0:
            raise ValueError(f"{what}: the round-lot weights must not all be 0 (or set the other shares to 1)")
        if self.large_share > 0 and not 1 <= self.large_min_lots <= self.large_max_lots:
            raise ValueError(f"{what}: need 1 <= large_min_lots <= large_max_lots")
        if self.round_lot * max([m for m, _ in self.lots] + [self.large_max_lots]) > MAX_ORDER_SHARES:
            raise ValueError(f"{what}: the largest order would exceed {MAX_ORDER_SHARES:,} shares")

    def pmf(self) -> tuple[np.ndarray, np.ndarray]:
        """(sizes, probabilities): the distribution as explicit arrays (sizes ascending, unique)."""
        self.validate()
        prob: dict[int, float] = {}
        if self.odd_lot_share > 0:
            odd = np.arange(1, self.round_lot, dtype=np.float64)
            w = 1.0 / odd
            for s, p in zip(odd.astype(int), w / w.sum() * self.odd_lot_share, strict=True):
                prob[int(s)] = prob.get(int(s), 0.0) + float(p)
        rest = 1.0 - self.odd_lot_share - self.large_share
        total = sum(w for _, w in self.lots)
        if rest > 0:
            for m, w in self.lots:
                s = m * self.round_lot
                prob[s] = prob.get(s, 0.0) + rest * w / total
        if self.large_share > 0:
            lots = np.arange(self.large_min_lots, self.large_max_lots + 1, dtype=np.float64)
            w = 1.0 / lots
            for m, p in zip(lots.astype(int), w / w.sum() * self.large_share, strict=True):
                s = int(m) * self.round_lot
                prob[s] = prob.get(s, 0.0) + float(p)
        sizes = np.array(sorted(s for s, p in prob.items() if p > 0), dtype=np.int64)
        p = np.array([prob[int(s)] for s in sizes], dtype=np.float64)
        return sizes, p / p.sum()

    def mean(self) -> float:
        sizes, p = self.pmf()
        return float(np.dot(sizes, p))

    def table(self) -> np.ndarray:
        """The compiled alias table (float64, shape (3, n))."""
        sizes, p = self.pmf()
        return alias_table(sizes, p)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lots"] = [list(x) for x in self.lots]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizeDistribution:
        d = dict(d)
        if "lots" in d:
            d["lots"] = tuple((int(m), float(w)) for m, w in d["lots"])
        return cls(**d)


def unit_size() -> SizeDistribution:
    """Every order is one share (the seed's order flow)."""
    return SizeDistribution(round_lot=1, lots=((1, 1.0),), odd_lot_share=0.0, large_share=0.0)


def default_market_sizes() -> SizeDistribution:
    """Market (aggressive) orders: smaller than limit orders, many odd lots."""
    return SizeDistribution(
        round_lot=100,
        lots=((1, 0.62), (2, 0.15), (3, 0.07), (4, 0.03), (5, 0.07), (10, 0.06)),
        odd_lot_share=0.35,
        large_share=0.02,
        large_min_lots=11,
        large_max_lots=50,
    )


@dataclass(frozen=True)
class OrderSizes:
    """Sizes of limit orders (ADDs, refills and the opening book included), of market orders,
    and the share of cancels that cancel only part of an order.

    ``queue_unit`` (shares, > 0): the unit in which the models read queue sizes; 0 means the
    mean limit-order size (rounded to a whole share).
    """

    limit: SizeDistribution = field(default_factory=SizeDistribution)
    market: SizeDistribution = field(default_factory=default_market_sizes)
    partial_cancel_share: float = 0.08
    queue_unit: float = 0.0

    @classmethod
    def unit(cls) -> OrderSizes:
        """One share per order, full cancels only: the seed's order flow."""
        return cls(limit=unit_size(), market=unit_size(), partial_cancel_share=0.0, queue_unit=1.0)

    @property
    def is_unit(self) -> bool:
        return self.limit == unit_size() and self.market == unit_size() and self.partial_cancel_share == 0.0

    def validate(self) -> None:
        self.limit.validate("limit-order sizes")
        self.market.validate("market-order sizes")
        v = self.partial_cancel_share
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"partial-cancel share must be in [0, 1], got {v}")
        if not (math.isfinite(self.queue_unit) and self.queue_unit >= 0):
            raise ValueError(f"queue unit must be a finite number of shares >= 0, got {self.queue_unit}")

    def unit_shares(self) -> float:
        """Shares per queue unit."""
        if self.queue_unit > 0:
            return float(self.queue_unit)
        return float(max(1, round(self.limit.mean())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit.to_dict(),
            "market": self.market.to_dict(),
            "partial_cancel_share": self.partial_cancel_share,
            "queue_unit": self.unit_shares(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrderSizes:
        return cls(
            limit=SizeDistribution.from_dict(d["limit"]),
            market=SizeDistribution.from_dict(d["market"]),
            partial_cancel_share=float(d.get("partial_cancel_share", 0.0)),
            queue_unit=float(d.get("queue_unit", 0.0)),
        )


def alias_table(sizes: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Walker's alias table for sampling ``sizes`` with probabilities ``prob`` (Vose's method).

    Row ``SZ_PROB``: the probability of keeping column i; ``SZ_ALIAS``: the column taken
    otherwise; ``SZ_SIZE``: the size of column i.
    """
    n = len(sizes)
    if n == 0 or len(prob) != n:
        raise ValueError("alias table needs as many probabilities as sizes (at least one)")
    p = np.asarray(prob, dtype=np.float64) * n / float(np.sum(prob))
    keep = np.ones(n)
    alias = np.arange(n, dtype=np.float64)
    small = [i for i in range(n) if p[i] < 1.0]
    large = [i for i in range(n) if p[i] >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        keep[s] = p[s]
        alias[s] = g
        p[g] = p[g] + p[s] - 1.0
        (small if p[g] < 1.0 else large).append(g)
    for i in small + large:  # round-off leftovers keep themselves
        keep[i] = 1.0
    out = np.empty((3, n), dtype=np.float64)
    out[SZ_PROB] = keep
    out[SZ_ALIAS] = alias
    out[SZ_SIZE] = np.asarray(sizes, dtype=np.float64)
    return out


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def draw_size(tab, rng):
    """One size from an alias table (one uniform: its integer part picks the column, the rest decides)."""
    n = tab.shape[1]
    if n == 1:  # a single size draws nothing (unit sizes reproduce the seed's random stream)
        return np.int64(tab[SZ_SIZE, 0])
    u = uniform(rng) * n
    i = int(u)
    if i >= n:  # u < n always; guard round-off anyway
        i = n - 1
    if u - i < tab[SZ_PROB, i]:
        return np.int64(tab[SZ_SIZE, i])
    return np.int64(tab[SZ_SIZE, int(tab[SZ_ALIAS, i])])
