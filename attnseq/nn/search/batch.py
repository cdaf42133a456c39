"""One batch of sources through an engine (see ``ensemble``'s docstring: a model, an ONNX export, an
ensemble): which search, how its step function is started and wrapped, and the hypotheses it gives.

``Decoding`` says how to search; ``run_search`` runs it on one right-padded batch src (N, Ts), and
``run_forced`` scores given outputs. Every engine, and the server over them, decodes through these, so
sampling, ensembles, prefixes and guards are written once, here and in the modules beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import to_numpy
from .beam import Hypothesis, beam_search_core, check_alpha, length_penalty
from .forced import forced_search
from .greedy import greedy_search, output_length
from .processors import Guards, constrain, padded_prefixes
from .sampling import Sampling, sample_search


@dataclass(frozen=True)
class Decoding:
    """How to search. Greedy by default; ``beam`` K > 1 or ``n_best`` > 1: beam search keeping the n best;
    ``sampling``: draw each token, ``n_best`` samples per source (best first by score). ``alpha``: the GNMT
    length penalty of the scores. ``guards``: see ``processors``."""
    beam: int = 1
    alpha: float = 0.0
    n_best: int = 1
    sampling: Sampling | None = None
    guards: Guards = field(default_factory=Guards)

    def __post_init__(self):
        for name in ("beam", "n_best"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        check_alpha(self.alpha)
        if self.sampling is not None and self.beam > 1:
            raise ValueError(f"sampling draws each token; it does not go with beam {self.beam} "
                             "(n_best N draws N samples per input)")
        if self.sampling is None and self.n_best > self.beam:
            raise ValueError(f"need 1 <= n_best ({self.n_best}) <= beam size ({self.beam})")

    @property
    def method(self) -> str:
        """greedy, beam or sample."""
        if self.sampling is not None:
            return "sample"
        return "beam" if self.beam > 1 or self.n_best > 1 else "greedy"

    @property
    def rows_per_source(self) -> int:
        return {"greedy": 1, "beam": self.beam, "sample": self.n_best}[self.method]


def run_search(engine, src, max_len: int, decoding: Decoding = Decoding(), prefixes: list | None = None,
               rng: np.random.Generator | None = None) -> list[list[Hypothesis]]:
    """Search a batch src (N, Ts) (right-padded ids) with ``engine``, in its eval mode, outputs of at most
    ``max_len`` tokens (at least one more than the longest prefix). ``prefixes``: per row, target ids the
    output starts with, or None. ``rng``: sampling's generator (needed then).
    -> per row its hypotheses (greedy: one, score None), best first, weights (L, Ts) on the host."""
    k = decoding.rows_per_source
    prefix = None if prefixes is None else padded_prefixes(prefixes, k)
    if prefix is not None:
        max_len = max(max_len, prefix.shape[1] + 1)
    plain = decoding.method == "greedy" and prefix is None and not decoding.guards.active
    step, state = engine.start(src, k, log_probs=not plain)        # greedy alone takes the argmax of logits
    N, Ts = src.shape
    step, state = constrain(step, state, N * k, engine.eos_id, decoding.guards, prefix, engine.xp)
    ids = dict(bos_id=engine.bos_id, eos_id=engine.eos_id)
    if decoding.method == "beam":
        return beam_search_core(step, state, N, Ts, beam_size=k, alpha=decoding.alpha, max_len=max_len,
                                n_best=decoding.n_best, xp=engine.xp, **ids)
    if decoding.method == "greedy":
        out, w = greedy_search(step, state, N, Ts, max_len=max_len, pad_id=engine.pad_id, xp=engine.xp, **ids)
        out, w = to_numpy(out), to_numpy(w)
        ends = [output_length(row, engine.eos_id) for row in out]
        return [[Hypothesis(out[n, :L], None, None, w[n, :L])] for n, L in enumerate(ends)]
    if rng is None:
        raise ValueError("sampling needs a numpy Generator (rng)")
    out, w, token_logp = sample_search(step, state, N * k, Ts, max_len=max_len, rng=rng, sampling=decoding.sampling,
                                       pad_id=engine.pad_id, xp=engine.xp, **ids)
    return samples(to_numpy(out), to_numpy(w), token_logp, k, engine.eos_id, decoding.alpha)


def samples(ids, weights, token_logp, k: int, eos_id: int, alpha: float) -> list[list[Hypothesis]]:
    """sample_search's rows, k adjacent ones per source -> per source its k samples, best score first."""
    found = []
    for n in range(len(ids) // k):
        hyps = []
        for r in range(n * k, (n + 1) * k):
            L = output_length(ids[r], eos_id)
            logprob = float(token_logp[r, :L].sum())
            hyps.append(Hypothesis(ids[r, :L].tolist(), logprob / length_penalty(L, alpha), logprob, weights[r, :L]))
        found.append(sorted(hyps, key=lambda h: -h.score))
    return found


def run_forced(engine, src, tgt):
    """Teacher forcing through ``engine``'s step function: src (N, Ts), tgt (N, L + 1) = [bos, y_1 .. y_L]
    right-padded -> token log-probabilities (N, L) float64 and attention (N, L, Ts), numpy (see ``forced``)."""
    step, state = engine.start(src, 1, log_probs=True)
    return forced_search(step, state, tgt, src.shape[1], engine.xp)
