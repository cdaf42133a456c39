"""Greedy search over a step function: each row takes its most likely next token."""
from __future__ import annotations

import numpy as np


def greedy_search(step_fn, state, N: int, Ts: int, bos_id: int, eos_id: int, max_len: int, pad_id: int = 0,
                  xp=np):
    """Batched greedy decoding over any step function.

    step_fn(tokens (N,), state) -> scores (N, V) (logits or log-probabilities: the argmax is taken),
    new state, attention (N, Ts). -> ids (N, L) int64 with ``pad_id`` after each row's eos, and the
    attention weights (N, L, Ts) of each emitted token (zeros after eos), as ``xp`` arrays.
    Stops when every row has emitted eos (checked every 4 steps) or after ``max_len`` tokens.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    ids = xp.full((N, max_len), pad_id, dtype=np.int64)
    weights = None                                                  # (N, max_len, Ts), once a's dtype is known
    tokens = xp.full(N, bos_id, dtype=np.int64)
    done = xp.zeros(N, dtype=bool)
    for t in range(max_len):
        scores, state, a = step_fn(tokens, state)
        if weights is None:
            weights = xp.zeros((N, max_len, Ts), dtype=a.dtype)
        tokens = scores.argmax(axis=1)                              # (N,)
        ids[:, t] = xp.where(done, pad_id, tokens)
        weights[:, t] = a * ~done[:, None]                          # (N, Ts)
        done |= tokens == eos_id
        if t % 4 == 3 and bool(done.all()):                         # sync with a GPU only now and then
            return ids[:, :t + 1], weights[:, :t + 1]
    return ids, weights


def output_length(ids: np.ndarray, eos_id: int) -> int:
    """Tokens up to and including the first eos in one row of ids (all of them when there is none)."""
    end = np.flatnonzero(ids == eos_id)
    return int(end[0]) + 1 if end.size else len(ids)
