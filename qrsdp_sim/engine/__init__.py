"""The simulation engine: an order-level queue-reactive book driven by a compiled event loop."""

from qrsdp_sim.engine.factor import MarketFactor
from qrsdp_sim.engine.models import (
    HLR,
    ConstantRates,
    HawkesIntensity,
    HawkesParams,
    HLRCurves,
    HLRCurvesError,
    SimpleImbalance,
)
from qrsdp_sim.engine.session import (
    SessionConfig,
    SessionResult,
    SimulationError,
    close_rule,
    simulate_session,
    simulate_to_file,
)

__all__ = [
    "HLR",
    "ConstantRates",
    "HLRCurves",
    "HLRCurvesError",
    "HawkesIntensity",
    "HawkesParams",
    "MarketFactor",
    "SessionConfig",
    "SessionResult",
    "SimpleImbalance",
    "SimulationError",
    "close_rule",
    "simulate_session",
    "simulate_to_file",
]
