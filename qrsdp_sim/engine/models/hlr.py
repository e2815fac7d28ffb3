"""HLR2014 queue-reactive model (Huang, Lehalle & Rosenbaum): per-level intensity curves.

For level i < K of each side and queue size n (shares on that tick):
``add[side][i][n]``, ``cancel[side][i][n]`` (0 at n = 0), and ``market[side][n]`` for
market orders consuming the best queue of that side (0 at n = 0). Tables run to
``n_max``; larger queues use the value at ``n_max`` (flat tail). Adds are multiplied
by a = exp(sS (s - 2)), executions by e = exp(-sS (s - 2)) and by the imbalance
factor 1 + iS max(-I_t, 0) (buys) or 1 + iS max(I_t, 0) (sells), where I_t is the
total-depth imbalance over the K-tick windows. The event and its level are drawn
jointly from the 4K + 2 rates.

Curves are stored as JSON; see ``docs/engine.md`` ("HLR curves file") for the schema.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine.book import BASE, BB, G_QSUM, LEVELS
from qrsdp_sim.engine.models.base import (
    DEFAULT_IMPROVE,
    MODEL_HLR,
    N_SHARED,
    P_LOADING,
    P_SPREAD_SENS,
    check_finite,
    shared_params,
)

CURVES_FORMAT = "qrsdp-hlr-curves"
CURVES_VERSION = 1
MAX_LEVELS = 64
MAX_N = 100_000
DEFAULT_N_MAX = 100

P_IMB_SENS = N_SHARED + 0
N_PARAMS = N_SHARED + 1

_SIDES = ("bid", "ask")
_TOP_KEYS = {
    "format",
    "version",
    "levels",
    "n_max",
    "spread_sensitivity",
    "imbalance_sensitivity",
    "add",
    "cancel",
    "market",
    "meta",
}


class HLRCurvesError(ValueError):
    """An HLR curves file (or dict) is malformed. The message names the file and the JSON location."""

    def __init__(self, source: str, location: str, reason: str) -> None:
        self.source = source
        self.location = location
        self.reason = reason
        where = f"{source}: {location}" if location else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, eq=False)
class HLRCurves:
    """Intensity tables. Arrays: ``add``/``cancel`` shape (2, K, n_max + 1), ``market`` (2, n_max + 1).

    Axis 0 is the side (0 bid, 1 ask). ``market[0]`` drives sells hitting the best bid,
    ``market[1]`` buys hitting the best ask.
    """

    add: np.ndarray
    cancel: np.ndarray
    market: np.ndarray
    spread_sensitivity: float = 0.3
    imbalance_sensitivity: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return int(self.add.shape[1])

    @property
    def n_max(self) -> int:
        return int(self.add.shape[2]) - 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HLRCurves):
            return NotImplemented
        return (
            np.array_equal(self.add, other.add)
            and np.array_equal(self.cancel, other.cancel)
            and np.array_equal(self.market, other.market)
            and self.spread_sensitivity == other.spread_sensitivity
            and self.imbalance_sensitivity == other.imbalance_sensitivity
            and self.meta == other.meta
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def default(cls, levels: int = 5, n_max: int = DEFAULT_N_MAX) -> HLRCurves:
        """The built-in realistic curves (queue sizes in queue units, rates per second of business
        time): a large-tick stock whose best queues turn over fast and deplete often while deeper
        queues are stable, market orders a few percent of events:
        add 8/(1+0.15n) at the best, 3/(1+0.1n) deeper; cancel 1.5n/(1+0.05n) at the best,
        0.12n/(1+0.01n) deeper; market 0.25 for n > 0; spread sensitivity 0.3."""
        n = np.arange(n_max + 1, dtype=np.float64)
        add = np.empty((2, levels, n_max + 1))
        add[:, 0, :] = 8.0 / (1.0 + 0.15 * n)
        add[:, 1:, :] = 3.0 / (1.0 + 0.1 * n)
        cancel = np.empty((2, levels, n_max + 1))
        cancel[:, 0, :] = 1.5 * n / (1.0 + 0.05 * n)
        cancel[:, 1:, :] = 0.12 * n / (1.0 + 0.01 * n)
        market = np.where(n > 0, 0.25, 0.0)[None, :].repeat(2, axis=0)
        return cls(add=add, cancel=cancel, market=market, spread_sensitivity=0.3, imbalance_sensitivity=1.0)

    @classmethod
    def seed(cls, levels: int = 5, n_max: int = DEFAULT_N_MAX) -> HLRCurves:
        """The seed's curves (one-share orders): add 15/(1+0.12n) at the best, 5/(1+0.2n) deeper,
        cancel 0.3n/(1+0.02n), market 8 for n > 0, spread sensitivity 0.3."""
        n = np.arange(n_max + 1, dtype=np.float64)
        add = np.empty((2, levels, n_max + 1))
        add[:, 0, :] = 15.0 / (1.0 + 0.12 * n)
        add[:, 1:, :] = 5.0 / (1.0 + 0.2 * n)
        cancel = np.empty((2, levels, n_max + 1))
        cancel[:, :, :] = 0.3 * n / (1.0 + 0.02 * n)
        market = np.where(n > 0, 8.0, 0.0)[None, :].repeat(2, axis=0)
        return cls(add=add, cancel=cancel, market=market, spread_sensitivity=0.3, imbalance_sensitivity=1.0)

    # -- JSON -------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": CURVES_FORMAT,
            "version": CURVES_VERSION,
            "levels": self.levels,
            "n_max": self.n_max,
            "spread_sensitivity": float(self.spread_sensitivity),
            "imbalance_sensitivity": float(self.imbalance_sensitivity),
            "add": {side: self.add[s].tolist() for s, side in enumerate(_SIDES)},
            "cancel": {side: self.cancel[s].tolist() for s, side in enumerate(_SIDES)},
            "market": {side: self.market[s].tolist() for s, side in enumerate(_SIDES)},
        }
        if self.meta:
            out["meta"] = self.meta
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the curves as JSON (atomically: temporary file then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HLRCurves:
        """Read and validate a curves file. Raises ``HLRCurvesError`` naming the file and the problem."""
        src = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise HLRCurvesError(src, "", f"cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HLRCurvesError(
                src, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}"
            ) from None
        return cls.from_json_dict(data, source=src)

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "<curves>") -> HLRCurves:
        """Validate a decoded JSON document and build the curves."""

        def fail(loc: str, reason: str) -> HLRCurvesError:
            return HLRCurvesError(source, loc, reason)

        if not isinstance(data, dict):
            raise fail("(top level)", f"expected a JSON object, got {_json_type(data)}")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
        for key in ("format", "version", "levels", "n_max", "add", "cancel", "market"):
            if key not in data:
                raise fail(key, "missing required key")
        if data["format"] != CURVES_FORMAT:
            raise fail("format", f"expected {CURVES_FORMAT!r}, got {data['format']!r}")
        if not _is_int(data["version"]) or data["version"] != CURVES_VERSION:
            raise fail(
                "version", f"unsupported version {data['version']!r} (this reader knows {CURVES_VERSION})"
            )
        levels = data["levels"]
        if not _is_int(levels) or not 1 <= levels <= MAX_LEVELS:
            raise fail("levels", f"must be an integer in [1, {MAX_LEVELS}], got {levels!r}")
        n_max = data["n_max"]
        if not _is_int(n_max) or not 1 <= n_max <= MAX_N:
            raise fail("n_max", f"must be an integer in [1, {MAX_N}], got {n_max!r}")
        sens = {}
        for key, default in (("spread_sensitivity", 0.3), ("imbalance_sensitivity", 1.0)):
            value = data.get(key, default)
            if not _is_number(value):
                raise fail(key, f"must be a finite number, got {value!r}")
            sens[key] = float(value)
        if sens["imbalance_sensitivity"] < 0:
            raise fail("imbalance_sensitivity", "must be >= 0")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise fail("meta", f"must be an object, got {_json_type(meta)}")

        width = n_max + 1
        tables = {}
        for key in ("add", "cancel", "market"):
            obj = data[key]
            if not isinstance(obj, dict) or set(obj) != set(_SIDES):
                raise fail(key, 'must be an object with exactly the keys "bid" and "ask"')
            per_side = []
            for side in _SIDES:
                loc = f"{key}.{side}"
                if key == "market":
                    per_side.append(_vector(obj[side], width, loc, fail))
                else:
                    rows = obj[side]
                    if not isinstance(rows, list) or len(rows) != levels:
                        raise fail(
                            loc, f"must be a list of {levels} curves (one per level), got {_describe(rows)}"
                        )
                    per_side.append([_vector(r, width, f"{loc}[{i}]", fail) for i, r in enumerate(rows)])
            tables[key] = np.asarray(per_side, dtype=np.float64)
        for s, side in enumerate(_SIDES):
            for i in range(levels):
                if tables["cancel"][s, i, 0] != 0.0:
                    raise fail(
                        f"cancel.{side}[{i}][0]", "the cancel rate of an empty queue (n = 0) must be 0"
                    )
            if tables["market"][s, 0] != 0.0:
                raise fail(f"market.{side}[0]", "the market-order rate of an empty queue (n = 0) must be 0")
        return cls(
            add=tables["add"],
            cancel=tables["cancel"],
            market=tables["market"],
            spread_sensitivity=sens["spread_sensitivity"],
            imbalance_sensitivity=sens["imbalance_sensitivity"],
            meta=meta,
        )

    def kernel_table(self) -> np.ndarray:
        """Rows in the kernel's per-level layout: add bid, add ask, cancel bid, cancel ask (K rows each),
        then market buy (consumes the ask), market sell (consumes the bid)."""
        K = self.levels
        tab = np.empty((4 * K + 2, self.n_max + 1), dtype=np.float64)
        tab[0:K] = self.add[0]
        tab[K : 2 * K] = self.add[1]
        tab[2 * K : 3 * K] = self.cancel[0]
        tab[3 * K : 4 * K] = self.cancel[1]
        tab[4 * K] = self.market[1]
        tab[4 * K + 1] = self.market[0]
        return np.ascontiguousarray(tab)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )


def _describe(v: Any) -> str:
    return f"a list of {len(v)}" if isinstance(v, list) else _json_type(v)


def _vector(v: Any, width: int, loc: str, fail: Any) -> list[float]:
    if not isinstance(v, list) or len(v) != width:
        raise fail(loc, f"must be a list of n_max + 1 = {width} numbers, got {_describe(v)}")
    for n, x in enumerate(v):
        if not _is_number(x) or x < 0:
            raise fail(f"{loc}[{n}]", f"must be a finite number >= 0, got {x!r}")
    return [float(x) for x in v]


@dataclass(frozen=True)
class HLR:
    """The HLR2014 model bound to a set of curves."""

    curves: HLRCurves = field(default_factory=HLRCurves.default)
    improve_per_tick: float = DEFAULT_IMPROVE
    liquidity_response: float = 0.2  # add rates x (1 -+ this) while a metaorder is active (realism layer)
    curves_file: str | None = None
    exo_loading: float = 0.0  # weight of the exogenous signal in the imbalance (market factor hook)

    name = "hlr"

    @property
    def kind(self) -> int:
        return MODEL_HLR

    def validate(self, levels: int) -> None:
        c = self.curves
        K, width = c.add.shape[1], c.add.shape[2]
        if c.add.shape != (2, K, width) or c.cancel.shape != (2, K, width) or c.market.shape != (2, width):
            raise ValueError("HLR curves: add/cancel must be (2, K, n_max + 1) and market (2, n_max + 1)")
        for name, arr in (("add", c.add), ("cancel", c.cancel), ("market", c.market)):
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"HLR curves: {name} rates must be finite and >= 0")
        if np.any(c.cancel[:, :, 0] != 0) or np.any(c.market[:, 0] != 0):
            raise ValueError("HLR curves: cancel and market rates of an empty queue (n = 0) must be 0")
        check_finite("spread_sensitivity", c.spread_sensitivity, minimum=None)
        check_finite("imbalance_sensitivity", c.imbalance_sensitivity)
        if self.curves.levels != levels:
            src = self.curves_file or "the HLR curves"
            raise ValueError(
                f"{src} define {self.curves.levels} levels per side but the session uses {levels}"
            )
        check_finite("improve_per_tick", self.improve_per_tick)
        check_finite("exo_loading", self.exo_loading, minimum=None)
        if not 0.0 <= self.liquidity_response < 1.0:
            raise ValueError(f"liquidity_response must be in [0, 1), got {self.liquidity_response}")

    def params_vector(self) -> np.ndarray:
        p = shared_params(
            self.curves.spread_sensitivity,
            self.improve_per_tick,
            loading=self.exo_loading,
            liquidity=self.liquidity_response,
        )
        p += [0.0] * (N_PARAMS - N_SHARED)
        p[P_IMB_SENS] = self.curves.imbalance_sensitivity
        return np.asarray(p, dtype=np.float64)

    def tables(self, levels: int) -> np.ndarray:
        return self.curves.kernel_table()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {
                "improve_per_tick": self.improve_per_tick,
                "liquidity_response": self.liquidity_response,
                "exo_loading": self.exo_loading,
                "curves_file": self.curves_file,
                "curves": self.curves.to_json_dict(),
            },
        }


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def hlr_rates(grid, ist, p, tab, x, mult, unit, rates):
    """Fill ``rates[0 : 4K + 2]`` in the per-level layout and return their sum.

    Queue sizes index the curves in queue units, rounded up: n = ceil(shares / unit), so a
    non-empty queue always has n >= 1 (``unit`` is a whole number of shares).
    """
    K = ist[LEVELS]
    base = ist[BASE]
    bb = ist[BB]
    ba = ist[BB + 1]
    ib = bb - base
    ia = ba - base
    nmax = tab.shape[1] - 1
    inv = 1.0 / unit
    um1 = unit - 1.0
    s = ba - bb
    a = mult[s] if s < mult.shape[0] else np.exp(p[P_SPREAD_SENS] * (s - 2))
    e = 1.0 / a
    db = 0
    da = 0
    for k in range(K):
        nb = grid[G_QSUM, 0, ib - k]
        na = grid[G_QSUM, 1, ia + k]
        db += nb
        da += na
        cb = min(np.int64((nb + um1) * inv + 1e-9), nmax)
        ca = min(np.int64((na + um1) * inv + 1e-9), nmax)
        rates[k] = tab[k, cb] * a
        rates[K + k] = tab[K + k, ca] * a
        rates[2 * K + k] = tab[2 * K + k, cb]
        rates[3 * K + k] = tab[3 * K + k, ca]
    imb = (db - da) / (db + da + 1e-9)
    if x != 0.0:
        raw = imb
        imb = min(1.0, max(-1.0, imb + p[P_LOADING] * x))
        shift = imb - raw
        # the market factor leans on the limit order flow too: a rising market brings bids and
        # takes offers away (adds x (1 -+ shift), cancels x (1 +- shift) on the bid / ask side)
        fb = max(1.0 - shift, 0.0)
        fa = max(1.0 + shift, 0.0)
        for k in range(K):
            rates[k] *= fb
            rates[K + k] *= fa
            rates[2 * K + k] *= fa
            rates[3 * K + k] *= fb
    i_s = p[P_IMB_SENS]
    na0 = min(np.int64((grid[G_QSUM, 1, ia] + um1) * inv + 1e-9), nmax)
    nb0 = min(np.int64((grid[G_QSUM, 0, ib] + um1) * inv + 1e-9), nmax)
    rates[4 * K] = tab[4 * K, na0] * e * (1.0 + i_s * max(-imb, 0.0))
    rates[4 * K + 1] = tab[4 * K + 1, nb0] * e * (1.0 + i_s * max(imb, 0.0))
    total = 0.0
    for i in range(4 * K + 2):
        total += rates[i]
    return total
