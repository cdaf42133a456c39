"""Using a trained checkpoint: translate text, evaluate a data file.

``Translator`` wraps a checkpoint with its tokenizers: texts in, texts out,
with the attention weights of each chosen output; what does not depend on the
engine that runs the model is in ``TranslatorBase``, which ``attnseq.export``'s
onnxruntime translator shares. ``attnseq translate``,
``attnseq eval`` and ``attnseq plot-attention`` (in ``cli``) are thin layers over these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.batching import encode_pairs, encode_sources, pad_rows
from ..data.io import atomic_write_text, read_columns
from ..data.tokenizers import BOS_ID, UNK_ID, Tokenizer
from ..nn.backend import to_numpy
from ..nn.search import Hypothesis, log_softmax
from .checkpoint import Checkpoint, load_checkpoint
from .decoding import EVAL_BATCH_SIZE, beam_decode, greedy_decode
from .evaluation import by_column, category_metrics, evaluate, length_bucket, normalized_refs

DEFAULT_MAX_INPUT = 200


@dataclass
class Candidate:
    """One output of a search (``translate(details=True)``): the greedy one, or one of the n best."""
    text: str
    out_tokens: list            # output pieces, ending in <eos> when the model finished
    weights: np.ndarray         # (len(out_tokens), len(src_tokens)) attention
    score: float | None         # the beam's score (log-probability over the length penalty); None for greedy
    probs: np.ndarray           # (len(out_tokens),) the model's probability of each output token


@dataclass
class Translation:
    text: str                   # the best output
    src_tokens: list            # source pieces as the model saw them (before any reversal)
    out_tokens: list            # output pieces, ending in <eos> when the model finished
    weights: np.ndarray         # (len(out_tokens), len(src_tokens)) attention
    nbest: list                 # [(text, score)] best first (beam search), or [(text, None)]
    probs: np.ndarray | None = None                          # (len(out_tokens),), with details=True
    candidates: list[Candidate] = field(default_factory=list)  # every n-best output, with details=True


class TranslatorBase:
    """Texts in, ``Translation``s out, whatever runs the model: what every engine shares.

    Here: tokenization, truncation to ``max_input_len``, source reversal, blank in -> blank out,
    chunks of rows, the assembly of each Translation, and the batches (padding, bos) of ``token_probs``.
    An engine (``Translator`` for attnseq's own model, ``attnseq.export.OnnxTranslator`` for an ONNX
    export) sets ``src_tok``, ``tgt_tok``, ``reverse``, ``max_input_len`` and gives the three methods
    below: the two searches over a right-padded source matrix src (M, Ts) with real lengths src_len (M,),
    and one batch of teacher-forced probabilities.
    """
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    reverse: bool
    max_input_len: int

    def greedy_rows(self, src, src_len, batch_size: int, max_len) -> tuple[list, list]:
        """Greedy search per row -> (ids (L_i,) each up to and including eos, weights (L_i, src_len[i]))
        as ``decoding.greedy_decode(..., with_weights=True)``; ``max_len`` (tokens or an
        ``OutputLengthRule``) None: the engine's own rule, through ``nn.output_length.output_limit``."""
        raise NotImplementedError

    def beam_rows(self, src, src_len, beam: int, alpha: float, max_len, n_best: int,
                  batch_size: int) -> list[list[Hypothesis]]:
        """Beam search per row -> its ``n_best`` hypotheses, best first, as ``decoding.beam_decode``."""
        raise NotImplementedError

    def teacher_forced_probs(self, src, tgt) -> np.ndarray:
        """src (B, Ts) source ids, tgt (B, L + 1) = [bos, y1 .. yL], both right-padded -> (B, L) numpy: the
        model's probability of each y_t after bos, y1 .. y_t-1 (entries past a row's length are padding's)."""
        raise NotImplementedError

    def token_probs(self, rows: list[list[int]], outputs: list, batch_size: int = EVAL_BATCH_SIZE) -> list[np.ndarray]:
        """The model's probability of each token of ``outputs[i]`` (ids, eos included) after the ones
        before it, given source ids ``rows[i]`` (as fed to the encoder) -> float64 arrays (len(outputs[i]),)."""
        out = []
        for start in range(0, len(rows), batch_size):
            src, _ = pad_rows(rows[start:start + batch_size])                                   # (B, Ts)
            tgt, tgt_len = pad_rows([[BOS_ID, *map(int, o)] for o in outputs[start:start + batch_size]])
            p = self.teacher_forced_probs(src, tgt)                                             # (B, L)
            out += [p[b, :n - 1].astype(np.float64) for b, n in enumerate(tgt_len)]
        return out

    def translate(self, texts: list[str], beam: int = 1, n_best: int = 1, alpha: float = 0.0,
                  batch_size: int = EVAL_BATCH_SIZE, max_len=None, first_line: int = 1,
                  details: bool = False) -> list[Translation]:
        """One Translation per text; greedy unless beam or n_best > 1. Outputs stop at eos or at ``max_len``:
        tokens, or an ``OutputLengthRule`` of each batch's longest input (``--max-output-len``); None: the
        model's own rule (the checkpoint's, or the export manifest's). With ``details``, each also gets
        its tokens' probabilities and its ``candidates`` (one more, teacher-forced, pass)."""
        src_tok, tgt_tok = self.src_tok, self.tgt_tok
        rows = encode_sources(texts, src_tok, self.reverse, self.max_input_len, what="input", first_line=first_line)
        blank = [not t.strip() for t in texts]       # blank in, blank out (decoded from a lone <unk>)
        rows = [[UNK_ID] if b else r for b, r in zip(blank, rows)]
        out: list[Translation | None] = [None] * len(texts)
        chunk = batch_size * 8                          # several batches at a time for the threads to share
        for start in range(0, len(rows), chunk):
            idx = np.arange(start, min(start + chunk, len(rows)))
            src, src_len = pad_rows([rows[i] for i in idx])
            if beam <= 1 and n_best <= 1:
                ids_list, w_list = self.greedy_rows(src, src_len, batch_size, max_len)
                hyps = [[(ids, w, None)] for ids, w in zip(ids_list, w_list)]
            else:
                found = self.beam_rows(src, src_len, beam, alpha, max_len, n_best, batch_size)
                hyps = [[(np.array(h.ids), h.weights[:, :src_len[j]], h.score) for h in f] for j, f in enumerate(found)]
            for j, i in enumerate(idx):
                ids, w, _ = hyps[j][0]
                src_ids = rows[i][::-1] if self.reverse else rows[i]
                if self.reverse:
                    w = w[:, ::-1]
                nbest = [("" if blank[i] else tgt_tok.decode(h[0]), h[2]) for h in hyps[j]]
                out[i] = Translation(nbest[0][0], src_tok.pieces(src_ids), tgt_tok.pieces(ids), w, nbest)
                if details:
                    out[i].candidates = [Candidate(text, tgt_tok.pieces(h[0]), h[1][:, ::-1] if self.reverse else h[1],
                                                   score, None) for (text, score), h in zip(nbest, hyps[j])]
            if details:
                self._add_probs([out[i] for i in idx], [rows[i] for i in idx], hyps, batch_size)
        return out

    def _add_probs(self, found: list[Translation], rows: list[list[int]], hyps: list[list[tuple]],
                   batch_size: int) -> None:
        """Fill each candidate's token probabilities (and its Translation's) by teacher forcing the
        candidate's own ids: the decoder then sees what it saw while searching."""
        flat = [(r, h[0]) for r, hs in zip(rows, hyps) for h in hs]
        probs = self.token_probs([r for r, _ in flat], [ids for _, ids in flat], batch_size)
        k = 0
        for tr in found:
            for c in tr.candidates:
                c.probs, k = probs[k], k + 1
            tr.probs = tr.candidates[0].probs


