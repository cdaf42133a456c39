"""Batched evaluation: teacher-forced loss and token accuracy, greedy exact match, BLEU/chrF."""
from __future__ import annotations

import numpy as np

from ..nn.backend import to_numpy
from ..data.batching import Encoded, batch_order, take
from ..nn.layers import SoftmaxCrossEntropy
from ..nn.model import AttentionSeq2seq
from .parallel import map_batches
from ..data.tokenizers import EOS_ID, PAD_ID, Tokenizer

# Rows per decoding batch (per thread on a CPU): speed is flat from here up, memory is not.
EVAL_BATCH_SIZE = 128


def greedy_decode(model: AttentionSeq2seq, src: np.ndarray, src_len: np.ndarray, batch_size: int = EVAL_BATCH_SIZE,
                  max_len: int | None = None, with_weights: bool = False, threads: int = 0):
    """Decode rows of a padded source matrix in length-sorted batches (on CPU, spread over threads).

    -> list of id arrays (each up to and including eos), and, with ``with_weights``,
    the list of (L, Ts_i) attention matrices trimmed to each row's real tokens.
    """
    M = len(src)
    outs, weights = [None] * M, [None] * M
    batches = batch_order(src_len, batch_size, None, bucket=True)

    def run(m, idx):
        ts = int(src_len[idx].max())
        return m.generate(src[idx, :ts], max_len or 2 * ts + 10)

    for idx, (ids, w) in zip(batches, map_batches(model, run, batches, threads)):
        for k, row in enumerate(idx):
            r = ids[k]
            end = np.flatnonzero(r == EOS_ID)
            n = int(end[0]) + 1 if end.size else len(r)
            outs[row] = r[:n]
            if with_weights:
                weights[row] = w[k, :n, :int(src_len[row])]
    return (outs, weights) if with_weights else outs


def evaluate(model: AttentionSeq2seq, data: Encoded, tgt_tok: Tokenizer, batch_size: int = EVAL_BATCH_SIZE,
             bleu: bool = False) -> dict:
    """Metrics on an encoded dataset, as fractions in 0..1 (BLEU and chrF on sacrebleu's 0..100).

    loss: mean cross-entropy per real target token (teacher forcing);
    token_accuracy: share of real target tokens (eos included) whose argmax is right;
    exact_match: share of greedy outputs equal to the target text.
    """
    was_training = model.training
    model.eval()
    try:
        nll, correct, tokens, preds = _decode_and_score(model, data, tgt_tok, batch_size)
    finally:
        model.train(was_training)
    refs = [t for _, t in data.pairs]
    refs_norm = [tgt_tok.decode(tgt_tok.encode(t)) for t in refs]
    exact = sum(p == r for p, r in zip(preds, refs_norm)) / len(refs)
    out = dict(n=len(refs), loss=nll / tokens, token_accuracy=correct / tokens, exact_match=exact)
    if bleu:
        out.update(bleu_chrf(preds, refs))
    out["predictions"] = preds
    return out


def _decode_and_score(model, data: Encoded, tgt_tok: Tokenizer, batch_size: int):
    """Per length-sorted batch (batches spread over CPU threads): one encoder pass, then teacher
    forcing (loss, token accuracy) and greedy output."""
    batches = batch_order(data.src_len, batch_size, None, bucket=True)
    nll = correct = tokens = 0.0
    preds = [None] * len(data)
    for idx, (b_nll, b_correct, n, ids) in zip(batches, map_batches(model, lambda m, idx: _score_batch(m, data, idx),
                                                                      batches)):
        nll, correct, tokens = nll + b_nll, correct + b_correct, tokens + n
        for k, row in enumerate(idx):
            preds[row] = tgt_tok.decode(ids[k])
    return nll, correct, tokens, preds


def _score_batch(model, data: Encoded, idx):
    """-> summed cross-entropy, correct tokens and real tokens of the batch, greedy ids on the host."""
    src, tgt = take(data, idx)
    hs, state, mask = model.encode(src)
    logits = model.decoder.forward(model.xp.asarray(tgt[:, :-1]), hs, state, mask)   # (B, To, V)
    gold = model.xp.asarray(tgt[:, 1:])
    real = gold != PAD_ID
    n = float(real.sum())
    nll = float(SoftmaxCrossEntropy(ignore_index=PAD_ID).forward(logits, gold)) * n
    correct = float(((logits.argmax(-1) == gold) & real).sum())
    ids, _ = model.decoder.generate(hs, state, mask, model.bos_id, model.eos_id, 2 * src.shape[1] + 10, model.pad_id)
    return nll, correct, n, to_numpy(ids)                           # one device-to-host copy per batch


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU and chrF through sacrebleu, on detokenized text (0..100)."""
    import sacrebleu
    return dict(bleu=float(sacrebleu.corpus_bleu(hyps, [refs], force=True).score),
                chrf=float(sacrebleu.corpus_chrf(hyps, [refs]).score))
