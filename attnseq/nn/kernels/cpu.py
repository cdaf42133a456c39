"""The kernels compiled with numba: one loop over memory each, writing into arrays they are given.

Shapes: N batch, H hidden size, To decoder steps, Ts source positions, M rows (tokens),
V vocabulary, D embedding size. Gates are ordered [i, f, o, g] along the 4H axis, as in
attnseq's LSTM parameters. Each kernel's plain numpy twin is named in ``kernels/__init__``.

Written for LLVM's loop vectorizer (check with ``inspect_asm``: zmm/ymm registers,
``vdivps`` not ``vdivss``): plain loops over contiguous rows, one (H,) view per gate,
outputs in arrays apart from the inputs, and no libm calls inside loops, since a call
keeps a loop scalar: exp, tanh and sigmoid are ``scalar_math``'s polynomials.
``fastmath`` allows reassociation (vectorized sums) and contraction (FMA), not "no
infs / no NaNs": a NaN in the data stays a NaN. An output that is also an input
(``dc_prev`` is ``dc``, ``dlogits`` is ``logits``, ``ds`` is ``da``) gives the same
numbers but makes LLVM's overlap check fail, and the loop runs scalar (2-3x slower).

Every function compiles on its first call for each combination of dtypes and memory
layouts (``cache=True`` keeps the machine code on disk, so only a machine's first run
pays) and releases the GIL (``nogil=True``), so data-parallel threads run at once.
Inputs in any memory layout give the right result; C-contiguous rows are the fast
path. Shapes and indices are checked before any loop: numba does not bounds-check.
"""
from __future__ import annotations

import math

import numpy as np

from .scalar_math import FASTMATH, exp, jit, sigmoid, tanh  # noqa: F401  (exp, FASTMATH: the kernels' own names)


# -- LSTM cell ------------------------------------------------------------------------
@jit
def lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h):
    """One LSTM step from the pre-activations a = xa + ha (N, 4H), e.g. x Wx + b and h_prev Wh.

    Writes the activated gates [i, f, o, g] (N, 4H), kept for backward, and the (N, H) cell
    state c = f c_prev + i g, its tanh tc, and the hidden state h = o tanh(c). Raw weights:
    no gate scaling. The book's cell is ``lstm_cell.lstm_cell_reference``.
    """
    N, H = c.shape
    if (xa.shape != (N, 4 * H) or ha.shape != (N, 4 * H) or gates.shape != (N, 4 * H)
            or c_prev.shape != (N, H) or tc.shape != (N, H) or h.shape != (N, H)):
        raise ValueError("lstm_cell_forward: xa, ha, gates must be (N, 4H) and c_prev, c, tc, h (N, H)")
    # One (H,) view per gate: indexing row[j] and row[H + j] of one (4H,) row instead
    # leaves the loop scalar (8x slower), as LLVM cannot prove the stores independent.
    for n in range(N):
        xi, xf, xo, xg = xa[n, :H], xa[n, H:2 * H], xa[n, 2 * H:3 * H], xa[n, 3 * H:]
        ri, rf, ro, rg = ha[n, :H], ha[n, H:2 * H], ha[n, 2 * H:3 * H], ha[n, 3 * H:]
        gi, gf, go, gg = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], gates[n, 3 * H:]
        cp, cn, tn, hn = c_prev[n], c[n], tc[n], h[n]               # (H,) rows
        for j in range(H):
            i = sigmoid(xi[j] + ri[j])
            f = sigmoid(xf[j] + rf[j])
            o = sigmoid(xo[j] + ro[j])
            g = tanh(xg[j] + rg[j])
            cc = f * cp[j] + i * g
            t = tanh(cc)
            gi[j], gf[j], go[j], gg[j] = i, f, o, g
            cn[j], tn[j], hn[j] = cc, t, o * t


