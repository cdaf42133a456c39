"""Layers with explicit ``forward``/``backward``.

Shapes: N batch, T time, D input (embedding) size, H hidden size, V vocabulary.
Every layer keeps ``params`` and ``grads`` as parallel lists (see ``Module``),
caches in ``forward`` what ``backward`` needs, and writes gradients in place.
The array module (numpy or cupy) always comes from the arrays.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, ignore_overflow, scatter_add
from .module import Module

INIT_SCHEMES = ("xavier", "he")


def init_weight(rng: np.random.Generator, fan_in: int, fan_out: int, scheme: str = "xavier",
                dtype=np.float32) -> np.ndarray:
    """A (fan_in, fan_out) weight: Xavier/Glorot normal, std sqrt(2/(in+out)), or He, std sqrt(2/in)."""
    if scheme == "xavier":
        std = np.sqrt(2.0 / (fan_in + fan_out))
    elif scheme == "he":
        std = np.sqrt(2.0 / fan_in)
    else:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")
    return (rng.standard_normal((fan_in, fan_out)) * std).astype(dtype)


class Embedding(Module):
    """Token ids (N, T) -> vectors (N, T, D). Weight W: (V, D)."""

    def __init__(self, vocab_size: int, dim: int, rng: np.random.Generator, dtype=np.float32):
        super().__init__()
        self.add_param("W", (rng.standard_normal((vocab_size, dim)) * 0.1).astype(dtype))
        self.ids = None

    def forward(self, ids):
        W, = self.params
        self.ids = ids
        return W[ids]                                               # (N, T, D)

    def backward(self, dout):
        """Accumulate dout (N, T, D) into dW with one scatter-add over all positions."""
        dW, = self.grads
        dW.fill(0)
        scatter_add(dW, self.ids.ravel(), dout.reshape(-1, dW.shape[1]))


def _gate_scale(xp, H, dtype):
    """(4H,) factors -1 (i, f, o) and -2 (g): exp(scale * a) serves sigmoid and tanh alike."""
    scale = xp.full(4 * H, -1.0, dtype=dtype)
    scale[3 * H:] = -2.0
    return scale


def tanh_(x, out):
    """out = tanh(x) = 2 / (1 + exp(-2x)) - 1, through one exp (numpy's tanh is slower)."""
    xp = get_array_module(x)
    xp.multiply(x, -2.0, out=out)
    xp.exp(out, out=out)
    out += 1.0
    xp.divide(2.0, out, out=out)                                    # divide beats reciprocal in numpy
    out -= 1.0
    return out


def lstm_cell_(z, c_prev, c_out, tc_out, h_out, tmp, p_out=None):
    """One LSTM step on scaled pre-activations ``z`` (N, 4H), gate order [i, f, o, g].

    ``z`` is ``scale * a`` with ``scale`` from ``_gate_scale``: -a for i, f, o and
    -2a for g, which the LSTM gets for free by scaling copies of its weights. One exp
    over all four gates then gives sigmoid on i, f, o and tanh on g (as 2 sigmoid(2a) - 1);
    ``z`` is overwritten with the activated gates. The new cell state, its tanh and
    the hidden state go into the (N, H) outputs; ``tmp`` is (N, H) scratch. exp may
    overflow to inf for very negative a; 1 / inf = 0 is the right sigmoid, so callers
    run this under ``ignore_overflow``.

    For training, ``p_out`` (N, H) receives o (1 - tanh(c)^2), which backward needs.
    """
    xp = get_array_module(z)
    H = c_prev.shape[1]
    xp.exp(z, out=z)
    z += 1.0
    xp.divide(1.0, z, out=z)                                        # sigmoid(a); sigmoid(2a) for g
    g = z[:, 3 * H:]
    g *= 2.0
    g -= 1.0                                                        # tanh(a) for g
    xp.multiply(z[:, H:2 * H], c_prev, out=c_out)                   # f * c_prev
    xp.multiply(z[:, :H], g, out=tmp)                               # i * g
    c_out += tmp
    tanh_(c_out, tc_out)
    o = z[:, 2 * H:3 * H]
    xp.multiply(o, tc_out, out=h_out)                               # o * tanh(c)
    if p_out is not None:
        xp.multiply(tc_out, tc_out, out=p_out)
        xp.subtract(1.0, p_out, out=p_out)
        p_out *= o


def gate_derivatives_(gates, out):
    """out (N, 4H) = d gates / d pre-activations: s (1 - s) for i, f, o and 1 - g^2 for g."""
    xp = get_array_module(gates)
    H = gates.shape[1] // 4
    xp.subtract(1.0, gates, out=out)
    out *= gates
    g, dg = gates[:, 3 * H:], out[:, 3 * H:]
    xp.multiply(g, g, out=dg)
    xp.subtract(1.0, dg, out=dg)
    return out


class LSTM(Module):
    """LSTM over a whole sequence: xs (N, T, D) -> hs (N, T, H).

    Parameters: Wx (D, 4H), Wh (H, 4H), b (4H); gates ordered [i, f, o, g].
    The input is projected for all time steps with one matrix product; only
    ``h @ Wh`` stays in the time loop. Activations live in preallocated
    time-major buffers, and the weight gradients are one product over all steps.

    ``lengths`` (N,) marks right padding: the final state ``(h_final, c_final)``
    is each sequence's state at its own last real step, so padded steps cannot
    change it. Hidden states at padded positions are computed but meaningless;
    callers mask them (attention does).
    """

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32, forget_bias: float = 1.0):
        super().__init__()
        H = hidden_size
        self.add_param("Wx", init_weight(rng, input_size, 4 * H, init, dtype))
        self.add_param("Wh", init_weight(rng, H, 4 * H, init, dtype))
        b = np.zeros(4 * H, dtype=dtype)
        b[H:2 * H] = forget_bias
        self.add_param("b", b)
        self.hidden_size = H
        self.cache = None
        self.h_final = self.c_final = None

    def forward(self, xs, h0=None, c0=None, lengths=None):
        """xs (N, T, D), h0/c0 (N, H) or None -> hs (N, T, H).

        In training mode hs (and the final state) are views into this layer's reusable
        time-major buffers: valid until its next training-mode forward. Copy them to keep them.
        """
        Wx, Wh, b = self.params
        xp = get_array_module(xs)
        N, T, D = xs.shape
        H = self.hidden_size
        dt = xs.dtype
        # scaled copies of the weights give the gates' exp arguments directly (see lstm_cell_)
        scale = _gate_scale(xp, H, dt)
        Wxs, Whs = self.buffer("Wxs", Wx.shape, dt, xp), self.buffer("Whs", Wh.shape, dt, xp)
        xp.multiply(Wx, scale, out=Wxs)
        xp.multiply(Wh, scale, out=Whs)
        X = self.buffer("X", (T, N, D), dt, xp)
        X[...] = xs.transpose(1, 0, 2)
        X = X.reshape(T * N, D)
        A = self.buffer("A", (T, N, 4 * H), dt, xp)                 # (T, N, 4H) scaled input projections,
        xp.matmul(X, Wxs, out=A.reshape(T * N, 4 * H))              # then the activated gates
        A += b * scale
        Hs = self.buffer("Hs", (T + 1, N, H), dt, xp)               # Hs[0] = h0, Hs[t+1] = h_t
        Cs = self.buffer("Cs", (T + 1, N, H), dt, xp)
        TC = self.buffer("TC", (T, N, H), dt, xp)                   # tanh(c_t)
        Hs[0] = 0 if h0 is None else h0
        Cs[0] = 0 if c0 is None else c0
        rec = self.buffer("rec", (N, 4 * H), dt, xp)
        tmp = self.buffer("tmp", (N, H), dt, xp)
        P = self.buffer("P", (T, N, H), dt, xp) if self.training else [None] * T
        with ignore_overflow(xp):
            for t in range(T):
                xp.matmul(Hs[t], Whs, out=rec)                      # (N, 4H)
                A[t] += rec
                lstm_cell_(A[t], Cs[t], Cs[t + 1], TC[t], Hs[t + 1], tmp, P[t])
        self.cache = (X, A, Hs, Cs, TC, P, lengths) if self.training else None
        if lengths is None:
            self.h_final, self.c_final = Hs[T], Cs[T]
        else:
            rows = xp.arange(N)
            self.h_final, self.c_final = Hs[lengths, rows], Cs[lengths, rows]
        return Hs[1:].transpose(1, 0, 2)                            # (N, T, H)

    def backward(self, dhs, dh_final=None, dc_final=None):
        """dhs (N, T, H), gradients of the final state (N, H) -> dxs (N, T, D), dh0, dc0."""
        Wx, Wh, b = self.params
        dWx, dWh, db = self.grads
        if self.cache is None:
            raise RuntimeError("LSTM.backward needs a forward pass in training mode first")
        X, A, Hs, Cs, TC, P, lengths = self.cache
        xp = get_array_module(dhs)
        T, N, H4 = A.shape
        H = H4 // 4
        dt = dhs.dtype
        dH = self.buffer("dH", (T, N, H), dt, xp)                   # (T, N, H), a working copy
        dH[...] = dhs.transpose(1, 0, 2)
        dC_in = None
        if dh_final is not None or dc_final is not None:
            if lengths is None:
                if dh_final is not None:
                    dH[T - 1] += dh_final
                dC_in = dc_final
            else:
                rows = xp.arange(N)
                if dh_final is not None:
                    dH[lengths - 1, rows] += dh_final
                if dc_final is not None:
                    dC_in = xp.zeros((T, N, H), dtype=dhs.dtype)
                    dC_in[lengths - 1, rows] = dc_final
        dA = self.buffer("dA", (T, N, H4), dt, xp)                  # (T, N, 4H) pre-activation grads
        dh = xp.zeros((N, H), dtype=dt)
        dc = xp.zeros((N, H), dtype=dt)
        if lengths is None and dC_in is not None:
            dc += dC_in
        t1 = self.buffer("t1", (N, H), dt, xp)
        deriv = self.buffer("deriv", (N, H4), dt, xp)               # recomputed each step: stays in cache
        for t in range(T - 1, -1, -1):
            a, da = A[t], dA[t]
            dh += dH[t]                                             # (N, H)
            if lengths is not None and dC_in is not None:
                dc += dC_in[t]
            xp.multiply(dh, TC[t], out=da[:, 2 * H:3 * H])          # do
            xp.multiply(dh, P[t], out=t1)
            dc += t1                                                # dc += dh * o * (1 - tanh(c)^2)
            xp.multiply(dc, a[:, 3 * H:], out=da[:, :H])            # di = dc * g
            xp.multiply(dc, Cs[t], out=da[:, H:2 * H])              # df = dc * c_prev
            xp.multiply(dc, a[:, :H], out=da[:, 3 * H:])            # dg = dc * i
            da *= gate_derivatives_(a, deriv)                       # through the activations
            dc *= a[:, H:2 * H]                                     # to c_{t-1}
            xp.matmul(da, Wh.T, out=dh)                             # to h_{t-1}
        dA2 = dA.reshape(T * N, H4)
        xp.matmul(X.T, dA2, out=dWx)
        xp.matmul(Hs[:-1].reshape(T * N, H).T, dA2, out=dWh)
        dA2.sum(axis=0, out=db)
        dxs = (dA2 @ Wx.T).reshape(T, N, -1).transpose(1, 0, 2)    # (N, T, D)
        return dxs, dh, dc

    def step(self, xw, h, c):
        """One step for decoding, no cache: xw (N, 4H) the projected input x @ Wx + b, h, c (N, H) -> (h, c)."""
        Wx, Wh, b = self.params
        xp = get_array_module(xw)
        a = h @ Wh                                                  # (N, 4H)
        a += xw
        a *= -1.0                                                   # the gate scale of lstm_cell_, in place:
        a[:, 3 * self.hidden_size:] *= 2.0                          # -a for i, f, o and -2a for g
        h_new, c_new, tc, tmp = (xp.empty_like(h) for _ in range(4))
        with ignore_overflow(xp):
            lstm_cell_(a, c, c_new, tc, h_new, tmp)
        return h_new, c_new