class Translator(TranslatorBase):
    """Texts in, translations out with a checkpoint's own model, in batches, with greedy or beam search."""

    def __init__(self, ckpt: str | Path | Checkpoint, device: str = "cpu", max_input_len: int | None = None):
        """``ckpt``: a run or checkpoint directory, or a ``Checkpoint`` already loaded (``device`` then unused)."""
        self.ck = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt, device=device)
        self.model = self.ck.model.eval()
        self.src_tok, self.tgt_tok = self.ck.src_tok, self.ck.tgt_tok
        train = self.ck.config.get("train", {})
        self.reverse = bool(train.get("reverse_source", False))
        self.max_input_len = max_input_len or train.get("max_len") or DEFAULT_MAX_INPUT

    def greedy_rows(self, src, src_len, batch_size, max_len):
        return greedy_decode(self.model, src, src_len, batch_size, max_len, with_weights=True)

    def beam_rows(self, src, src_len, beam, alpha, max_len, n_best, batch_size):
        return beam_decode(self.model, src, src_len, beam, alpha, max_len, n_best, batch_size)

    def teacher_forced_probs(self, src, tgt) -> np.ndarray:
        model, xp = self.model, self.model.xp
        with model.eval_mode():
            logp = log_softmax(model.logits(src, tgt))                                 # (B, L, V)
        gold = xp.asarray(tgt[:, 1:].astype(np.int64))[..., None]                      # (B, L, 1)
        return to_numpy(xp.exp(xp.take_along_axis(logp, gold, axis=2)[..., 0]))       # (B, L)


