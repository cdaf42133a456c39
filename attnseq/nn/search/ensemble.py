"""An ensemble: several models searched as one, each member's step run on the same batch and their
log-probabilities combined (``scores.combine_log_probs``, linear or log-linear, with weights).

A member is anything a search starts from (an *engine*: ``AttentionSeq2seq``, an ONNX export's
``OnnxSeq2seq``, another ``Ensemble``), which gives:

- ``start(src (N, Ts), k=1, log_probs=False) -> (step_fn, state)``: its step function over the encoded
  batch and the start state with k adjacent rows per source (a beam's hypotheses, or k samples);
- ``xp``, ``bos_id``, ``eos_id``, ``pad_id``, ``output_len_rule``;
- ``replica()`` (one per decoding thread) and ``eval_mode()``.

The ensemble is an engine too: its state is the members' state arrays one after another (a flat tuple, so
a beam reorders it as any other), its attention the weighted mean of the members'. Members may be model
variants of any kind (layers, bidirectional, input feeding, ...) as long as they read and write the same
vocabularies, which the caller checks (``attnseq.run.inference``).
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..output_length import OutputLengthRule
from .scores import ENSEMBLE_MODES, combine_log_probs


def ensemble_weights(weights, n: int) -> np.ndarray:
    """``weights`` (None: equal) for n members -> float64 (n,) summing to 1; ValueError in one line."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != n:
        raise ValueError(f"weights: {len(w)} given for {n} ensemble members")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"weights must be positive numbers, got {list(weights)}")
    return w / w.sum()


def ensemble_step(steps: list, states: list, weights: np.ndarray, mode: str):
    """Members' step functions (giving log-probabilities) and start states -> the ensemble's (step, state)."""
    sizes = [len(s) for s in states]
    bounds = np.cumsum([0] + sizes)

    def step(tokens, state):
        logps, new, att = [], [], None
        for fn, lo, hi, w in zip(steps, bounds[:-1], bounds[1:], weights):
            logp, st, a = fn(tokens, tuple(state[lo:hi]))
            logps.append(logp)
            new.extend(st)
            att = a * float(w) if att is None else att + a * float(w)
        return combine_log_probs(logps, weights, mode), tuple(new), att
    return step, tuple(s for st in states for s in st)


class Ensemble:
    """Engines searched as one (see the module docstring): ``mode`` linear | log_linear, ``weights`` one per
    member (None: equal; normalised to sum to 1). The longest output: the members' largest slope and offset."""

    def __init__(self, members: list, weights=None, mode: str = "linear"):
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
        self.members, self.mode = list(members), mode
        self.weights = ensemble_weights(weights, len(members))
        first = members[0]
        for m in members[1:]:
            for name in ("bos_id", "eos_id", "pad_id"):
                if getattr(m, name) != getattr(first, name):
                    raise ValueError(f"ensemble members disagree on {name}: {getattr(first, name)} and {getattr(m, name)}")
        self.xp = first.xp
        self.bos_id, self.eos_id, self.pad_id = first.bos_id, first.eos_id, first.pad_id
        rules = [m.output_len_rule for m in members]
        self.output_len_rule = OutputLengthRule(max(r.scale for r in rules), max(r.offset for r in rules))

    def replica(self) -> "Ensemble":
        return Ensemble([m.replica() for m in self.members], self.weights, self.mode)

    @contextlib.contextmanager
    def eval_mode(self):
        with contextlib.ExitStack() as stack:
            for m in self.members:
                stack.enter_context(m.eval_mode())
            yield self

    def start(self, src, k: int = 1, log_probs: bool = True):
        """Every member's start on the same batch, combined; log-probabilities whatever ``log_probs`` says."""
        starts = [m.start(src, k, log_probs=True) for m in self.members]
        return ensemble_step([s for s, _ in starts], [st for _, st in starts], self.weights, self.mode)
