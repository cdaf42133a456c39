"""Layers with explicit ``forward``/``backward``: Embedding, Linear, SoftmaxCrossEntropy, TiedOutput, Dropout.

Shapes: N batch, T time, D input (embedding) size, H hidden size, V vocabulary.
Every layer keeps ``params`` and ``grads`` as parallel lists (see ``Module``),
caches in ``forward`` what ``backward`` needs, and writes gradients in place.
The array module (numpy or cupy) always comes from the arrays. The LSTM lives
in ``lstm.py``, attention in ``attention.py``. On numpy arrays with the kernels on
(``kernels.fused``) the embedding gradient and the loss run compiled twins of the
code here, in one pass each.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .backend import get_array_module, scatter_add
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


def project_fixed(xp, X, A, fixed, Wx, b):
    """A recurrent layer's inputs known before its time loop, projected once for every step.

    X (T, N, D) the step inputs, A (T, N, G) their projections, fixed (T, N, Df) or None: the
    first Df features of every step's input. Writes X[:, :, :Df] = fixed and A = fixed Wx[:Df] + b
    (A = b without ``fixed``); the rest of each step's input is added to A inside the loop.
    """
    T, N, D = X.shape
    if fixed is None:
        A[...] = b
        return
    Df = fixed.shape[2]
    X[:, :, :Df] = fixed
    Xf = X.reshape(T * N, D) if Df == D else fixed.reshape(T * N, Df)
    xp.matmul(Xf, Wx[:Df], out=A.reshape(T * N, A.shape[2]))
    A += b


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
        k = kernels.fused(dout, dW, self.ids)
        if k is not None:
            k.embedding_grad(self.ids, dout, dW)                    # any layout of dout, no copy
            return
        dW.fill(0)
        scatter_add(dW, self.ids.ravel(), dout.reshape(-1, dW.shape[1]))


class Linear(Module):
    """Affine map over time: x (N, T, D) -> y (N, T, O). W (D, O), b (O).

    ``apply`` is the same map without the cache, for any leading shape (decoding uses (N, D)).
    """

    def __init__(self, in_size: int, out_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_param("W", init_weight(rng, in_size, out_size, init, dtype))
        self.add_param("b", np.zeros(out_size, dtype=dtype))
        self.x2 = None

    def apply(self, x):
        """x (..., D) -> x @ W + b (..., O); caches nothing."""
        W, b = self.params
        y = x.reshape(-1, x.shape[-1]) @ W                          # (N*T, O)
        y += b
        return y.reshape(*x.shape[:-1], -1)

    def forward(self, x):
        self.x2 = x.reshape(-1, x.shape[-1])                        # (N*T, D) for backward
        return self.apply(x)

    def backward(self, dy):
        """dy (..., O) -> dx (..., D), in training mode in a buffer valid until the next backward."""
        W, b = self.params
        dy2 = self.param_grads(self.x2, dy)
        xp = get_array_module(dy)
        dx = xp.matmul(dy2, W.T, out=self.buffer("dx", (dy2.shape[0], W.shape[0]), dy2.dtype, xp))
        return dx.reshape(*dy.shape[:-1], -1)

    def param_grads(self, x, dy):
        """Write dW = x^T dy and db = sum dy for inputs x (..., D) and output gradients dy (..., O)
        (any leading shape, the same number of rows) -> dy as (rows, O)."""
        dW, db = self.grads
        dy2 = dy.reshape(-1, dy.shape[-1])
        get_array_module(dy).matmul(x.reshape(-1, x.shape[-1]).T, dy2, out=dW)
        dy2.sum(axis=0, out=db)
        return dy2


class SoftmaxCrossEntropy(Module):
    """Mean cross-entropy over real tokens: logits (N, T, V), targets (N, T) -> scalar.

    Positions whose target equals ``ignore_index`` (padding) count neither in the
    sum nor in the mean. With ``smoothing`` eps > 0 (label smoothing) the target
    distribution is (1 - eps) one-hot + eps / V over the whole vocabulary, as PyTorch's
    ``label_smoothing``: a row's loss is (1 - eps) (-log p_y) + eps mean_k (-log p_k)
    and its gradient softmax - target. All arithmetic stays in the logits' dtype (the
    fused kernel sums the loss in float64). On the kernel path the forward pass also
    writes the gradient of the mean, dlogits (N*T, V), which ``backward`` hands back.
    ``forward(..., need_grad=False)`` computes the loss alone (evaluation): no softmax or
    dlogits is kept, and no backward can follow.
    """

    def __init__(self, ignore_index: int = 0, smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}")
        self.ignore_index = ignore_index
        self.smoothing = float(smoothing)
        self.cache = None
        self.dlogits = None                                         # the kernel path's (dlogits, logits shape)

    def forward(self, logits, targets, need_grad: bool = True):
        self.cache = self.dlogits = None
        k = kernels.fused(logits, targets)
        if k is not None:
            return self._forward_fused(k, logits, targets, need_grad)
        xp = get_array_module(logits)
        V = logits.shape[-1]
        eps = self.smoothing
        z = logits.reshape(-1, V)
        t = targets.ravel()
        m = z.max(axis=1, keepdims=True)
        p = z - m                                                   # (N*T, V)
        xp.exp(p, out=p)
        s = p.sum(axis=1, keepdims=True)
        rows = xp.arange(t.size)
        log_s = xp.log(s[:, 0])
        nll = log_s - (z[rows, t] - m[:, 0])                        # -log softmax at the target
        if eps > 0:                                                 # mean over k of -log softmax
            nll = (1 - eps) * nll + eps * (log_s - (z.mean(axis=1) - m[:, 0]))
        mask = (t != self.ignore_index).astype(logits.dtype)        # (N*T,)
        count = xp.maximum(mask.sum(), 1)
        loss = (nll * mask).sum() / count
        if need_grad:
            p /= s
            self.cache = (p, t, mask, count, logits.shape)
        return loss

    def _forward_fused(self, k, logits, targets, need_grad: bool):
        """Loss and dlogits (N*T, V) in one pass over the logits (the loss alone without ``need_grad``);
        the cache holds dlogits only."""
        V = logits.shape[-1]
        z = logits.reshape(-1, V)                                   # (N*T, V)
        if not need_grad:
            total, count = k.cross_entropy_loss(z, targets.reshape(-1), self.ignore_index, self.smoothing)
            return logits.dtype.type(total / max(count, 1))
        dz = self.buffer("dlogits", z.shape, z.dtype, np)
        total, count = k.softmax_cross_entropy(z, targets.reshape(-1), self.ignore_index, dz,
                                               smoothing=self.smoothing)
        self.dlogits = (dz, logits.shape)
        return logits.dtype.type(total / max(count, 1))

    def backward(self, dout=1.0):
        if self.dlogits is None and self.cache is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward needs a forward with need_grad=True first")
        if self.dlogits is not None:                                # the kernel wrote them in forward
            (dz, shape), self.dlogits = self.dlogits, None
            if dout != 1.0:
                dz *= dz.dtype.type(dout)
            return dz.reshape(shape)
        p, t, mask, count, shape = self.cache
        xp = get_array_module(p)
        eps = self.smoothing
        dz = p                                                      # reuse: softmax is not needed again
        dz[xp.arange(t.size), t] -= 1 - eps
        if eps > 0:
            dz -= eps / shape[-1]                                   # the uniform part of the target
        dz *= (mask * (dout / count))[:, None]
        self.cache = None
        return dz.reshape(shape)


class TiedOutput(Module):
    """Logits through the decoder's own input embedding: x (N, T, I) -> (x Wp + bp) E^T + b (N, T, V).

    E (V, D) is the embedding, passed in on every call and not a parameter here, so a
    checkpoint holds it once (``decoder.embed.W``). ``proj`` (Linear I -> D) maps what the
    output layer reads to the embedding size; b (V). ``backward`` leaves E's gradient from
    the output side in ``dE`` (V, D), for the embedding's owner to add to its own.
    """

    def __init__(self, in_size: int, dim: int, vocab_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_module("proj", Linear(in_size, dim, rng, init, dtype))
        self.add_param("b", np.zeros(vocab_size, dtype=dtype))
        self.cache = None
        self.dE = None

    def apply(self, x, E):
        """x (..., I), E (V, D) -> logits (..., V); caches nothing."""
        return self._logits(self.proj.apply(x), E)

    def _logits(self, p, E):
        y = p.reshape(-1, p.shape[-1]) @ E.T                        # (rows, V)
        y += self.params[0]
        return y.reshape(*p.shape[:-1], -1)

    def forward(self, x, E):
        p = self.proj.forward(x)                                    # (N, T, D)
        self.cache = (p.reshape(-1, p.shape[-1]), E)
        return self._logits(p, E)

    def backward(self, dy):
        """dy (N, T, V) -> dx (N, T, I); writes db and proj's gradients, leaves dE (V, D)."""
        p2, E = self.cache
        xp = get_array_module(dy)
        dy2 = dy.reshape(-1, dy.shape[-1])                          # (rows, V)
        dy2.sum(axis=0, out=self.grads[0])
        self.dE = self.buffer("dE", E.shape, E.dtype, xp)
        xp.matmul(dy2.T, p2, out=self.dE)                           # (V, D)
        dp = (dy2 @ E).reshape(*dy.shape[:-1], -1)                  # (N, T, D)
        return self.proj.backward(dp)


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
        mask = self.draw(x.shape, x.dtype, get_array_module(x))
        return x if mask is None else x * mask

    def draw(self, shape, dtype, xp):
        """The mask (kept units 1/(1-p), dropped 0) for an array of ``shape``, kept for ``backward``;
        None in eval mode or with p = 0. A time loop draws its (T, N, H) mask once and applies step t's slice."""
        if not self.training or self.p == 0.0:
            self.mask = None
            return None
        dtype = np.dtype(dtype)
        keep = self.rng.random(shape, dtype=np.float32) >= self.p          # float32: no float64 draw
        self.mask = xp.asarray(keep, dtype=dtype) / dtype.type(1.0 - self.p)
        return self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask
