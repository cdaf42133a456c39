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
2. The fast cell, one step in place on preallocated arrays: ``cell_forward`` and
   ``cell_backward``. Each takes the pre-activations in two halves, xa = x Wx + b
   and ha = h_prev Wh, and runs on one of two paths with the same signature:

   - numpy arrays with the kernels on (``kernels.fused``): the compiled
     ``lstm_cell_forward`` / ``lstm_cell_backward`` in ``kernels/cpu.py``, one pass
     over memory each;
   - otherwise (cupy, or numpy without numba): their twins ``lstm_cell_forward_``
     and ``lstm_cell_backward_`` below, array operations written with ``xp``.
3. The ``LSTM`` layer. A pass (``begin_steps``) sets up time-major buffers reused
   across batches and projects the inputs known up front for all steps in one
   matrix product; each step (``run_step``) adds the rest, multiplies ``h @ Wh`` and
   calls ``cell_forward``. ``forward`` is that setup and the loop of ``run_step``
   over t; input feeding calls ``run_step`` itself, step by step. ``backward`` is
   the loop of ``backward_step`` from T - 1 down (``cell_backward``, then ``da @
   Wh.T``) and the weight gradients as one product each over all steps. ``step``
   (decoding) is ``cell_forward`` on fresh arrays. The pass's arrays are one
   ``LSTMPass``, as a compiled time loop would take them.

