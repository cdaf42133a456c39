"""The GRU layer: the cell of ``gru_cell`` run over a sequence, whole or one step at a time.

Shapes: N batch, T time, D input size, H hidden size; gate blocks [z, r, h~] (the book's
order, see ``gru_cell``). The layer is built as ``lstm.LSTM`` is, and callers use the two
alike: a pass (``begin_steps``; its arrays a ``GRUPass``) takes time-major buffers reused
across batches and projects the inputs known up front for all steps in one product; each
``run_step`` adds the rest of its input's projection, multiplies h Wh_zr, runs the gates
half of the cell, multiplies (r * h) Wh_h and runs the state half. ``forward`` is a pass and
the loop of ``run_step``; ``backward`` the loop of ``backward_step`` from T - 1 down, then the
weight gradients as one product each over all steps. ``step`` (decoding) is one step on fresh
arrays. The GRU's state is h alone: where an LSTM takes or gives (h, c), a GRU takes or gives
(h,) (``STATE``), so ``forward(xs, h0)``, ``backward`` -> (dxs, dh0), ``step`` -> (h,).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .backend import get_array_module
from .gru_cell import gates_backward, gates_forward, state_backward, state_forward
from .layers import init_weight, project_fixed
from .module import Module


@dataclass
class GRUPass:
    """One pass of ``GRU.begin_steps``: time-major arrays that its steps write and its backward reads.
    In eval mode G and RH keep one step's values (1, N, .), reused."""
    k: object           # the compiled GRU kernels the pass runs on; None: the xp path
    xp: object
    Df: int             # the first Df input features were given up front (``fixed``)
    X: object           # (T, N, D) the inputs
    A: object           # (T, N, 3H) x Wx + b: the fixed part's here, the rest's added at each step
    G: object           # (T, N, 3H) the gates z, r and the candidate h~
    RH: object          # (T, N, H) r * h_{t-1}, what Wh_h multiplies
    Hs: object          # (T + 1, N, H) the hidden states, Hs[0] the start
    hzr: object         # (N, 2H) h_{t-1} Wh_zr of the step under way
    hh: object          # (N, H) (r * h_{t-1}) Wh_h of the step under way
    rest: object        # (N, 3H) the rest of the input's projection, or None
    every: bool         # G and RH hold every step's values
    training: bool      # kept for a backward
    lengths: object = None
    dA: object = None   # the backward's: (T, N, 3H) the pre-activations' gradients (written over A),
    dh: object = None   # (N, H) the gradient reaching h_t from step t + 1,
    dhp: object = None  # (N, H) h_{t-1}'s share through (1 - z) and r * h_{t-1},
    drh: object = None  # (N, H) da_h Wh_h^T, reaching r * h_{t-1},
    dx: object = None   # (N, D - Df) the rest of the input's gradient, or None


