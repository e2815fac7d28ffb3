"""Models by name, as the command line and the orchestrator configure them."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from qrsdp_sim.engine.models.base import IntensityModel
from qrsdp_sim.engine.models.constant import ConstantRates
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


def model_from_dict(d: Any) -> IntensityModel:
    """The model a ``to_dict()`` describes (the ``model`` object of a run's manifest).

    Raises ValueError naming what is wrong; the model is not validated against a level count.
    """
    if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
        raise ValueError("model: expected an object with 'name' and 'params'")
    name, p = d.get("name"), dict(d["params"])
    try:
        if name == "simple":
            return SimpleImbalance(**p)
        if name == "hlr":
            curves = HLRCurves.from_json_dict(p.pop("curves"), source="model.params.curves")
            return HLR(curves=curves, **p)
        if name == "hawkes":
            base = model_from_dict(p.pop("base"))
            return HawkesIntensity(base=base, hawkes=HawkesParams(**p))
        if name == "constant":
            p["rates"] = tuple(float(r) for r in p.get("rates", ()))
            return ConstantRates(**p)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"model {name!r}: invalid parameters ({exc})") from None
    raise ValueError(f"model: unknown name {name!r} (known: {', '.join((*MODEL_NAMES, 'constant'))})")