The gate-scale trick (the xp path). sigmoid(a) = 1 / (1 + exp(-a)) and
tanh(a) = 2 sigmoid(2a) - 1, so a single exp over all 4H columns serves every
gate once the pre-activations are multiplied by -1 (i, f, o) and -2 (g):
``lstm_cell_forward_`` sums xa + ha into the gates' array, scales it in place
(``scale_gates_``), and ``activate_scaled_gates_`` turns it into the gates.
"""
from __future__ import annotations

from dataclasses import dataclass

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


# -- the fast cell: one step, in place, on preallocated arrays ---------------------------------

def scale_gates_(z):
    """z (N, 4H) *= -1 on the i, f, o blocks and -2 on g, in place: the gate-scale trick."""
    H = z.shape[-1] // 4
    z *= -1.0
    z[..., 3 * H:] *= 2.0
    return z


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


def lstm_cell_forward_(xa, ha, c_prev, gates, c, tc, h):
    """The xp twin of the compiled ``lstm_cell_forward``: one step from a = xa + ha (N, 4H).

    Writes the gates [i, f, o, g] (N, 4H) and the (N, H) c = f c_prev + i g, tc = tanh(c)
    and h = o tanh(c). gates may be xa or ha itself, c may be c_prev.
    """
    xp = get_array_module(gates)
    xp.add(xa, ha, out=gates)
    with ignore_overflow(xp):
        i, f, o, g = split_gates(activate_scaled_gates_(scale_gates_(gates)))
    xp.multiply(i, g, out=tc)                                       # tc as scratch
    xp.multiply(f, c_prev, out=c)
    c += tc                                                         # c = f * c_prev + i * g
    tanh_(c, tc)
    xp.multiply(o, tc, out=h)                                       # h = o * tanh(c)


def lstm_cell_backward_(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work=None):
    """The xp twin of the compiled ``lstm_cell_backward``: ``lstm_cell_reference_backward`` on
    the forward's saved arrays, with dh + dh_rec reaching h.

    dh (N, H) reaches h_t from above, dh_rec (N, H) from the next step, dc (N, H) c_t; gates
    (N, 4H), c_prev and tc = tanh(c_t) (N, H) from the forward. Writes da (N, 4H), the gradient
    of the pre-activations, and dc_prev (N, H), which may be dc itself. work (N, 4H) is scratch
    (made here when None). Whole-width operations where it can: numpy is slow on the (N, H)
    blocks of an (N, 4H) array.
    """
    xp = get_array_module(gates)
    N, H4 = gates.shape
    work = xp.empty_like(gates) if work is None else work
    i, f, o, g = split_gates(gates)
    di, df, do, dg = split_gates(da)
    dht, tmp = work.reshape(-1)[:2 * N * (H4 // 4)].reshape(2, N, H4 // 4)   # two (N, H) scratch arrays
    xp.add(dh, dh_rec, out=dht)                                     # all of h_t's gradient
    xp.multiply(dht, tc, out=do)
    xp.multiply(tc, tc, out=tmp)
    xp.subtract(1.0, tmp, out=tmp)
    tmp *= o
    tmp *= dht
    ds = xp.add(dc, tmp, out=dc_prev)                               # ds = dc + dh o (1 - tanh(c)^2)
    xp.multiply(ds, g, out=di)
    xp.multiply(ds, c_prev, out=df)
    xp.multiply(ds, i, out=dg)
    da *= gate_derivatives_(gates, work)                            # through the activations
    dc_prev *= f                                                    # dc_prev = ds f


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


def cell_forward(k, xa, ha, c_prev, gates, c, tc, h):
    """One step forward on the compiled kernels ``k`` (from ``kernels.fused``), or with None on the
    xp path: the arguments of ``lstm_cell_forward_``. The compiled cell runs fastest with
    every output apart from the inputs."""
    if k is not None:
        k.lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h)
    else:
        lstm_cell_forward_(xa, ha, c_prev, gates, c, tc, h)


def cell_backward(k, dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work=None):
    """One step back on the compiled kernels ``k``, or with None on the xp path: the arguments
    of ``lstm_cell_backward_`` (work: its scratch). The caller then takes dh_prev = da Wh^T."""
    if k is not None:
        k.lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev)
    else:
        lstm_cell_backward_(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work)


# -- a pass: the arrays of one run through a sequence -----------------------------------------

@dataclass
class LSTMPass:
    """One pass of ``LSTM.begin_steps``: time-major arrays that the steps write and the backward reads.

    X (T, N, D) the inputs, of which the first Df features were given up front; A (T, N, 4H) their
    projection x Wx + b, the rest added step by step; G (T, N, 4H) the gates: on the xp path A
    itself (its cell works in place), on the kernel path a buffer of its own (its cell runs fastest
    on outputs apart from its inputs; one step's, (1, N, 4H), when not kept for a backward); Hs, Cs
    (T + 1, N, H) the states, [0] the start; TC (T, N, H) tanh(c_t); rec (N, 4H) a step's h Wh. The
    backward adds dA (T, N, 4H) (over A where the gates are apart), dh (N, H) = da_{t+1} Wh^T, dc and
    dc_prev (N, H) (two buffers, swapped each step), dC (T, N, H) added to dc before each step or
    None, and dx (N, D - Df) for the rest of the input or None.
    """
    k: object                       # the compiled kernels the pass runs on, None on the xp path
    xp: object
    Df: int
    X: object
    A: object
    G: object
    Hs: object
    Cs: object
    TC: object
    rec: object
    every: bool                     # G holds every step's gates (else one step's, reused)
    training: bool                  # kept for a backward
    lengths: object = None
    dA: object = None
    work: object = None
    dh: object = None
    dc: object = None
    dc_prev: object = None
    dC: object = None
    dx: object = None


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
        self.cache = None                                           # the LSTMPass under way
        self.h_final = self.c_final = None

    # -- forward: a pass, then its steps --------------------------------------------------------
    def begin_steps(self, T: int, N: int, h0=None, c0=None, fixed=None, dtype=None, xp=np) -> LSTMPass:
        """Open a pass of T steps over N rows, which ``run_step`` then runs one step at a time.

        Step t's input x_t (N, D) is [fixed_t, rest_t]: ``fixed`` (T, N, Df) time-major, known
        now, projected here for all steps in one product (``forward``: the whole input; input
        feeding: the embeddings); rest_t (N, D - Df), written by the caller into ``inputs(t)``
        before ``run_step(t)``, projected there. h0, c0 (N, H) or None (zeros). Then, backwards,
        ``begin_backward_steps``, ``backward_step`` from t = T - 1 down to 0 and ``end_backward_steps``.
        """
        Wx, Wh, b = self.params
        dt = np.dtype(dtype or Wx.dtype)
        D, H4 = Wx.shape
        Df = 0 if fixed is None else fixed.shape[2]
        X = self.buffer("X", (T, N, D), dt, xp)
        A = self.buffer("A", (T, N, H4), dt, xp)
        if Df:
            X[:, :, :Df] = fixed
            Xf = X.reshape(T * N, D) if Df == D else fixed.reshape(T * N, Df)
            xp.matmul(Xf, Wx[:Df], out=A.reshape(T * N, H4))
            A += b
        else:
            A[...] = b
        k = kernels.fused(X, *self.params)
        every = self.training or k is None
        s = self.cache = LSTMPass(
            k, xp, Df, X, A, G=A if k is None else self.buffer("G", (T if every else 1, N, H4), dt, xp),
            Hs=self.buffer("Hs", (T + 1, N, H4 // 4), dt, xp), Cs=self.buffer("Cs", (T + 1, N, H4 // 4), dt, xp),
            TC=self.buffer("TC", (T, N, H4 // 4), dt, xp), rec=self.buffer("rec", (N, H4), dt, xp),
            every=every, training=self.training)
        s.Hs[0] = 0 if h0 is None else h0
        s.Cs[0] = 0 if c0 is None else c0
        return s

    def inputs(self, t: int):
        """The (N, D - Df) part of step t's input that ``run_step(t)`` projects: for the caller to fill."""
        s = self.cache
        return s.X[t, :, s.Df:]

    def run_step(self, t: int):
        """Step t of the pass opened by ``begin_steps`` -> h_t (N, H), a view valid until the next pass."""
        s = self.cache
        Wx, Wh, _ = self.params
        if s.Df < Wx.shape[0]:
            s.xp.matmul(s.X[t, :, s.Df:], Wx[s.Df:], out=s.rec)    # (N, 4H) the rest of the input
            s.A[t] += s.rec
        s.xp.matmul(s.Hs[t], Wh, out=s.rec)                         # (N, 4H)
        cell_forward(s.k, s.A[t], s.rec, s.Cs[t], s.G[t if s.every else 0], s.Cs[t + 1], s.TC[t], s.Hs[t + 1])
        return s.Hs[t + 1]

    def forward(self, xs, h0=None, c0=None, lengths=None):
        """xs (N, T, D), h0/c0 (N, H) or None (zeros) -> hs (N, T, H).

        In training mode hs (and the final state) are views into this layer's reusable
        time-major buffers: valid until its next training-mode forward. Copy them to keep them.
        """
        xp = get_array_module(xs)
        N, T, _ = xs.shape
        s = self.begin_steps(T, N, h0, c0, fixed=xs.transpose(1, 0, 2), dtype=xs.dtype, xp=xp)
        s.lengths = lengths
        for t in range(T):
            self.run_step(t)
        if lengths is None:
            self.h_final, self.c_final = s.Hs[T], s.Cs[T]
        else:
            rows = xp.arange(N)
            self.h_final, self.c_final = s.Hs[lengths, rows], s.Cs[lengths, rows]
        if not self.training:
            self.cache = None                                       # nothing kept for a backward
        return s.Hs[1:].transpose(1, 0, 2)                          # (N, T, H)

    # -- backward: the steps in reverse, then the weight gradients -------------------------------
    def begin_backward_steps(self, dc_last=None, dC=None):
        """Start the backward of the pass: no gradient yet reaches h after the last step, and
        ``dc_last`` (N, H) or zeros reaches its c; dC (T, N, H) or None is added to c_t's before step t."""
        s = self.cache
        if s is None or not s.training:
            raise RuntimeError("LSTM.backward needs a forward pass in training mode first")
        T, N, H4 = s.A.shape
        dt, D = s.A.dtype, s.X.shape[2]
        s.dA = s.A if s.G is not s.A else self.buffer("dA", (T, N, H4), dt, s.xp)   # the projections are spent
        s.dh, s.dc, s.dc_prev = (self.buffer(name, (N, H4 // 4), dt, s.xp) for name in ("dh", "dc", "dc_prev"))
        s.dh.fill(0)
        s.dc[...] = 0 if dc_last is None else dc_last
        s.dC = dC
        s.dx = self.buffer("dx_rest", (N, D - s.Df), dt, s.xp) if s.Df < D else None
        s.work = None if s.k else self.buffer("work", (N, H4), dt, s.xp)   # the xp cell's scratch

    def backward_step(self, t: int, dh_in):
        """Back through step t (from T - 1 down to 0): dh_in (N, H) the gradient reaching h_t from
        outside this layer -> the gradient of the rest of step t's input (N, D - Df), in a buffer
        overwritten by the next call (None when the whole input was ``fixed``)."""
        s = self.cache
        Wx, Wh, _ = self.params
        if s.dC is not None:
            s.dc += s.dC[t]
        cell_backward(s.k, dh_in, s.dh, s.dc, s.G[t], s.Cs[t], s.TC[t], s.dA[t], s.dc_prev, s.work)
        s.dc, s.dc_prev = s.dc_prev, s.dc                           # two buffers: no output aliases an input
        s.xp.matmul(s.dA[t], Wh.T, out=s.dh)                        # (N, H) to h_{t-1}
        if s.dx is None:
            return None
        return s.xp.matmul(s.dA[t], Wx[s.Df:].T, out=s.dx)          # (N, D - Df)

    def end_backward_steps(self):
        """Finish the backward: write the weight gradients (one product each over all steps)
        -> the gradient of ``fixed`` (T, N, Df) (None without it), dh0, dc0 (N, H) (in this
        layer's buffers until its next backward)."""
        s = self.cache
        T, N, H4 = s.dA.shape
        dWx, dWh, db = self.grads
        dA2 = s.dA.reshape(T * N, H4)
        s.xp.matmul(s.X.reshape(T * N, -1).T, dA2, out=dWx)        # X^T dA
        s.xp.matmul(s.Hs[:-1].reshape(T * N, H4 // 4).T, dA2, out=dWh)   # h_prev^T dA
        dA2.sum(axis=0, out=db)
        dfixed = (dA2 @ self.params[0][:s.Df].T).reshape(T, N, s.Df) if s.Df else None
        return dfixed, s.dh, s.dc

    def backward(self, dhs, dh_final=None, dc_final=None):
        """dhs (N, T, H), gradients of the final state (N, H) or None -> dxs (N, T, D), dh0, dc0 (N, H).

        dh0 and dc0 live in this layer's buffers until its next backward.
        """
        if self.cache is None:
            raise RuntimeError("LSTM.backward needs a forward pass in training mode first")
        lengths = self.cache.lengths
        dH, dC = self._incoming_grads(dhs, dh_final, dc_final, lengths)
        self.begin_backward_steps(dc_final if lengths is None else None, dC)   # with lengths, through dC
        for t in range(dhs.shape[1] - 1, -1, -1):
            self.backward_step(t, dH[t])
        dxs, dh0, dc0 = self.end_backward_steps()
        return dxs.transpose(1, 0, 2), dh0, dc0

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
        """One step for decoding, no cache: xw (N, 4H) from ``project``, h, c (N, H) -> (h, c) new arrays.

        ``cell_forward`` on arrays made here, per call, like the state it returns: nothing is
        kept on the layer, so threads may step one shared model.
        """
        _, Wh, _ = self.params
        k = kernels.fused(xw, h, c, Wh)
        xp = get_array_module(xw)
        rec = h @ Wh                                                # (N, 4H)
        gates = rec if k is None else xp.empty_like(rec)            # the xp cell may write over its input
        h_new, c_new, tc = xp.empty_like(h), xp.empty_like(c), xp.empty_like(c)   # tc = tanh(c_new), unused after
        cell_forward(k, xw, rec, c, gates, c_new, tc, h_new)
        return h_new, c_new
