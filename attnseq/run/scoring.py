"""Scoring given pairs: forced decoding, the target fed to the model token by token (``attnseq score``).

Each pair gets its target's log-probability given its source, token by token (eos included), the total, a
length-normalised score (the total over the GNMT penalty ((5 + L) / 6) ** alpha, L tokens with eos, as beam
search scores its hypotheses: a beam's output scores what the beam gave it), and the attention over the
target as the model reads it (teacher forced). It runs through the engine's step function
(``TranslatorBase.forced_rows``), so an ONNX export and an ensemble score alike.

No pair is truncated or skipped: a source longer than the model's input limit (``max_input_len``, which
translate truncates to) or a target longer than the output-length rule allows a search is scored whole,
flagged in ``over_limit`` and named in one warning. In a file, every line up to the last pair must be one.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import read_lines
from ..data.tokenizers import EOS_ID, UNK_ID
from ..errors import DataError
from ..nn.output_length import output_limit
from ..nn.search import check_alpha, length_penalty

OUTPUT_TYPES = ("score", "pair_with_score", "json")


@dataclass
class Scored:
    """One pair, scored."""
    logprob: float                  # log p(target | source), eos included
    token_logprobs: np.ndarray      # (n_tokens,) float64, each token's log-probability after those before it
    score: float                    # logprob / ((5 + n_tokens) / 6) ** alpha
    n_tokens: int                   # target tokens, eos included
    tokens: list                    # target pieces, ending in <eos>
    src_tokens: list                # source pieces as given (before any reversal)
    weights: np.ndarray             # (n_tokens, len(src_tokens)) attention over the source for each target token
    over_limit: list                # "source" (over max_input_len), "target" (over the output-length rule), or []

    def to_json(self, line: int | None = None) -> dict:
        out = {} if line is None else {"line": line}
        return {**out, "score": self.score, "logprob": self.logprob, "n_tokens": self.n_tokens,
                "token_logprobs": self.token_logprobs.tolist(), "tokens": list(self.tokens),
                "over_limit": list(self.over_limit)}


def score_texts(tr, sources: list[str], targets: list[str], alpha: float = 1.0, batch_size: int = 128,
                lines: list[int] | None = None) -> list[Scored]:
    """Score each (source, target) pair with translator ``tr`` (any ``TranslatorBase``); ``lines``: the pairs'
    line numbers, for the warning about pairs over the limits."""
    if len(sources) != len(targets):
        raise ValueError(f"targets: {len(targets)} given for {len(sources)} sources")
    check_alpha(alpha)
    src = [tr.src_tok.encode(s) or [UNK_ID] for s in sources]          # never truncated
    tgt = [tr.tgt_tok.encode(t) + [EOS_ID] for t in targets]
    found = tr.forced_rows([r[::-1] if tr.reverse else r for r in src], tgt, batch_size)
    rule = tr.engine.output_len_rule
    out = []
    for s, t, (logp, w) in zip(src, tgt, found):
        over = ["source"] * (len(s) > tr.max_input_len) + ["target"] * (len(t) > output_limit(len(s), None, rule))
        total, L = float(logp.sum()), len(t)
        out.append(Scored(total, logp, total / length_penalty(L, alpha), L, tr.tgt_tok.pieces(t),
                          tr.src_tok.pieces(s), w[:, ::-1] if tr.reverse else w, over))
    flagged = [k for k, sc in enumerate(out) if sc.over_limit]
    if flagged:
        where = [lines[k] if lines else k + 1 for k in flagged]
        shown = ", ".join(map(str, where[:5])) + (" ..." if len(where) > 5 else "")
        warnings.warn(f"{len(flagged)} pair(s) over the model's limits scored whole, not truncated "
                      f"({'line' if lines else 'pair'} {shown}): source over {tr.max_input_len} tokens, or target "
                      "over the output-length rule; the json output flags each (over_limit)", stacklevel=2)
    return out


def read_score_pairs(path: str | Path) -> tuple[list[tuple[str, str]], list[int]]:
    """The pairs of a file to score and their line numbers: TSV (source<TAB>target[<TAB>...]), or the
    question_answer format when the first line has no tab. Every line up to the last pair must be a pair:
    a blank line, a line without the separator or an empty side is a DataError naming its line."""
    lines = read_lines(path)
    last = max(k for k, line in enumerate(lines) if line.strip())
    tsv = "\t" in next(line for line in lines if line.strip())
    sep, shown = ("\t", "<TAB>") if tsv else ("_", "_")
    pairs, numbers = [], []
    for lineno, line in enumerate(lines[:last + 1], 1):
        if not line.strip():
            raise DataError(f"{path}:{lineno}: blank line; every line of a file to score is a pair, source{shown}target")
        if sep not in line:
            raise DataError(f"{path}:{lineno}: expected source{shown}target, found no {shown}: {line[:60]!r}")
        src, tgt = (f.strip() for f in (line.split(sep)[:2] if tsv else line.split(sep, 1)))
        for side, text in (("source", src), ("target", tgt)):
            if not text:
                raise DataError(f"{path}:{lineno}: empty {side}")
        pairs.append((src, tgt))
        numbers.append(lineno)
    return pairs, numbers


def format_scores(pairs: list[tuple[str, str]], scored: list[Scored], output_type: str = "json",
                  lines: list[int] | None = None) -> str:
    """One line per pair: its score, or source<TAB>target<TAB>score, or a JSON object (``Scored.to_json``)."""
    if output_type == "score":
        rows = [f"{s.score:.6f}" for s in scored]
    elif output_type == "pair_with_score":
        rows = [f"{src}\t{tgt}\t{s.score:.6f}" for (src, tgt), s in zip(pairs, scored)]
    elif output_type == "json":
        rows = [json.dumps(s.to_json(lines[k] if lines else k + 1), ensure_ascii=False) for k, s in enumerate(scored)]
    else:
        raise ValueError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    return "".join(r + "\n" for r in rows)
