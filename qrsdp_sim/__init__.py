"""QRSDP simulator package."""

from qrsdp_sim import _numba_cache

_numba_cache.configure()
