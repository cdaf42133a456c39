"""The LSTM's time loops, compiled: one nogil call runs every step of a direction, BLAS product and cell.

Shapes: T steps, N rows, H hidden size, V vocabulary, D' the part of an input projected per step.
Gates [i, f, o, g] along 4H. Arrays are the ``LSTMPass`` buffers of ``nn/lstm.py``, time-major.

    lstm_forward         every step t: rec = h_{t-1} Wh (gemm), then ``cpu.lstm_cell_forward``
    lstm_backward        every step from T - 1 down: ``cpu.lstm_cell_backward``, then dh = da Wh^T (gemm)
    lstm_step_forward    one step (input feeding, decoding): a += x' Wx' (when D' > 0), rec, the cell
    lstm_step_backward   one step back, with dx' = da Wx'^T (when D' > 0)

The products call numpy's own BLAS (``blas.py``) through the external names ``blas.SGEMM`` and
``blas.DGEMM``: no Python between steps, and the GIL released throughout, so the data-parallel
threads run their loops at once (each with the BLAS thread count threadpoolctl set). The cells
are the compiled ones of ``cpu.py``, the same the step-by-step path calls.

What was measured on the Zen 4 machine (one 64-row shard, one thread, 29 steps, H = 256) and is
kept: the backward multiplies by a contiguous copy of Wh^T (11.0 ms against 14.3 with the
transposed view: the copy costs 0.1 ms per pass); the products over the whole N rows (OpenBLAS
packs Wh again at every call, so row blocks of 32 or 16 lose: 15.3 and 20.7 ms against 12.3);
the time-major (N, 4H) layout (the transposed one, Wh^T h^T, multiplies faster, 10.0 against
12.3 ms, but its cells then read rows strided by T N and its backward loses as much as its
forward gains); and, where the vocabulary is small, the input projection as rows gathered from a
table E Wx + b made once per pass (``ids``, ``table``) and its gradient as those rows scattered
back (``dtable``), instead of the K = 16 products at 40 GFLOP/s.

``ticks`` (int64, (2,)) adds the cycles spent in products and in cells (``cycles``; x86's time
stamp counter, 0 elsewhere) for ``attnseq bench --profile``; an empty one times nothing.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import blas
from .cpu import lstm_cell_backward, lstm_cell_forward
from .scalar_math import jit

if blas.find()[0] is None:                                      # registers the names below, once
    raise ImportError(blas.find()[2])

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _gemm_signature(fp):
    i32, i64 = types.int32, types.int64
    return types.void(i32, i32, i32, i64, i64, i64, fp, types.intp, i64, types.intp, i64, fp, types.intp, i64)


_sgemm = types.ExternalFunction(blas.SGEMM, _gemm_signature(types.float32))
_dgemm = types.ExternalFunction(blas.DGEMM, _gemm_signature(types.float64))


@intrinsic
def _read_cycles(typingctx):
    def codegen(context, builder, signature, args):
        if not _X86:
            return ir.Constant(ir.IntType(64), 0)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@jit
def cycles():
    """The time stamp counter (x86), 0 elsewhere: what ``ticks`` count in."""
    return _read_cycles()


# -- the product --------------------------------------------------------------------------
def gemm(a, b, c, beta):
    """c = a @ b + beta c, a (M, K), b (K, N), c (M, N) of one float dtype, rows of unit stride; in compiled code."""


@jit
def _ld(x):
    """The leading dimension of x (rows, cols) for row-major BLAS: its row stride in elements."""
    rows, cols = x.shape
    if cols > 1 and x.strides[1] != x.itemsize:
        raise ValueError("gemm: each operand's rows must be contiguous")
    ld = x.strides[0] // x.itemsize
    if rows <= 1 or ld < cols:
        if rows > 1:
            raise ValueError("gemm: an operand's rows overlap")
        ld = max(cols, 1)
    return ld


@overload(gemm, jit_options=dict(nogil=True))
def _gemm_impl(a, b, c, beta):
    if not (isinstance(a, types.Array) and a.dtype == b.dtype == c.dtype and a.dtype in (types.float32, types.float64)):
        return None
    fn, cast = (_sgemm, np.float32) if a.dtype == types.float32 else (_dgemm, np.float64)

    def impl(a, b, c, beta):
        M, K = a.shape
        N = b.shape[1]
        if b.shape[0] != K or c.shape[0] != M or c.shape[1] != N:
            raise ValueError("gemm: shapes do not match: a (M, K), b (K, N), c (M, N)")
        if M == 0 or N == 0:
            return
        if K == 0:
            c *= cast(beta)
            return
        fn(blas.ROW_MAJOR, blas.NO_TRANS, blas.NO_TRANS, M, N, K, cast(1.0), a.ctypes.data, _ld(a),
           b.ctypes.data, _ld(b), cast(beta), c.ctypes.data, _ld(c))
    return impl


@jit
def transpose_into(src, dst):
    """dst (n, m) = src (m, n)^T, in 32 x 32 tiles (numpy's strided copy of a (256, 1024) float32 Wh takes
    0.9 ms on the Zen 4 machine)."""
    m, n = src.shape
    if dst.shape != (n, m):
        raise ValueError("transpose_into: dst must be (n, m) for src (m, n)")
    for i0 in range(0, m, 32):
        for j0 in range(0, n, 32):
            for i in range(i0, min(i0 + 32, m)):
                row = src[i]
                for j in range(j0, min(j0 + 32, n)):
                    dst[j, i] = row[j]


# -- forward ----------------------------------------------------------------------------------
@jit
def _check_ids(ids, N, T, V):
    if ids.shape[0] == 0:
        return
    if ids.shape != (N, T):
        raise ValueError("lstm_forward: ids must be (N, T)")
    for n in range(N):
        for t in range(T):
            if ids[n, t] < 0 or ids[n, t] >= V:
                raise IndexError("lstm_forward: a token id is outside the table's rows 0..V-1")


@jit
def lstm_step_forward(x, Wx, a, h_prev, Wh, c_prev, rec, gates, c, tc, h, ticks):
    """One step: a (N, 4H) += x (N, D') Wx (D', 4H) (skipped when D' = 0), rec (N, 4H) = h_prev (N, H) Wh,
    then the cell from a + rec: gates (N, 4H), c, tc = tanh(c), h (N, H). c_prev may be a view of c's array."""
    t0 = cycles() if ticks.shape[0] else 0
    if x.shape[1]:
        gemm(x, Wx, a, 1.0)
    gemm(h_prev, Wh, rec, 0.0)
    t1 = cycles() if ticks.shape[0] else 0
    lstm_cell_forward(a, rec, c_prev, gates, c, tc, h)
    if ticks.shape[0]:
        ticks[0] += t1 - t0
        ticks[1] += cycles() - t1


@jit
def lstm_forward(A, Wh, Hs, Cs, G, TC, rec, ids, table, ticks):
    """Every step of a pass: A (T, N, 4H) the input projections x Wx + b, or with ids (N, T) written here
    from the rows of table (V, 4H) = E Wx + b (ids of shape (0, 0): A as given); Hs, Cs (T + 1, N, H) with
    the start state at 0, filled; G (T, N, 4H), or (1, N, 4H) reused (eval); TC (T, N, H); rec (N, 4H) scratch."""
    T, N, H4 = A.shape
    if Hs.shape != (T + 1, N, H4 // 4) or Cs.shape != Hs.shape or TC.shape != (T, N, H4 // 4) \
            or G.shape[0] not in (1, T) or table.shape[1] != H4:
        raise ValueError("lstm_forward: A, G (T, N, 4H), Hs, Cs (T + 1, N, H), TC (T, N, H), table (V, 4H)")
    _check_ids(ids, N, T, table.shape[0])
    empty = Wh[:0]
    for t in range(T):
        if ids.shape[0]:
            t0 = cycles() if ticks.shape[0] else 0
            for n in range(N):
                row, src = A[t, n], table[ids[n, t]]                # (4H,) rows
                for k in range(H4):
                    row[k] = src[k]
            if ticks.shape[0]:
                ticks[1] += cycles() - t0
        lstm_step_forward(Hs[t, :, :0], empty, A[t], Hs[t], Wh, Cs[t], rec, G[t if G.shape[0] == T else 0],
                          Cs[t + 1], TC[t], Hs[t + 1], ticks)


# -- backward --------------------------------------------------------------------------------
@jit
def lstm_step_backward(dh, dh_rec, dc, dc_add, gates, c_prev, tc, da, dc_prev, WhT, WxT, dx, ticks):
    """One step back: dc (N, H) += dc_add (skipped when it has no rows); the cell backward from dh + dh_rec
    and dc -> da (N, 4H), dc_prev (N, H); then dh_rec = da WhT (WhT (4H, H) contiguous) and, when dx (N, D')
    has columns, dx = da WxT (WxT (4H, D'))."""
    t0 = cycles() if ticks.shape[0] else 0
    if dc_add.shape[0]:
        dc += dc_add
    lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev)
    t1 = cycles() if ticks.shape[0] else 0
    gemm(da, WhT, dh_rec, 0.0)
    if dx.shape[1]:
        gemm(da, WxT, dx, 0.0)
    if ticks.shape[0]:
        ticks[1] += t1 - t0
        ticks[0] += cycles() - t1


@jit
def lstm_backward(dH, dC, G, Cs, TC, dA, dh, dc, dc_prev, WhT, ids, dtable, ticks):
    """Every step back from T - 1: dH (T, N, H) the gradients reaching h_t from outside, dC (T, N, H) added to
    c_t's (or of shape (0, N, H)); G, Cs, TC the forward's; writes dA (T, N, 4H). dh (N, H) holds the gradient
    reaching h_{t-1} from step t, at the end dh0; dc, dc_prev (N, H) swap roles each step (dc holds dc_last at
    the start; dc0 ends in dc when T is even, else in dc_prev). With ids (N, T), each step's da rows are added
    to dtable (V, 4H) at their token's row (zeroed by the caller)."""
    T, N, H4 = dA.shape
    if dH.shape != (T, N, H4 // 4) or G.shape != dA.shape or Cs.shape != (T + 1, N, H4 // 4) \
            or TC.shape != dH.shape or dC.shape[0] not in (0, T) or dtable.shape[1] != H4:
        raise ValueError("lstm_backward: dA, G (T, N, 4H), dH, TC (T, N, H), Cs (T + 1, N, H), dtable (V, 4H)")
    _check_ids(ids, N, T, dtable.shape[0])
    none, empty = dh[:, :0], WhT[:, :0]
    for t in range(T - 1, -1, -1):
        lstm_step_backward(dH[t], dh, dc, dC[t] if dC.shape[0] else dh[:0], G[t], Cs[t], TC[t], dA[t],
                           dc_prev, WhT, empty, none, ticks)
        dc, dc_prev = dc_prev, dc
        if ids.shape[0]:
            t0 = cycles() if ticks.shape[0] else 0
            for n in range(N):
                row, src = dtable[ids[n, t]], dA[t, n]              # (4H,) rows
                for k in range(H4):
                    row[k] += src[k]
            if ticks.shape[0]:
                ticks[1] += cycles() - t0
