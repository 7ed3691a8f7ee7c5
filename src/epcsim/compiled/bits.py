"""Integer widths made explicit: the compiled core's bit and index helpers.

Compiled, every value the core computes is a fixed-width machine integer: a shift of
``1`` is 64 bits wide whatever the width of the count, ``x & -x`` wraps, trailing zeros
are ``llvm.cttz``.  Run as plain Python (``NUMBA_DISABLE_JIT=1``), the same expressions
would follow NumPy's scalar rules (an ``int32`` count gives an ``int32`` shift) or
Python's unbounded integers.  Each helper below says the width once, so that both modes
compute the same values (``tests/compiled/test_plain_python.py``).  No kernel twins.
"""

from __future__ import annotations

import numpy as np
from numba import config

from ._jit import inline

__all__ = ["_u", "bit64", "in_range", "lowbit", "prefetch", "trailing_zeros"]


@inline
def _u(i):
    """No kernel twin: *i* as an unsigned index.  numba wraps every signed array index
    (a negative one counts from the end: a compare, an add and a select each time, and
    the dimension's size kept at hand); the core's indices are never negative, so it
    indexes with _u(...) and skips that."""
    return np.uintp(i)


@inline
def in_range(i, n):
    """No kernel twin: ``0 <= i < n`` for a non-negative *n*, as one unsigned
    comparison (a negative *i* wraps to a large unsigned value)."""
    return np.uintp(np.int64(i)) < np.uintp(np.int64(n))


@inline
def bit64(b):
    """No kernel twin: the int64 with bit *b* (0..63) set (bit 63: the sign bit), for
    any integer width of *b*."""
    return np.int64(1) << np.int64(b)


if config.DISABLE_JIT:

    def lowbit(x):
        """No kernel twin: the lowest set bit of the int64 *x* (``x & -x``, wrapping)."""
        v = int(x) & -int(x)
        return np.int64(v - (1 << 64) if v >= 1 << 63 else v)

    def trailing_zeros(x):
        """No kernel twin: the number of trailing zero bits of the non-zero *x*
        (``llvm.cttz``)."""
        v = int(x) & 0xFFFF_FFFF_FFFF_FFFF
        return (v & -v).bit_length() - 1

    def prefetch(arr, i, j):
        """No kernel twin: a cache hint, nothing to do in plain Python."""
        return None

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.cpython.unsafe.numbers import trailing_zeros
    from numba.extending import intrinsic

    @inline
    def lowbit(x):
        """No kernel twin: the lowest set bit of the int64 *x* (``x & -x``, wrapping)."""
        return x & -x

    @intrinsic
    def prefetch(typingctx, arr, i, j):
        """No kernel twin: ask the cache for the line of ``arr[i, j]`` (``llvm.prefetch``,
        for writing): a hint with no effect on any value, so that a later fault or
        reclaim phase does not wait for memory.  Its indices are never negative: no
        wrap-around (a compare and a select per index)."""
        sig = types.void(arr, i, j)

        def codegen(context, builder, signature, args):
            aryty, ity, jty = signature.args
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [
                context.cast(builder, args[1], ity, types.intp),
                context.cast(builder, args[2], jty, types.intp),
            ]
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
            i32 = ir.IntType(32)
            ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            # rw = 1 (write), locality = 3 (keep), cache type = 1 (data)
            builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen
