"""Argument checks that turn bad input into one clear ``ValueError``.

They run on host (numpy) arrays before anything reaches a device, so they cost
no GPU synchronisation; cupy inputs get the shape and dtype checks only.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module


def check_ids(name: str, ids, vocab_size: int, ndim: int = 2):
    """Token ids must be an integer array of ``ndim`` dims with values in [0, vocab_size)."""
    if not hasattr(ids, "dtype") or not hasattr(ids, "shape"):
        raise ValueError(f"{name}: expected an integer array of token ids, got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: token ids must be integers, got dtype {ids.dtype}")
    if ids.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims (N, T), got shape {tuple(ids.shape)}")
    if ids.size == 0 or 0 in ids.shape:
        raise ValueError(f"{name}: empty batch, shape {tuple(ids.shape)}")
    if get_array_module(ids) is np:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: token id {bad} is out of range for a vocabulary of {vocab_size}")
    return ids


def check_mask(name: str, mask):
    """A (N, T) boolean mask: every row needs at least one True, and it must be a prefix (right padding)."""
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"{name}: expected a bool (N, T) mask, got {mask.dtype} {tuple(mask.shape)}")
    if get_array_module(mask) is np:
        empty = np.flatnonzero(~mask.any(axis=1))
        if empty.size:
            raise ValueError(f"{name}: row {int(empty[0])} has no valid (non-padding) position")
        lengths = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
            raise ValueError(f"{name}: padding must come after the real tokens (right padding)")
    return mask
