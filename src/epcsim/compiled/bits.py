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

__all__ = [
    "_u",
    "bit64",
    "const_cols",
    "fortran_table",
    "in_range",
    "lowbit",
    "prefetch",
    "trailing_zeros",
]


if config.DISABLE_JIT:

    def _u(i):
        """No kernel twin: *i* as an unsigned index.  numba wraps every signed array index
        (a negative one counts from the end: a compare, an add and a select each time,
        and the dimension's size kept at hand); the core's indices are never negative,
        so it indexes with _u(...) and skips that."""
        return np.uintp(i)

    def in_range(i, n):
        """No kernel twin: ``0 <= i < n`` for a non-negative *n*, as one unsigned
        comparison (a negative *i* wraps to a large unsigned value)."""
        return np.uintp(np.int64(i)) < np.uintp(np.int64(n))

    def bit64(b):
        """No kernel twin: the int64 with bit *b* (0..63) set (bit 63: the sign bit),
        for any integer width of *b*."""
        return np.int64(1) << np.int64(b)

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

    def fortran_table(flat, n):
        """No kernel twin: the flat int64 array *flat* as the Fortran-order table of *n*
        fields per id it holds (a view: writes go to *flat*)."""
        if flat.ndim != 1 or len(flat) % n:
            raise ValueError(f"not a flat table of {n} fields per id: {flat.shape}")
        return flat.reshape((n, len(flat) // n), order="F")

    def const_cols(arr, n):
        """No kernel twin: the C-order table *arr* of rows of *n* fields."""
        if arr.ndim != 2 or arr.shape[1] != n or not arr.flags.c_contiguous:
            raise ValueError(f"not a C-order table of {n} columns: {arr.shape}")
        return arr

else:  # pragma: no cover  (numba intrinsics: run compiled only, no lines to trace)
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.core.imputils import impl_ret_borrowed
    from numba.cpython.unsafe.numbers import trailing_zeros
    from numba.extending import intrinsic

    # The helpers below are numba intrinsics, not inlined functions: each call is typed
    # and lowered in place (a cast, a compare, a shift), where an ``inline="always"``
    # function's IR would be copied and run through numba's untyped passes at every one
    # of its ~1,300 call sites (most of the core's cold compile).

    @intrinsic
    def _u(typingctx, i):
        """No kernel twin: *i* as an unsigned index.  numba wraps every signed array index
        (a negative one counts from the end: a compare, an add and a select each time,
        and the dimension's size kept at hand); the core's indices are never negative,
        so it indexes with _u(...) and skips that."""
        if not isinstance(i, (types.Integer, types.Boolean)):
            return None

        def codegen(context, builder, signature, args):
            return context.cast(builder, args[0], signature.args[0], types.uintp)

        return types.uintp(i), codegen

    @intrinsic
    def in_range(typingctx, i, n):
        """No kernel twin: ``0 <= i < n`` for a non-negative *n*, as one unsigned
        comparison (a negative *i* wraps to a large unsigned value)."""
        if not all(isinstance(t, (types.Integer, types.Boolean)) for t in (i, n)):
            return None

        def codegen(context, builder, signature, args):
            ity, nty = signature.args
            a = context.cast(builder, args[0], ity, types.int64)
            b = context.cast(builder, args[1], nty, types.int64)
            return builder.icmp_unsigned("<", a, b)

        return types.boolean(i, n), codegen

    @intrinsic
    def bit64(typingctx, b):
        """No kernel twin: the int64 with bit *b* (0..63) set (bit 63: the sign bit),
        for any integer width of *b*."""
        if not isinstance(b, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            n = context.cast(builder, args[0], signature.args[0], types.int64)
            return builder.shl(ir.Constant(ir.IntType(64), 1), n)

        return types.int64(b), codegen

    @intrinsic
    def lowbit(typingctx, x):
        """No kernel twin: the lowest set bit of the int64 *x* (``x & -x``, wrapping)."""
        if x != types.int64:
            return None

        def codegen(context, builder, signature, args):
            return builder.and_(args[0], builder.neg(args[0]))

        return types.int64(x), codegen

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

    @intrinsic(prefer_literal=True)
    def fortran_table(typingctx, flat, n):
        """No kernel twin: the flat array *flat* (``CG``, ``EN``, ``TH``, ``R`` raveled
        in Fortran order) as the Fortran-order table of *n* fields per id it holds, a
        view whose first dimension is the constant *n*: an id's fields are at ``id * n``
        (a constant multiply) and no register holds the size.  The core takes these
        tables flat so that their types (a 2-D table of one id is C- and
        Fortran-contiguous at once: numba types it C) never make it compile another
        variant of itself."""
        if not (
            isinstance(flat, types.Array)
            and flat.ndim == 1
            and flat.layout == "C"
            and isinstance(n, types.IntegerLiteral)
            and n.literal_value > 0
        ):
            return None
        val = n.literal_value
        out = flat.copy(ndim=2, layout="F")

        def codegen(context, builder, signature, args):
            src = context.make_array(signature.args[0])(context, builder, args[0])
            ary = context.make_array(out)(context, builder)
            (size,) = cgutils.unpack_tuple(builder, src.shape)
            rows = ir.Constant(size.type, val)
            cols = builder.udiv(size, rows)
            item = src.itemsize
            for name in ("meminfo", "parent", "nitems", "itemsize", "data"):
                setattr(ary, name, getattr(src, name))
            ary.shape = cgutils.pack_array(builder, [rows, cols])
            ary.strides = cgutils.pack_array(builder, [item, builder.mul(item, rows)])
            return impl_ret_borrowed(context, builder, out, ary._getvalue())

        return out(flat, n), codegen

    @intrinsic(prefer_literal=True)
    def const_cols(typingctx, arr, n):
        """No kernel twin: the C-order table *arr* of rows of *n* fields (``VA``,
        ``P32``, ``P8``, ``E32``), typed with its second dimension the constant *n*: a
        row's fields are at ``row * n`` (a constant multiply) and no register holds the
        size.  The caller guarantees the shape (plain Python checks it)."""
        if not (
            isinstance(arr, types.Array)
            and arr.ndim == 2
            and arr.layout == "C"
            and isinstance(n, types.IntegerLiteral)
        ):
            return None
        val = n.literal_value

        def codegen(context, builder, signature, args):
            ary = context.make_array(arr)(context, builder, args[0])
            shape = cgutils.unpack_tuple(builder, ary.shape)
            shape[1] = ir.Constant(shape[1].type, val)
            ary.shape = cgutils.pack_array(builder, shape)
            return impl_ret_borrowed(context, builder, arr, ary._getvalue())

        return arr(arr, n), codegen