@jit
def lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev):
    """Backward through one LSTM step: ``lstm_cell.lstm_cell_reference_backward`` with dh + dh_rec.

    dh (N, H) reaches h_t from above and dh_rec (N, H) from the next step (da_{t+1} Wh^T);
    dc (N, H) reaches c_t from the next step. With the step's gates (N, 4H), c_prev and
    tc = tanh(c_t) (N, H), writes da (N, 4H), the gradient of the pre-activations, and
    dc_prev (N, H). The caller then takes dh_prev = da Wh^T.
    """
    N, H = dh.shape
    if (dh_rec.shape != (N, H) or dc.shape != (N, H) or c_prev.shape != (N, H) or tc.shape != (N, H)
            or dc_prev.shape != (N, H) or gates.shape != (N, 4 * H) or da.shape != (N, 4 * H)):
        raise ValueError("lstm_cell_backward: gates, da must be (N, 4H) "
                         "and dh, dh_rec, dc, c_prev, tc, dc_prev (N, H)")
    one = dh.dtype.type(1.0)
    for n in range(N):
        gi, gf, go, gg = gates[n, :H], gates[n, H:2 * H], gates[n, 2 * H:3 * H], gates[n, 3 * H:]
        di, df, do, dg = da[n, :H], da[n, H:2 * H], da[n, 2 * H:3 * H], da[n, 3 * H:]
        dhn, drn, dcn, cp, tn, dcp = dh[n], dh_rec[n], dc[n], c_prev[n], tc[n], dc_prev[n]   # (H,) rows
        for j in range(H):
            i, f, o, g = gi[j], gf[j], go[j], gg[j]
            t = tn[j]
            dht = dhn[j] + drn[j]
            dct = dcn[j] + dht * o * (one - t * t)                  # through h = o tanh(c)
            di[j] = dct * g * i * (one - i)
            df[j] = dct * cp[j] * f * (one - f)
            do[j] = dht * t * o * (one - o)
            dg[j] = dct * i * (one - g * g)
            dcp[j] = dct * f


# -- attention softmax -------------------------------------------------------------
@jit
def _check_lengths(lengths, N, Ts):
    if lengths.shape != (N,):
        raise ValueError("masked_softmax: lengths must be (N,), one per row of scores")
    for n in range(N):
        if lengths[n] < 1 or lengths[n] > Ts:
            raise ValueError("masked_softmax: every length must be in 1..Ts")


@jit
def _masked_softmax(s, lengths):
    """s (N, R, Ts) in place; positions at and after lengths[n] get exactly 0."""
    N, R, Ts = s.shape
    _check_lengths(lengths, N, Ts)
    zero, one = s.dtype.type(0.0), s.dtype.type(1.0)
    for n in range(N):
        L = lengths[n]
        for r in range(R):
            row = s[n, r]                                           # (Ts,)
            m = row[0]
            for k in range(1, L):
                m = max(m, row[k])
            total = zero
            for k in range(L):
                e = exp(row[k] - m)
                row[k] = e
                total += e
            inv = one / total
            for k in range(L):
                row[k] *= inv
            for k in range(L, Ts):
                row[k] = zero


def masked_softmax(scores, lengths):
    """Softmax over the last axis of scores (N, To, Ts) or (N, Ts), in place; returns scores.

    Row n has lengths[n] (1..Ts) real source positions followed by right padding, which
    gets weight exactly 0 (``attention.masked_softmax`` does it with a -inf bias).
    """
    _masked_softmax(scores if scores.ndim == 3 else scores[:, None, :], lengths)
    return scores


@jit
def _masked_softmax_backward(a, da, ds):
    N, R, Ts = a.shape
    if da.shape != a.shape or ds.shape != a.shape:
        raise ValueError("masked_softmax_backward: a, da and ds must have one shape")
    zero = a.dtype.type(0.0)
    for n in range(N):
        for r in range(R):
            ar, dar, dsr = a[n, r], da[n, r], ds[n, r]              # (Ts,) rows
            s = zero
            for k in range(Ts):
                s += ar[k] * dar[k]
            for k in range(Ts):
                dsr[k] = ar[k] * (dar[k] - s)


