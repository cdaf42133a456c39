"""Prefixes and guards: a step function wrapped so that its log-probabilities are changed before any search
picks from them, whatever the search (greedy, beam, sampling) and whatever the engine or ensemble under it.

The wrapper keeps the tokens each row has been fed as one more state array, (N, t + 1) = [bos, y_1 .. y_t],
so a beam's reordering of the state reorders it too. At each step, on the log-probabilities of y_{t+1}:

- ``repetition_penalty`` R: every token already emitted has its log-probability multiplied by R (> 1:
  less likely; log-probabilities are <= 0), then the row is renormalised (CTRL's penalty, on log-probabilities
  so that an engine which gives only those, like an ONNX graph, gets the same);
- ``no_repeat_ngram`` n: a token that would complete an n-gram the row has already emitted gets -inf;
- ``min_output_len`` m: eos gets -inf while fewer than m tokens have been emitted;
- a target ``prefix``: while t is inside a row's prefix, every token but the prefix's next one gets -inf
  (that one keeps the model's own log-probability, so scores stay the model's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from .scores import log_softmax


@dataclass(frozen=True)
class Guards:
    """Against the loops small models fall into; each off by default."""
    min_output_len: int = 0           # tokens before eos may come
    no_repeat_ngram: int = 0          # n: no n-gram twice in an output (0: off)
    repetition_penalty: float = 1.0   # R > 0 (1: off)

    def __post_init__(self):
        for name in ("min_output_len", "no_repeat_ngram"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be 0 (off) or a positive integer, got {v!r}")
        r = self.repetition_penalty
        if not (isinstance(r, (int, float)) and r > 0 and np.isfinite(r)):
            raise ValueError(f"repetition_penalty must be a positive number (1: off), got {r!r}")

    @property
    def active(self) -> bool:
        return self.min_output_len > 0 or self.no_repeat_ngram > 0 or self.repetition_penalty != 1


def padded_prefixes(prefixes: list, k: int = 1):
    """Per source row a list of target ids (or None) -> (N*k, P) int64, each row repeated k times (the k
    rows of a beam or of k samples), -1 past its prefix; None when no row has a prefix."""
    P = max((len(p) for p in prefixes if p is not None), default=0)
    if P == 0:
        return None
    out = np.full((len(prefixes), P), -1, dtype=np.int64)
    for n, p in enumerate(prefixes):
        if p:
            out[n, :len(p)] = p
    return np.repeat(out, k, axis=0)


def constrain(step_fn, state, N: int, eos_id: int, guards: Guards = Guards(), prefix=None, xp=np):
    """``step_fn`` (giving log-probabilities) with ``guards`` and a ``prefix`` (N, P) from ``padded_prefixes``
    (or None) -> (step function, state) to search from instead. Nothing to do: both come back as they are."""
    if not guards.active and prefix is None:
        return step_fn, state
    n_state = len(state)
    prefix = None if prefix is None else xp.asarray(prefix)

    def step(tokens, st):
        fed = xp.concatenate([st[n_state], xp.asarray(tokens, dtype=np.int64).reshape(-1, 1)], axis=1)
        logp, inner, a = step_fn(tokens, tuple(st[:n_state]))
        return process(logp, fed[:, 1:], eos_id, guards, prefix), (*inner, fed), a
    return step, (*state, xp.zeros((N, 0), dtype=np.int64))


def process(logp, emitted, eos_id: int, guards: Guards, prefix=None):
    """logp (N, V) of the next token, after a row's ``emitted`` tokens (N, t) -> a new (N, V) with the guards
    and the prefix applied (see the module docstring)."""
    xp = get_array_module(logp)
    raw, logp = logp, logp.copy()
    N, t = emitted.shape
    rows = xp.arange(N)
    if guards.repetition_penalty != 1 and t:
        seen = xp.zeros(logp.shape, dtype=bool)
        seen[rows[:, None], emitted] = True
        logp = log_softmax(xp.where(seen, logp * guards.repetition_penalty, logp))
    n = guards.no_repeat_ngram
    if n and t >= n:
        W = t - n + 1                                               # the n-grams emitted so far
        grams = xp.stack([emitted[:, j:j + W] for j in range(n)], axis=2)          # (N, W, n)
        hit = (grams[:, :, :n - 1] == emitted[:, W:][:, None, :]).all(axis=2)   # its first n-1 are the last n-1
        r, w = xp.nonzero(hit)
        logp[r, grams[r, w, n - 1]] = -xp.inf
    if t < guards.min_output_len:
        logp[:, eos_id] = -xp.inf
    if prefix is not None and t < prefix.shape[1]:
        want = prefix[:, t]                                         # (N,), -1 past a row's prefix
        on = want >= 0
        r = xp.nonzero(on)[0]
        forced = xp.full_like(logp, -xp.inf)
        forced[r, want[r]] = raw[r, want[r]]
        logp = xp.where(on[:, None], forced, logp)
    return logp
