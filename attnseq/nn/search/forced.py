"""Forced decoding: a given output fed to a step function token by token, each token's log-probability read
off. What ``attnseq score`` scores pairs with, and what gives a candidate's token probabilities, for any engine
and for an ensemble alike."""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy


def forced_search(step_fn, state, tgt, Ts: int, xp=np):
    """tgt (N, L + 1) = [bos, y_1 .. y_L] ids, right-padded after each row's end.

    step_fn(tokens (N,), state) -> log-probabilities (N, V), new state, attention (N, Ts).
    -> token_logp (N, L) float64 numpy, log p(y_t | y_<t, x), and the attention (N, L, Ts) numpy of the
    step that predicts each y_t (teacher forced: the attention over the given output). Entries past a row's
    length are its padding's.
    """
    tgt = np.asarray(tgt, dtype=np.int64)
    N, L = tgt.shape[0], tgt.shape[1] - 1
    token_logp = np.zeros((N, L))
    weights = np.zeros((N, L, Ts))
    rows = np.arange(N)
    for t in range(L):
        logp, state, a = step_fn(xp.asarray(tgt[:, t]), state)
        token_logp[:, t] = to_numpy(logp)[rows, tgt[:, t + 1]]
        weights[:, t] = to_numpy(a)
    return token_logp, weights
