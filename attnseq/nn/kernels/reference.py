"""The kernels in plain numpy: the oracle for the compiled ones, and the fallback without numba.

Each function has the signature of its compiled twin in ``cpu`` and writes into the
output arrays it is given. Shapes: N batch, H hidden size, To decoder steps, Ts
source positions, M rows (N * To tokens), V vocabulary, D embedding size. Gates are
ordered [i, f, o, g] along the 4H axis, as in attnseq's LSTM parameters.
"""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    """1 / (1 + exp(-x)); exp may overflow to inf, and 1 / inf = 0 is the right answer."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _check_lstm(name, N, H, four_h, one_h):
    for a in four_h:
        if a.shape != (N, 4 * H):
            raise ValueError(f"{name}: expected (N, 4H) = {(N, 4 * H)}, got {a.shape}")
    for a in one_h:
        if a.shape != (N, H):
            raise ValueError(f"{name}: expected (N, H) = {(N, H)}, got {a.shape}")


def lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h):
    """One LSTM step from the pre-activations a = xa + ha (N, 4H), e.g. x Wx + b and h_prev Wh.

    Writes the activated gates [i, f, o, g] (N, 4H), kept for backward, and the (N, H)
    cell state c = f c_prev + i g, its tanh, and the hidden state h = o tanh(c).
    """
    N, H = c.shape
    _check_lstm("lstm_cell_forward", N, H, (xa, ha, gates), (c_prev, c, tc, h))
    np.add(xa, ha, out=gates)                                       # (N, 4H) pre-activations
    gates[:, :3 * H] = sigmoid(gates[:, :3 * H])                    # i, f, o
    np.tanh(gates[:, 3 * H:], out=gates[:, 3 * H:])                 # g
    i, f, o, g = (gates[:, k * H:(k + 1) * H] for k in range(4))   # (N, H) each
    c[...] = f * c_prev + i * g
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)


def lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev):
    """Backward through one LSTM step.

    dh (N, H) reaches h_t from above and dh_rec (N, H) from the next step (da_{t+1} Wh^T);
    dc (N, H) reaches c_t from the next step. With the step's gates (N, 4H), c_prev and
    tanh(c_t) (N, H), writes da (N, 4H), the gradient of the pre-activations, and
    dc_prev = dc_total * f (N, H). The caller then takes dh_prev = da Wh^T.
    """
    N, H = dh.shape
    _check_lstm("lstm_cell_backward", N, H, (gates, da), (dh_rec, dc, c_prev, tc, dc_prev))
    i, f, o, g = (gates[:, k * H:(k + 1) * H] for k in range(4))   # (N, H) each
    dh_t = dh + dh_rec
    dc_t = dc + dh_t * o * (1 - tc * tc)                            # through h = o tanh(c)
    da[:, :H] = dc_t * g * i * (1 - i)                              # di, through sigmoid
    da[:, H:2 * H] = dc_t * c_prev * f * (1 - f)                    # df
    da[:, 2 * H:3 * H] = dh_t * tc * o * (1 - o)                    # do
    da[:, 3 * H:] = dc_t * i * (1 - g * g)                          # dg, through tanh
    np.multiply(dc_t, f, out=dc_prev)


def _check_lengths(lengths, N, Ts):
    if lengths.shape != (N,):
        raise ValueError(f"masked_softmax: lengths must be (N,) = {(N,)}, got {lengths.shape}")
    if N and (lengths.min() < 1 or lengths.max() > Ts):
        raise ValueError(f"masked_softmax: every length must be in 1..Ts = 1..{Ts}")


def masked_softmax(scores, lengths):
    """Softmax over the last axis of scores (N, To, Ts) or (N, Ts), in place.

    Row n has lengths[n] real source positions followed by right padding; padding
    gets weight exactly 0. Returns scores.
    """
    N, Ts = scores.shape[0], scores.shape[-1]
    _check_lengths(lengths, N, Ts)
    real = np.arange(Ts) < lengths[:, None]                         # (N, Ts)
    if scores.ndim == 3:
        real = real[:, None, :]                                     # (N, 1, Ts)
    m = np.where(real, scores, -np.inf).max(axis=-1, keepdims=True)
    scores -= m
    np.exp(scores, out=scores)
    scores *= real                                                  # exactly 0 at padding
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def masked_softmax_backward(a, da, ds):
    """ds = a (da - sum(a da)) over the last axis of (N, To, Ts) or (N, Ts); ds may be da.

    Padding has a = 0 and so gets ds = 0. Returns ds.
    """
    if not (a.shape == da.shape == ds.shape):
        raise ValueError(f"masked_softmax_backward: a, da and ds must have one shape, "
                         f"got {a.shape}, {da.shape}, {ds.shape}")
    s = (a * da).sum(axis=-1, keepdims=True)
    np.subtract(da, s, out=ds)
    ds *= a
    return ds


def softmax_cross_entropy(logits, targets, ignore_index, dlogits, scale=None):
    """Cross-entropy of softmax(logits) (M, V) at targets (M,), forward and backward at once.

    Rows whose target is ``ignore_index`` (padding) count nowhere. Returns (loss summed
    over real rows as a float, number of real rows) and writes dlogits (M, V) =
    (softmax - onehot) * scale at real rows, 0 at ignored ones; scale defaults to
    1 / count (the gradient of the mean). dlogits may be logits itself.
    """
    M, V = logits.shape
    if targets.shape != (M,) or dlogits.shape != (M, V):
        raise ValueError(f"softmax_cross_entropy: targets must be (M,) and dlogits (M, V) for logits {(M, V)}")
    real = targets != ignore_index                                  # (M,)
    if np.any(real & ((targets < 0) | (targets >= V))):
        raise IndexError(f"softmax_cross_entropy: a target id is outside 0..{V - 1}")
    count = int(real.sum())
    scale = 1.0 / max(count, 1) if scale is None else scale
    t = np.where(real, targets, 0)
    rows = np.arange(M)
    m = logits.max(axis=1, keepdims=True)                           # (M, 1)
    zt = logits[rows, t] - m[:, 0]                                  # target logit, shifted
    np.subtract(logits, m, out=dlogits)
    np.exp(dlogits, out=dlogits)
    total = dlogits.sum(axis=1, keepdims=True)
    nll = np.log(total[:, 0]) - zt                                  # -log softmax at the target
    loss = float(nll[real].sum(dtype=np.float64))
    dlogits *= (scale / total).astype(logits.dtype)                 # softmax * scale
    dlogits[rows[real], t[real]] -= logits.dtype.type(scale)
    dlogits[~real] = 0
    return loss, count


def embedding_grad(ids, dout, dW):
    """dW (V, D) = the sum of dout (M, D) rows by token id ids (M,); zeroed first. Returns dW."""
    V = dW.shape[0]
    if ids.shape != dout.shape[:1] or dout.ndim != 2 or dW.shape[1] != dout.shape[1]:
        raise ValueError("embedding_grad: ids must be (M,), dout (M, D) and dW (V, D)")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise IndexError(f"embedding_grad: a token id is outside 0..{V - 1}")
    dW.fill(0)
    np.add.at(dW, ids, dout)
    return dW


def sum_squares(x) -> float:
    """The sum of x^2 over all elements, accumulated in float64 (for the global gradient norm)."""
    x = x.reshape(-1).astype(np.float64)
    return float(np.dot(x, x))


def adam_update(p, g, m, v, scale, lr_t, b1, b2, eps_hat):
    """One Adam step on parameter p in place, from the gradient g * scale (scale: clipping).

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr_t m / (sqrt(v) + eps_hat),
    with lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) and eps_hat = eps sqrt(1 - b2^t) as
    attnseq's Adam computes them (the bias correction folded into two constants).
    """
    if not (p.shape == g.shape == m.shape == v.shape):
        raise ValueError(f"adam_update: p, g, m, v must have one shape, "
                         f"got {p.shape}, {g.shape}, {m.shape}, {v.shape}")
    dt = p.dtype.type
    gs = g * dt(scale)
    m[...] = dt(b1) * m + dt(1.0 - b1) * gs
    v[...] = dt(b2) * v + dt(1.0 - b2) * (gs * gs)
    p -= dt(lr_t) * m / (np.sqrt(v) + dt(eps_hat))
