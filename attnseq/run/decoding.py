"""Decoding: greedy and beam search, over one batch or many rows in length-sorted batches.

Three layers, each used by the next:

- searches over any step function, ``step_fn(tokens (N,), state) -> (scores (N, V), new state,
  attention (N, Ts))``: ``greedy_search`` and ``beam_search_core``. They know nothing of the
  model, so another engine (an exported graph, say) reuses them as they are;
- the same with an ``AttentionSeq2seq``: ``greedy_encoded`` (from encoder states already at hand),
  ``greedy_batch`` (what ``model.generate`` runs) and ``beam_search``;
- many rows of a padded source matrix: ``greedy_decode`` and ``beam_decode``, which sort rows into
  length buckets, spread the batches over CPU threads and put results back in row order.

The longest output, unless a caller gives ``max_len``, is ``default_max_len(Ts)`` for a batch
whose longest source has Ts tokens; every decoder here takes it from that one function.

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

from ..data.batching import batch_order
from ..nn.attention import mask_bias
from ..nn.backend import get_array_module, to_numpy
from .parallel import map_batches

# Rows per decoding batch (per thread on a CPU): speed is flat from here up, memory is not.
EVAL_BATCH_SIZE = 128


def default_max_len(src_len: int) -> int:
    """The longest output for a batch whose longest source has ``src_len`` tokens: 2 * Ts + 10."""
    return 2 * int(src_len) + 10


# -- searches over a step function -------------------------------------------------------------
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


@dataclass
class Hypothesis:
    ids: list           # emitted token ids, ending in eos unless cut at max_len
    score: float        # log-probability / length penalty
    logprob: float
    weights: np.ndarray  # (len(ids), Ts) attention weights


def length_penalty(L, alpha: float):
    return ((5.0 + L) / 6.0) ** alpha


def log_softmax(z):
    xp = get_array_module(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


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
    if alpha < 0:
        raise ValueError(f"length penalty alpha must be >= 0, got {alpha}")
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
        for n in np.flatnonzero(~done):
            fin = finished[n]
            if len(fin) >= n_best:
                fin.sort(key=lambda h: -h.score)
                if fin[n_best - 1].score >= scores[n].max() / bound_lp:
                    done[n] = True
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


# -- with an AttentionSeq2seq -------------------------------------------------------------------
def model_step(model, hs, mask, log_probs: bool = False):
    """The model's decoder as a step function over encoder states hs (N, Ts, H), padding mask (N, Ts)
    (masked positions get attention weight 0): step(tokens (N,), (h, c)) -> logits (or, with
    ``log_probs``, log-probabilities) (N, V), new (h, c), attention (N, Ts)."""
    bias = mask_bias(mask, hs.dtype)                                # (N, 1, Ts)
    table = model.decoder.input_table()                             # (V, 4H)

    def step(tokens, state):
        logits, state, a = model.decoder.step(tokens, state, hs, bias, table)
        return (log_softmax(logits) if log_probs else logits), state, a
    return step


def greedy_encoded(model, hs, state, mask, max_len: int | None = None):
    """Greedy decoding from encoder output: hs (N, Ts, H), state (h, c), mask (N, Ts) as ``model.encode``
    gives them -> ids (N, L), weights (N, L, Ts) on the model's device (see ``greedy_search``)."""
    N, Ts, _ = hs.shape
    return greedy_search(model_step(model, hs, mask), state, N, Ts, model.bos_id, model.eos_id,
                         max_len or default_max_len(Ts), model.pad_id, get_array_module(hs))


def greedy_batch(model, src, max_len: int | None = None):
    """Greedy decoding of one batch src (N, Ts) in eval mode -> ids (N, L), weights (N, L, Ts) on the host."""
    with model.eval_mode():                                         # no dropout, no backward caches
        hs, state, mask = model.encode(src)
        ids, weights = greedy_encoded(model, hs, state, mask, max_len)
    return to_numpy(ids), to_numpy(weights)