def evaluate_file(ckpt: str, data: str, device: str = "cpu", batch_size: int = EVAL_BATCH_SIZE,
                  output: str | None = None, by: tuple[str, ...] = (), max_len=None) -> dict:
    """Metrics of a checkpoint on a TSV/question_answer file; BLEU and chrF included. Greedy outputs stop
    at ``max_len`` (tokens or an ``OutputLengthRule``; None: the checkpoint's own rule).

    ``by``: names of categories (``length``, ``style``, ``colN``: see ``evaluation.by_column``); the result
    then also holds ``{"by": {name: {label: {n, exact_match, bleu, chrf}}}}``.
    """
    columns = {name: by_column(name) for name in by}                    # bad names fail before any work
    ck = load_checkpoint(ckpt, device=device)
    reverse = bool(ck.config.get("train", {}).get("reverse_source", False))
    pairs, extra = read_columns(data, [c for c in columns.values() if c is not None])
    enc = encode_pairs(pairs, ck.src_tok, ck.tgt_tok, reverse)
    result = evaluate(ck.model, enc, ck.tgt_tok, batch_size, bleu=True, max_len=max_len)
    preds = result.pop("predictions")
    if output:
        atomic_write_text(output, "".join(p + "\n" for p in preds))
    if by:
        refs = [t for _, t in pairs]
        refs_norm = normalized_refs(ck.tgt_tok, refs)
        labels = category_labels(columns, enc.src_len, extra)
        result["by"] = {name: category_metrics(preds, refs, labels[name], refs_norm) for name in columns}
    return result


def category_labels(columns: dict[str, int | None], src_len, extra: list[tuple]) -> dict[str, list[str]]:
    """Each row's label per category: ``columns`` maps a name to its TSV column (None: length bucket of
    ``src_len``); ``extra`` holds each row's fields in those columns, in the order of the non-None ones."""
    out, k = {}, 0
    for name, col in columns.items():
        if col is None:
            out[name] = [length_bucket(n) for n in src_len]
        else:
            out[name] = [fields[k] for fields in extra]
            k += 1
    return out


def format_alignment(tr: Translation) -> str:
    """A compact text alignment: each output token with the source token it attends to most."""
    if tr.weights.size == 0:
        return "  (empty)"
    lines = []
    for t, piece in enumerate(tr.out_tokens):
        j = int(tr.weights[t].argmax())
        lines.append(f"  {piece!s:>8} <- {tr.src_tokens[j]!s:<8} {tr.weights[t, j]:.2f}")
    return "\n".join(lines)
