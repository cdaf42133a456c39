"""Using a trained checkpoint: translate text, evaluate a data file.

``Translator`` wraps a checkpoint with its tokenizers: texts in, texts out,
with the attention weights of each chosen output. ``attnseq translate``,
``attnseq eval`` and ``attnseq plot-attention`` (in ``cli``) are thin layers over these.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.batching import encode_pairs, encode_sources, pad_rows
from ..data.io import atomic_write_text, read_pairs
from ..data.tokenizers import UNK_ID
from .checkpoint import load_checkpoint
from .decoding import EVAL_BATCH_SIZE, beam_decode, greedy_decode
from .evaluation import evaluate

DEFAULT_MAX_INPUT = 200


@dataclass
class Translation:
    text: str                   # the best output
    src_tokens: list            # source pieces as the model saw them (before any reversal)
    out_tokens: list            # output pieces, ending in <eos> when the model finished
    weights: np.ndarray         # (len(out_tokens), len(src_tokens)) attention
    nbest: list                 # [(text, score)] best first (beam search), or [(text, None)]


class Translator:
    """Texts in, translations out, in batches, with greedy or beam search."""

    def __init__(self, ckpt: str, device: str = "cpu", max_input_len: int | None = None):
        self.ck = load_checkpoint(ckpt, device=device)
        self.model = self.ck.model.eval()
        train = self.ck.config.get("train", {})
        self.reverse = bool(train.get("reverse_source", False))
        self.max_input_len = max_input_len or train.get("max_len") or DEFAULT_MAX_INPUT

    def translate(self, texts: list[str], beam: int = 1, n_best: int = 1, alpha: float = 0.0,
                  batch_size: int = EVAL_BATCH_SIZE, max_len: int | None = None, first_line: int = 1) -> list[Translation]:
        """One Translation per text; greedy unless beam or n_best > 1. Outputs stop at eos or at ``max_len``
        tokens (default ``decoding.default_max_len`` of each batch's longest input)."""
        src_tok, tgt_tok = self.ck.src_tok, self.ck.tgt_tok
        rows = encode_sources(texts, src_tok, self.reverse, self.max_input_len, what="input", first_line=first_line)
        blank = [not t.strip() for t in texts]       # blank in, blank out (decoded from a lone <unk>)
        rows = [[UNK_ID] if b else r for b, r in zip(blank, rows)]
        out: list[Translation | None] = [None] * len(texts)
        chunk = batch_size * 8                          # several batches at a time for the threads to share
        for start in range(0, len(rows), chunk):
            idx = np.arange(start, min(start + chunk, len(rows)))
            src, src_len = pad_rows([rows[i] for i in idx])
            if beam <= 1 and n_best <= 1:
                ids_list, w_list = greedy_decode(self.model, src, src_len, batch_size, max_len, with_weights=True)
                hyps = [[(ids, w, None)] for ids, w in zip(ids_list, w_list)]
            else:
                found = beam_decode(self.model, src, src_len, beam, alpha, max_len, n_best, batch_size)
                hyps = [[(np.array(h.ids), h.weights[:, :src_len[j]], h.score) for h in f] for j, f in enumerate(found)]
            for j, i in enumerate(idx):
                ids, w, _ = hyps[j][0]
                src_ids = rows[i][::-1] if self.reverse else rows[i]
                if self.reverse:
                    w = w[:, ::-1]
                nbest = [("" if blank[i] else tgt_tok.decode(h[0]), h[2]) for h in hyps[j]]
                out[i] = Translation(nbest[0][0], src_tok.pieces(src_ids), tgt_tok.pieces(ids), w, nbest)
        return out


def evaluate_file(ckpt: str, data: str, device: str = "cpu", batch_size: int = EVAL_BATCH_SIZE,
                  output: str | None = None) -> dict:
    """Metrics of a checkpoint on a TSV/question_answer file; BLEU and chrF included."""
    ck = load_checkpoint(ckpt, device=device)
    reverse = bool(ck.config.get("train", {}).get("reverse_source", False))
    enc = encode_pairs(read_pairs(data), ck.src_tok, ck.tgt_tok, reverse)
    result = evaluate(ck.model, enc, ck.tgt_tok, batch_size, bleu=True)
    preds = result.pop("predictions")
    if output:
        atomic_write_text(output, "".join(p + "\n" for p in preds))
    return result


def format_alignment(tr: Translation) -> str:
    """A compact text alignment: each output token with the source token it attends to most."""
    if tr.weights.size == 0:
        return "  (empty)"
    lines = []
    for t, piece in enumerate(tr.out_tokens):
        j = int(tr.weights[t].argmax())
        lines.append(f"  {piece!s:>8} <- {tr.src_tokens[j]!s:<8} {tr.weights[t, j]:.2f}")
    return "\n".join(lines)
