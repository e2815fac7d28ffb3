"""``borrow``: an array view without a reference-counted owner, for the hot loop.

Numba reference-counts arrays: every array handed to another compiled function
(inlined or not) gets an atomic increment on entry and a decrement on exit. In the
event loop that is dozens of atomic operations per event -- measured at about three
quarters of the loop's time. ``borrow(a)`` returns the same array (data, shape,
strides) with a null ``meminfo``; reference-count operations on a null meminfo are
no-ops that the compiler removes. It is only safe while something else keeps the
array alive: the kernel applies it to its own arguments, which the Python caller
holds for the whole call.
"""

from __future__ import annotations

from qrsdp_sim.engine._jit import intrinsic


@intrinsic
def borrow(typingctx, arr):
    from numba import types
    from numba.core import cgutils

    if not isinstance(arr, types.Array):
        return None
    sig = arr(arr)

    def codegen(context, builder, signature, args):
        src = context.make_array(arr)(context, builder, value=args[0])
        dst = context.make_array(arr)(context, builder)
        cgutils.copy_struct(dst, src)
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        return dst._getvalue()

    return sig, codegen
