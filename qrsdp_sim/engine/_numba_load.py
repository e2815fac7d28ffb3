"""Start-up: load numba's array-math registry without its BLAS probe.

The first compiled function numba loads (even from its on-disk cache) imports
``numba.np.arraymath``, whose module body probes for a BLAS by importing
``scipy.linalg.cython_blas``: that imports all of ``scipy.linalg`` (0.1-0.2 s, a quarter of
``qrsdp run``'s start-up) and loads scipy's OpenBLAS. The probe only decides whether
``np.correlate``/``np.convolve`` in compiled code call BLAS or a plain loop; none of our kernels
uses them, nor any other linear algebra. ``np.dot`` and ``np.linalg`` in compiled code stay
available: they import scipy's BLAS themselves when a function that uses them is compiled.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def _no_blas() -> None:
    raise ImportError("BLAS probe skipped at start-up (qrsdp_sim.engine._numba_load)")


def import_arraymath_without_blas_probe() -> None:
    """Import ``numba.np.arraymath`` with its module-level BLAS probe answered "no BLAS".

    A no-op once the module is loaded (by us or anyone else). Only numba's own probe function is
    replaced for the duration of the import, so other imports of scipy are unaffected.
    """
    if "numba.np.arraymath" in sys.modules:
        return
    with _lock:
        if "numba.np.arraymath" in sys.modules:
            return
        import numba.np.linalg as linalg

        probe = linalg.ensure_blas
        linalg.ensure_blas = _no_blas
        try:
            import numba.np.arraymath  # noqa: F401  (registers its implementations; probe answered)
        finally:
            linalg.ensure_blas = probe
