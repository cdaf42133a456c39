"""The LSTM: once as the book writes it, then fast, in numpy (or cupy) and in fused kernels.

Shapes: N batch, T time, D input size, H hidden size. The pre-activations
a = x Wx + h_prev Wh + b are (N, 4H): four (N, H) blocks, one per gate.

One step of the cell, in every version::

    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)     input, forget, output gates
    g       = tanh(a_g)                                    candidate cell value
    c       = f * c_prev + i * g
    h       = o * tanh(c)

Gate order. The parameters keep their blocks in the order [i, f, o, g] (saved
checkpoints depend on it); *Deep Learning from Scratch 2* (ch. 6) uses [f, g, i, o].
Column blocks of Wx (D, 4H), Wh (H, 4H) and b (4H):

    gate  activation   columns here   columns in the book (block)
    i     sigmoid      0:H            2H:3H  (2)
    f     sigmoid      H:2H           0:H    (0)
    o     sigmoid      2H:3H          3H:4H  (3)
    g     tanh         3H:4H          H:2H   (1)

so weights in the book's order become ours by taking its blocks in the order
(2, 0, 3, 1). The forget gate's bias (the f block of b) starts at 1.

1. The reference cell, ``lstm_cell_reference`` and ``lstm_cell_reference_backward``,
   is the book's LSTM for one step, sigmoid and tanh by name, fresh arrays. Tests
   use it as the oracle for everything below.
2. The ``LSTM`` layer runs the same arithmetic over a whole sequence: the input
   projection for all steps in one matrix product, only ``h @ Wh`` in the time
   loop, activations in preallocated time-major buffers, the weight gradients as
   one product over all steps. Each step's elementwise work is one call, on one of
   two paths:

   - numpy arrays with the kernels on (``kernels.fused``): the compiled cell
     ``lstm_cell_forward`` / ``lstm_cell_backward`` in ``kernels/cpu.py``, one pass
     over the step's (N, 4H) pre-activations, raw weights, gates kept in their own
     (T, N, 4H) buffer so that the input projections' buffer takes dA in backward;
   - otherwise (cupy, or numpy without numba): ``lstm_cell_forward_`` and
     ``lstm_cell_backward_`` below, array operations written with ``xp``.

The gate-scale trick (the xp path only). sigmoid(a) = 1 / (1 + exp(-a)) and
tanh(a) = 2 sigmoid(2a) - 1, so a single exp over all 4H columns serves every
gate once the pre-activations are multiplied by -1 (i, f, o) and -2 (g):
``scale_gates_``. ``LSTM.forward`` applies it to copies of Wx, Wh and b (so its
products come out scaled), ``LSTM.step`` to its (N, 4H) pre-activations; then
``activate_scaled_gates_`` turns them into the gates in place.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .backend import get_array_module, ignore_overflow
from .layers import init_weight
from .module import Module


def split_gates(a):
    """(N, 4H) -> its four (N, H) blocks (i, f, o, g), as views."""
    H = a.shape[1] // 4
    return a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]


# -- the reference cell: the book, one step ------------------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + get_array_module(x).exp(-x))


def tanh(x):
    return get_array_module(x).tanh(x)


def lstm_cell_reference(a, c_prev):
    """One step as the book writes it: a (N, 4H) pre-activations, c_prev (N, H)
    -> h (N, H), c (N, H), gates (i, f, o, g) each (N, H) for the backward."""
    a_i, a_f, a_o, a_g = split_gates(a)
    i, f, o, g = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o), tanh(a_g)
    c = f * c_prev + i * g
    h = o * tanh(c)
    return h, c, (i, f, o, g)


def lstm_cell_reference_backward(dh, dc, c_prev, c, gates):
    """The book's LSTM.backward for one step.

    dh, dc (N, H) the gradients reaching h and c; c_prev, c, gates as in the forward
    -> da (N, 4H) the gradient of the pre-activations, dc_prev (N, H). The products
    follow from da: dWx = x.T da, dWh = h_prev.T da, db = da summed over N,
    dx = da Wx.T, dh_prev = da Wh.T.
    """
    i, f, o, g = gates
    tanh_c = tanh(c)
    ds = dc + dh * o * (1 - tanh_c ** 2)                           # the gradient reaching c, all paths
    di = ds * g * i * (1 - i)
    df = ds * c_prev * f * (1 - f)
    do = dh * tanh_c * o * (1 - o)
    dg = ds * i * (1 - g ** 2)
    return get_array_module(dh).concatenate([di, df, do, dg], axis=1), ds * f


# -- the fast cell: in place, on preallocated arrays -------------------------------------------

def scale_gates_(w):
    """w (..., 4H) *= -1 on the i, f, o blocks and -2 on g, in place: the gate-scale trick."""
    H = w.shape[-1] // 4
    w *= -1.0
    w[..., 3 * H:] *= 2.0
    return w


def activate_scaled_gates_(z):
    """Scaled pre-activations z (N, 4H) -> the gates [i, f, o, g], in place.

    exp may overflow to inf for very negative pre-activations; 1 / inf = 0 is the
    right sigmoid, so callers run this under ``ignore_overflow``.
    """
    xp = get_array_module(z)
    H = z.shape[1] // 4
    xp.exp(z, out=z)
    z += 1.0
    xp.divide(1.0, z, out=z)                                        # sigmoid(a); sigmoid(2a) for g
    g = z[:, 3 * H:]
    g *= 2.0
    g -= 1.0                                                        # tanh(a) = 2 sigmoid(2a) - 1
    return z


def tanh_(x, out):
    """out = tanh(x) = 2 / (1 + exp(-2x)) - 1, through one exp (numpy's tanh is slower)."""
    xp = get_array_module(x)
    xp.multiply(x, -2.0, out=out)
    xp.exp(out, out=out)
    out += 1.0
    xp.divide(2.0, out, out=out)                                    # divide beats reciprocal in numpy
    out -= 1.0
    return out


def lstm_cell_forward_(z, c_prev, c_out, tc_out, h_out, tmp, p_out=None):
    """One step of the cell on scaled pre-activations z (N, 4H) (see ``scale_gates_``).

    z is overwritten with the gates [i, f, o, g]; c_out, tc_out = tanh(c), h_out get
    the new state; tmp (N, H) is scratch; all (N, H). For training, p_out (N, H)
    receives o (1 - tanh(c)^2), which the backward needs. Run under ``ignore_overflow``.
    """
    xp = get_array_module(z)
    i, f, o, g = split_gates(activate_scaled_gates_(z))
    xp.multiply(f, c_prev, out=c_out)
    xp.multiply(i, g, out=tmp)
    c_out += tmp                                                    # c = f * c_prev + i * g
    tanh_(c_out, tc_out)
    xp.multiply(o, tc_out, out=h_out)                               # h = o * tanh(c)
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


def lstm_cell_backward_(dh, dc, gates, c_prev, tc, p, da, deriv, tmp):
    """One step back through the cell, in place: ``lstm_cell_reference_backward`` on saved arrays.

    dh, dc (N, H) the gradients reaching h and c; gates (N, 4H) [i, f, o, g], c_prev,
    tc = tanh(c) and p = o (1 - tanh(c)^2) (N, H) from the forward. Writes da (N, 4H),
    the gradient of the pre-activations, and replaces dc by dc_prev. deriv (N, 4H)
    and tmp (N, H) are scratch.
    """
    xp = get_array_module(dh)
    i, f, o, g = split_gates(gates)
    di, df, do, dg = split_gates(da)
    xp.multiply(dh, tc, out=do)
    xp.multiply(dh, p, out=tmp)
    dc += tmp                                                       # ds = dc + dh o (1 - tanh(c)^2)
    xp.multiply(dc, g, out=di)
    xp.multiply(dc, c_prev, out=df)
    xp.multiply(dc, i, out=dg)
    da *= gate_derivatives_(gates, deriv)                           # through the activations
    dc *= f                                                         # dc_prev = ds * f
    return da


# -- the layer -----------------------------------------------------------------------------

class LSTM(Module):
    """LSTM over a whole sequence: xs (N, T, D) -> hs (N, T, H).

    Parameters: Wx (D, 4H), Wh (H, 4H), b (4H); gates ordered [i, f, o, g] (see the
    module docstring for the book's order).

    ``lengths`` (N,), each in 1..T, marks right padding: the final state
    ``(h_final, c_final)`` is each sequence's state at its own last real step, so
    padded steps cannot change it. Hidden states at padded positions are computed
    but meaningless; callers mask them (attention does).
    """

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32, forget_bias: float = 1.0):
        super().__init__()
        H = hidden_size
        self.add_param("Wx", init_weight(rng, input_size, 4 * H, init, dtype))
        self.add_param("Wh", init_weight(rng, H, 4 * H, init, dtype))
        b = np.zeros(4 * H, dtype=dtype)
        b[H:2 * H] = forget_bias                                    # the f block
        self.add_param("b", b)
        self.hidden_size = H
        self.cache = None
        self.h_final = self.c_final = None
        self._steps = self._back = None                             # a ``begin_steps`` pass and its backward

    def _scaled_params(self, xp, dtype):
        """Copies of Wx, Wh, b with ``scale_gates_`` applied: products with them come out scaled."""
        scaled = []
        for name, p in zip(("Wxs", "Whs", "bs"), self.params):
            s = self.buffer(name, p.shape, dtype, xp)
            s[...] = p
            scaled.append(scale_gates_(s))
        return scaled

    def forward(self, xs, h0=None, c0=None, lengths=None):
        """xs (N, T, D), h0/c0 (N, H) or None (zeros) -> hs (N, T, H).

        In training mode hs (and the final state) are views into this layer's reusable
        time-major buffers: valid until its next training-mode forward. Copy them to keep them.
        """
        xp = get_array_module(xs)
        N, T, D = xs.shape
        H = self.hidden_size
        dt = xs.dtype
        k = kernels.fused(xs, *self.params)
        Wx, Wh, b = self.params if k else self._scaled_params(xp, dt)
        X = self.buffer("X", (T, N, D), dt, xp)                     # (T, N, D) time-major inputs
        X[...] = xs.transpose(1, 0, 2)
        X = X.reshape(T * N, D)
        A = self.buffer("A", (T, N, 4 * H), dt, xp)                 # (T, N, 4H) input half of the
        xp.matmul(X, Wx, out=A.reshape(T * N, 4 * H))               # pre-activations, all steps at once
        A += b                                                      # (scaled on the xp path)
        Hs = self.buffer("Hs", (T + 1, N, H), dt, xp)               # Hs[0] = h0, Hs[t+1] = h_t
        Cs = self.buffer("Cs", (T + 1, N, H), dt, xp)
        TC = self.buffer("TC", (T, N, H), dt, xp)                   # tanh(c_t)
        Hs[0] = 0 if h0 is None else h0
        Cs[0] = 0 if c0 is None else c0
        if k:
            G, P = self._forward_steps_fused(k, A, Wh, Hs, Cs, TC), None
        else:
            G, P = self._forward_steps(A, Wh, Hs, Cs, TC)
        self.cache = (k, X, G, P, Hs, Cs, TC, lengths) if self.training else None
        if lengths is None:
            self.h_final, self.c_final = Hs[T], Cs[T]
        else:
            rows = xp.arange(N)
            self.h_final, self.c_final = Hs[lengths, rows], Cs[lengths, rows]
        return Hs[1:].transpose(1, 0, 2)                            # (N, T, H)

    def _forward_steps_fused(self, k, A, Wh, Hs, Cs, TC):
        """The time loop with the compiled cell ``k.lstm_cell_forward``: fills Hs, Cs, TC -> gates (T, N, 4H)."""
        T, N, H4 = A.shape
        G = self.buffer("G", (T if self.training else 1, N, H4), A.dtype, np)   # one step's when not kept
        rec = self.buffer("rec", (N, H4), A.dtype, np)
        for t in range(T):
            np.matmul(Hs[t], Wh, out=rec)                           # (N, 4H)
            k.lstm_cell_forward(A[t], rec, Cs[t], G[t if self.training else 0], Cs[t + 1], TC[t], Hs[t + 1])
        return G

    def _forward_steps(self, A, Whs, Hs, Cs, TC):
        """The time loop on scaled pre-activations A, turned into the gates in place -> G (= A), P."""
        xp = get_array_module(A)
        T, N, H4 = A.shape
        H, dt = H4 // 4, A.dtype
        P = self.buffer("P", (T, N, H), dt, xp) if self.training else [None] * T
        rec = self.buffer("rec", (N, H4), dt, xp)
        tmp = self.buffer("tmp", (N, H), dt, xp)
        with ignore_overflow(xp):
            for t in range(T):
                xp.matmul(Hs[t], Whs, out=rec)                      # (N, 4H)
                A[t] += rec
                lstm_cell_forward_(A[t], Cs[t], Cs[t + 1], TC[t], Hs[t + 1], tmp, P[t])
        return A, P

    def backward(self, dhs, dh_final=None, dc_final=None):
        """dhs (N, T, H), gradients of the final state (N, H) or None -> dxs (N, T, D), dh0, dc0 (N, H).

        On the kernel path dh0 and dc0 live in this layer's buffers until its next backward.
        """
        Wx, Wh, b = self.params
        if self.cache is None:
            raise RuntimeError("LSTM.backward needs a forward pass in training mode first")
        k, X, G, P, Hs, Cs, TC, lengths = self.cache               # k: the kernels the forward ran on
        T, N, H4 = G.shape
        dH, dC = self._incoming_grads(dhs, dh_final, dc_final, lengths)
        dc_last = dc_final if lengths is None else None             # else it enters through dC
        if k:
            dA, dh, dc = self._backward_steps_fused(k, dH, dC, dc_last, G, Cs, TC, Wh)
        else:
            dA, dh, dc = self._backward_steps(dH, dC, dc_last, G, P, Cs, TC, Wh)
        dA2 = self._param_grads(X, Hs, dA)
        dxs = (dA2 @ Wx.T).reshape(T, N, -1).transpose(1, 0, 2)    # (N, T, D)
        return dxs, dh, dc

    def _param_grads(self, X, Hs, dA):
        """dWx = X^T dA, dWh = h_prev^T dA, db = sum dA, each one product over all steps:
        X (T*N, D) inputs, Hs (T+1, N, H), dA (T, N, 4H) -> dA as (T*N, 4H)."""
        xp = get_array_module(dA)
        dWx, dWh, db = self.grads
        T, N, H4 = dA.shape
        dA2 = dA.reshape(T * N, H4)
        xp.matmul(X.T, dA2, out=dWx)
        xp.matmul(Hs[:-1].reshape(T * N, H4 // 4).T, dA2, out=dWh)
        dA2.sum(axis=0, out=db)
        return dA2

    def _backward_steps_fused(self, k, dH, dC, dc_last, G, Cs, TC, Wh):
        """The time loop back with the compiled cell ``k.lstm_cell_backward`` -> dA (T, N, 4H), dh0, dc0 (N, H)."""
        T, N, H4 = G.shape
        dt = G.dtype
        dA = self.buffer("A", (T, N, H4), dt, np)                   # the input projections are spent
        dh = self.buffer("dh", (N, H4 // 4), dt, np)                # da_{t+1} Wh^T, into step t
        dc, dc_prev = self.buffer("dc", dh.shape, dt, np), self.buffer("dc_prev", dh.shape, dt, np)
        dh.fill(0)
        dc[...] = 0 if dc_last is None else dc_last
        for t in range(T - 1, -1, -1):
            if dC is not None:
                dc += dC[t]
            k.lstm_cell_backward(dH[t], dh, dc, G[t], Cs[t], TC[t], dA[t], dc_prev)
            np.matmul(dA[t], Wh.T, out=dh)                          # (N, H) to h_{t-1}
            dc, dc_prev = dc_prev, dc                               # two buffers: no output aliases an input
        return dA, dh, dc

    def _backward_steps(self, dH, dC, dc_last, G, P, Cs, TC, Wh):
        """The time loop back with the xp cell -> dA (T, N, 4H), dh0, dc0 (N, H)."""
        xp = get_array_module(dH)
        T, N, H4 = G.shape
        dt = dH.dtype
        dh = xp.zeros((N, H4 // 4), dtype=dt)
        dc = xp.zeros((N, H4 // 4), dtype=dt)
        if dc_last is not None:
            dc += dc_last
        dA = self.buffer("dA", (T, N, H4), dt, xp)                  # (T, N, 4H) pre-activation grads
        deriv = self.buffer("deriv", (N, H4), dt, xp)               # recomputed each step: stays in cache
        tmp = self.buffer("tmp", (N, H4 // 4), dt, xp)
        for t in range(T - 1, -1, -1):
            dh += dH[t]                                             # (N, H)
            if dC is not None:
                dc += dC[t]
            lstm_cell_backward_(dh, dc, G[t], Cs[t], TC[t], P[t], dA[t], deriv, tmp)
            xp.matmul(dA[t], Wh.T, out=dh)                          # to h_{t-1}
        return dA, dh, dc

    def _incoming_grads(self, dhs, dh_final, dc_final, lengths):
        """The gradients arriving from outside, time-major: dH (T, N, H) = dhs plus dh_final at
        each row's last step; dC (T, N, H) holding dc_final there when ``lengths`` is given, else None
        (without lengths dc_final enters at the last step, where the backward loop starts)."""
        xp = get_array_module(dhs)
        N, T, H = dhs.shape
        dH = self.buffer("dH", (T, N, H), dhs.dtype, xp)
        dH[...] = dhs.transpose(1, 0, 2)
        rows = xp.arange(N)
        last = T - 1 if lengths is None else lengths - 1
        if dh_final is not None:
            dH[last, rows] += dh_final
        if dc_final is None or lengths is None:
            return dH, None
        dC = self.buffer("dC", (T, N, H), dhs.dtype, xp)
        dC.fill(0)
        dC[last, rows] = dc_final
        return dH, dC

    # -- one step at a time, with caches: inputs known only step by step -------------------------
    def begin_steps(self, T: int, N: int, h0=None, c0=None, fixed=None, dtype=None, xp=np):
        """Open a training-mode pass that the caller runs one step at a time with ``run_step``.

        For inputs known only as the loop goes (input feeding: the attentional vector of step
        t - 1 joins step t's input). Step t's input x_t (N, D) is [fixed_t, rest_t]: ``fixed``
        (T, N, Df) time-major, known now, projected here for all steps in one product (the
        embeddings); rest_t (N, D - Df), written by the caller into ``inputs(t)`` before
        ``run_step(t)``, projected there. h0, c0 (N, H) or None (zeros). Then, backwards,
        ``begin_backward_steps``, ``backward_step`` from t = T - 1 down to 0 and ``end_backward_steps``.
        """
        Wx, Wh, b = self.params
        dt = np.dtype(dtype or Wx.dtype)
        D, H4 = Wx.shape
        Df = 0 if fixed is None else fixed.shape[2]
        X = self.buffer("X", (T, N, D), dt, xp)                     # (T, N, D) time-major inputs
        A = self.buffer("A", (T, N, H4), dt, xp)                    # (T, N, 4H) input pre-activations
        if Df:
            X[:, :, :Df] = fixed
            xp.matmul(fixed.reshape(T * N, Df), Wx[:Df], out=A.reshape(T * N, H4))
            A += b
        else:
            A[...] = b
        Hs, Cs = self.buffer("Hs", (T + 1, N, H4 // 4), dt, xp), self.buffer("Cs", (T + 1, N, H4 // 4), dt, xp)
        TC = self.buffer("TC", (T, N, H4 // 4), dt, xp)             # tanh(c_t)
        Hs[0] = 0 if h0 is None else h0
        Cs[0] = 0 if c0 is None else c0
        k = kernels.fused(X, *self.params)
        G = self.buffer("G", (T, N, H4), dt, np) if k else A        # gates; in A itself on the xp path
        P = None if k else self.buffer("P", (T, N, H4 // 4), dt, xp)
        self.cache = (k, X.reshape(T * N, D), G, P, Hs, Cs, TC, None)
        self._steps = (Df, X, A, self.buffer("rec", (N, H4), dt, xp), self.buffer("tmp", (N, H4 // 4), dt, xp))

    def inputs(self, t: int):
        """The (N, D - Df) part of step t's input that ``run_step(t)`` projects: for the caller to fill."""
        Df, X = self._steps[:2]
        return X[t, :, Df:]

    def run_step(self, t: int):
        """Step t of a pass opened by ``begin_steps`` -> h_t (N, H), a view valid until the next pass."""
        k, _, G, P, Hs, Cs, TC, _ = self.cache
        Df, X, A, rec, tmp = self._steps
        Wx, Wh, _ = self.params
        xp = get_array_module(A)
        if Df < Wx.shape[0]:
            xp.matmul(X[t, :, Df:], Wx[Df:], out=rec)               # (N, 4H) the rest of the input
            A[t] += rec
        xp.matmul(Hs[t], Wh, out=rec)                               # (N, 4H)
        if k:
            k.lstm_cell_forward(A[t], rec, Cs[t], G[t], Cs[t + 1], TC[t], Hs[t + 1])
        else:
            A[t] += rec
            with ignore_overflow(xp):
                lstm_cell_forward_(scale_gates_(A[t]), Cs[t], Cs[t + 1], TC[t], Hs[t + 1], tmp, P[t])
        return Hs[t + 1]

    def begin_backward_steps(self):
        """Start the backward of a ``begin_steps`` pass: zero gradients reaching the last step."""
        k, _, G, P, Hs, Cs, TC, _ = self.cache
        Df, X = self._steps[:2]
        xp = get_array_module(Hs)
        T, N, H4 = G.shape
        dt = G.dtype
        dA = self.buffer("A" if k else "dA", (T, N, H4), dt, xp)     # kernel path: the projections are spent
        dh, dc, dc_prev = (self.buffer(name, (N, H4 // 4), dt, xp) for name in ("dh", "dc", "dc_prev"))
        dh.fill(0)
        dc.fill(0)
        dx = self.buffer("dx_rest", (N, X.shape[2] - Df), dt, xp)
        deriv = None if k else self.buffer("deriv", (N, H4), dt, xp)
        self._back = [dA, dh, dc, dc_prev, dx, deriv, self.buffer("tmp", (N, H4 // 4), dt, xp)]

    def backward_step(self, t: int, dh_in):
        """Back through step t (from T - 1 down to 0): dh_in (N, H) the gradient reaching h_t from
        outside this layer -> the gradient of the rest of step t's input (N, D - Df), in a buffer
        overwritten by the next call (None when the whole input was ``fixed``)."""
        k, _, G, P, Hs, Cs, TC, _ = self.cache
        Df, X = self._steps[:2]
        dA, dh, dc, dc_prev, dx, deriv, tmp = self._back
        Wx, Wh, _ = self.params
        xp = get_array_module(dh_in)
        if k:
            k.lstm_cell_backward(dh_in, dh, dc, G[t], Cs[t], TC[t], dA[t], dc_prev)
            self._back[2], self._back[3] = dc_prev, dc               # two buffers: no output aliases an input
        else:
            dh += dh_in
            lstm_cell_backward_(dh, dc, G[t], Cs[t], TC[t], P[t], dA[t], deriv, tmp)
        xp.matmul(dA[t], Wh.T, out=dh)                              # (N, H) to h_{t-1}
        if Df == Wx.shape[0]:
            return None
        return xp.matmul(dA[t], Wx[Df:].T, out=dx)                  # (N, D - Df)

    def end_backward_steps(self):
        """Finish the backward: write the weight gradients (one product each over all steps)
        -> the gradient of ``fixed`` (T, N, Df) (None without it), dh0, dc0 (N, H)."""
        k, X2, G, P, Hs, Cs, TC, _ = self.cache
        Df = self._steps[0]
        dA, dh, dc = self._back[:3]
        T, N, H4 = G.shape
        dA2 = self._param_grads(X2, Hs, dA)
        Wx = self.params[0]
        dfixed = (dA2 @ Wx[:Df].T).reshape(T, N, Df) if Df else None
        return dfixed, dh, dc

    # -- decoding ----------------------------------------------------------
    def project(self, x):
        """x (..., D) -> x @ Wx + b (..., 4H): the input half of the pre-activations, for ``step``.

        x may be the first D' < D input features only (the decoder's embeddings, when the
        attentional vector fills the rest): then x @ Wx[:D'] + b, the rest added by the caller.
        """
        Wx, _, b = self.params
        xw = x @ Wx[:x.shape[-1]]
        xw += b
        return xw

    def step(self, xw, h, c):
        """One step for decoding, no cache: xw (N, 4H) from ``project``, h, c (N, H) -> (h, c) new arrays."""
        _, Wh, _ = self.params
        k = kernels.fused(xw, h, c, Wh)
        if k is not None:
            return self._step_fused(k, xw, h, c, Wh)
        xp = get_array_module(xw)
        z = h @ Wh                                                  # (N, 4H)
        z += xw
        scale_gates_(z)
        h_new, c_new, tc, tmp = (xp.empty_like(h) for _ in range(4))
        with ignore_overflow(xp):
            lstm_cell_forward_(z, c, c_new, tc, h_new, tmp)
        return h_new, c_new

    def _step_fused(self, k, xw, h, c, Wh):
        """``step`` with the compiled cell. Its (N, 4H) and (N, H) scratch is allocated here, per call,
        like the state it returns: nothing is kept on the layer, so threads may step one shared model."""
        N, H4 = xw.shape
        rec, gates = np.empty((N, H4), xw.dtype), np.empty((N, H4), xw.dtype)
        tc = np.empty((N, H4 // 4), xw.dtype)                       # tanh(c_new), unused after
        np.matmul(h, Wh, out=rec)                                   # (N, 4H)
        h_new, c_new = np.empty_like(h), np.empty_like(c)
        k.lstm_cell_forward(xw, rec, c, gates, c_new, tc, h_new)
        return h_new, c_new
