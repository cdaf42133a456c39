"""The LSTM layer: the cell of ``lstm_cell`` run over a sequence, whole or one step at a time.

Shapes: N batch, T time, D input size, H hidden size; gates ordered [i, f, o, g] (see
``lstm_cell`` for the book's order). A pass (``begin_steps``; its arrays an ``LSTMPass``)
takes time-major buffers reused across batches and projects the inputs known up front
for all steps in one matrix product; each ``run_step`` adds the rest of its input's
projection, multiplies ``h @ Wh`` and calls ``cell_forward``. ``forward`` is a pass and
the loop of ``run_step`` over t; input feeding runs the steps itself, as its inputs
become known. ``backward`` is the loop of ``backward_step`` from T - 1 down
(``cell_backward``, then ``da @ Wh.T``), then the weight gradients as one product each
over all steps. ``step`` (decoding) is ``cell_forward`` on fresh arrays. Both CPU paths
and cupy run this same code; only the cell inside differs.

With the compiled kernels and numpy's BLAS callable from them (``kernels.loops``), each
direction is one compiled call over the ``LSTMPass`` arrays as they are
(``kernels/recurrent.py``: the product and the cell of every step, no Python between
steps), and ``run_step``, ``backward_step`` and ``step`` are one compiled call a step.
There, an input that is rows of an embedding E (``tokens``, no dropout between) over a
small vocabulary is projected as rows gathered from the table E Wx + b, and its gradient
is left in ``dE`` (V, D) instead of returned per position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .backend import get_array_module
from .profile import LOOP, loop_ticks, part
from .layers import init_weight, project_fixed
from .lstm_cell import cell_backward, cell_forward
from .module import Module

_NO_IDS = np.zeros((0, 0), dtype=np.intp)                          # the compiled loops' "no token ids"
_NO_TICKS = np.zeros(0, dtype=np.int64)                             # and "not timed"


# -- a pass: the arrays of one run through a sequence -----------------------------------------

@dataclass
class LSTMPass:
    """One pass of ``LSTM.begin_steps``: time-major arrays that its steps write and its backward reads.

    On the xp path the gates G are A itself (its cell works in place) and dA has its own buffer; on
    the kernel path, whose cell runs fastest on outputs apart from its inputs, G has its own and
    dA is written over A. A pass in eval mode on the kernel path keeps one step's gates (1, N, 4H).
    """
    k: object           # the compiled kernels the pass runs on; None: the xp path
    xp: object
    Df: int             # the first Df input features were given up front (``fixed``)
    X: object           # (T, N, D) the inputs
    A: object           # (T, N, 4H) x Wx + b: the fixed part's here, the rest's added at each step
    G: object           # (T, N, 4H) the gates
    Hs: object          # (T + 1, N, H) the hidden states, Hs[0] the start
    Cs: object          # (T + 1, N, H) the cell states
    TC: object          # (T, N, H) tanh(c_t)
    rec: object         # (N, 4H) h_{t-1} Wh of the step under way
    every: bool         # G holds every step's gates (else one step's, reused)
    training: bool      # kept for a backward
    loop: object = None  # the compiled time loops (``kernels.loops``), or None: steps from Python
    ids: object = None  # (N, T) token ids whose table rows are the inputs' projections (``tokens``), or None
    table: object = None  # (V, 4H) E Wx + b for them, from E (V, D)
    E: object = None
    lengths: object = None
    dA: object = None   # the backward's: (T, N, 4H) the pre-activations' gradients,
    dh: object = None   # (N, H) da_{t+1} Wh^T into step t,
    dc: object = None   # (N, H) c_t's gradient, and dc_prev its next value (buffers swapped each step),
    dc_prev: object = None
    dC: object = None   # (T, N, H) added to dc before step t, or None,
    dx: object = None   # (N, D - Df) the rest of the input's gradient, or None,
    work: object = None  # (N, 4H) the xp cell's scratch
    WhT: object = None  # the loops' (4H, H) contiguous Wh^T, (4H, D - Df) Wx[Df:]^T, (V, 4H) the table's gradient
    WxT: object = None
    dtable: object = None


# -- the layer -----------------------------------------------------------------------------

class LSTM(Module):
    """LSTM over a whole sequence: xs (N, T, D) -> hs (N, T, H).

    Parameters: Wx (D, 4H), Wh (H, 4H), b (4H); gates ordered [i, f, o, g] (see
    ``lstm_cell`` for the book's order).

    ``lengths`` (N,), each in 1..T, marks right padding: the final state
    ``(h_final, c_final)`` is each sequence's state at its own last real step, so
    padded steps cannot change it. Hidden states at padded positions are computed
    but meaningless; callers mask them (attention does).

    ``STATE`` names the state's parts, (h, c); a ``GRU``'s is (h,), and callers that take either
    layer pass states as tuples of those parts (``final_state``, ``forward(xs, *state)``, ``step``).
    """
    STATE = ("h", "c")

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
        self.dE = None                                              # the embedding's gradient, after ``tokens``

    @property
    def final_state(self) -> tuple:
        """(h_final, c_final): the state at each row's last real step after ``forward``."""
        return self.h_final, self.c_final

    # -- forward: a pass, then its steps --------------------------------------------------------
    def begin_steps(self, T: int, N: int, h0=None, c0=None, fixed=None, dtype=None, xp=np, tokens=None) -> LSTMPass:
        """Open a pass of T steps over N rows, which ``run_step`` then runs one step at a time.

        Step t's input x_t (N, D) is [fixed_t, rest_t]: ``fixed`` (T, N, Df) time-major, known
        now, projected here for all steps in one product (``forward``: the whole input; input
        feeding: the embeddings); rest_t (N, D - Df), written by the caller into ``inputs(t)``
        before ``run_step(t)``, projected there. h0, c0 (N, H) or None (zeros). ``tokens`` (ids
        (N, T), E (V, D)) with fixed = E[ids] time-major: on the compiled loops and when V <= N T,
        the table E Wx + b is made instead, and ``forward``'s loop takes its rows. Then, backwards,
        ``begin_backward_steps``, ``backward_step`` from t = T - 1 down to 0 and ``end_backward_steps``.
        """
        Wx, _, b = self.params
        dt = np.dtype(dtype or Wx.dtype)
        D, H4 = Wx.shape
        Df = 0 if fixed is None else fixed.shape[2]
        X = self.buffer("X", (T, N, D), dt, xp)
        A = self.buffer("A", (T, N, H4), dt, xp)
        k, loop = kernels.fused(X, *self.params), kernels.loops(X, *self.params)
        ids, E = self._fold(tokens, loop, T, N, Df == D)
        table = None
        with part("input projections"):
            if ids is not None:
                table = xp.matmul(E, Wx, out=self.buffer("table", (E.shape[0], H4), dt, xp))
                table += b
            else:
                project_fixed(xp, X, A, fixed, Wx, b)
        every = self.training or k is None
        s = self.cache = LSTMPass(
            k, xp, Df, X, A, G=A if k is None else self.buffer("G", (T if every else 1, N, H4), dt, xp),
            Hs=self.buffer("Hs", (T + 1, N, H4 // 4), dt, xp), Cs=self.buffer("Cs", (T + 1, N, H4 // 4), dt, xp),
            TC=self.buffer("TC", (T, N, H4 // 4), dt, xp), rec=self.buffer("rec", (N, H4), dt, xp),
            every=every, training=self.training, loop=loop, ids=ids, table=table, E=E)
        s.Hs[0] = 0 if h0 is None else h0
        s.Cs[0] = 0 if c0 is None else c0
        return s

    @staticmethod
    def _fold(tokens, loop, T, N, whole):
        """(ids (N, T) as intp, E) when the input projection is to be rows of E Wx + b, else (None, None)."""
        if tokens is None or loop is None or not whole:
            return None, None
        ids, E = tokens
        if E.shape[0] > N * T or ids.shape != (N, T) or not isinstance(ids, np.ndarray):
            return None, None
        return np.ascontiguousarray(ids, dtype=np.intp), E

    def inputs(self, t: int):
        """The (N, D - Df) part of step t's input that ``run_step(t)`` projects: for the caller to fill."""
        s = self.cache
        return s.X[t, :, s.Df:]

    def run_step(self, t: int):
        """Step t of the pass opened by ``begin_steps`` -> h_t (N, H), a view valid until the next pass."""
        return self._run_step(self.cache, t)

    def _run_step(self, s: LSTMPass, t: int):
        Wx, Wh, _ = self.params
        G = s.G[t if s.every else 0]
        if s.loop is not None:
            with part(LOOP):
                s.loop.lstm_step_forward(s.X[t, :, s.Df:], Wx[s.Df:], s.A[t], s.Hs[t], Wh, s.Cs[t], s.rec, G,
                                         s.Cs[t + 1], s.TC[t], s.Hs[t + 1], loop_ticks())
            return s.Hs[t + 1]
        if s.Df < Wx.shape[0]:
            with part("recurrent matmul"):
                s.xp.matmul(s.X[t, :, s.Df:], Wx[s.Df:], out=s.rec)     # (N, 4H) the rest of the input
                s.A[t] += s.rec
        with part("recurrent matmul"):
            s.xp.matmul(s.Hs[t], Wh, out=s.rec)                     # (N, 4H)
        with part("cell"):
            cell_forward(s.k, s.A[t], s.rec, s.Cs[t], G, s.Cs[t + 1], s.TC[t], s.Hs[t + 1])
        return s.Hs[t + 1]

    def forward(self, xs, h0=None, c0=None, lengths=None, tokens=None):
        """xs (N, T, D), h0/c0 (N, H) or None (zeros) -> hs (N, T, H). ``tokens``: (ids (N, T), E (V, D))
        when xs is E[ids] (see ``begin_steps``; ``backward`` then returns no dxs but leaves ``dE``).

        In training mode hs (and the final state) are views into this layer's reusable
        time-major buffers: valid until its next training-mode forward. Copy them to keep them.
        """
        xp = get_array_module(xs)
        N, T, _ = xs.shape
        s = self.begin_steps(T, N, h0, c0, fixed=xs.transpose(1, 0, 2), dtype=xs.dtype, xp=xp, tokens=tokens)
        s.lengths = lengths
        if s.loop is not None:
            ids, table = (s.ids, s.table) if s.ids is not None else (_NO_IDS, s.A[0, :0])
            with part(LOOP):
                s.loop.lstm_forward(s.A, np.ascontiguousarray(self.params[1]), s.Hs, s.Cs, s.G, s.TC, s.rec, ids, table,
                                    loop_ticks())
        else:
            for t in range(T):
                self._run_step(s, t)                                # s itself: nothing read back from the layer
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
        if s.loop is not None:                                      # contiguous transposed weights: faster products
            Wx, Wh, _ = self.params
            s.WhT = self.buffer("WhT", (H4, H4 // 4), dt, s.xp)
            s.WxT = self.buffer("WxT", (H4, D - s.Df), dt, s.xp)
            s.loop.transpose_into(Wh, s.WhT)
            s.loop.transpose_into(Wx[s.Df:], s.WxT)
            if s.ids is not None:
                s.dtable = self.buffer("dtable", s.table.shape, dt, s.xp)
                s.dtable.fill(0)

    def backward_step(self, t: int, dh_in):
        """Back through step t (from T - 1 down to 0): dh_in (N, H) the gradient reaching h_t from
        outside this layer -> the gradient of the rest of step t's input (N, D - Df), in a buffer
        overwritten by the next call (None when the whole input was ``fixed``)."""
        return self._backward_step(self.cache, t, dh_in)

    def _backward_step(self, s: LSTMPass, t: int, dh_in):
        Wx, Wh, _ = self.params
        if s.loop is not None:
            with part(LOOP):
                s.loop.lstm_step_backward(dh_in, s.dh, s.dc, s.dh[:0] if s.dC is None else s.dC[t], s.G[t], s.Cs[t],
                                          s.TC[t], s.dA[t], s.dc_prev, s.WhT, s.WxT,
                                          s.dh[:, :0] if s.dx is None else s.dx, loop_ticks())
            s.dc, s.dc_prev = s.dc_prev, s.dc
            return s.dx
        with part("cell"):
            if s.dC is not None:
                s.dc += s.dC[t]
            cell_backward(s.k, dh_in, s.dh, s.dc, s.G[t], s.Cs[t], s.TC[t], s.dA[t], s.dc_prev, s.work)
        s.dc, s.dc_prev = s.dc_prev, s.dc                           # two buffers: no output aliases an input
        with part("recurrent matmul"):
            s.xp.matmul(s.dA[t], Wh.T, out=s.dh)                    # (N, H) to h_{t-1}
            if s.dx is None:
                return None
            return s.xp.matmul(s.dA[t], Wx[s.Df:].T, out=s.dx)      # (N, D - Df)

    def end_backward_steps(self):
        """Finish the backward: write the weight gradients (one product each over all steps)
        -> the gradient of ``fixed`` (T, N, Df) (None without it, or with ``tokens``: then
        ``dE`` (V, D)), dh0, dc0 (N, H) (in this layer's buffers until its next backward)."""
        s = self.cache
        T, N, H4 = s.dA.shape
        Wx = self.params[0]
        dWx, dWh, db = self.grads
        dA2 = s.dA.reshape(T * N, H4)
        with part("weight gradients"):
            if s.ids is None:
                s.xp.matmul(s.X.reshape(T * N, -1).T, dA2, out=dWx)    # X^T dA
                dA2.sum(axis=0, out=db)
            else:
                s.xp.matmul(s.E.T, s.dtable, out=dWx)               # X^T dA = E^T (dA's rows summed by token)
                s.dtable.sum(axis=0, out=db)
            s.xp.matmul(s.Hs[:-1].reshape(T * N, H4 // 4).T, dA2, out=dWh)   # h_prev^T dA
        with part("input projections"):
            if s.ids is not None:
                self.dE = s.xp.matmul(s.dtable, Wx.T, out=self.buffer("dE", s.E.shape, s.A.dtype, s.xp))
            dfixed = (dA2 @ Wx[:s.Df].T).reshape(T, N, s.Df) if s.Df and s.ids is None else None
        return dfixed, s.dh, s.dc

    def backward(self, dhs, dh_final=None, dc_final=None):
        """dhs (N, T, H), gradients of the final state (N, H) or None -> dxs (N, T, D), dh0, dc0 (N, H);
        dxs None after a forward with ``tokens`` folded into the table (the embedding's gradient in ``dE``).

        dh0 and dc0 live in this layer's buffers until its next backward.
        """
        s = self.cache
        lengths = None if s is None else s.lengths
        dH, dC = self._incoming_grads(dhs, dh_final, dc_final, lengths)
        self.begin_backward_steps(dc_final if lengths is None else None, dC)   # with lengths, through dC
        T = dhs.shape[1]
        if s.loop is not None:
            ids, dtable = (s.ids, s.dtable) if s.ids is not None else (_NO_IDS, s.dA[0, :0])
            with part(LOOP):
                s.loop.lstm_backward(dH, s.dh[None][:0] if dC is None else dC, s.G, s.Cs, s.TC, s.dA, s.dh, s.dc,
                                     s.dc_prev, s.WhT, ids, dtable, loop_ticks())
            if T % 2:
                s.dc, s.dc_prev = s.dc_prev, s.dc                   # the loop swapped them T times
        else:
            for t in range(T - 1, -1, -1):
                self._backward_step(s, t, dH[t])
        dxs, dh0, dc0 = self.end_backward_steps()
        return None if dxs is None else dxs.transpose(1, 0, 2), dh0, dc0

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
        kept on the layer, so threads may step one shared model. On the compiled loops, product
        and cell are one compiled call.
        """
        _, Wh, _ = self.params
        k, loop = kernels.fused(xw, h, c, Wh), kernels.loops(xw, h, c, Wh)
        xp = get_array_module(xw)
        h_new, c_new, tc = xp.empty_like(h), xp.empty_like(c), xp.empty_like(c)   # tc = tanh(c_new), unused after
        if loop is not None:
            rec, gates = np.empty_like(xw), np.empty_like(xw)
            loop.lstm_step_forward(h[:, :0], Wh[:0], xw, h, np.ascontiguousarray(Wh), c, rec, gates, c_new, tc, h_new,
                                   _NO_TICKS)
            return h_new, c_new
        rec = h @ Wh                                                # (N, 4H)
        gates = rec if k is None else xp.empty_like(rec)            # the xp cell may write over its input
        cell_forward(k, xw, rec, c, gates, c_new, tc, h_new)
        return h_new, c_new
