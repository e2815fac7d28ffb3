"""numba's decorators, applied when a compiled function is first needed instead of at import.

Importing numba and setting up its registries costs ≈ 0.25-0.3 s, which is 7 % of the headline
``qrsdp run`` (46.6 M records in under 4 s). When the engine's ahead-of-time library is built
(``engine/native.py``) a run never needs numba, so the engine's modules declare their compiled
functions with :func:`njit` and :func:`intrinsic` from here: at import they only record the Python
function. The first call of any of them, or any attribute of numba's dispatcher a caller reads from
one (``signatures``, ``inspect_types`` ...; not ``py_func``, which is the Python function), imports numba and creates *every* dispatcher at once, with exactly the options
written at the declaration, and rebinds the module attributes of the package that held the
placeholders to the real dispatchers. numba resolves a compiled function's globals when it compiles
it, after that rebinding, so it sees ordinary dispatchers and intrinsics everywhere (inlining and the
on-disk cache behave as with the decorators applied at import).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

_PACKAGE = "qrsdp_sim."
_lock = threading.RLock()
_declared: list[_Deferred] = []
_materialized = False


class _Deferred:
    """A compiled function declared but not yet handed to numba."""

    def __init__(self, py_func: Callable[..., Any], kind: str, options: dict[str, Any]) -> None:
        self.py_func = py_func
        self.kind = kind  # "njit" or "intrinsic"
        self.options = options
        self.real: Any = None
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__module__ = py_func.__module__
        self.__doc__ = py_func.__doc__
        self.__wrapped__ = py_func

    def _dispatcher(self) -> Any:
        if self.real is None:
            materialize()
        return self.real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._dispatcher()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # signatures, inspect_types, ... of the real dispatcher
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._dispatcher(), name)

    def __repr__(self) -> str:
        return f"<deferred {self.kind} {self.__module__}.{self.__qualname__}>"


def _declare(py_func: Callable[..., Any], kind: str, options: dict[str, Any]) -> Any:
    deferred = _Deferred(py_func, kind, options)
    with _lock:
        _declared.append(deferred)
        if _materialized:  # a module imported after numba was set up: the real object straight away
            _create(deferred)
            return deferred.real
    return deferred


def njit(*args: Any, **options: Any) -> Any:
    """``numba.njit``, deferred: ``@njit`` and ``@njit(nogil=True, ...)`` as with numba's."""
    if args and callable(args[0]) and not options and len(args) == 1:
        return _declare(args[0], "njit", {})
    if args:
        raise TypeError("njit: signatures are not supported here; pass options only")
    return lambda fn: _declare(fn, "njit", options)


def intrinsic(fn: Callable[..., Any]) -> Any:
    """``numba.extending.intrinsic``, deferred (its typer is called by numba at compile time)."""
    return _declare(fn, "intrinsic", {})


def _create(deferred: _Deferred) -> None:
    if deferred.kind == "intrinsic":
        from numba.extending import intrinsic as numba_intrinsic

        deferred.real = numba_intrinsic(deferred.py_func)
    else:
        from numba import njit as numba_njit

        deferred.real = numba_njit(**deferred.options)(deferred.py_func)


def materialize() -> None:
    """Import numba, create every declared dispatcher and rebind the package's module attributes
    (definitions and ``from ... import`` copies alike) from placeholders to the real objects."""
    global _materialized
    with _lock:
        if _materialized:
            return
        from qrsdp_sim.engine._numba_load import import_arraymath_without_blas_probe

        for deferred in _declared:
            _create(deferred)
        for name, module in list(sys.modules.items()):
            if not name.startswith(_PACKAGE) or module is None:
                continue
            namespace = vars(module)
            for attr, value in list(namespace.items()):
                if isinstance(value, _Deferred):
                    namespace[attr] = value.real
        _materialized = True
        import_arraymath_without_blas_probe()  # before the first cache load (see _numba_load)


def materialized() -> bool:
    """True once numba is set up for the engine (tests check that a native run never does it)."""
    return _materialized