def masked_softmax_backward(a, da, ds):
    """ds = a (da - sum(a da)) over the last axis of (N, To, Ts) or (N, Ts); returns ds.

    Padding has a = 0 and so gets ds = 0. ds may be da (slower). ``attention.softmax_backward``.
    """
    if a.ndim == 2:
        a, da, ds3 = a[:, None, :], da[:, None, :], ds[:, None, :]
    else:
        ds3 = ds
    _masked_softmax_backward(a, da, ds3)
    return ds


# -- output loss -----------------------------------------------------------------------
@jit
def _real_rows(logits, targets, ignore_index, dlogits):
    """Shapes checked, and every target id: -> how many rows of targets (M,) are not ``ignore_index``.
    (The loss-only kernel, which writes no gradient, passes logits as dlogits.)"""
    M, V = logits.shape
    if targets.shape != (M,) or dlogits.shape != (M, V):
        raise ValueError("softmax_cross_entropy: targets must be (M,) and dlogits (M, V) for logits (M, V)")
    count = 0
    for n in range(M):
        t = targets[n]
        if t != ignore_index:
            if t < 0 or t >= V:
                raise IndexError("softmax_cross_entropy: a target id is outside 0..V-1")
            count += 1
    return count


@jit
def _softmax_cross_entropy(logits, targets, ignore_index, dlogits, scale, use_scale, smoothing):
    """Against the target (1 - eps) one-hot + eps / V, eps = smoothing (0: the one-hot itself)."""
    M, V = logits.shape
    count = _real_rows(logits, targets, ignore_index, dlogits)
    dt = logits.dtype.type
    sc = dt(scale) if use_scale else dt(1.0 / max(count, 1))
    zero = dt(0.0)
    hit = sc * dt(1.0 - smoothing)                                  # the one-hot part of the target, scaled
    spread = sc * dt(smoothing / V)                                 # the uniform part, scaled (0 without)
    loss = 0.0
    for n in range(M):
        z, d = logits[n], dlogits[n]                                # (V,) rows
        t = targets[n]
        if t == ignore_index:
            for k in range(V):
                d[k] = zero
            continue
        m = z[0]                                                    # all reads of z before d (it may be z)
        for k in range(1, V):
            m = max(m, z[k])
        zsum = 0.0                                                  # float64; only smoothing reads it
        if smoothing > 0:
            for k in range(V):
                zsum += z[k]
        zt = z[t]
        total = zero
        for k in range(V):
            e = exp(z[k] - m)
            d[k] = e
            total += e
        log_total = math.log(total)
        nll = log_total - (zt - m)                                  # -log p_t
        if smoothing > 0:                                           # (1 - eps) (-log p_t) + eps mean_k (-log p_k)
            nll = (1.0 - smoothing) * nll + smoothing * (log_total + m - zsum / V)
        loss += nll
        inv = sc / total
        for k in range(V):
            d[k] = d[k] * inv - spread
        d[t] -= hit
    return loss, count


@jit
def _cross_entropy_loss(logits, targets, ignore_index, smoothing):
    """The loss sum and count of ``_softmax_cross_entropy`` without the gradient: nothing is written."""
    M, V = logits.shape
    count = _real_rows(logits, targets, ignore_index, logits)
    zero = logits.dtype.type(0.0)
    loss = 0.0
    for n in range(M):
        t = targets[n]
        if t == ignore_index:
            continue
        z = logits[n]                                               # (V,) row
        m = z[0]
        for k in range(1, V):
            m = max(m, z[k])
        total = zero
        for k in range(V):
            total += exp(z[k] - m)
        nll = math.log(total) - (z[t] - m)
        if smoothing > 0:
            zsum = 0.0                                              # float64
            for k in range(V):
                zsum += z[k]
            nll = (1.0 - smoothing) * nll + smoothing * (math.log(total) + m - zsum / V)
        loss += nll
    return loss, count