class Linear(Module):
    """Affine map over time: x (N, T, D) -> y (N, T, O). W (D, O), b (O)."""

    def __init__(self, in_size: int, out_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_param("W", init_weight(rng, in_size, out_size, init, dtype))
        self.add_param("b", np.zeros(out_size, dtype=dtype))
        self.x2 = None

    def forward(self, x):
        W, b = self.params
        self.x2 = x.reshape(-1, x.shape[-1])
        y = self.x2 @ W
        y += b
        return y.reshape(*x.shape[:-1], -1)

    def backward(self, dy):
        W, b = self.params
        dW, db = self.grads
        dy2 = dy.reshape(-1, dy.shape[-1])
        get_array_module(dy).matmul(self.x2.T, dy2, out=dW)
        dy2.sum(axis=0, out=db)
        return (dy2 @ W.T).reshape(*dy.shape[:-1], -1)


class SoftmaxCrossEntropy(Module):
    """Mean cross-entropy over real tokens: logits (N, T, V), targets (N, T) -> scalar.

    Positions whose target equals ``ignore_index`` (padding) count neither in the
    sum nor in the mean. All arithmetic stays in the logits' dtype.
    """

    def __init__(self, ignore_index: int = 0):
        super().__init__()
        self.ignore_index = ignore_index
        self.cache = None

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        V = logits.shape[-1]
        z = logits.reshape(-1, V)
        t = targets.ravel()
        m = z.max(axis=1, keepdims=True)
        p = z - m                                                   # (N*T, V)
        xp.exp(p, out=p)
        s = p.sum(axis=1, keepdims=True)
        rows = xp.arange(t.size)
        nll = xp.log(s[:, 0]) - (z[rows, t] - m[:, 0])              # -log softmax at the target
        p /= s
        mask = (t != self.ignore_index).astype(logits.dtype)        # (N*T,)
        count = xp.maximum(mask.sum(), 1)
        loss = (nll * mask).sum() / count
        self.cache = (p, t, mask, count, logits.shape)
        return loss

    def backward(self, dout=1.0):
        p, t, mask, count, shape = self.cache
        xp = get_array_module(p)
        dz = p                                                      # reuse: softmax is not needed again
        dz[xp.arange(t.size), t] -= 1
        dz *= (mask * (dout / count))[:, None]
        self.cache = None
        return dz.reshape(shape)


class Dropout(Module):
    """Inverted dropout: scales kept units by 1/(1-p) in training, identity in eval."""

    def __init__(self, p: float, rng: np.random.Generator):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng
        self.mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        xp = get_array_module(x)
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p        # float32: no float64 draw
        self.mask = xp.asarray(keep, dtype=x.dtype) / x.dtype.type(1.0 - self.p)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask
