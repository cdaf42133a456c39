"""What may be one ensemble: checkpoints (or ONNX exports) that read and write text alike.

An ensemble's members share one source and one target tokenizer (kind and vocabulary, piece for piece)
and the same source reversal, so one batch of ids means the same to each; their model options may differ.
A member given twice is refused: an ensemble of a model with itself is that model. Each refusal is one
``ConfigError`` line naming the two members. The combination itself is ``attnseq.nn.search.Ensemble``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.tokenizers import Tokenizer
from ..errors import ConfigError
from ..nn.search import ENSEMBLE_MODES, Ensemble
from ..nn.search.ensemble import ensemble_weights


@dataclass
class Member:
    """One checkpoint or export of an ensemble, as the checks see it."""
    name: str               # as the user gave it
    path: Path              # the directory it resolved to
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    reverse: bool


def vocabulary(tok: Tokenizer) -> tuple:
    """What makes two tokenizers the same: their kind and their vocabulary (tokens, or the sentencepiece model)."""
    return tok.kind, tuple(getattr(tok, "tokens", ())), getattr(tok, "proto", None)


def describe(tok: Tokenizer) -> str:
    return f"{tok.kind}, {tok.vocab_size} entries"


def check_members(members: list[Member]) -> None:
    """ConfigError naming the first two members that cannot be one ensemble, and why."""
    first = members[0]
    seen: dict[Path, Member] = {}
    for m in members:
        same = seen.get(m.path.resolve())
        if same is not None:
            raise ConfigError(f"{same.name} and {m.name} are the same checkpoint ({m.path}): an ensemble of a model "
                              "with itself is that model; give each member once")
        seen[m.path.resolve()] = m
    for m in members[1:]:
        for side, a, b in (("source", first.src_tok, m.src_tok), ("target", first.tgt_tok, m.tgt_tok)):
            if vocabulary(a) != vocabulary(b):
                raise ConfigError(f"{first.name} and {m.name} have different {side} tokenizers ({describe(a)}; "
                                  f"{describe(b)}): an ensemble's members must share their vocabularies")
        if m.reverse != first.reverse:
            raise ConfigError(f"{first.name} and {m.name} differ in source reversal ({first.reverse}; {m.reverse}): "
                              "an ensemble's members must read the same input")


def make_engine(engines: list, weights=None, mode: str = "linear"):
    """One engine, or an ``Ensemble`` of several (one: that engine itself, so it decodes exactly as alone)."""
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    try:
        w = ensemble_weights(weights, len(engines))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return engines[0] if len(engines) == 1 else Ensemble(engines, w, mode)
