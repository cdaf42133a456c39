"""Metrics: teacher-forced loss and token accuracy, greedy exact match, BLEU/chrF,
and the same per category of example (``category_metrics``: by source length, or by a
label the data file holds, such as the date files' style).

Greedy outputs come from ``decoding``; each batch is encoded once for both the
teacher-forced scores and the greedy search.
"""
from __future__ import annotations

import re

from ..data.batching import Encoded, take
from ..data.tokenizers import PAD_ID, Tokenizer
from ..nn.backend import to_numpy
from ..nn.layers import SoftmaxCrossEntropy
from ..nn.model import AttentionSeq2seq
from .decoding import EVAL_BATCH_SIZE, greedy_encoded, map_sorted_batches


def evaluate(model: AttentionSeq2seq, data: Encoded, tgt_tok: Tokenizer, batch_size: int = EVAL_BATCH_SIZE,
             bleu: bool = False, max_len=None) -> dict:
    """Metrics on an encoded dataset, as fractions in 0..1 (BLEU and chrF on sacrebleu's 0..100).

    loss: mean cross-entropy per real target token (teacher forcing);
    token_accuracy: share of real target tokens (eos included) whose argmax is right;
    exact_match: share of greedy outputs equal to the target text, the outputs stopping at
    ``max_len`` (tokens or an ``OutputLengthRule``; None: the model's rule, see ``nn.output_length.output_limit``).
    """
    return summarize(score_batches(model, data, batch_size, max_len), data, tgt_tok, bleu)


def score_batches(model, data: Encoded, batch_size: int = EVAL_BATCH_SIZE, max_len=None,
                  part: tuple[int, int] = (0, 1)) -> list:
    """Every length-sorted batch (spread over CPU threads, in eval mode), or with ``part`` (k, K) every
    K-th from k -> [(idx, (summed cross-entropy, correct tokens, real tokens, greedy ids (B, L)))]."""
    def score(m, idx):
        return _score_batch(m, data, idx, max_len)
    return map_sorted_batches(model, score, data.src_len, batch_size, part=part)


def summarize(batches: list, data: Encoded, tgt_tok: Tokenizer, bleu: bool = False) -> dict:
    """``evaluate``'s metrics from all of ``score_batches``'s batches, summed in their order, and the
    greedy output text of every row ("predictions", in row order)."""
    nll = correct = tokens = 0.0
    preds = [None] * len(data)
    for idx, (b_nll, b_correct, n, ids) in batches:
        nll, correct, tokens = nll + b_nll, correct + b_correct, tokens + n
        for k, row in enumerate(idx):
            preds[row] = tgt_tok.decode(ids[k])
    refs = [t for _, t in data.pairs]
    exact = sum(p == r for p, r in zip(preds, normalized_refs(tgt_tok, refs))) / len(refs)
    out = dict(n=len(refs), loss=nll / tokens, token_accuracy=correct / tokens, exact_match=exact)
    if bleu:
        out.update(bleu_chrf(preds, refs))
    out["predictions"] = preds
    return out


def _score_batch(model, data: Encoded, idx, max_len=None):
    """One encoder pass, then teacher forcing and greedy search from it.
    -> summed cross-entropy, correct tokens and real tokens of the batch, greedy ids (B, L) on the host."""
    src, tgt = take(data, idx)
    hs, state, mask = model.encode(src)
    logits = model.decoder.forward(model.xp.asarray(tgt[:, :-1]), hs, state, mask)   # (B, To, V)
    gold = model.xp.asarray(tgt[:, 1:])                                               # (B, To)
    real = gold != PAD_ID
    n = float(real.sum())
    nll = float(SoftmaxCrossEntropy(ignore_index=PAD_ID).forward(logits, gold, need_grad=False)) * n
    correct = float(((logits.argmax(-1) == gold) & real).sum())
    ids, _ = greedy_encoded(model, hs, state, mask, max_len)
    return nll, correct, n, to_numpy(ids)                           # one device-to-host copy per batch


def normalized_refs(tok: Tokenizer, refs: list[str]) -> list[str]:
    """The references as the target tokenizer reads them back (``decode(encode(ref))``: spaces
    collapsed, unknown characters as the model would write them): what an output must equal to be
    an exact match, in evaluation, the explorer, plot-attention and the training log alike."""
    return [tok.decode(tok.encode(r)) for r in refs]


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU and chrF through sacrebleu, on detokenized text (0..100)."""
    import sacrebleu
    return dict(bleu=float(sacrebleu.corpus_bleu(hyps, [refs], force=True).score),
                chrf=float(sacrebleu.corpus_chrf(hyps, [refs]).score))


# -- per category ----------------------------------------------------------------------------
# The date files' extra columns by name (see ``attnseq.data.datasets``); any file's by number: col3, col4 ...
COLUMN_NAMES = {"style": 3, "one-digit": 4}
LENGTH_BUCKET = 10


def by_column(name: str) -> int | None:
    """The 1-based TSV column that ``--by NAME`` groups by, or None for ``length``: ``colN`` is column N
    (3 or more), ``style`` and ``one-digit`` the date files' columns 3 and 4."""
    if name == "length":
        return None
    if name in COLUMN_NAMES:
        return COLUMN_NAMES[name]
    if re.fullmatch(r"col[1-9][0-9]*", name):
        col = int(name[3:])
        if col >= 3:
            return col
    raise ValueError(f"--by {name}: expected length, style, one-digit or colN (a TSV column, N >= 3)")


def length_bucket(n: int, width: int = LENGTH_BUCKET) -> str:
    """The bucket of a length: 1-10, 11-20, ... for width 10."""
    start = (max(int(n), 1) - 1) // width * width + 1
    return f"{start}-{start + width - 1}"


def _category_key(label: str):
    m = re.fullmatch(r"(\d+)-\d+", label)
    return (0, int(m.group(1)), "") if m else (1, 0, label)


def category_metrics(preds: list[str], refs: list[str], labels: list[str],
                     refs_norm: list[str] | None = None) -> dict[str, dict]:
    """Exact match, BLEU and chrF of the rows of each category: {label: {n, exact_match, bleu, chrf}},
    length buckets in order of length, other labels alphabetically. Exact match compares with
    ``refs_norm`` (the references as the tokenizer reads them back) when given."""
    refs_norm = refs if refs_norm is None else refs_norm
    rows: dict[str, list[int]] = {}
    for k, label in enumerate(labels):
        rows.setdefault(label, []).append(k)
    out = {}
    for label in sorted(rows, key=_category_key):
        idx = rows[label]
        exact = sum(preds[k] == refs_norm[k] for k in idx) / len(idx)
        out[label] = dict(n=len(idx), exact_match=exact,
                          **bleu_chrf([preds[k] for k in idx], [refs[k] for k in idx]))
    return out


def format_categories(name: str, table: dict[str, dict]) -> str:
    """A small text table of ``category_metrics``: one line per category."""
    width = max([len(name)] + [len(label) for label in table])
    lines = [f"{name:<{width}}  {'n':>6}  {'exact':>8}  {'BLEU':>6}  {'chrF':>6}"]
    for label, m in table.items():
        lines.append(f"{label:<{width}}  {m['n']:>6}  {100 * m['exact_match']:>7.2f}%  "
                     f"{m['bleu']:>6.1f}  {m['chrf']:>6.1f}")
    return "\n".join(lines)
