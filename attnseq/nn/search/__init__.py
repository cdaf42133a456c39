"""Searches over a step function, knowing nothing of the model.

``step_fn(tokens (N,), state) -> (scores (N, V), new state, attention (N, Ts))``: scores are logits or
log-probabilities for greedy (the argmax is taken), log-probabilities for every other search. ``state`` is a
tuple of arrays whose first axis is N; a beam reorders it along that axis. The decoder
(``AttentionDecoder.step_fn``, its ``generate`` the model's one greedy path), an exported ONNX graph
(``attnseq.export.OnnxSeq2seq``) and an ``Ensemble`` of either all give one, and are searched alike.

One module per concern:

- ``greedy``: greedy search; ``beam``: beam search, its hypotheses and length penalty;
- ``sampling``: drawing each token (temperature, top-k, top-p), batched, from a numpy Generator;
- ``forced``: the log-probability of each token of a given output (scoring pairs);
- ``processors``: a step function wrapped with a target prefix and guards (minimum length, no repeated
  n-gram, repetition penalty), for any search;
- ``scores``, ``ensemble``: log-softmax; several engines' steps combined into one (linear, log-linear);
- ``batch``: ``Decoding`` (how to search) and one batch of sources through an engine: ``run_search``,
  ``run_forced``.
"""
from .batch import Decoding, run_forced, run_search
from .beam import MAX_ALPHA, Hypothesis, beam_search_core, check_alpha, length_penalty
from .ensemble import Ensemble
from .forced import forced_search
from .greedy import greedy_search, output_length
from .processors import Guards, constrain
from .sampling import Sampling, sample_search
from .scores import ENSEMBLE_MODES, combine_log_probs, log_softmax

__all__ = ["greedy_search", "beam_search_core", "sample_search", "forced_search", "Hypothesis", "length_penalty", "check_alpha", "MAX_ALPHA",
           "log_softmax", "combine_log_probs", "ENSEMBLE_MODES", "Ensemble", "Guards", "constrain", "Sampling",
           "Decoding", "run_search", "run_forced", "output_length"]
