"""evaluate()'s metrics against answers worked out by hand, on tiny float64 models with hand-set weights.

Two models whose outputs are known without running them:
- constant logits: the decoder's output layer has W = 0 and b = B, so every step's logits are B
  whatever the input; loss, token accuracy and the greedy output (argmax B = eos: "") follow by hand.
- a fixed chain: zero encoder (all states 0), one-hot decoder embeddings, saturated LSTM gates and an
  output layer that maps "the previous token was k" to a large logit for next(k); greedy decoding then
  writes bos -> the -> cat -> sat -> down -> eos for every source.
"""
import math

import numpy as np
import pytest
import sacrebleu

from attnseq.data.batching import encode_pairs
from attnseq.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, SPECIALS, CharTokenizer, WordTokenizer
from attnseq.nn.model import AttentionSeq2seq
from attnseq.run.evaluation import evaluate


def set_param(model, path, value):
    """Overwrite one parameter in place (replicas made for threads share the array)."""
    (m, i), = [(m, i) for p, m, i in model.named_parameters() if p == path]
    m.params[i][...] = value


# -- constant logits ------------------------------------------------------------------------
CHARS = CharTokenizer(SPECIALS + ["a", "b", "c"])
A, B_, C = 4, 5, 6
BIAS = np.array([-2.0, -1.0, 1.5, 0.0, 0.5, 1.0, -0.5])              # pad bos eos unk a b c; argmax: eos
CONST_PAIRS = [("ab", "ab"), ("c", ""), ("bca", "b"), ("a", ""), ("cab", "cca")]
# what the decoder is scored on: each target's ids, then eos (padding after it is not a token)
CONST_GOLD = [[A, B_, EOS_ID], [EOS_ID], [B_, EOS_ID], [EOS_ID], [C, C, A, EOS_ID]]


def constant_logits_model():
    V = CHARS.vocab_size
    model = AttentionSeq2seq(V, V, 4, 5, dtype="float64", seed=1)
    set_param(model, "decoder.out.W", 0.0)
    set_param(model, "decoder.out.b", BIAS)
    return model


@pytest.mark.parametrize("batch_size", [1, 2, 128])
def test_constant_logits_give_the_hand_computed_metrics(batch_size):
    assert [CHARS.encode(t) + [EOS_ID] for _, t in CONST_PAIRS] == CONST_GOLD
    data = encode_pairs(CONST_PAIRS, CHARS, CHARS)
    result = evaluate(constant_logits_model(), data, CHARS, batch_size=batch_size, bleu=True)

    log_z = math.log(sum(math.exp(b) for b in BIAS))
    gold = [g for row in CONST_GOLD for g in row]                       # 11 real tokens
    assert result["n"] == 5
    assert result["loss"] == pytest.approx(sum(log_z - BIAS[g] for g in gold) / 11, rel=1e-12)
    assert result["token_accuracy"] == 5 / 11                           # argmax is eos: right once per row
    assert result["predictions"] == [""] * 5                            # greedy stops at once
    assert result["exact_match"] == 2 / 5                               # the two empty targets
    refs = [t for _, t in CONST_PAIRS]
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu([""] * 5, [refs], force=True).score, abs=1e-9)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf([""] * 5, [refs]).score, abs=1e-9)


def test_padding_is_not_scored():
    """One padded batch and one row per batch must agree: padding adds no tokens and no loss."""
    data = encode_pairs(CONST_PAIRS, CHARS, CHARS)
    assert (data.tgt == PAD_ID).any()                                   # the shared batch has padding
    one = evaluate(constant_logits_model(), data, CHARS, batch_size=len(CONST_PAIRS))
    each = evaluate(constant_logits_model(), data, CHARS, batch_size=1)
    assert one["loss"] == pytest.approx(each["loss"], rel=1e-12)
    assert one["token_accuracy"] == each["token_accuracy"]


# -- a fixed chain of words ---------------------------------------------------------------------
WORDS = WordTokenizer(SPECIALS + ["the", "cat", "sat", "down", "a", "dog"])
CHAIN = {BOS_ID: 4, 4: 5, 5: 6, 6: 7, 7: EOS_ID}                        # bos the cat sat down eos
GREEDY = "the cat sat down"
STEP_LOGIT = 10.0 * math.tanh(1.0)                                      # see chain_model


