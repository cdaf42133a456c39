"""Decoding with an ``AttentionSeq2seq``: greedy and beam search, over one batch or many rows in
length-sorted batches.

The layers below this module, from ``attnseq.nn``:

- searches over any step function, ``step_fn(tokens (N,), state) -> (scores (N, V), new state,
  attention (N, Ts))``, in ``attnseq.nn.search``: greedy, beam, sampling, forced scoring, prefixes and
  guards, ensembles. They know nothing of the model, so another engine (an exported graph, say) reuses
  them as they are; ``AttentionSeq2seq.start`` is where a search over the model starts;
- the model's own greedy path: ``AttentionSeq2seq.greedy`` (from encoder states) and ``generate``
  (a batch of ids), both the decoder's ``generate``, greedy_search over its ``step_fn``;
- the longest output, ``attnseq.nn.output_length.output_limit``: a caller's ``max_len``, else the
  model's ``output_len_rule``.

Here: ``greedy_encoded`` and ``greedy_batch`` (that same greedy path, as ``model.greedy`` and
``model.generate``), ``beam_search`` over the decoder's step function, and many rows of a padded source
matrix: ``greedy_decode`` and ``beam_decode`` (what ``evaluate`` and the tests use), and ``map_rows``, which
sorts rows into length buckets, spreads the batches over CPU threads and puts results back in row order:
``TranslatorBase`` runs every search of every engine through it.
"""
from __future__ import annotations

import numpy as np

from ..data.batching import batch_order
from ..nn.backend import to_numpy
from ..nn.output_length import output_limit
from ..nn.search import Hypothesis, beam_search_core, output_length
from .parallel import map_batches

# Rows per decoding batch (per thread on a CPU): speed is flat from here up, memory is not.
EVAL_BATCH_SIZE = 128


# -- with an AttentionSeq2seq -------------------------------------------------------------------
def model_step(model, hs, mask, log_probs: bool = False):
    """The model's decoder as a step function over encoder states hs (N, Ts, H), padding mask (N, Ts)
    (masked positions get attention weight 0): step(tokens (N,), state) -> logits (or, with
    ``log_probs``, log-probabilities) (N, V), new state, attention (N, Ts). See ``AttentionDecoder.step_fn``."""
    return model.decoder.step_fn(hs, mask, log_probs)


def greedy_encoded(model, hs, state, mask, max_len=None):
    """Greedy decoding from encoder output: hs (N, Ts, H), state, mask (N, Ts) as ``model.encode``
    gives them -> ids (N, L), weights (N, L, Ts) on the model's device: ``model.greedy``.
    ``max_len``: tokens or an ``OutputLengthRule``; None: the model's ``output_len_rule``."""
    return model.greedy(hs, state, mask, max_len)


def greedy_batch(model, src, max_len=None):
    """Greedy decoding of one batch src (N, Ts) in eval mode -> ids (N, L), weights (N, L, Ts) on the host:
    ``model.generate``."""
    return model.generate(src, max_len)


def beam_search(model, src, beam_size: int = 5, alpha: float = 0.0, max_len=None,
                n_best: int = 1) -> list[list[Hypothesis]]:
    """Beam search with an AttentionSeq2seq on a padded source batch src (N, Ts); ``max_len`` as in
    ``greedy_encoded``. The k rows of a sentence share its row of hs (``AttentionSeq2seq.start``)."""
    with model.eval_mode():
        N, Ts = src.shape
        step, state = model.start(src, beam_size, log_probs=True)
        return beam_search_core(step, state, N, Ts, model.bos_id, model.eos_id, beam_size, alpha,
                                output_limit(Ts, max_len, model.output_len_rule), n_best, model.xp)


# -- many rows, in length-sorted batches over threads --------------------------------------------
def map_sorted_batches(model, fn, lengths: np.ndarray, batch_size: int, threads: int = 0,
                       part: tuple[int, int] = (0, 1)) -> list:
    """``fn(m, idx)`` for rows ``idx`` of every length-sorted batch, in eval mode, with ``m`` the model or
    a replica of it (on a CPU, batches spread over ``threads``; 0: one per core) -> [(idx, result)].
    ``part`` (k, K): only batches k, k + K, k + 2K ... of them (an MPI rank's share)."""
    batches = batch_order(lengths, batch_size, None, bucket=True)[part[0]::part[1]]
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


def greedy_decode(model, src: np.ndarray, src_len: np.ndarray, batch_size: int = EVAL_BATCH_SIZE,
                  max_len=None, with_weights: bool = False, threads: int = 0):
    """Greedy decoding of the rows of a padded source matrix src (M, Ts) with lengths src_len (M,);
    each batch stops at ``output_limit`` of its own longest source (``max_len`` as in ``greedy_encoded``).

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


def beam_decode(model, src, src_len, beam_size: int = 5, alpha: float = 0.0, max_len=None,
                n_best: int = 1, batch_size: int = EVAL_BATCH_SIZE, threads: int = 0) -> list[list[Hypothesis]]:
    """Beam search over the rows of a padded source matrix src (M, Ts), in length-sorted batches
    (on a CPU spread over threads). -> per row, its ``n_best`` hypotheses, best first."""
    def run(m, idx):
        return beam_search(m, src[idx, :int(src_len[idx].max())], beam_size, alpha, max_len, n_best)

    return map_rows(model, run, src_len, batch_size, threads)
