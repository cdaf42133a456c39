"""Dot-product attention in two small pieces, as the book teaches.

``AttentionWeights``: scores of each decoder state against every encoder state,
then a softmax over source positions with padding masked out (weight exactly 0).
``WeightedSum``: the context vector, the weighted sum of the encoder states.
Both run over all decoder steps at once with batched matmul.

Each piece's ``apply`` is its computation without a cache: ``forward`` (teacher
forcing, all To steps) and the decoder's ``step`` (one step, To = 1) both use it.

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
from .module import Module


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


def softmax_backward(a, da):
    """ds = a (da - sum(a da)) over the last axis: back through a softmax a (N, To, Ts) (new array).

    Padding has a = 0 and so gets ds = 0.
    """
    ds = a * da
    ds -= a * ds.sum(axis=-1, keepdims=True)
    return ds


class AttentionWeights(Module):
    """hd (N, To, H), hs (N, Ts, H), mask (N, Ts) -> a (N, To, Ts), rows summing to 1, 0 at padding.

    ``apply``'s bias is ``mask_bias(mask, dtype)``: made once per batch, reused by every decoding step.
    """

    def __init__(self):
        super().__init__()
        self.cache = None

    @staticmethod
    def apply(hd, hs, bias=None):
        """Scores hd . hs, then the masked softmax over Ts; bias from ``mask_bias`` or None. No cache."""
        scores = get_array_module(hd).matmul(hd, hs.transpose(0, 2, 1))   # (N, To, Ts)
        return masked_softmax(scores, bias)

    def forward(self, hd, hs, mask=None):
        a = self.apply(hd, hs, None if mask is None else mask_bias(mask, hd.dtype))
        self.cache = (hd, hs, a)
        return a

    def backward(self, da):
        """da (N, To, Ts) -> dhd (N, To, H), dhs (N, Ts, H). Masked positions get zero gradient."""
        xp = get_array_module(da)
        hd, hs, a = self.cache
        k = kernels.fused(a, da)
        if k is not None:
            ds = k.masked_softmax_backward(a, da, self.buffer("ds", a.shape, a.dtype, np))   # (N, To, Ts)
        else:
            ds = softmax_backward(a, da)
        dhd = xp.matmul(ds, hs)                                     # (N, To, H)
        dhs = xp.matmul(ds.transpose(0, 2, 1), hd)                  # (N, Ts, H)
        return dhd, dhs


class WeightedSum(Module):
    """hs (N, Ts, H), a (N, To, Ts) -> context (N, To, H)."""

    def __init__(self):
        super().__init__()
        self.cache = None

    @staticmethod
    def apply(hs, a):
        """The context a @ hs (N, To, H). No cache."""
        return get_array_module(hs).matmul(a, hs)

    def forward(self, hs, a):
        self.cache = (hs, a)
        return self.apply(hs, a)

    def backward(self, dc):
        """dc (N, To, H) -> dhs (N, Ts, H), da (N, To, Ts)."""
        xp = get_array_module(dc)
        hs, a = self.cache
        return xp.matmul(a.transpose(0, 2, 1), dc), xp.matmul(dc, hs.transpose(0, 2, 1))


class Attention(Module):
    """Weights then weighted sum. ``self.weights`` keeps the last (N, To, Ts) for plotting."""

    def __init__(self):
        super().__init__()
        self.add_module("weight", AttentionWeights())
        self.add_module("wsum", WeightedSum())
        self.weights = None

    def apply(self, hd, hs, bias=None):
        """hd (N, To, H), hs (N, Ts, H), bias from ``mask_bias`` or None -> context (N, To, H), a (N, To, Ts).
        No cache, no ``weights`` kept: for decoding step by step."""
        a = self.weight.apply(hd, hs, bias)
        return self.wsum.apply(hs, a), a

    def forward(self, hd, hs, mask=None):
        """-> context (N, To, H)."""
        self.weights = self.weight.forward(hd, hs, mask)
        return self.wsum.forward(hs, self.weights)

    def backward(self, dcontext):
        """-> dhd (N, To, H), dhs (N, Ts, H)."""
        dhs1, da = self.wsum.backward(dcontext)
        dhd, dhs2 = self.weight.backward(da)
        dhs1 += dhs2
        return dhd, dhs1
