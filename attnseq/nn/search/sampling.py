"""Sampling over a step function: each row draws its next token instead of taking the most likely one.

The distribution a token is drawn from is the step's, p(y | y_<t, x), reshaped as the NMT toolkits do:
divided by a ``temperature`` T in log space (p^(1/T), renormalised: T < 1 sharpens it, T -> 0 is greedy),
cut to the ``top_k`` most likely tokens, and to the smallest set of most likely tokens whose probability
reaches ``top_p`` (nucleus sampling). Every row draws at once, with one uniform number per row from a
numpy ``Generator`` (the inverse of each row's cumulative distribution): no loop over rows, and the same
generator state gives the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy


@dataclass(frozen=True)
class Sampling:
    """How each token is drawn: temperature T > 0, top_k (0: every token), top_p in (0, 1] (1: every token)."""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number (near 0: greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or a positive integer, got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1: off), got {self.top_p!r}")


def sampling_log_weights(logp: np.ndarray, sampling: Sampling) -> np.ndarray:
    """logp (N, V) log-probabilities -> (N, V) float64 log-weights to draw from (unnormalised, max 0 per row):
    the temperature applied, and -inf outside the top k and outside the nucleus of mass top_p. Ties with
    the k-th largest stay in, as do ties with the nucleus's last token; the nucleus always keeps the most
    likely token."""
    z = np.asarray(logp, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)                            # shifted first, so T -> 0 cannot overflow
    if sampling.temperature != 1:
        z /= sampling.temperature
    V = z.shape[1]
    if 0 < sampling.top_k < V:
        kth = -np.partition(-z, sampling.top_k - 1, axis=1)[:, sampling.top_k - 1:sampling.top_k]   # (N, 1)
        z = np.where(z >= kth, z, -np.inf)
    if sampling.top_p < 1:
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        z = np.where(p >= nucleus_floor(p, sampling.top_p), z, -np.inf)
    return z


def nucleus_floor(p: np.ndarray, top_p: float, m: int = 64) -> np.ndarray:
    """p (N, V) probabilities -> (N, 1): the probability of the last token the nucleus needs (the most likely
    tokens, in order, until their mass reaches top_p). Only each row's m largest are sorted, unless they do
    not reach top_p; then the whole row."""
    N, V = p.shape
    m = min(m, V)
    top = -np.sort(-np.partition(p, V - m, axis=1)[:, V - m:], axis=1)          # (N, m), largest first
    floor = _floor(top, top_p)
    short = np.flatnonzero(np.cumsum(top, axis=1)[:, -1] < top_p)               # flat rows: sort them whole
    if short.size:
        floor[short] = _floor(-np.sort(-p[short], axis=1), top_p)
    return floor[:, None]


def _floor(sorted_p: np.ndarray, top_p: float) -> np.ndarray:
    """Rows of probabilities, largest first -> each row's value at the first place its cumulative mass
    reaches top_p (its last value if none does)."""
    reached = np.cumsum(sorted_p, axis=1) >= top_p
    last = np.where(reached.any(axis=1), reached.argmax(axis=1), sorted_p.shape[1] - 1)
    return sorted_p[np.arange(len(sorted_p)), last]


def draw(log_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row of log_weights (N, V) (unnormalised, max 0 per row), with one uniform number per
    row from ``rng`` -> (N,) int64: the first token whose cumulative weight exceeds it."""
    cdf = np.cumsum(np.exp(log_weights), axis=1)                        # (N, V)
    u = rng.random(len(cdf)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), cdf.shape[1] - 1).astype(np.int64)


def sample_search(step_fn, state, N: int, Ts: int, bos_id: int, eos_id: int, max_len: int,
                  rng: np.random.Generator, sampling: Sampling = Sampling(), pad_id: int = 0, xp=np):
    """Batched sampling over any step function, shaped as ``greedy_search``.

    step_fn(tokens (N,), state) -> log-probabilities (N, V), new state, attention (N, Ts).
    -> ids (N, L) int64 with ``pad_id`` after each row's eos, attention (N, L, Ts) (zeros after eos), both
    ``xp`` arrays, and token_logp (N, L) float64 numpy: each drawn token's log-probability under the step's
    distribution (before the temperature, top-k and top-p), 0 after eos.
    Stops when every row has emitted eos or after ``max_len`` tokens.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    ids = xp.full((N, max_len), pad_id, dtype=np.int64)
    token_logp = np.zeros((N, max_len))
    weights = None
    tokens = xp.full(N, bos_id, dtype=np.int64)
    done = np.zeros(N, dtype=bool)
    rows = np.arange(N)
    for t in range(max_len):
        logp, state, a = step_fn(tokens, state)
        if weights is None:
            weights = xp.zeros((N, max_len, Ts), dtype=a.dtype)
        logp = to_numpy(logp).astype(np.float64)
        chosen = draw(sampling_log_weights(logp, sampling), rng)        # (N,)
        token_logp[:, t] = np.where(done, 0.0, logp[rows, chosen])
        tokens = xp.asarray(chosen)
        ids[:, t] = xp.where(xp.asarray(done), pad_id, tokens)
        weights[:, t] = a * xp.asarray(~done)[:, None]
        done |= chosen == eos_id
        if done.all():
            return ids[:, :t + 1], weights[:, :t + 1], token_logp[:, :t + 1]
    return ids, weights, token_logp
