"""Metrics: teacher-forced loss and token accuracy, greedy exact match, BLEU/chrF.

Greedy outputs come from ``decoding``; each batch is encoded once for both the
teacher-forced scores and the greedy search.
"""
from __future__ import annotations

from ..data.batching import Encoded, take
from ..data.tokenizers import PAD_ID, Tokenizer
from ..nn.backend import to_numpy
from ..nn.layers import SoftmaxCrossEntropy
from ..nn.model import AttentionSeq2seq
from .decoding import EVAL_BATCH_SIZE, greedy_encoded, map_sorted_batches


def evaluate(model: AttentionSeq2seq, data: Encoded, tgt_tok: Tokenizer, batch_size: int = EVAL_BATCH_SIZE,
             bleu: bool = False) -> dict:
    """Metrics on an encoded dataset, as fractions in 0..1 (BLEU and chrF on sacrebleu's 0..100).

    loss: mean cross-entropy per real target token (teacher forcing);
    token_accuracy: share of real target tokens (eos included) whose argmax is right;
    exact_match: share of greedy outputs equal to the target text.
    """
    nll, correct, tokens, preds = _score_and_decode(model, data, tgt_tok, batch_size)
    refs = [t for _, t in data.pairs]
    refs_norm = [tgt_tok.decode(tgt_tok.encode(t)) for t in refs]
    exact = sum(p == r for p, r in zip(preds, refs_norm)) / len(refs)
    out = dict(n=len(refs), loss=nll / tokens, token_accuracy=correct / tokens, exact_match=exact)
    if bleu:
        out.update(bleu_chrf(preds, refs))
    out["predictions"] = preds
    return out


def _score_and_decode(model, data: Encoded, tgt_tok: Tokenizer, batch_size: int):
    """Over length-sorted batches (spread over CPU threads, in eval mode): summed cross-entropy,
    correct and real target tokens, and the greedy output text of every row, in row order."""
    nll = correct = tokens = 0.0
    preds = [None] * len(data)
    for idx, (b_nll, b_correct, n, ids) in map_sorted_batches(model, lambda m, idx: _score_batch(m, data, idx),
                                                              data.src_len, batch_size):
        nll, correct, tokens = nll + b_nll, correct + b_correct, tokens + n
        for k, row in enumerate(idx):
            preds[row] = tgt_tok.decode(ids[k])
    return nll, correct, tokens, preds


def _score_batch(model, data: Encoded, idx):
    """One encoder pass, then teacher forcing and greedy search from it.
    -> summed cross-entropy, correct tokens and real tokens of the batch, greedy ids (B, L) on the host."""
    src, tgt = take(data, idx)
    hs, state, mask = model.encode(src)
    logits = model.decoder.forward(model.xp.asarray(tgt[:, :-1]), hs, state, mask)   # (B, To, V)
    gold = model.xp.asarray(tgt[:, 1:])                                               # (B, To)
    real = gold != PAD_ID
    n = float(real.sum())
    nll = float(SoftmaxCrossEntropy(ignore_index=PAD_ID).forward(logits, gold)) * n
    correct = float(((logits.argmax(-1) == gold) & real).sum())
    ids, _ = greedy_encoded(model, hs, state, mask)
    return nll, correct, n, to_numpy(ids)                           # one device-to-host copy per batch


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU and chrF through sacrebleu, on detokenized text (0..100)."""
    import sacrebleu
    return dict(bleu=float(sacrebleu.corpus_bleu(hyps, [refs], force=True).score),
                chrf=float(sacrebleu.corpus_chrf(hyps, [refs]).score))
