"""The decoding module: the generic greedy search matches the decoder's own, eval mode is restored
whatever happens, one default output length rules every decoder, and rows come back in order."""
import numpy as np
import pytest

from attnseq.nn import decoders, output_length as output_length_mod
from attnseq.nn.attention import mask_bias
from attnseq.nn.model import AttentionSeq2seq
from attnseq.nn.output_length import OutputLengthRule
from attnseq.nn.search import greedy_search
from attnseq.run import decoding
from attnseq.run.decoding import beam_decode, beam_search, greedy_decode, model_step, output_length

BOS, EOS, PAD = 1, 2, 0


def random_model(eos_bias=None, seed=0):
    """A small float64 model with weights large enough that outputs depend on the source;
    ``eos_bias`` sets eos's output bias (very negative: eos is never emitted)."""
    model = AttentionSeq2seq(9, 8, 6, 10, dtype="float64", seed=seed)
    for p in model.parameters():
        p *= 3
    if eos_bias is not None:
        model.state_dict()["decoder.out.b"][model.eos_id] = eos_bias
    return model


def shuffled_sources(M=12, seed=0):
    """src (M, M) with row lengths a permutation of 1..M (so length sorting reorders rows), and the lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.arange(1, M + 1))
    src = np.zeros((M, M), dtype=np.int64)
    for k, L in enumerate(lengths):
        src[k, :L] = rng.integers(3, 9, L)
    return src, lengths


# -- greedy_search ---------------------------------------------------------------------------
def counting_step(stop_after):
    """Row n emits token 3 until it has emitted stop_after[n] tokens, then eos; attention is 1 + row index."""
    stop_after = np.asarray(stop_after)

    def step(tokens, t):
        N = len(tokens)
        scores = np.zeros((N, 5))
        scores[np.arange(N), np.where(t + 1 >= stop_after, EOS, 3)] = 1.0
        return scores, t + 1, np.tile((1.0 + np.arange(N))[:, None], (1, 2))
    return step


def test_greedy_search_pads_after_eos_and_stops_every_four_steps():
    ids, w = greedy_search(counting_step([1, 3, 6]), 0, 3, 2, BOS, EOS, max_len=20, pad_id=PAD)
    assert ids.shape == (3, 8) and w.shape == (3, 8, 2)          # all done at step 6, seen at step 8
    assert ids.dtype == np.int64
    for n, L in enumerate([1, 3, 6]):
        assert ids[n].tolist() == [3] * (L - 1) + [EOS] + [PAD] * (8 - L)
        assert (w[n, :L] == n + 1).all() and (w[n, L:] == 0).all()
    cut, _ = greedy_search(counting_step([1, 3, 6]), 0, 3, 2, BOS, EOS, max_len=5, pad_id=PAD)
    assert cut.shape == (3, 5) and EOS not in cut[2].tolist()
    with pytest.raises(ValueError, match="max_len"):
        greedy_search(counting_step([1]), 0, 1, 2, BOS, EOS, max_len=0)


def test_greedy_search_equals_the_decoders_generate():
    model = random_model(eos_bias=1.0).eval()
    src, _ = shuffled_sources()
    hs, state, mask = model.encode(src)
    N, Ts, _ = hs.shape
    want_ids, want_w = model.decoder.generate(hs, state, mask, BOS, EOS, 30, PAD)
    ids, w = greedy_search(model_step(model, hs, mask), state, N, Ts, BOS, EOS, 30, PAD)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(w, want_w)
    ended = [k for k in range(N) if EOS in ids[k]]
    assert 0 < len(ended) < N                                      # rows that end and rows cut at max_len
    hs, state, mask = model.encode(src[ended])
    want_ids, want_w = model.decoder.generate(hs, state, mask, BOS, EOS, 30, PAD)
    ids, w = greedy_search(model_step(model, hs, mask), state, len(ended), Ts, BOS, EOS, 30, PAD)
    assert ids.shape[1] < 30                                       # the rows that end: the early stop too
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(w, want_w)


# -- one greedy path -----------------------------------------------------------------------------
# options, and an eos output bias with which some rows end within 9 tokens and some do not
VARIANTS = {"book": ({}, 1.5), "general": (dict(attention="general"), 1.5),
            "feeding": (dict(input_feeding=True, decoder_layers=2), 6.0),
            "all": (dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="additive",
                         input_feeding=True, tie_embeddings=True), 9.0)}


def written_out_greedy(model, src, max_len):
    """Greedy decoding written out, without greedy_search: one ``decoder.step`` per token, the argmax fed
    back, pad after a row's eos, stopping once every row has ended."""
    with model.eval_mode():
        hs, state, mask = model.encode(src)
        bias = mask_bias(mask, hs.dtype)
        N, Ts = src.shape
        ids, weights = np.full((N, max_len), PAD), np.zeros((N, max_len, Ts))
        tokens, done = np.full(N, BOS), np.zeros(N, dtype=bool)
        for t in range(max_len):
            logits, state, a = model.decoder.step(tokens, state, hs, bias)
            tokens = logits.argmax(axis=1)
            ids[:, t] = np.where(done, PAD, tokens)
            weights[:, t] = a * ~done[:, None]
            done |= tokens == EOS
            if done.all():
                return ids[:, :t + 1], weights[:, :t + 1]
    return ids, weights


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_greedy_entry_point_is_the_one_path(variant, monkeypatch):
    """model.generate, greedy_batch, greedy_encoded, greedy_decode and evaluate all decode through
    AttentionDecoder.generate (greedy_search over its step function), and give what the written-out loop gives."""
    options, eos_bias = VARIANTS[variant]
    model = AttentionSeq2seq(9, 8, 6, 10, dtype="float64", seed=1, **options)
    model.load_state_dict({k: np.random.default_rng(2).standard_normal(v.shape) for k, v in model.state_dict().items()})
    src, lengths = shuffled_sources()
    calls = []
    real = decoders.greedy_search
    monkeypatch.setattr(decoders, "greedy_search", lambda *a: calls.append(a[2]) or real(*a))   # a[2]: rows
    for bias in (20.0, eos_bias):                                   # all end at once; some end, some do not
        model.state_dict()["decoder.out.b"][EOS] = bias
        want_ids, want_w = written_out_greedy(model, src, 9)
        ids, w = model.generate(src, 9)
        L = want_ids.shape[1]
        assert L == 1 if bias == 20.0 else (L == 9 and 0 < sum(EOS in row for row in want_ids) < 12)
        np.testing.assert_array_equal(ids[:, :L], want_ids)
        np.testing.assert_array_equal(w[:, :L], want_w)
        assert ids.shape[1] == (4 if L == 1 else 9)                 # all ended: seen at the check every 4 steps
        assert (ids[:, L:] == PAD).all() and (w[:, L:] == 0).all()
    assert calls == [12, 12]
    for got in (decoding.greedy_batch(model, src, 9), decoding.greedy_encoded(model, *model.encode(src), 9),
                model.decoder.generate(*model.encode(src), BOS, EOS, 9, PAD)):
        np.testing.assert_array_equal(got[0], ids)
        np.testing.assert_array_equal(got[1], w)
    calls.clear()
    rows = greedy_decode(model, src, lengths, batch_size=5, max_len=9, threads=1)
    assert sorted(calls) == [2, 5, 5]                               # the three length-sorted batches
    for k, row in enumerate(rows):
        alone, _ = written_out_greedy(model, src[k:k + 1, :lengths[k]], 9)
        np.testing.assert_array_equal(row, alone[0, :output_length(alone[0], EOS)])


