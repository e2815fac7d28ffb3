"""Intensity models of the engine (see docs/models.md)."""

from qrsdp_sim.engine.models.base import MODEL_CONSTANT, MODEL_HLR, MODEL_SIMPLE, IntensityModel
from qrsdp_sim.engine.models.constant import ConstantRates
from qrsdp_sim.engine.models.factory import MODEL_NAMES, build_model, with_exo_loading
from qrsdp_sim.engine.models.hawkes import HawkesIntensity, HawkesParams
from qrsdp_sim.engine.models.hlr import HLR, HLRCurves, HLRCurvesError
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance

__all__ = [
    "HLR",
    "MODEL_CONSTANT",
    "MODEL_HLR",
    "MODEL_NAMES",
    "MODEL_SIMPLE",
    "ConstantRates",
    "HLRCurves",
    "HLRCurvesError",
    "HawkesIntensity",
    "HawkesParams",
    "IntensityModel",
    "SimpleImbalance",
    "build_model",
    "with_exo_loading",
]
