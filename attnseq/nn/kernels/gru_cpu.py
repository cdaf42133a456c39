"""The GRU cell's kernels compiled with numba: the two halves of a step, forward and backward.

Shapes: N batch, H hidden size; gates and their gradients (N, 3H) in the blocks [z, r, h~] of
attnseq's GRU parameters (``gru_cell``). A step is two kernels around the product with Wh_h,
which needs r first: ``gru_gates_forward`` (z, r, r * h_prev), then, given hh = (r * h_prev) Wh_h,
``gru_state_forward`` (h~, h); backwards ``gru_state_backward``, then, given drh = da_h Wh_h^T,
``gru_gates_backward``. Each one's xp twin is the same name with a trailing ``_`` in ``gru_cell``.

Written as ``cpu``'s LSTM cell (see its docstring): one (H,) view per gate block, outputs apart
from the inputs, and the polynomial sigmoid and tanh of ``cpu``, so the loops vectorize.
"""
from __future__ import annotations

from .cpu import jit, sigmoid, tanh


@jit
def gru_gates_forward(xa, hzr, h_prev, gates, rh):
    """z = sigmoid(xa_z + hzr_z), r = sigmoid(xa_r + hzr_r) into gates[:, :2H], rh = r * h_prev.

    xa (N, 3H) = x Wx + b, hzr (N, 2H) = h_prev Wh_zr, h_prev and rh (N, H), gates (N, 3H)."""
    N, H = h_prev.shape
    if xa.shape != (N, 3 * H) or gates.shape != (N, 3 * H) or hzr.shape != (N, 2 * H) or rh.shape != (N, H):
        raise ValueError("gru_gates_forward: xa, gates must be (N, 3H), hzr (N, 2H) and h_prev, rh (N, H)")
    for n in range(N):
        xz, xr, az, ar = xa[n, :H], xa[n, H:2 * H], hzr[n, :H], hzr[n, H:]
        gz, gr, hp, out = gates[n, :H], gates[n, H:2 * H], h_prev[n], rh[n]   # (H,) rows
        for j in range(H):
            z = sigmoid(xz[j] + az[j])
            r = sigmoid(xr[j] + ar[j])
            gz[j], gr[j] = z, r
            out[j] = r * hp[j]


@jit
def gru_state_forward(xa, hh, h_prev, gates, h):
    """h~ = tanh(xa_h + hh) into gates[:, 2H:], and h = h_prev + z (h~ - h_prev).

    hh, h_prev, h (N, H); gates (N, 3H) holding z from ``gru_gates_forward``."""
    N, H = h_prev.shape
    if xa.shape != (N, 3 * H) or gates.shape != (N, 3 * H) or hh.shape != (N, H) or h.shape != (N, H):
        raise ValueError("gru_state_forward: xa, gates must be (N, 3H) and hh, h_prev, h (N, H)")
    for n in range(N):
        xh, gz, gh = xa[n, 2 * H:], gates[n, :H], gates[n, 2 * H:]
        a, hp, hn = hh[n], h_prev[n], h[n]                          # (H,) rows
        for j in range(H):
            c = tanh(xh[j] + a[j])
            gh[j] = c
            hn[j] = hp[j] + gz[j] * (c - hp[j])


@jit
def gru_state_backward(dh, dh_rec, gates, h_prev, da, dhp):
    """Back through h = (1 - z) h_prev + z h~ and the tanh, with dh + dh_rec reaching h.

    Writes da_z = dh (h~ - h_prev) z (1 - z) and da_h = dh z (1 - h~^2) into da (N, 3H) and
    dhp = dh (1 - z) (N, H); da's r block is left for ``gru_gates_backward``."""
    N, H = dh.shape
    if (dh_rec.shape != (N, H) or h_prev.shape != (N, H) or dhp.shape != (N, H)
            or gates.shape != (N, 3 * H) or da.shape != (N, 3 * H)):
        raise ValueError("gru_state_backward: gates, da must be (N, 3H) and dh, dh_rec, h_prev, dhp (N, H)")
    one = dh.dtype.type(1.0)
    for n in range(N):
        gz, gh, dz, dc = gates[n, :H], gates[n, 2 * H:], da[n, :H], da[n, 2 * H:]
        d1, d2, hp, out = dh[n], dh_rec[n], h_prev[n], dhp[n]       # (H,) rows
        for j in range(H):
            z, c = gz[j], gh[j]
            g = d1[j] + d2[j]
            dz[j] = g * (c - hp[j]) * z * (one - z)
            dc[j] = g * z * (one - c * c)
            out[j] = g * (one - z)


@jit
def gru_gates_backward(drh, gates, h_prev, da, dhp):
    """Back through r: drh (N, H) = da_h Wh_h^T reaches r * h_prev. Writes da_r = drh h_prev r (1 - r)
    into da (N, 3H) and adds r drh to dhp (N, H). drh is read only."""
    N, H = drh.shape
    if h_prev.shape != (N, H) or dhp.shape != (N, H) or gates.shape != (N, 3 * H) or da.shape != (N, 3 * H):
        raise ValueError("gru_gates_backward: gates, da must be (N, 3H) and drh, h_prev, dhp (N, H)")
    one = drh.dtype.type(1.0)
    for n in range(N):
        gr, dr = gates[n, H:2 * H], da[n, H:2 * H]
        g, hp, out = drh[n], h_prev[n], dhp[n]                      # (H,) rows
        for j in range(H):
            r = gr[j]
            dr[j] = g[j] * hp[j] * r * (one - r)
            out[j] += r * g[j]