# -- eval_mode ---------------------------------------------------------------------------------
def flags(model):
    return {m.training for _, m in model.named_modules()}


@pytest.mark.parametrize("start", [True, False])
def test_eval_mode_restores_the_flag_after_an_exception(start):
    model = random_model().train(start)
    with pytest.raises(RuntimeError, match="boom"):
        with model.eval_mode() as m:
            assert m is model and flags(model) == {False}
            raise RuntimeError("boom")
    assert flags(model) == {start}


def test_decoders_leave_a_training_model_training_even_on_bad_input():
    model = random_model().train()
    src, lengths = shuffled_sources()
    model.generate(src)
    greedy_decode(model, src, lengths, batch_size=5, threads=2)
    beam_decode(model, src, lengths, beam_size=2, max_len=5, batch_size=5, threads=2)
    assert flags(model) == {True}
    with pytest.raises(ValueError):
        model.generate(np.full((2, 3), 99))                        # ids beyond the vocabulary
    assert flags(model) == {True}


# -- one default output length ------------------------------------------------------------------
@pytest.fixture
def short_default(monkeypatch):
    """default_max_len replaced by one that records the source widths it is asked about and gives 3."""
    asked = []

    def fake(src_len, rule=None):
        asked.append(int(src_len))
        return 3
    monkeypatch.setattr(output_length_mod, "default_max_len", fake)
    return asked


