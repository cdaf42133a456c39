"""Decoding: greedy and beam search, over one batch or many rows in length-sorted batches.

Three layers, each used by the next:

- searches over any step function, ``step_fn(tokens (N,), state) -> (scores (N, V), new state,
  attention (N, Ts))``: ``greedy_search`` and ``beam_search_core`` from ``attnseq.nn.search``. They
  know nothing of the model, so another engine (an exported graph, say) reuses them as they are;
- the same with an ``AttentionSeq2seq``: ``greedy_encoded`` (from encoder states already at hand),
  ``greedy_batch`` (what ``model.generate`` runs) and ``beam_search``;
- many rows of a padded source matrix: ``greedy_decode`` and ``beam_decode``, which sort rows into
  length buckets, spread the batches over CPU threads and put results back in row order.

The longest output for a batch whose longest source has Ts tokens is ``output_limit(Ts, max_len,
rule)``, the one place every decoder here (and the ONNX runtime) asks: ``max_len`` when a caller gives
one (tokens, or an ``OutputLengthRule`` of its own), else the model's rule (``model_rule``: the one
``OutputLengthRule.fit`` drew from its training split, saved in config.json), else ``LEGACY_RULE``,
2 * Ts + 10, what checkpoints written before the rule was fitted keep.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..data.batching import batch_order
from ..errors import CheckpointError
from ..nn.backend import get_array_module, to_numpy
from ..nn.search import Hypothesis, beam_search_core, greedy_search, log_softmax  # noqa: F401 (re-exported)
from .parallel import map_batches

# Rows per decoding batch (per thread on a CPU): speed is flat from here up, memory is not.
EVAL_BATCH_SIZE = 128


# -- the longest output ------------------------------------------------------------------------
RATIO_QUANTILE = 0.99       # the slope follows this quantile of output/source length; rarer ratios raise the offset
MIN_MARGIN = 10             # tokens beyond the longest training output the rule allows at least ...
MARGIN_SHARE = 0.1          # ... or this share of the longest training output, if more
_RULE_TEXT = re.compile(r"\s*(?:(\d+)\s*\*\s*ts\s*(?:([+-])\s*(\d+))?|(\d+))\s*", re.IGNORECASE)


@dataclass(frozen=True)
class OutputLengthRule:
    """The longest output, in tokens (eos included), for a batch whose longest source has Ts tokens:
    ``scale * Ts + offset``; scale 0 is a fixed limit. Linear, so an ONNX manifest records it as it is."""
    scale: int
    offset: int

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.scale, self.offset)):
            raise ValueError(f"output length rule: scale and offset must be integers, "
                             f"got {self.scale!r}, {self.offset!r}")
        if self.scale < 0 or self.scale + self.offset < 1:
            raise ValueError(f"output length rule {self.text} must give at least one token: scale >= 0 and "
                             "scale + offset >= 1")

    def __call__(self, src_len: int) -> int:
        return self.scale * int(src_len) + self.offset

    @property
    def text(self) -> str:
        """"7 * Ts + 10", or "60" for a fixed limit."""
        if self.scale == 0:
            return str(self.offset)
        return f"{self.scale} * Ts {'-' if self.offset < 0 else '+'} {abs(self.offset)}"

    @classmethod
    def parse(cls, value) -> "OutputLengthRule":
        """``--max-output-len``: "60" or 60 (that many tokens, whatever the source), "3*Ts+5" (3 tokens
        per source token, plus 5), or a rule already. ValueError saying what it takes otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(0, value)
        m = _RULE_TEXT.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"expected N (tokens) or S*Ts+O (S tokens per source token, plus O), "
                             f"e.g. 60 or 3*Ts+5, got {value!r}")
        if m[4] is not None:
            return cls(0, int(m[4]))
        return cls(int(m[1]), (-1 if m[2] == "-" else 1) * int(m[3] or 0))

    @classmethod
    def fit(cls, src_len, out_len) -> "OutputLengthRule":
        """The rule for a training split: src_len (M,) source tokens, out_len (M,) the output tokens each
        target needs (its tokens and eos).

        scale: the 99th percentile of out_len / src_len, rounded up, and at least 2; offset: the least
        with which scale * Ts + offset covers every pair, plus a margin (10 tokens, or a tenth of the
        longest output if more), and at least 10. So no training pair comes near the limit, the rule
        never gives less than ``LEGACY_RULE`` (2 * Ts + 10), and a few odd pairs (a one-word source with
        a long target) raise the offset by a constant rather than the slope for every length.
        """
        src, out = np.asarray(src_len, dtype=np.int64), np.asarray(out_len, dtype=np.int64)
        if src.size == 0 or src.shape != out.shape or src.min() < 1 or out.min() < 1:
            raise ValueError("OutputLengthRule.fit needs one positive source and output length per pair")
        ratio = float(np.quantile(out / src, RATIO_QUANTILE))
        scale = max(LEGACY_RULE.scale, math.ceil(ratio - 1e-9))         # 1e-9: 6.000000001 from rounding is 6
        margin = max(MIN_MARGIN, math.ceil(MARGIN_SHARE * int(out.max())))
        return cls(scale, max(LEGACY_RULE.offset, int((out - scale * src).max()) + margin))

    def to_json(self) -> dict:
        return dict(scale=self.scale, offset=self.offset, rule=self.text)

    @classmethod
    def from_json(cls, value, where: str) -> "OutputLengthRule":
        """A rule as ``to_json`` wrote it (``rule`` is for people and not read); CheckpointError naming ``where``."""
        try:
            return cls(value["scale"], value["offset"])
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{where}: expected {{\"scale\": int, \"offset\": int}} giving at least one "
                                  f"token, got {value!r} ({e})") from None


LEGACY_RULE = OutputLengthRule(2, 10)   # before rules were fitted: what a checkpoint without one keeps
CONFIG_KEY = "max_output_len"           # config.json's key for a checkpoint's rule (as the ONNX manifest's)


def saved_rule(config: dict, where) -> OutputLengthRule:
    """A checkpoint's rule from its parsed config.json (``where``): its ``max_output_len``, or
    ``LEGACY_RULE`` for a checkpoint written before rules were fitted. CheckpointError when malformed."""
    if config.get(CONFIG_KEY) is None:
        return LEGACY_RULE
    return OutputLengthRule.from_json(config[CONFIG_KEY], f"{where}: {CONFIG_KEY}")


def model_rule(model) -> OutputLengthRule:
    """The model's own rule: ``model.output_len_rule`` (set by the Trainer from its training split, or by
    ``load_checkpoint`` from config.json), else ``LEGACY_RULE``."""
    return getattr(model, "output_len_rule", None) or LEGACY_RULE


def default_max_len(src_len: int, rule: OutputLengthRule | None = None) -> int:
    """The longest output for a batch whose longest source has ``src_len`` tokens by ``rule``
    (a model's: ``model_rule``; an export's manifest's); None: ``LEGACY_RULE``, 2 * Ts + 10."""
    return (rule or LEGACY_RULE)(src_len)


def output_limit(src_len: int, max_len=None, rule: OutputLengthRule | None = None) -> int:
    """Where every decoder stops a batch whose longest source has ``src_len`` tokens: ``max_len`` when
    given (tokens, or an ``OutputLengthRule``: a caller's override), else ``default_max_len(src_len, rule)``."""
    if max_len is None:
        return default_max_len(src_len, rule)
    if isinstance(max_len, OutputLengthRule):
        return max_len(src_len)
    return int(max_len)


# -- with an AttentionSeq2seq -------------------------------------------------------------------
def model_step(model, hs, mask, log_probs: bool = False):
    """The model's decoder as a step function over encoder states hs (N, Ts, H), padding mask (N, Ts)
    (masked positions get attention weight 0): step(tokens (N,), (h, c)) -> logits (or, with
    ``log_probs``, log-probabilities) (N, V), new (h, c), attention (N, Ts). See ``AttentionDecoder.step_fn``."""
    return model.decoder.step_fn(hs, mask, log_probs)


def greedy_encoded(model, hs, state, mask, max_len=None):
    """Greedy decoding from encoder output: hs (N, Ts, H), state (h, c), mask (N, Ts) as ``model.encode``
    gives them -> ids (N, L), weights (N, L, Ts) on the model's device (see ``greedy_search``).
    ``max_len``: tokens or an ``OutputLengthRule``; None: the model's rule (``output_limit``)."""
    N, Ts, _ = hs.shape
    return greedy_search(model_step(model, hs, mask), state, N, Ts, model.bos_id, model.eos_id,
                         output_limit(Ts, max_len, model_rule(model)), model.pad_id, get_array_module(hs))


def greedy_batch(model, src, max_len=None):
    """Greedy decoding of one batch src (N, Ts) in eval mode -> ids (N, L), weights (N, L, Ts) on the host."""
    with model.eval_mode():                                         # no dropout, no backward caches
        hs, state, mask = model.encode(src)
        ids, weights = greedy_encoded(model, hs, state, mask, max_len)
    return to_numpy(ids), to_numpy(weights)


def beam_search(model, src, beam_size: int = 5, alpha: float = 0.0, max_len=None,
                n_best: int = 1) -> list[list[Hypothesis]]:
    """Beam search with an AttentionSeq2seq on a padded source batch src (N, Ts); ``max_len`` as in
    ``greedy_encoded``."""
    with model.eval_mode():
        hs, (h, c), mask = model.encode(src)
        xp = get_array_module(hs)
        N, Ts, _ = hs.shape
        k = beam_size
        # the k rows of a sentence share its row of hs (the decoder step attends with (N, k, H)
        # queries), so hs is neither repeated nor reordered: only (h, c) is
        step = model_step(model, hs, mask, log_probs=True)
        state = (xp.repeat(h, k, axis=0), xp.repeat(c, k, axis=0))   # (N*k, H)
        return beam_search_core(step, state, N, Ts, model.bos_id, model.eos_id, k, alpha,
                                output_limit(Ts, max_len, model_rule(model)), n_best, xp)


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
