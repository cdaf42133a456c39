"""Log-probabilities from scores, and the ensemble's combination of several models' log-probabilities."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module

ENSEMBLE_MODES = ("linear", "log_linear")


def log_softmax(z):
    xp = get_array_module(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def combine_log_probs(logps: list, weights, mode: str = "linear"):
    """Members' log-probabilities, each (N, V), weighted by ``weights`` (summing to 1) -> (N, V).

    ``linear`` (Sockeye's default): log sum_i w_i p_i, the mixture, itself a distribution.
    ``log_linear``: sum_i w_i log p_i, a product of experts, not renormalised (as Sockeye), so one
    model's log-probabilities come back exactly from two copies of it weighted 1/2 each.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    xp = get_array_module(logps[0])
    dtype = np.result_type(*(lp.dtype for lp in logps))
    if mode == "log_linear":
        out = xp.zeros(logps[0].shape, dtype=dtype)
        for w, lp in zip(weights, logps):
            out += float(w) * lp
        return out
    z = xp.stack([lp.astype(dtype, copy=False) + float(np.log(w)) for w, lp in zip(weights, logps)])  # (M, N, V)
    top = z.max(axis=0)
    top = xp.where(xp.isfinite(top), top, 0)                    # a token every member rules out stays -inf
    return top + xp.log(xp.exp(z - top).sum(axis=0))
