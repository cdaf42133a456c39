"""Beam search over a step function.

Beam search keeps ``k`` alive hypotheses per sentence. Each step scores all
k * V extensions, takes the best 2k, moves those ending in eos that rank in the
top k to the sentence's finished list (a finished hypothesis is never extended),
and keeps the best k that do not end in eos alive.

Scores are log-probabilities divided by a GNMT length penalty
lp(L) = ((5 + L) / 6) ** alpha, with L the number of emitted tokens including
eos; alpha = 0 means raw log-probability. A sentence stops when it has n_best
finished hypotheses and the worst of them scores at least as well as any alive
hypothesis could ever reach: log-probabilities only fall as a hypothesis grows,
so an alive one's best possible score is its log-probability over lp(max_len)
(alpha >= 0). At ``max_len`` alive hypotheses are finished as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy


@dataclass
class Hypothesis:
    ids: list           # emitted token ids, ending in eos unless cut at max_len
    score: float | None     # log-probability / length penalty (None: greedy, which keeps no score)
    logprob: float | None
    weights: np.ndarray  # (len(ids), Ts) attention weights


MAX_ALPHA = 10.0   # past it the penalty ranks nothing better, and a huge alpha overflows it (1e300, inf)


def check_alpha(alpha) -> None:
    """A length penalty's alpha: a number in [0, MAX_ALPHA], else a ValueError of one line."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 <= alpha <= MAX_ALPHA:
        raise ValueError(f"length penalty alpha must be a number from 0 to {MAX_ALPHA:g}, got {alpha!r}")


def length_penalty(L, alpha: float):
    return ((5.0 + L) / 6.0) ** alpha


def beam_search_core(step_fn, state, N: int, Ts: int, bos_id: int, eos_id: int, beam_size: int = 5,
                     alpha: float = 0.0, max_len: int = 50, n_best: int = 1, xp=np) -> list[list[Hypothesis]]:
    """Beam search over any step function.

    step_fn(tokens (N*k,), state) -> logp (N*k, V) log-probabilities, new state, attention (N*k, Ts).
    ``state`` is a tuple of arrays whose first axis is N*k (rows of a sentence are adjacent).
    Returns, per sentence, its ``n_best`` hypotheses, best first.
    """
    k = beam_size
    if k < 1 or n_best < 1 or n_best > k:
        raise ValueError(f"need 1 <= n_best ({n_best}) <= beam size ({k})")
    check_alpha(alpha)
    scores = np.full((N, k), -np.inf)
    scores[:, 0] = 0.0                                      # one live beam at the start
    tokens = xp.full(N * k, bos_id, dtype=np.int64)
    hist = np.zeros((N, k, 0), dtype=np.int64)
    att = np.zeros((N, k, 0, Ts))
    finished: list[list[Hypothesis]] = [[] for _ in range(N)]
    done = np.zeros(N, dtype=bool)
    rows = np.arange(N)[:, None]
    bound_lp = length_penalty(max_len, alpha)
    for t in range(max_len):
        logp, state, a = step_fn(tokens, state)
        logp = to_numpy(logp).astype(np.float64)
        V = logp.shape[1]
        a = to_numpy(a).reshape(N, k, Ts)
        cand = (scores[:, :, None] + logp.reshape(N, k, V)).reshape(N, k * V)
        top = np.argpartition(-cand, 2 * k - 1, axis=1)[:, :2 * k] if k * V > 2 * k else \
            np.tile(np.arange(k * V), (N, 1))
        top_scores = np.take_along_axis(cand, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        parent, tok = top // V, top % V
        L = t + 1
        is_eos = (tok == eos_id) & np.isfinite(top_scores)
        for n, j in zip(*np.nonzero(is_eos[:, :k] & ~done[:, None])):
            p = parent[n, j]
            finished[n].append(Hypothesis(hist[n, p].tolist() + [eos_id], top_scores[n, j] / length_penalty(L, alpha),
                                          top_scores[n, j], np.concatenate([att[n, p], a[n, p][None]], 0)))
        keep = np.argsort(is_eos, axis=1, kind="stable")[:, :k]      # best k that go on
        parent = np.take_along_axis(parent, keep, 1)
        scores = np.take_along_axis(top_scores, keep, 1)
        new_tok = np.take_along_axis(tok, keep, 1)
        hist = np.concatenate([hist[rows, parent], new_tok[:, :, None]], axis=2)
        att = np.concatenate([att[rows, parent], a[rows, parent][:, :, None]], axis=2)
        mark_done(finished, done, scores, n_best, bound_lp)
        if done.all():
            break
        flat_parent = xp.asarray((np.arange(N)[:, None] * k + parent).ravel())
        state = tuple(s[flat_parent] for s in state)
        tokens = xp.asarray(new_tok.ravel())
    for n in np.flatnonzero(~done):                           # cut at max_len: finish the alive ones
        for j in range(k):
            if np.isfinite(scores[n, j]):
                finished[n].append(Hypothesis(hist[n, j].tolist(), scores[n, j] / length_penalty(hist.shape[2], alpha),
                                              scores[n, j], att[n, j]))
    return [sorted(fin, key=lambda h: -h.score)[:n_best] for fin in finished]


def mark_done(finished: list[list[Hypothesis]], done: np.ndarray, scores: np.ndarray, n_best: int,
              bound_lp: float) -> None:
    """Set ``done`` for each sentence whose n-th best finished hypothesis scores at least what its best alive
    one (log-probabilities ``scores`` (N, k)) could still reach; sorts each such sentence's finished list."""
    for n in np.flatnonzero(~done):
        fin = finished[n]
        if len(fin) >= n_best:
            fin.sort(key=lambda h: -h.score)
            if fin[n_best - 1].score >= scores[n].max() / bound_lp:
                done[n] = True