def softmax_cross_entropy(logits, targets, ignore_index, dlogits, scale=None, smoothing=0.0):
    """Cross-entropy of softmax(logits) (M, V) at targets (M,), forward and backward at once.

    Rows whose target is ``ignore_index`` (padding) count nowhere. Returns (loss summed over
    real rows as a float64, number of real rows) and writes dlogits (M, V) = (softmax -
    target) * scale at real rows, 0 at ignored ones; scale defaults to 1 / count (the
    gradient of the mean). The target is one-hot, or with ``smoothing`` eps > 0
    (1 - eps) one-hot + eps / V. dlogits may be logits (slower). ``layers.SoftmaxCrossEntropy``
    is the numpy version.
    """
    return _softmax_cross_entropy(logits, targets, ignore_index, dlogits, 0.0 if scale is None else float(scale),
                                  scale is not None, float(smoothing))


def cross_entropy_loss(logits, targets, ignore_index, smoothing=0.0):
    """``softmax_cross_entropy``'s (loss sum, real rows) alone: logits (M, V), targets (M,); no
    dlogits is written or needed (``SoftmaxCrossEntropy.forward(..., need_grad=False)``)."""
    return _cross_entropy_loss(logits, targets, ignore_index, float(smoothing))


# -- embedding gradient ----------------------------------------------------------------
@jit
def _embedding_grad(ids, dout, dW):
    A, B, D = dout.shape
    V = dW.shape[0]
    if ids.shape != (A, B) or dW.shape[1] != D:
        raise ValueError("embedding_grad: ids must be (N, T), dout (N, T, D) and dW (V, D)")
    for a in range(A):
        for b in range(B):
            if ids[a, b] < 0 or ids[a, b] >= V:
                raise IndexError("embedding_grad: a token id is outside 0..V-1")
    dW[...] = 0
    for a in range(A):
        for b in range(B):
            row, src = dW[ids[a, b]], dout[a, b]                    # (D,) rows
            for k in range(D):
                row[k] += src[k]


def embedding_grad(ids, dout, dW):
    """dW (V, D) = the sum of the dout rows by token id, zeroed first; returns dW.

    ids (N, T) and dout (N, T, D) in any memory layout (no copy), or ids of another shape
    S with dout S + (D,). Repeated ids accumulate, as ``layers.Embedding.backward``'s scatter_add.
    """
    if ids.ndim != 2:
        ids, dout = ids.reshape(1, -1), dout.reshape(1, -1, dout.shape[-1])
    _embedding_grad(ids, dout, dW)
    return dW


# -- optimizer -----------------------------------------------------------------------------
@jit
def _sum_squares(x):
    total = 0.0
    for k in range(x.size):
        v = np.float64(x[k])
        total += v * v
    return total


def sum_squares(x) -> float:
    """The sum of x^2 over all elements, accumulated in float64 (for the global gradient norm)."""
    return _sum_squares(x.reshape(-1))


@jit
def _adam(p, g, m, v, scale, lr_t, b1, b2, eps_hat):
    dt = p.dtype.type
    sc, lr, c1, c2, eps = dt(scale), dt(lr_t), dt(b1), dt(b2), dt(eps_hat)
    d1, d2 = dt(1.0 - b1), dt(1.0 - b2)
    for k in range(p.size):
        gk = g[k] * sc
        mk = c1 * m[k] + d1 * gk
        vk = c2 * v[k] + d2 * (gk * gk)
        m[k], v[k] = mk, vk
        p[k] -= lr * mk / (math.sqrt(vk) + eps)


def _flat(name, x):
    if not x.flags.c_contiguous:
        raise ValueError(f"adam_update: {name} must be C-contiguous (it is updated in place)")
    return x.reshape(-1)


def adam_update(p, g, m, v, scale, lr_t, b1, b2, eps_hat):
    """One Adam step on parameter p in place, from the gradient g * scale (scale: clipping).

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr_t m / (sqrt(v) + eps_hat), with
    lr_t and eps_hat the bias-corrected constants of ``optim.Adam``. p, m, v C-contiguous.
    """
    if not (p.shape == g.shape == m.shape == v.shape):
        raise ValueError(f"adam_update: p, g, m, v must have one shape, "
                         f"got {p.shape}, {g.shape}, {m.shape}, {v.shape}")
    _adam(_flat("p", p), g.reshape(-1), _flat("m", m), _flat("v", v), scale, lr_t, b1, b2, eps_hat)
