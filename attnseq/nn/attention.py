"""Attention in two small pieces, as the book teaches: weights, then a weighted sum.

``AttentionWeights``: a score of each decoder state h against every encoder state s, then a
softmax over source positions with padding masked out (weight exactly 0). Three scores:

    dot       h . s                        the book's, no parameters     ``AttentionWeights``
    general   h . (s W)                    Luong's bilinear score        ``GeneralWeights``, W (H, H)
    additive  v . tanh(h Wq + s Wk + b)    Bahdanau's                    ``AdditiveWeights``, Wq, Wk (H, A), b, v (A)

A score reads the encoder states through its keys (N, Ts, K): hs itself (dot), hs W (general),
hs Wk + b (additive, A = H here). Keys depend on hs only: made once per batch (``keys``) and
reused by every decoding step. ``WeightedSum``: the context vector, the weighted sum of the
encoder states hs (not the keys). Both pieces run over all decoder steps at once with batched
matmul (``forward``/``backward``, teacher forcing); ``apply`` is the same without a cache (the
decoder's ``step``, To = 1); ``Attention``'s ``begin_steps``/``forward_step``/``backward_step``
run it one decoder step at a time with caches, for a decoder whose next input needs this step's
context (input feeding).

Shapes: hs (N, Ts, H) encoder states, hd (N, To, H) decoder states,
a (N, To, Ts) weights, mask (N, Ts) True at real source tokens,
bias from ``mask_bias``: the mask as it enters the softmax, either the
additive bias (N, 1, Ts) or, for the fused kernel, the source lengths (N,).

The softmax and its backward are plain xp code here (``masked_softmax``,
``softmax_backward``); on numpy arrays with the kernels on (``kernels.fused``)
their compiled twins in ``kernels/cpu.py`` run instead.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .backend import get_array_module
from .layers import Linear, init_weight
from .module import Module
from .profile import part

SCORES = ("dot", "general", "additive")


def mask_bias(mask, dtype):
    """(N, Ts) bool, True at real tokens -> the padding in the form ``masked_softmax`` takes it.

    For the fused kernel (numpy arrays, kernels on; right padding with a real token in
    every row, as the models check it) the source lengths (N,) int64; otherwise the
    additive bias (N, 1, Ts): 0 at real tokens, -inf at padding.
    """
    lengths = _kernel_lengths(mask)
    if lengths is not None:
        return lengths
    xp = get_array_module(mask)
    bias = xp.zeros(mask.shape, dtype=dtype)
    bias[~mask] = -xp.inf
    return bias[:, None, :]


def _kernel_lengths(mask):
    """mask (N, Ts) -> its lengths (N,) when the fused kernel can take them, else None."""
    if kernels.fused(mask) is None:
        return None
    lengths = mask.sum(axis=1)                                      # (N,)
    if lengths.min() < 1 or not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
        return None
    return lengths


def masked_softmax(scores, bias):
    """Softmax over the last axis of scores (N, To, Ts), in place; padding gets weight exactly 0.

    bias from ``mask_bias``: an additive (N, 1, Ts) bias is added first (exp(-inf) = 0),
    lengths (N,) go to the fused kernel; None means no padding.
    """
    xp = get_array_module(scores)
    if bias is not None and bias.ndim == 1:                         # lengths (N,)
        k = kernels.fused(scores, bias)
        if k is not None:
            return k.masked_softmax(scores, bias)
        real = xp.arange(scores.shape[-1]) < bias[:, None]          # kernels off since mask_bias
        bias = xp.where(real, 0.0, -xp.inf).astype(scores.dtype)[:, None, :]
    if bias is not None:
        scores += bias
    scores -= scores.max(axis=-1, keepdims=True)
    xp.exp(scores, out=scores)                                      # exp(-inf) = 0 exactly
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def softmax_backward(a, da, out=None):
    """ds = a (da - sum(a da)) over the last axis: back through a softmax a (N, To, Ts) (into ``out``
    or a new array). Padding has a = 0 and so gets ds = 0."""
    xp = get_array_module(a)
    ds = xp.multiply(a, da, out=out)
    ds -= a * ds.sum(axis=-1, keepdims=True)
    return ds


def softmax_grad(a, da, out=None):
    """``softmax_backward`` on the fused kernel when it can run (numpy, kernels on), else the xp code."""
    k = kernels.fused(a, da)
    if k is not None:
        return k.masked_softmax_backward(a, da, np.empty_like(a) if out is None else out)
    return softmax_backward(a, da, out)


class AttentionWeights(Module):
    """hd (N, To, H), hs (N, Ts, H), mask (N, Ts) -> a (N, To, Ts), rows summing to 1, 0 at padding.

    The dot score h . s (the book's). Subclasses change the score through five methods:
    ``keys`` (what the scores read of hs), ``scores``, and its backward: ``pre_grad`` (what the two
    halves share, made once per backward), ``query_grad`` (to hd) and ``keys_grad`` (to hs and the
    score's parameters).
    ``apply``'s bias is ``mask_bias(mask, dtype)``: made once per batch, reused by every decoding step.
    """
    score = "dot"

    def __init__(self):
        super().__init__()
        self.cache = None
        self._last_keys = None                                      # (hs, keys) of the last cache-free call

    # -- the score ----------------------------------------------------------------
    def keys(self, hs):
        """hs (N, Ts, H) -> the keys the scores read (N, Ts, K): hs itself for the dot score."""
        return hs

    def scores(self, hd, keys, e=None, out=None):
        """hd (N, R, H), keys (N, Ts, K) -> scores (N, R, Ts) (into ``out`` when given). ``e``: the
        additive score's (N, R, Ts, A) buffer for its tanh, kept for the backward; unused here."""
        return get_array_module(hd).matmul(hd, keys.transpose(0, 2, 1), out=out)

    def pre_grad(self, ds, e, out=None):
        """What ``query_grad`` and ``keys_grad`` share of the scores' gradient ds (N, R, Ts), made once
        per backward: None here (the additive score's is (N, R, Ts, A), into ``out`` when given)."""
        return None

    def query_grad(self, ds, hd, keys, g=None, out=None):
        """ds (N, R, Ts) the scores' gradient, g its ``pre_grad`` -> the gradient reaching hd (N, R, H)."""
        return get_array_module(ds).matmul(ds, keys, out=out)

    def keys_grad(self, ds, hd, keys, e, g, hs):
        """ds (N, To, Ts) for all steps (g its ``pre_grad``) -> the gradient reaching hs (N, Ts, H)
        through the keys (in a buffer, until the next backward); writes the score's parameter gradients."""
        xp = get_array_module(ds)
        return xp.matmul(ds.transpose(0, 2, 1), hd, out=self.buffer("dkeys", hs.shape, hs.dtype, xp))

    def tanh_buffer(self, N, R, keys, name: str = "e"):
        """The (N, R, Ts, A) array the additive score keeps its tanh in during training (``name`` "g":
        its ``pre_grad``, for a backward step by step); None here."""
        return None

    # -- the same for every score ---------------------------------------------------
    def keys_for(self, hs):
        """``keys(hs)``, remembered for the last hs (by identity): steps over one batch make them once.
        (The dot score's keys are hs: nothing to make or keep.)"""
        if self.score == "dot":
            return hs
        last = self._last_keys
        if last is not None and last[0] is hs:
            return last[1]
        keys = self.keys(hs)
        self._last_keys = (hs, keys)
        return keys

    def apply(self, hd, hs, bias=None, keys=None):
        """Scores, then the masked softmax over Ts; bias from ``mask_bias`` or None, keys from ``keys(hs)``
        (made here, once per hs, when None). No cache."""
        keys = self.keys_for(hs) if keys is None else keys
        return masked_softmax(self.scores(hd, keys), bias)

    def forward(self, hd, hs, mask=None):
        keys = self.keys(hs)
        e = self.tanh_buffer(hd.shape[0], hd.shape[1], keys)
        a = masked_softmax(self.scores(hd, keys, e), None if mask is None else mask_bias(mask, hd.dtype))
        self.cache = (hd, hs, keys, e, a)
        return a

    def backward(self, da):
        """da (N, To, Ts) -> dhd (N, To, H), dhs (N, Ts, H). Masked positions get zero gradient."""
        hd, hs, keys, e, a = self.cache
        xp = get_array_module(a)
        ds = softmax_grad(a, da, self.buffer("ds", a.shape, a.dtype, xp))   # (N, To, Ts)
        g = self.pre_grad(ds, e)                                    # additive: (N, To, Ts, A), made once
        dhd = self.query_grad(ds, hd, keys, g, out=self.buffer("dhd", hd.shape, hd.dtype, xp))
        return dhd, self.keys_grad(ds, hd, keys, e, g, hs)


class GeneralWeights(AttentionWeights):
    """Luong's general score h . (s W), W (H, H): keys = hs W (N, Ts, H), then as the dot score."""
    score = "general"

    def __init__(self, hidden_size: int, rng: np.random.Generator, init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_param("W", init_weight(rng, hidden_size, hidden_size, init, dtype))

    def keys(self, hs):
        return hs @ self.params[0]                                  # (N, Ts, H)

    def keys_grad(self, ds, hd, keys, e, g, hs):
        xp = get_array_module(ds)
        W, = self.params
        dkeys = xp.matmul(ds.transpose(0, 2, 1), hd)                # (N, Ts, H)
        H = W.shape[0]
        xp.matmul(hs.reshape(-1, H).T, dkeys.reshape(-1, H), out=self.grads[0])
        return dkeys @ W.T                                          # (N, Ts, H)


class AdditiveWeights(AttentionWeights):
    """Bahdanau's additive score v . tanh(h Wq + s Wk + b): keys = hs Wk + b (N, Ts, A) through the
    Linear ``key``; Wq (H, A), v (A)."""
    score = "additive"

    def __init__(self, hidden_size: int, rng: np.random.Generator, init: str = "xavier", dtype=np.float32,
                 attention_size: int | None = None):
        super().__init__()
        A = attention_size or hidden_size
        self.add_param("Wq", init_weight(rng, hidden_size, A, init, dtype))
        self.add_param("v", init_weight(rng, A, 1, init, dtype).reshape(A))
        self.add_module("key", Linear(hidden_size, A, rng, init, dtype))

    def keys(self, hs):
        return self.key.apply(hs)                                   # (N, Ts, A)

    def tanh_buffer(self, N, R, keys, name: str = "e"):
        return self.buffer(name, (N, R, keys.shape[1], keys.shape[2]), keys.dtype, get_array_module(keys))

    def scores(self, hd, keys, e=None, out=None):
        xp = get_array_module(hd)
        Wq, v = self.params
        N, R, _ = hd.shape
        q = xp.matmul(hd, Wq, out=self.buffer("q", (N, R, Wq.shape[1]), hd.dtype, xp))   # (N, R, A)
        if e is None:
            e = xp.empty((N, R) + keys.shape[1:], dtype=hd.dtype)
        xp.add(q[:, :, None, :], keys[:, None, :, :], out=e)        # (N, R, Ts, A)
        xp.tanh(e, out=e)
        return xp.matmul(e, v, out=out)                             # (N, R, Ts)

    def pre_grad(self, ds, e, out=None):
        """The gradient of the tanh's argument, ds v (1 - e^2) (N, R, Ts, A), into ``out`` or a buffer."""
        xp = get_array_module(ds)
        g = xp.multiply(e, e, out=self.buffer("g", e.shape, e.dtype, xp) if out is None else out)
        xp.subtract(1, g, out=g)                                    # tanh' = 1 - e^2
        g *= ds[..., None]
        g *= self.params[1]
        return g

    def query_grad(self, ds, hd, keys, g=None, out=None):
        xp = get_array_module(ds)
        dq = g.sum(axis=2, out=self.buffer("dq", g.shape[:2] + g.shape[3:], g.dtype, xp))   # (N, R, A)
        return xp.matmul(dq, self.params[0].T, out=out)             # (N, R, H)

    def keys_grad(self, ds, hd, keys, e, g, hs):
        xp = get_array_module(ds)
        Wq, v = self.params
        dWq, dv = self.grads                                        # g: (N, To, Ts, A)
        H, A = Wq.shape
        xp.matmul(hd.reshape(-1, H).T, g.sum(axis=2).reshape(-1, A), out=dWq)
        xp.matmul(ds.reshape(-1), e.reshape(-1, A), out=dv)         # sum over N, To, Ts of ds e
        dkeys = g.sum(axis=1)                                       # (N, Ts, A)
        self.key.param_grads(hs, dkeys)
        return dkeys @ self.key.params[0].T                         # (N, Ts, H)


def make_weights(score: str, hidden_size: int, rng: np.random.Generator, init: str = "xavier",
                 dtype=np.float32) -> AttentionWeights:
    """The weights piece for a score named in ``SCORES``."""
    if score == "dot":
        return AttentionWeights()
    if score == "general":
        return GeneralWeights(hidden_size, rng, init, dtype)
    if score == "additive":
        return AdditiveWeights(hidden_size, rng, init, dtype)
    raise ValueError(f"attention must be one of {', '.join(SCORES)}, got {score!r}")


class WeightedSum(Module):
    """hs (N, Ts, H), a (N, To, Ts) -> context (N, To, H)."""

    def __init__(self):
        super().__init__()
        self.cache = None

    @staticmethod
    def apply(hs, a, out=None):
        """The context a @ hs (N, To, H) (into ``out`` when given). No cache."""
        return get_array_module(hs).matmul(a, hs, out=out)

    def forward(self, hs, a):
        """-> the context (N, To, H), in training mode in a buffer valid until the next forward."""
        self.cache = (hs, a)
        xp = get_array_module(hs)
        return self.apply(hs, a, out=self.buffer("context", a.shape[:2] + hs.shape[2:], hs.dtype, xp))

    def backward(self, dc):
        """dc (N, To, H) -> dhs (N, Ts, H), da (N, To, Ts), in buffers valid until the next backward
        (fresh arrays would page-fault in at every step)."""
        xp = get_array_module(dc)
        hs, a = self.cache
        dhs = xp.matmul(a.transpose(0, 2, 1), dc, out=self.buffer("dhs", hs.shape, hs.dtype, xp))
        return dhs, xp.matmul(dc, hs.transpose(0, 2, 1), out=self.buffer("da", a.shape, a.dtype, xp))


class Attention(Module):
    """Weights then weighted sum. ``self.weights`` keeps the last (N, To, Ts) for plotting.

    ``score``: one of ``SCORES`` (the dot score needs no parameters, so no rng).
    """

    def __init__(self, score: str = "dot", hidden_size: int | None = None, rng: np.random.Generator | None = None,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_module("weight", make_weights(score, hidden_size, rng, init, dtype))
        self.add_module("wsum", WeightedSum())
        self.weights = None
        self._steps = None

    def apply(self, hd, hs, bias=None, keys=None):
        """hd (N, To, H), hs (N, Ts, H), bias from ``mask_bias`` or None, keys from ``weight.keys(hs)``
        (made once per hs when None) -> context (N, To, H), a (N, To, Ts).
        No cache, no ``weights`` kept: for decoding step by step (To = R queries per source row:
        a beam's k hypotheses, or 1)."""
        a = self.weight.apply(hd, hs, bias, keys)
        return self.wsum.apply(hs, a), a

    def forward(self, hd, hs, mask=None):
        """-> context (N, To, H)."""
        with part("attention"):
            self.weights = self.weight.forward(hd, hs, mask)
            return self.wsum.forward(hs, self.weights)

    def backward(self, dcontext):
        """-> dhd (N, To, H), dhs (N, Ts, H)."""
        with part("attention"):
            dhs1, da = self.wsum.backward(dcontext)
            dhd, dhs2 = self.weight.backward(da)
            dhs1 += dhs2
            return dhd, dhs1

    # -- one decoder step at a time, with caches (input feeding) --------------------------------
    def begin_steps(self, hs, mask, To: int):
        """Open a training-mode pass of To steps over hs (N, Ts, H), mask (N, Ts): keys once, and
        time-major buffers for each step's query, weights, context and their gradients."""
        xp = get_array_module(hs)
        N, Ts, H = hs.shape
        dt = hs.dtype
        keys = self.weight.keys(hs)                                 # (N, Ts, K)
        e = self.weight.tanh_buffer(To, N, keys)                    # (To, N, Ts, A) for the additive score
        buf = {name: self.buffer(name, shape, dt, xp) for name, shape in (
            ("Q", (To, N, H)), ("W", (To, N, Ts)), ("C", (To, N, H)), ("dC", (To, N, H)),
            ("dS", (To, N, Ts)), ("da", (N, 1, Ts)), ("dq", (N, 1, H)))}
        bias = None if mask is None else mask_bias(mask, dt)
        self._steps = (hs, keys, e, bias, buf)
        self.weights = buf["W"].transpose(1, 0, 2)                  # (N, To, Ts), filled step by step

    def forward_step(self, t: int, h):
        """Step t: the decoder state h (N, H) -> the context (N, H), a view valid until the next pass."""
        hs, keys, e, bias, buf = self._steps
        Q, W, C = buf["Q"], buf["W"], buf["C"]
        Q[t] = h                                                    # the query, kept for the backward
        a = self.weight.scores(Q[t][:, None], keys, None if e is None else e[t][:, None], out=W[t][:, None])
        masked_softmax(a, bias)                                     # (N, 1, Ts) in place
        self.wsum.apply(hs, a, out=C[t][:, None])                   # (N, 1, H)
        return C[t]

    def backward_step(self, t: int, dcontext):
        """Back through step t: dcontext (N, H) -> the gradient reaching the query h_t (N, H), in a
        buffer overwritten by the next call. The gradients reaching hs and the parameters wait for
        ``end_backward_steps``."""
        xp = get_array_module(dcontext)
        hs, keys, e, bias, buf = self._steps
        G = self._pre_grads()
        buf["dC"][t] = dcontext
        da = xp.matmul(buf["dC"][t][:, None], hs.transpose(0, 2, 1), out=buf["da"])   # (N, 1, Ts)
        ds = softmax_grad(buf["W"][t][:, None], da, buf["dS"][t][:, None])             # (N, 1, Ts)
        g = None if e is None else self.weight.pre_grad(ds, e[t][:, None], out=G[t][:, None])   # kept in G
        dq = self.weight.query_grad(ds, buf["Q"][t][:, None], keys, g, out=buf["dq"])
        return dq[:, 0]

    def _pre_grads(self):
        """The (To, N, Ts, A) buffer of the additive score's ``pre_grad`` of every step, which
        ``backward_step`` fills and ``end_backward_steps`` reads; None for the other scores."""
        _, keys, e, _, _ = self._steps
        return None if e is None else self.weight.tanh_buffer(e.shape[0], e.shape[1], keys, "g")

    def end_backward_steps(self):
        """-> dhs (N, Ts, H) from all steps at once; writes the score's parameter gradients."""
        hs, keys, e, bias, buf = self._steps
        xp = get_array_module(hs)
        a, dctx = buf["W"].transpose(1, 0, 2), buf["dC"].transpose(1, 0, 2)             # (N, To, Ts), (N, To, H)
        dhs = xp.matmul(a.transpose(0, 2, 1), dctx)                                       # through the weighted sum
        e, G = (None, None) if e is None else (e.transpose(1, 0, 2, 3), self._pre_grads().transpose(1, 0, 2, 3))
        dhs += self.weight.keys_grad(buf["dS"].transpose(1, 0, 2), buf["Q"].transpose(1, 0, 2), keys, e, G, hs)
        return dhs