def test_every_decoder_takes_its_default_length_from_one_place(short_default):
    model = random_model(eos_bias=-1e4)                            # never ends: runs to the limit
    src, lengths = shuffled_sources()
    ids, w = model.generate(src)
    assert ids.shape == (12, 3) and w.shape == (12, 3, 12) and short_default == [12]
    short_default.clear()
    outs = greedy_decode(model, src, lengths, batch_size=5)
    assert [len(o) for o in outs] == [3] * 12
    assert sorted(short_default) == [5, 10, 12]                     # the widths of the three sorted batches
    short_default.clear()
    found = beam_decode(model, src, lengths, beam_size=2, batch_size=5)
    assert [len(f[0].ids) for f in found] == [3] * 12 and sorted(short_default) == [5, 10, 12]
    short_default.clear()
    assert [len(h.ids) for h in beam_search(model, src, beam_size=2)[0]] == [3] and short_default == [12]


def test_an_explicit_max_len_wins_over_the_default(short_default):
    model = random_model(eos_bias=-1e4)
    src, lengths = shuffled_sources()
    assert [len(o) for o in greedy_decode(model, src, lengths, batch_size=5, max_len=5)] == [5] * 12
    assert [len(f[0].ids) for f in beam_decode(model, src, lengths, 2, max_len=5, batch_size=5)] == [5] * 12
    assert model.generate(src, 5)[0].shape == (12, 5)
    assert short_default == []


def test_evaluate_decodes_to_the_default_length(short_default):
    from attnseq.data.batching import encode_pairs
    from attnseq.data.tokenizers import CharTokenizer
    from attnseq.run.evaluation import evaluate
    pairs = [("abc", "xy"), ("a", "yyy"), ("abcabc", "x")]
    src_tok = CharTokenizer.build(s for s, _ in pairs)
    tgt_tok = CharTokenizer.build(t for _, t in pairs)
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, 4, 6, dtype="float64")
    model.state_dict()["decoder.out.b"][model.eos_id] = -1e4
    result = evaluate(model, encode_pairs(pairs, src_tok, tgt_tok), tgt_tok, batch_size=2)
    assert sorted(short_default) == [3, 6] and result["n"] == 3


def test_translate_takes_the_default_length(tiny_run, short_default):
    from attnseq.run.inference import Translator
    tr = Translator(str(tiny_run))
    tr.model.state_dict()["decoder.out.b"][tr.model.eos_id] = -1e4
    for beam in (1, 3):
        out = tr.translate(["Sept 25, 1984", "1/2/03"], beam=beam)
        assert [len(t.out_tokens) for t in out] == [3, 3]
        assert out[0].weights.shape == (3, 13)
    assert [len(t.out_tokens) for t in tr.translate(["1/2/03"], max_len=6)] == [6]


@pytest.mark.parametrize("threads", [1, 2])
def test_every_decoder_follows_the_models_own_rule(threads):
    """A model's ``output_len_rule`` (what load_checkpoint sets from config.json) is every decoder's
    default, in thread replicas too; without one it is 2 * Ts + 10; a caller's max_len beats both."""
    model = random_model(eos_bias=-1e4)                            # never ends: runs to the limit
    src, lengths = shuffled_sources()
    assert model.generate(src)[0].shape[1] == 2 * 12 + 10          # no rule: the legacy one
    model.output_len_rule = OutputLengthRule(3, 1)
    widths = {k: int(lengths[idx].max()) for idx in decoding.batch_order(lengths, 5, None, True) for k in idx}
    want = [3 * widths[k] + 1 for k in range(12)]                  # each row: its sorted batch's width
    assert [len(o) for o in greedy_decode(model, src, lengths, batch_size=5, threads=threads)] == want
    assert [len(f[0].ids) for f in beam_decode(model, src, lengths, 2, batch_size=5, threads=threads)] == want
    assert model.generate(src)[0].shape[1] == 3 * 12 + 1
    assert [len(h.ids) for h in beam_search(model, src, beam_size=2)[0]] == [3 * 12 + 1]
    override = OutputLengthRule(1, 2)                      # an override: tokens, or a rule of its own
    assert [len(o) for o in greedy_decode(model, src, lengths, batch_size=5, max_len=override,
                                          threads=threads)] == [widths[k] + 2 for k in range(12)]
    assert [len(f[0].ids) for f in beam_decode(model, src, lengths, 2, max_len=4, batch_size=5,
                                               threads=threads)] == [4] * 12
    assert model.generate(src, override)[0].shape[1] == 12 + 2


