"""The compiled functions the engine calls from Python, from wherever they are loaded.

Four compiled functions are called from Python during a session: ``open_book``, ``run_kernel``,
``count_types`` and the clock's ``ar1``. Each call goes to the engine's native library when it is
built for this source and machine (``engine/native.py``: the same machine code, loaded without
numba), else to numba's dispatcher (compiled, or loaded from numba's cache). Both give the same
bytes (tested). The choice is made once per process, at the first call or at ``warm_up``;
``QRSDP_NATIVE_KERNEL=0`` keeps numba.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

_lock = threading.Lock()
_impl: Any = None  # an object with the four functions as attributes


class NumbaEntryPoints:
    """The numba dispatchers (their modules imported on first use; numba set up at the first call)."""

    def __getattr__(self, name: str) -> Any:
        from qrsdp_sim.engine.native import ENTRY_POINTS

        if name not in ENTRY_POINTS:
            raise AttributeError(name)
        module, attr = ENTRY_POINTS[name]
        return getattr(importlib.import_module(module), attr)


def current() -> Any:
    """The entry points in use (loading the native library on the first call if it is built)."""
    global _impl
    if _impl is None:
        with _lock:
            if _impl is None:
                from qrsdp_sim.engine import native

                _impl = native.load() or NumbaEntryPoints()
    return _impl


def use(impl: Any) -> None:
    """Route the calls to ``impl`` (``warm_up`` after building the native library; tests)."""
    global _impl
    with _lock:
        _impl = impl


def is_native() -> bool:
    from qrsdp_sim.engine import native

    return isinstance(current(), native.NativeEntryPoints)


def open_book(*args: Any) -> Any:
    return current().open_book(*args)


def run_kernel(*args: Any) -> Any:
    return current().run_kernel(*args)


def count_types(*args: Any) -> Any:
    return current().count_types(*args)


def ar1(*args: Any) -> Any:
    return current().ar1(*args)
