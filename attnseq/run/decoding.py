"""Decoding: greedy and beam search, over one batch or many rows in length-sorted batches.

Three layers, each used by the next:

- searches over any step function, ``step_fn(tokens (N,), state) -> (scores (N, V), new state,
  attention (N, Ts))``: ``greedy_search`` and ``beam_search_core`` from ``attnseq.nn.search``. They
  know nothing of the model, so another engine (an exported graph, say) reuses them as they are;
- the same with an ``AttentionSeq2seq``: ``greedy_encoded`` (from encoder states already at hand),
  ``greedy_batch`` (what ``model.generate`` runs) and ``beam_search``;
- many rows of a padded source matrix: ``greedy_decode`` and ``beam_decode``, which sort rows into
  length buckets, spread the batches over CPU threads and put results back in row order.

The longest output, unless a caller gives ``max_len``, is ``default_max_len(Ts)`` for a batch
whose longest source has Ts tokens; every decoder here takes it from that one function.
"""
from __future__ import annotations

import numpy as np

from ..data.batching import batch_order
from ..nn.attention import mask_bias
from ..nn.backend import get_array_module, to_numpy
from ..nn.search import Hypothesis, beam_search_core, greedy_search, log_softmax  # noqa: F401 (re-exported)
from .parallel import map_batches

# Rows per decoding batch (per thread on a CPU): speed is flat from here up, memory is not.
EVAL_BATCH_SIZE = 128


def default_max_len(src_len: int) -> int:
    """The longest output for a batch whose longest source has ``src_len`` tokens: 2 * Ts + 10."""
    return 2 * int(src_len) + 10


# -- with an AttentionSeq2seq -------------------------------------------------------------------
def model_step(model, hs, mask, log_probs: bool = False):
    """The model's decoder as a step function over encoder states hs (N, Ts, H), padding mask (N, Ts)
    (masked positions get attention weight 0): step(tokens (N,), (h, c)) -> logits (or, with
    ``log_probs``, log-probabilities) (N, V), new (h, c), attention (N, Ts)."""
    bias = mask_bias(mask, hs.dtype)                                # (N,) lengths or (N, 1, Ts) bias
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