class GRU(Module):
    """GRU over a whole sequence: xs (N, T, D) -> hs (N, T, H).

    Parameters: Wx (D, 3H), Wh (H, 3H), b (3H), blocks [z, r, h~] (the book's ``GRU``).
    ``lengths`` (N,), each in 1..T, marks right padding: ``h_final`` is each sequence's state at its
    own last real step. Hidden states at padded positions are computed but meaningless; callers
    mask them (attention does).
    """
    STATE = ("h",)

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        H = hidden_size
        self.add_param("Wx", init_weight(rng, input_size, 3 * H, init, dtype))
        self.add_param("Wh", init_weight(rng, H, 3 * H, init, dtype))
        self.add_param("b", np.zeros(3 * H, dtype=dtype))
        self.hidden_size = H
        self.cache = None                                           # the GRUPass under way
        self.h_final = None

    @property
    def final_state(self) -> tuple:
        """(h_final,): the state at each row's last real step after ``forward``."""
        return (self.h_final,)

    # -- forward: a pass, then its steps --------------------------------------------------------
    def begin_steps(self, T: int, N: int, h0=None, fixed=None, dtype=None, xp=np) -> GRUPass:
        """Open a pass of T steps over N rows, which ``run_step`` then runs one step at a time.

        As ``LSTM.begin_steps`` without c0: step t's input is [fixed_t, rest_t], ``fixed`` (T, N, Df)
        known now and projected here for all steps, rest_t (N, D - Df) written by the caller into
        ``inputs(t)`` before ``run_step(t)``. h0 (N, H) or None (zeros).
        """
        Wx, _, b = self.params
        dt = np.dtype(dtype or Wx.dtype)
        D, H3 = Wx.shape
        H = H3 // 3
        Df = 0 if fixed is None else fixed.shape[2]
        X = self.buffer("X", (T, N, D), dt, xp)
        A = self.buffer("A", (T, N, H3), dt, xp)
        project_fixed(xp, X, A, fixed, Wx, b)
        every = self.training
        Tg = T if every else 1
        s = self.cache = GRUPass(
            kernels.fused_gru(X, *self.params), xp, Df, X, A, G=self.buffer("G", (Tg, N, H3), dt, xp),
            RH=self.buffer("RH", (Tg, N, H), dt, xp), Hs=self.buffer("Hs", (T + 1, N, H), dt, xp),
            hzr=self.buffer("hzr", (N, 2 * H), dt, xp), hh=self.buffer("hh", (N, H), dt, xp),
            rest=self.buffer("rest", (N, H3), dt, xp) if Df < D else None, every=every, training=self.training)
        s.Hs[0] = 0 if h0 is None else h0
        return s

    def inputs(self, t: int):
        """The (N, D - Df) part of step t's input that ``run_step(t)`` projects: for the caller to fill."""
        s = self.cache
        return s.X[t, :, s.Df:]

    def run_step(self, t: int):
        """Step t of the pass opened by ``begin_steps`` -> h_t (N, H), a view valid until the next pass."""
        return self._run_step(self.cache, t)

    def _run_step(self, s: GRUPass, t: int):
        Wx, Wh, _ = self.params
        H = Wh.shape[0]
        if s.rest is not None:
            s.xp.matmul(s.X[t, :, s.Df:], Wx[s.Df:], out=s.rest)   # (N, 3H) the rest of the input
            s.A[t] += s.rest
        i = t if s.every else 0
        s.xp.matmul(s.Hs[t], Wh[:, :2 * H], out=s.hzr)              # (N, 2H)
        gates_forward(s.k, s.A[t], s.hzr, s.Hs[t], s.G[i], s.RH[i])
        s.xp.matmul(s.RH[i], Wh[:, 2 * H:], out=s.hh)               # (N, H)
        state_forward(s.k, s.A[t], s.hh, s.Hs[t], s.G[i], s.Hs[t + 1])
        return s.Hs[t + 1]

    def forward(self, xs, h0=None, lengths=None):
        """xs (N, T, D), h0 (N, H) or None (zeros) -> hs (N, T, H).

        In training mode hs (and h_final) are views into this layer's reusable time-major buffers:
        valid until its next training-mode forward. Copy them to keep them.
        """
        xp = get_array_module(xs)
        N, T, _ = xs.shape
        s = self.begin_steps(T, N, h0, fixed=xs.transpose(1, 0, 2), dtype=xs.dtype, xp=xp)
        s.lengths = lengths
        for t in range(T):
            self._run_step(s, t)
        self.h_final = s.Hs[T] if lengths is None else s.Hs[lengths, xp.arange(N)]
        if not self.training:
            self.cache = None                                       # nothing kept for a backward
        return s.Hs[1:].transpose(1, 0, 2)                          # (N, T, H)

    # -- backward: the steps in reverse, then the weight gradients -------------------------------
    def begin_backward_steps(self):
        """Start the backward of the pass: no gradient yet reaches h after the last step."""
        s = self.cache
        if s is None or not s.training:
            raise RuntimeError("GRU.backward needs a forward pass in training mode first")
        T, N, H3 = s.A.shape
        dt, D = s.A.dtype, s.X.shape[2]
        s.dA = s.A                                                  # the projections are spent
        s.dh, s.dhp, s.drh = (self.buffer(name, (N, H3 // 3), dt, s.xp) for name in ("dh", "dhp", "drh"))
        s.dh.fill(0)
        s.dx = self.buffer("dx_rest", (N, D - s.Df), dt, s.xp) if s.Df < D else None

    def backward_step(self, t: int, dh_in):
        """Back through step t (from T - 1 down to 0): dh_in (N, H) the gradient reaching h_t from
        outside this layer -> the gradient of the rest of step t's input (N, D - Df), in a buffer
        overwritten by the next call (None when the whole input was ``fixed``)."""
        return self._backward_step(self.cache, t, dh_in)

    def _backward_step(self, s: GRUPass, t: int, dh_in):
        Wx, Wh, _ = self.params
        H = Wh.shape[0]
        dA = s.dA[t]
        state_backward(s.k, dh_in, s.dh, s.G[t], s.Hs[t], dA, s.dhp)
        s.xp.matmul(dA[:, 2 * H:], Wh[:, 2 * H:].T, out=s.drh)     # (N, H) reaching r * h_{t-1}
        gates_backward(s.k, s.drh, s.G[t], s.Hs[t], dA, s.dhp)
        s.xp.matmul(dA[:, :2 * H], Wh[:, :2 * H].T, out=s.dh)      # (N, H) through z and r
        s.dh += s.dhp                                               # all of h_{t-1}'s gradient
        if s.dx is None:
            return None
        return s.xp.matmul(dA, Wx[s.Df:].T, out=s.dx)               # (N, D - Df)

    def end_backward_steps(self):
        """Finish the backward: write the weight gradients (one product each over all steps)
        -> the gradient of ``fixed`` (T, N, Df) (None without it) and dh0 (N, H) (in this layer's
        buffers until its next backward)."""
        s = self.cache
        T, N, H3 = s.dA.shape
        H = H3 // 3
        dWx, dWh, db = self.grads
        dA2 = s.dA.reshape(T * N, H3)
        s.xp.matmul(s.X.reshape(T * N, -1).T, dA2, out=dWx)        # X^T dA
        dWh[:, :2 * H] = s.Hs[:-1].reshape(T * N, H).T @ dA2[:, :2 * H]   # h_prev^T dA_zr
        dWh[:, 2 * H:] = s.RH.reshape(T * N, H).T @ dA2[:, 2 * H:]        # (r * h_prev)^T dA_h
        dA2.sum(axis=0, out=db)
        dfixed = (dA2 @ self.params[0][:s.Df].T).reshape(T, N, s.Df) if s.Df else None
        return dfixed, s.dh

    def backward(self, dhs, dh_final=None):
        """dhs (N, T, H), the gradient of h_final (N, H) or None -> dxs (N, T, D), dh0 (N, H).

        dh0 lives in this layer's buffers until its next backward.
        """
        s = self.cache
        xp = get_array_module(dhs)
        N, T, H = dhs.shape
        dH = self.buffer("dH", (T, N, H), dhs.dtype, xp)
        dH[...] = dhs.transpose(1, 0, 2)
        if dh_final is not None:
            last = T - 1 if s is None or s.lengths is None else s.lengths - 1
            dH[last, xp.arange(N)] += dh_final
        self.begin_backward_steps()
        for t in range(T - 1, -1, -1):
            self._backward_step(s, t, dH[t])
        dxs, dh0 = self.end_backward_steps()
        return dxs.transpose(1, 0, 2), dh0

    # -- decoding ----------------------------------------------------------
    def project(self, x):
        """x (..., D) -> x @ Wx + b (..., 3H): the input half of the pre-activations, for ``step``.
        x may be the first D' < D input features only (as ``LSTM.project``)."""
        Wx, _, b = self.params
        xw = x @ Wx[:x.shape[-1]]
        xw += b
        return xw

    def step(self, xw, h):
        """One step for decoding, no cache: xw (N, 3H) from ``project``, h (N, H) -> (h,), a new array.
        Nothing is kept on the layer, so threads may step one shared model."""
        _, Wh, _ = self.params
        H = Wh.shape[0]
        k = kernels.fused_gru(xw, h, Wh)
        xp = get_array_module(xw)
        gates, rh, h_new = xp.empty_like(xw), xp.empty_like(h), xp.empty_like(h)
        gates_forward(k, xw, h @ Wh[:, :2 * H], h, gates, rh)
        state_forward(k, xw, rh @ Wh[:, 2 * H:], h, gates, h_new)
        return (h_new,)
