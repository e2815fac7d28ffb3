"""Start-up and exit of the simulating commands: the cyclic garbage collector stays out of the way.

Importing numba and loading the compiled kernels create a few hundred thousand long-lived objects
(numba's typing and lowering registries). While they are being created the collector runs again and
again over all of them (≈ 0.09 s of ``qrsdp run``'s start-up), and at exit the interpreter's final
collections walk them once more (≈ 0.13 s). None of them is garbage. So ``qrsdp run`` starts with the
collector off (``defer_collection``), and once the kernel is loaded moves everything that exists into
the permanent generation (``gc.freeze``) and turns the collector back on (``collection_resumed``): the
simulation and a live run collect as usual, over their own objects only. At exit every command
freezes what is left (``freeze_for_exit``) so the final collections skip it; objects are still
released by reference counting.
"""

from __future__ import annotations

import gc

_deferred = False


def defer_collection() -> None:
    """Turn the cyclic collector off for the start-up (until ``collection_resumed``)."""
    global _deferred
    if gc.isenabled():
        gc.disable()
        _deferred = True


def collection_resumed() -> None:
    """The start-up's objects into the permanent generation, and the collector back on. Only after
    ``defer_collection`` (a command run in-process, e.g. by a test's CLI runner, changes nothing)."""
    global _deferred
    if _deferred:
        _deferred = False
        gc.freeze()
        gc.enable()


def freeze_for_exit() -> None:
    """Before the interpreter exits: its final collections then skip every object alive now."""
    gc.freeze()