def test_evaluate_follows_the_models_rule_and_an_override(monkeypatch):
    from attnseq.data.batching import encode_pairs
    from attnseq.data.tokenizers import CharTokenizer
    from attnseq.run.evaluation import evaluate
    asked = []
    real = decoders.greedy_search
    monkeypatch.setattr(decoders, "greedy_search", lambda *a: asked.append(a[6]) or real(*a))   # a[6]: max_len
    pairs = [("abc", "xy"), ("a", "yyy"), ("abcabc", "x")]
    src_tok = CharTokenizer.build(s for s, _ in pairs)
    tgt_tok = CharTokenizer.build(t for _, t in pairs)
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, 4, 6, dtype="float64")
    model.output_len_rule = OutputLengthRule(5, 0)
    data = encode_pairs(pairs, src_tok, tgt_tok)
    evaluate(model, data, tgt_tok, batch_size=2)
    assert sorted(asked) == [5 * 3, 5 * 6]                          # batches of widths 3 and 6
    asked.clear()
    evaluate(model, data, tgt_tok, batch_size=2, max_len=7)
    assert asked == [7, 7]


# -- row order ---------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
def test_greedy_decode_keeps_row_order(threads):
    model = random_model(eos_bias=1.0)
    src, lengths = shuffled_sources()
    outs, weights = greedy_decode(model, src, lengths, batch_size=5, max_len=20, with_weights=True, threads=threads)
    assert len({len(o) for o in outs}) > 2                          # outputs differ, so a mix-up would show
    for k in range(len(src)):
        ids, w = model.generate(src[k:k + 1, :lengths[k]], 20)
        n = output_length(ids[0], EOS)
        np.testing.assert_array_equal(outs[k], ids[0, :n])
        np.testing.assert_allclose(weights[k], w[0, :n], rtol=1e-10, atol=1e-12)
        assert weights[k].shape == (n, lengths[k])


@pytest.mark.parametrize("threads", [1, 2])
def test_beam_decode_keeps_row_order(threads):
    model = random_model(eos_bias=0.0)
    src, lengths = shuffled_sources()
    found = beam_decode(model, src, lengths, beam_size=3, alpha=0.6, max_len=20, n_best=2, batch_size=5,
                        threads=threads)
    assert len({tuple(f[0].ids) for f in found}) > 2
    for k, hyps in enumerate(found):
        alone = beam_search(model, src[k:k + 1, :lengths[k]], beam_size=3, alpha=0.6, max_len=20, n_best=2)[0]
        assert [h.ids for h in hyps] == [h.ids for h in alone]
        np.testing.assert_allclose([h.score for h in hyps], [h.score for h in alone], rtol=1e-10)


@pytest.mark.parametrize("kernels_on", [True, False], ids=["kernels", "numpy"])
@pytest.mark.parametrize("options", [dict(), dict(attention="general"), dict(attention="additive"),
                                     dict(input_feeding=True, decoder_layers=2)],
                         ids=["dot", "general", "additive", "feeding-2-layers"])
def test_step_with_k_rows_per_source_equals_the_step_on_repeated_states(options, kernels_on):
    """Beam search steps k hypotheses per sentence against hs as it is, (N, k, H) queries: the same
    logits, state and weights as stepping each of the N*k rows against its own copy of hs."""
    from attnseq.nn import kernels
    from attnseq.nn.attention import mask_bias
    model = AttentionSeq2seq(9, 8, 6, 10, dtype="float64", seed=4, **options)
    src, _ = shuffled_sources(5, seed=2)
    k, rng = 3, np.random.default_rng(1)
    with kernels.using("numba" if kernels_on and kernels.fused(src) is not None else "numpy"), model.eval_mode():
        hs, state, mask = model.encode(src)
        state = tuple(np.repeat(s, k, axis=0) + rng.normal(0, 0.1, (k * len(src),) + s.shape[1:]) for s in state)
        tokens = rng.integers(3, 8, k * len(src))
        got = model.decoder.step(tokens, state, hs, mask_bias(mask, hs.dtype))
        hs_k, mask_k = np.repeat(hs, k, axis=0), np.repeat(mask, k, axis=0)
        want = model.decoder.step(tokens, state, hs_k, mask_bias(mask_k, hs.dtype))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)          # logits (N*k, V)
    for g, w in zip(got[1], want[1]):                                            # the new state
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12, atol=1e-12)          # weights (N*k, Ts)
    assert got[2].shape == (k * len(src), src.shape[1])
