"""Models by name, as the command line and the orchestrator configure them."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from qrsdp_sim.engine.models.base import IntensityModel
from qrsdp_sim.engine.models.hawkes import HawkesIntensity, HawkesParams
from qrsdp_sim.engine.models.hlr import HLR, HLRCurves
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance

MODEL_NAMES = ("simple", "hlr", "hawkes")
HAWKES_BASES = ("simple", "hlr")


def build_model(
    name: str = "simple",
    *,
    levels: int = 5,
    hlr_curves: str | os.PathLike[str] | HLRCurves | None = None,
    hawkes: HawkesParams | None = None,
    hawkes_base: str = "simple",
    simple: SimpleImbalance | None = None,
) -> IntensityModel:
    """``simple``, ``hlr`` (``hlr_curves``: a curves file, curves, or None for the built-in ones) or
    ``hawkes`` over ``hawkes_base``. Validated against ``levels``; raises ValueError."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r} (choose from: {', '.join(MODEL_NAMES)})")
    base_name = hawkes_base if name == "hawkes" else name
    if base_name not in HAWKES_BASES:
        raise ValueError(f"unknown Hawkes base model {base_name!r} (choose from: {', '.join(HAWKES_BASES)})")
    if hlr_curves is not None and base_name != "hlr":
        raise ValueError("HLR curves need the hlr model (or a Hawkes model over hlr)")
    model: Any
    if base_name == "hlr":
        if isinstance(hlr_curves, HLRCurves):
            model = HLR(curves=hlr_curves)
        elif hlr_curves is not None:
            model = HLR(curves=HLRCurves.load(hlr_curves), curves_file=str(hlr_curves))
        else:
            model = HLR(curves=HLRCurves.default(levels))
    else:
        model = simple if simple is not None else SimpleImbalance()
    if name == "hawkes":
        model = HawkesIntensity(base=model, hawkes=hawkes or HawkesParams())
    elif hawkes is not None and hawkes.alpha != 0.0:
        raise ValueError("Hawkes parameters need the hawkes model")
    model.validate(levels)
    return model


def with_exo_loading(model: IntensityModel, loading: float) -> IntensityModel:
    """The same model reading the exogenous signal (market factor) with weight ``loading``."""
    if isinstance(model, HawkesIntensity):
        return replace(model, base=with_exo_loading(model.base, loading))
    if not hasattr(model, "exo_loading"):
        raise ValueError(f"model {model.name!r} has no imbalance input for the market factor")
    return replace(model, exo_loading=float(loading))  # type: ignore[type-var]
