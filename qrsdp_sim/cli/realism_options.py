"""Command-line options for the realism layers (``qrsdp run`` / ``qrsdp cli``), and their checks.

Every option defaults to the realistic market (``Realism()``); ``--plain`` switches every layer
off and the models back to the seed's parameters; ``--realism FILE`` loads the layers from JSON
(the ``realism`` object of a manifest), and the other options override single values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the engine (numba) is imported only when a realism is built, not by every command
    from qrsdp_sim.engine.clock import ActivityFactor, IntradayProfile
    from qrsdp_sim.engine.realism import Realism

PANEL = "Realism (defaults: a large-tick US equity; docs/realism.md)"


class RealismArgError(ValueError):
    """A realism option is invalid; the message names the option."""


PlainOpt = Annotated[
    bool,
    typer.Option(
        "--plain",
        help="The seed's plain models for comparison: one-share orders, no seasonality, no activity factor, "
        "no excitation, no order splitting, and the models' seed parameters.",
        rich_help_panel=PANEL,
    ),
]
RealismFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--realism",
        help="JSON file with the realism layers (the 'realism' object of a manifest.json); the options "
        "below override single values.",
        rich_help_panel=PANEL,
    ),
]
OddLotOpt = Annotated[
    float | None,
    typer.Option(
        "--odd-lot-share", help="Share of limit orders below one round lot (default 0.2).", rich_help_panel=PANEL
    ),
]
LargeOpt = Annotated[
    float | None,
    typer.Option(
        "--large-order-share",
        help="Share of limit orders of 11-100 round lots (default 0.03).",
        rich_help_panel=PANEL,
    ),
]
PartialCancelOpt = Annotated[
    float | None,
    typer.Option(
        "--partial-cancel-share",
        help="Share of cancels that cancel only part of an order (default 0.08).",
        rich_help_panel=PANEL,
    ),
]
SeasonalityOpt = Annotated[
    str | None,
    typer.Option(
        "--seasonality",
        help="Intraday activity profile: 'u' (default: 4x midday at the open, 3x at the close), "
        "'flat', or OPEN,CLOSE ratios such as 3,2.",
        rich_help_panel=PANEL,
    ),
]
ActivityOpt = Annotated[
    str | None,
    typer.Option(
        "--activity",
        help="Random activity factor as SIGMA@SECONDS components (default 0.75@60,0.6@600,0.35@3600), "
        "or 'off'. Volatility clustering and fat tails come from it.",
        rich_help_panel=PANEL,
    ),
]
ActivityCommonOpt = Annotated[
    float | None,
    typer.Option(
        "--activity-common",
        help="Share of the activity factor common to every symbol of a date (default 0.9).",
        rich_help_panel=PANEL,
    ),
]
ExcitationOpt = Annotated[
    float | None,
    typer.Option(
        "--excitation",
        help="Branching ratio n of the self-excitation by trades and mid-price changes, 0 <= n < 1 "
        "(default 0.6; 0 = off).",
        rich_help_panel=PANEL,
    ),
]
ExcitationScalesOpt = Annotated[
    str | None,
    typer.Option(
        "--excitation-timescales",
        help="Time scales of the excitation in seconds, each optionally with a weight as SECONDS:WEIGHT "
        "(default 0.05:0.5,1:0.3,30:0.2; without weights they are equal).",
        rich_help_panel=PANEL,
    ),
]
MetaorderOpt = Annotated[
    float | None,
    typer.Option(
        "--metaorder-share",
        help="Probability that a market order is a child of the active metaorder (default 0.6; 0 = off): "
        "long memory of trade signs.",
        rich_help_panel=PANEL,
    ),
]
MetaorderTailOpt = Annotated[
    float | None,
    typer.Option(
        "--metaorder-tail",
        help="Pareto exponent of metaorder lengths, > 1 (default 1.6: sign autocorrelation ~ lag^-0.6).",
        rich_help_panel=PANEL,
    ),
]


@dataclass(frozen=True)
class RealismArgs:
    plain: bool = False
    realism_file: Path | None = None
    odd_lot_share: float | None = None
    large_order_share: float | None = None
    partial_cancel_share: float | None = None
    seasonality: str | None = None
    activity: str | None = None
    activity_common: float | None = None
    excitation: float | None = None
    excitation_timescales: str | None = None
    metaorder_share: float | None = None
    metaorder_tail: float | None = None

    def overrides(self) -> list[str]:
        names = {
            "odd_lot_share": "--odd-lot-share",
            "large_order_share": "--large-order-share",
            "partial_cancel_share": "--partial-cancel-share",
            "seasonality": "--seasonality",
            "activity": "--activity",
            "activity_common": "--activity-common",
            "excitation": "--excitation",
            "excitation_timescales": "--excitation-timescales",
            "metaorder_share": "--metaorder-share",
            "metaorder_tail": "--metaorder-tail",
        }
        return [flag for field, flag in names.items() if getattr(self, field) is not None]

    def build(self) -> Realism:
        """The realism layers; raises RealismArgError naming the option at fault."""
        from qrsdp_sim.engine.realism import Realism

        if self.plain:
            if self.realism_file is not None:
                raise RealismArgError("--plain and --realism exclude each other")
            given = self.overrides()
            if given:
                raise RealismArgError(f"--plain switches every realism layer off; drop {given[0]}")
            return Realism.plain()
        realism = _load(self.realism_file) if self.realism_file is not None else Realism()
        sizes = realism.sizes
        if self.odd_lot_share is not None:
            sizes = replace(sizes, limit=replace(sizes.limit, odd_lot_share=_share("--odd-lot-share", self.odd_lot_share)))
        if self.large_order_share is not None:
            share = _share("--large-order-share", self.large_order_share)
            sizes = replace(sizes, limit=replace(sizes.limit, large_share=share))
        if self.partial_cancel_share is not None:
            sizes = replace(sizes, partial_cancel_share=_share("--partial-cancel-share", self.partial_cancel_share))
        _check("--odd-lot-share / --large-order-share / --partial-cancel-share", sizes.validate)
        clock = realism.clock
        if self.seasonality is not None:
            clock = replace(clock, profile=_profile(self.seasonality))
        if self.activity is not None or self.activity_common is not None:
            activity = _activity(self.activity) if self.activity is not None else clock.activity
            if self.activity_common is not None:
                activity = replace(activity, common=_share("--activity-common", self.activity_common))
            clock = replace(clock, activity=activity)
        _check("--seasonality / --activity", clock.validate)
        excitation = realism.excitation
        if self.excitation is not None:
            excitation = replace(excitation, branching=self.excitation)
            _check("--excitation", excitation.validate)
        if self.excitation_timescales is not None:
            scales, weights = _scales(self.excitation_timescales)
            excitation = replace(excitation, timescales=scales, weights=weights)
            _check("--excitation-timescales", excitation.validate)
        metaorders = realism.metaorders
        if self.metaorder_share is not None:
            metaorders = replace(metaorders, share=_share("--metaorder-share", self.metaorder_share))
        if self.metaorder_tail is not None:
            metaorders = replace(metaorders, tail=self.metaorder_tail)
        _check("--metaorder-share / --metaorder-tail", metaorders.validate)
        return Realism(sizes=sizes, clock=clock, excitation=excitation, metaorders=metaorders)


def _check(flag: str, validate) -> None:
    try:
        validate()
    except ValueError as exc:
        raise RealismArgError(f"{flag}: {exc}") from None


def _share(flag: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise RealismArgError(f"{flag} must be a number in [0, 1], got {value}")
    return float(value)


def _load(path: Path) -> Realism:
    from qrsdp_sim.engine.realism import Realism

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise RealismArgError(f"--realism {path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise RealismArgError(f"--realism {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(doc, dict) and "realism" in doc and "sizes" not in doc:
        doc = doc["realism"]  # a whole manifest (format 1.0) works too
    try:
        realism = Realism.from_dict(doc)
        realism.validate()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RealismArgError(f"--realism {path}: not a valid realism document: {exc}") from None
    return realism


def _floats(flag: str, text: str, sep: str = ",") -> list[float]:
    try:
        out = [float(x) for x in text.split(sep) if x.strip()]
    except ValueError:
        raise RealismArgError(f"{flag}: expected numbers separated by '{sep}', got {text!r}") from None
    if not out:
        raise RealismArgError(f"{flag}: no value given")
    return out


def _profile(text: str) -> IntradayProfile:
    from qrsdp_sim.engine.clock import IntradayProfile

    t = text.strip().lower()
    if t == "u":
        return IntradayProfile()
    if t == "flat":
        return IntradayProfile.flat()
    try:
        vals = [float(x) for x in t.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 2:
        raise RealismArgError(f"--seasonality: expected 'u', 'flat' or OPEN,CLOSE, got {text!r}")
    profile = replace(IntradayProfile(), open_ratio=vals[0], close_ratio=vals[1])
    _check("--seasonality", profile.validate)
    return profile


def _activity(text: str) -> ActivityFactor:
    from qrsdp_sim.engine.clock import ActivityFactor

    t = text.strip().lower()
    if t in ("off", "0", "none"):
        return ActivityFactor.off()
    sigmas, scales = [], []
    for item in t.split(","):
        sigma, sep, seconds = item.partition("@")
        if not sep:
            raise RealismArgError(f"--activity: expected SIGMA@SECONDS items or 'off', got {item!r}")
        s, T = _floats("--activity", sigma)[0], _floats("--activity", seconds)[0]
        sigmas.append(s)
        scales.append(T)
    activity = ActivityFactor(sigmas=tuple(sigmas), timescales=tuple(scales))
    _check("--activity", activity.validate)
    return activity


def _scales(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scales, weights = [], []
    for item in text.split(","):
        seconds, sep, weight = item.partition(":")
        scales.append(_floats("--excitation-timescales", seconds)[0])
        weights.append(_floats("--excitation-timescales", weight)[0] if sep else 1.0)
    return tuple(scales), tuple(weights)