def beam_search(model, src, beam_size: int = 5, alpha: float = 0.0, max_len: int | None = None,
                n_best: int = 1) -> list[list[Hypothesis]]:
    """Beam search with an AttentionSeq2seq on a padded source batch src (N, Ts)."""
    with model.eval_mode():
        hs, (h, c), mask = model.encode(src)
        xp = get_array_module(hs)
        N, Ts, _ = hs.shape
        k = beam_size
        # the k rows of a sentence share hs, so only (h, c) is reordered
        step = model_step(model, xp.repeat(hs, k, axis=0), xp.repeat(mask, k, axis=0), log_probs=True)
        state = (xp.repeat(h, k, axis=0), xp.repeat(c, k, axis=0))   # (N*k, H)
        return beam_search_core(step, state, N, Ts, model.bos_id, model.eos_id, k, alpha,
                                max_len or default_max_len(Ts), n_best, xp)


# -- many rows, in length-sorted batches over threads --------------------------------------------
def map_sorted_batches(model, fn, lengths: np.ndarray, batch_size: int, threads: int = 0) -> list:
    """``fn(m, idx)`` for rows ``idx`` of every length-sorted batch, in eval mode, with ``m`` the model or
    a replica of it (on a CPU, batches spread over ``threads``; 0: one per core) -> [(idx, result)]."""
    batches = batch_order(lengths, batch_size, None, bucket=True)
    with model.eval_mode():                                         # the replicas copy the flag
        results = map_batches(model, fn, batches, threads)
    return list(zip(batches, results))


def map_rows(model, fn, lengths: np.ndarray, batch_size: int, threads: int = 0) -> list:
    """As ``map_sorted_batches``, with ``fn(m, idx)`` giving one result per row of ``idx``:
    -> the results of all rows, in row order."""
    out = [None] * len(lengths)
    for idx, found in map_sorted_batches(model, fn, lengths, batch_size, threads):
        for row, r in zip(idx, found):
            out[row] = r
    return out


def output_length(ids: np.ndarray, eos_id: int) -> int:
    """Tokens up to and including the first eos in one row of ids (all of them when there is none)."""
    end = np.flatnonzero(ids == eos_id)
    return int(end[0]) + 1 if end.size else len(ids)


def greedy_decode(model, src: np.ndarray, src_len: np.ndarray, batch_size: int = EVAL_BATCH_SIZE,
                  max_len: int | None = None, with_weights: bool = False, threads: int = 0):
    """Greedy decoding of the rows of a padded source matrix src (M, Ts) with lengths src_len (M,).

    -> list of id arrays (each up to and including eos), and, with ``with_weights``,
    the list of (L, Ts_i) attention matrices trimmed to each row's real tokens.
    """
    def run(m, idx):
        hs, state, mask = m.encode(src[idx, :int(src_len[idx].max())])
        ids, w = greedy_encoded(m, hs, state, mask, max_len)
        ids = to_numpy(ids)                                         # (B, L)
        w = to_numpy(w) if with_weights else None                   # (B, L, Ts)
        rows = []
        for k, row in enumerate(idx):
            n = output_length(ids[k], m.eos_id)
            rows.append((ids[k, :n], w[k, :n, :int(src_len[row])] if with_weights else None))
        return rows

    rows = map_rows(model, run, src_len, batch_size, threads)
    outs = [ids for ids, _ in rows]
    return (outs, [w for _, w in rows]) if with_weights else outs


def beam_decode(model, src, src_len, beam_size: int = 5, alpha: float = 0.0, max_len: int | None = None,
                n_best: int = 1, batch_size: int = EVAL_BATCH_SIZE, threads: int = 0) -> list[list[Hypothesis]]:
    """Beam search over the rows of a padded source matrix src (M, Ts), in length-sorted batches
    (on a CPU spread over threads). -> per row, its ``n_best`` hypotheses, best first."""
    def run(m, idx):
        return beam_search(m, src[idx, :int(src_len[idx].max())], beam_size, alpha, max_len, n_best)

    return map_rows(model, run, src_len, batch_size, threads)