def chain_model():
    """Greedy output GREEDY for every source.

    Encoder weights 0: hs, h0 and c0 are 0, so attention's context is 0. Decoder embedding = identity
    (D = H = V); the LSTM's four gate blocks all get +S for unit k and -S for the others from token k,
    Wh = 0, b = 0, so after token k unit k holds c = 1, h = tanh(1) and every other unit 0 (up to
    e^-S). The output layer maps unit k (in either half of [context, h]) to 10 on logit next(k).
    """
    V, S = WORDS.vocab_size, 30.0
    model = AttentionSeq2seq(V, V, V, V, dtype="float64", seed=2)
    for path, m, i in model.named_parameters():
        if path.startswith("encoder."):
            m.params[i][...] = 0.0
    set_param(model, "decoder.embed.W", np.eye(V))
    set_param(model, "decoder.lstm.Wx", np.tile(S * (2 * np.eye(V) - 1), 4))
    set_param(model, "decoder.lstm.Wh", 0.0)
    set_param(model, "decoder.lstm.b", 0.0)
    W = np.zeros((2 * V, V))
    for k, nxt in CHAIN.items():
        W[k, nxt] = W[V + k, nxt] = 10.0
    set_param(model, "decoder.out.W", W)
    set_param(model, "decoder.out.b", 0.0)
    return model


CHAIN_PAIRS = [("a dog", GREEDY), ("dog", "the cat sat"), ("the cat", GREEDY), ("a", "a dog sat down"),
               ("down sat the", "the cat down")]


def test_greedy_output_exact_match_bleu_and_chrf():
    data = encode_pairs(CHAIN_PAIRS, WORDS, WORDS)
    result = evaluate(chain_model(), data, WORDS, batch_size=2, bleu=True)
    refs = [t for _, t in CHAIN_PAIRS]
    assert result["predictions"] == [GREEDY] * 5
    assert result["exact_match"] == 2 / 5
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu([GREEDY] * 5, [refs], force=True).score, abs=1e-9)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf([GREEDY] * 5, [refs]).score, abs=1e-9)
    assert 0 < result["bleu"] < 100 and 0 < result["chrf"] < 100


def test_identical_output_scores_100():
    data = encode_pairs([(s, GREEDY) for s in ("a", "dog a", "the cat sat down")], WORDS, WORDS)
    result = evaluate(chain_model(), data, WORDS, bleu=True)
    assert result["exact_match"] == 1.0 and result["token_accuracy"] == 1.0
    assert result["bleu"] == pytest.approx(100.0) and result["chrf"] == pytest.approx(100.0)


def test_teacher_forcing_reads_the_gold_previous_token():
    """Logits at each step are STEP_LOGIT on next(gold previous token), 0 elsewhere (up to e^-30)."""
    data = encode_pairs(CHAIN_PAIRS, WORDS, WORDS)
    result = evaluate(chain_model(), data, WORDS, batch_size=3)
    V = WORDS.vocab_size
    nll, correct, tokens = 0.0, 0, 0
    for _, t in CHAIN_PAIRS:
        ids = [BOS_ID] + WORDS.encode(t) + [EOS_ID]
        for prev, gold in zip(ids, ids[1:]):
            hit = CHAIN.get(prev)
            logits = np.zeros(V)
            if hit is not None:
                logits[hit] = STEP_LOGIT
            nll += math.log(np.exp(logits).sum()) - logits[gold]
            correct += gold == hit
            tokens += 1
    assert tokens == 23 and correct == 18
    assert result["loss"] == pytest.approx(nll / tokens, rel=1e-6)
    assert result["token_accuracy"] == correct / tokens


@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_the_loss_is_scored_without_a_gradient(path, monkeypatch):
    """Evaluation computes the cross-entropy alone: the kernel that also writes dlogits (B·To, V) never
    runs, and the loss is still the hand-computed one (constant logits)."""
    pytest.importorskip("numba")
    from attnseq.nn import kernels
    from attnseq.nn.kernels import cpu
    calls = []
    real = cpu.softmax_cross_entropy
    monkeypatch.setattr(cpu, "softmax_cross_entropy", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    with kernels.using(path):
        result = evaluate(constant_logits_model(), encode_pairs(CONST_PAIRS, CHARS, CHARS), CHARS, batch_size=2)
    log_z = math.log(sum(math.exp(b) for b in BIAS))
    gold = [g for row in CONST_GOLD for g in row]
    assert result["loss"] == pytest.approx(sum(log_z - BIAS[g] for g in gold) / len(gold), rel=1e-12)
    assert calls == []
