"""The model options (encoder/decoder layers, bidirectional encoder, attention scores, input feeding,
label smoothing, tied embeddings): padding rules, decoding step against teacher forcing, greedy and beam
search, the loss with smoothing on both paths, config and checkpoints. Gradient checks for every option
are in test_gradients.py.

Tests of arithmetic run on both CPU paths (``kernel_path``).
"""
import json

import numpy as np
import pytest
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq import AttentionSeq2seq
from attnseq.nn import kernels
from attnseq.nn.attention import mask_bias
from attnseq.nn.backend import to_numpy
from attnseq.nn.decoders import AttentionDecoder
from attnseq.nn.encoders import BiLSTM, Encoder, reversal_index
from attnseq.nn.layers import SoftmaxCrossEntropy
from attnseq.nn.lstm import LSTM
from attnseq.nn.search import log_softmax
from attnseq.run.decoding import beam_search, greedy_decode, model_step

BOOK_KEYS = ["encoder.embed.W", "encoder.lstm.Wx", "encoder.lstm.Wh", "encoder.lstm.b",
             "decoder.embed.W", "decoder.lstm.Wx", "decoder.lstm.Wh", "decoder.lstm.b",
             "decoder.out.W", "decoder.out.b"]
ALL = dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="additive", input_feeding=True,
           label_smoothing=0.1, tie_embeddings=True)
VARIANTS = {
    "book": {},
    "encoder_layers": dict(encoder_layers=3),
    "decoder_layers": dict(decoder_layers=2),
    "bidirectional": dict(bidirectional=True),
    "bidirectional_layers": dict(bidirectional=True, encoder_layers=2, decoder_layers=2),
    "general": dict(attention="general"),
    "additive": dict(attention="additive"),
    "input_feeding": dict(input_feeding=True),
    "input_feeding_layers": dict(input_feeding=True, decoder_layers=3, attention="general"),
    "tie_embeddings": dict(tie_embeddings=True),
    "all": ALL,
    "gru": dict(cell="gru"),
    "gru_bidirectional_layers": dict(cell="gru", bidirectional=True, encoder_layers=2, decoder_layers=2),
    "gru_input_feeding_layers": dict(cell="gru", input_feeding=True, decoder_layers=3, attention="general"),
    "gru_all": dict(ALL, cell="gru"),
}
DECODER_VARIANTS = {  # AttentionDecoder keywords
    "book": {},
    "layers": dict(layers=3),
    "general": dict(attention="general"),
    "additive": dict(attention="additive"),
    "input_feeding": dict(input_feeding=True),
    "input_feeding_layers": dict(input_feeding=True, layers=2, attention="additive"),
    "tied": dict(tie_embeddings=True),
    "tied_feeding": dict(tie_embeddings=True, input_feeding=True, layers=2),
    "gru": dict(cell="gru"),
    "gru_layers": dict(cell="gru", layers=3),
    "gru_tied_feeding": dict(cell="gru", tie_embeddings=True, input_feeding=True, layers=2, attention="additive"),
}


def random_model(seed=0, dtype="float64", **options):
    """A small model whose every parameter is random (std 1), so outputs depend on the source."""
    model = AttentionSeq2seq(11, 9, 5, 6, dtype=dtype, seed=seed, **options)
    rng = np.random.default_rng(seed + 1)
    model.load_state_dict({k: rng.standard_normal(v.shape) for k, v in model.state_dict().items()})
    return model


def padded_sources(seed=0, lengths=(6, 3, 1, 5)):
    rng = np.random.default_rng(seed)
    src = np.zeros((len(lengths), max(lengths)), dtype=np.int64)   # (N, Ts), right-padded with 0
    for row, n in enumerate(lengths):
        src[row, :n] = rng.integers(3, 11, n)
    return src, np.array(lengths)


# -- the bidirectional encoder and padding ----------------------------------------------------
def test_reversal_index_reverses_each_rows_real_tokens_in_place():
    idx = reversal_index(np, 3, 4, np.array([4, 2, 1]))
    assert idx.tolist() == [[3, 2, 1, 0], [1, 0, 2, 3], [0, 1, 2, 3]]
    assert reversal_index(np, 2, 3).tolist() == [[2, 1, 0], [2, 1, 0]]


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("layers", [1, 2])
def test_bidirectional_padded_row_equals_the_row_alone(layers):
    """A padded row gives the states (every real position, both directions) and the final states it
    gives alone: the backward direction starts at the row's last real token, padding never enters."""
    enc = Encoder(11, 4, 6, rng=np.random.default_rng(0), dtype=np.float64, layers=layers, bidirectional=True,
                  decoder_layers=layers)
    for _, m in enc.named_modules():
        if isinstance(m, LSTM):                                     # random biases, not just the forget 1s
            m.params[2][...] = np.random.default_rng(1).standard_normal(m.params[2].shape)
    top = enc.lstm if layers == 1 else enc.lstm2
    src, lengths = padded_sources()
    with enc.eval_mode():
        hs, (h, c) = enc.forward(src, lengths)                      # h, c: the bridge's output
        finals = (top.h_final, top.c_final)                         # (N, H): [forward, backward]
        for n, L in enumerate(lengths):
            hs1, (h1, c1) = enc.forward(src[n:n + 1, :L], None)
            for got, alone in ((hs[n, :L], hs1[0]), (h[n], h1[0]), (c[n], c1[0]),
                               (finals[0][n], top.h_final[0]), (finals[1][n], top.c_final[0])):
                np.testing.assert_allclose(got, alone, rtol=1e-12, atol=1e-14, err_msg=f"row {n}")
    H2 = 3                                                          # each direction's half of H = 6
    rows = np.arange(len(lengths))
    np.testing.assert_array_equal(finals[0][:, :H2], hs[rows, lengths - 1, :H2])   # forward: at the last token
    np.testing.assert_array_equal(finals[0][:, H2:], hs[:, 0, H2:])                # backward: at the first


@pytest.mark.usefixtures("kernel_path")
def test_bidirectional_padding_is_not_read():
    """Whatever sits in padded positions, real positions' states do not change."""
    bi = BiLSTM(3, 4, np.random.default_rng(0), dtype=np.float64).eval()
    xs = np.random.default_rng(1).standard_normal((3, 5, 3))
    lengths = np.array([5, 2, 3])
    hs = bi.forward(xs, lengths).copy()
    xs[np.arange(5)[None, :] >= lengths[:, None]] = 1e3              # garbage in the padding
    hs2 = bi.forward(xs, lengths)
    real = np.arange(5)[None, :] < lengths[:, None]
    np.testing.assert_array_equal(hs[real], hs2[real])


def test_bidirectional_needs_an_even_hidden_size():
    with pytest.raises(ValueError, match="hidden_size must be even for a bidirectional encoder.*got 7"):
        AttentionSeq2seq(5, 5, 4, 7, bidirectional=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(encoder_layers=0), "encoder_layers must be a positive integer"),
    (dict(decoder_layers=1.5), "decoder_layers must be a positive integer"),
    (dict(attention="luong"), "attention must be one of dot, general, additive, got 'luong'"),
    (dict(label_smoothing=1.0), r"label_smoothing must be a number in \[0, 1\)"),
    (dict(label_smoothing=-0.1), r"label_smoothing must be a number in \[0, 1\)"),
    (dict(input_feeding="yes"), "input_feeding must be true or false"),
    (dict(tie_embeddings=1), "tie_embeddings must be true or false"),
])
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionSeq2seq(5, 5, 4, 8, **kwargs)


# -- decoding step against teacher forcing, every decoder variant ------------------------------
def decoder_case(variant, seed=0):
    """A float64 AttentionDecoder of ``variant`` in eval mode, random parameters, random encoder output
    hs (3, 4, H) with source lengths 4, 2, 1, and an encoder state for its layers."""
    rng = np.random.default_rng(seed)
    V, D, H, N, Ts = 9, 4, 5, 3, 4
    opts = DECODER_VARIANTS[variant]
    dec = AttentionDecoder(V, D, H, rng=rng, dtype=np.float64, dropout=0.3, **opts).eval()
    dec.load_state_dict({k: rng.standard_normal(v.shape) * 0.7 for k, v in dec.state_dict().items()})
    L = opts.get("layers", 1)
    shape = (N, H) if L == 1 else (N, L, H)
    state = tuple(rng.standard_normal(shape) for _ in (("h",) if opts.get("cell") == "gru" else ("h", "c")))
    hs = rng.standard_normal((N, Ts, H))
    mask = np.arange(Ts)[None, :] < np.array([4, 2, 1])[:, None]
    return dec, hs, state, mask, rng


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("variant", DECODER_VARIANTS)
def test_decoder_step_reproduces_teacher_forcing(variant):
    """Fed the teacher-forced tokens one at a time from ``initial_state``, step gives forward's logits
    and attention weights at every position."""
    dec, hs, state, mask, rng = decoder_case(variant)
    tgt_in = rng.integers(0, dec.vocab_size, (hs.shape[0], 6))
    logits = dec.forward(tgt_in, hs, state, mask).copy()             # (N, To, V)
    weights = np.array(dec.attention_weights)                       # (N, To, Ts)
    bias, table = mask_bias(mask, hs.dtype), dec.input_table()
    state = dec.initial_state(state)
    for t in range(tgt_in.shape[1]):
        step_logits, state, a = dec.step(tgt_in[:, t], state, hs, bias, table)
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-10, atol=1e-12, err_msg=f"t={t}")
        np.testing.assert_allclose(a, weights[:, t], rtol=1e-10, atol=1e-12, err_msg=f"t={t}")
        assert float(abs(a[~mask]).max()) == 0.0                    # padding gets weight exactly 0


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("variant", ["input_feeding", "input_feeding_layers", "tied_feeding", "gru_tied_feeding"])
def test_input_feeding_training_mode_forward_equals_eval(variant):
    """The step-by-step teacher forcing (training mode, buffers, no dropout drawn at p = 0) gives
    eval mode's logits, and twice in a row the same (buffers reused, nothing left over)."""
    dec, hs, state, mask, rng = decoder_case(variant)
    for _, m in dec.named_modules():
        if hasattr(m, "p"):
            m.p = 0.0
    tgt_in = rng.integers(0, dec.vocab_size, (3, 5))
    want = dec.forward(tgt_in, hs, state, mask).copy()
    dec.train()
    np.testing.assert_allclose(dec.forward(tgt_in, hs, state, mask), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dec.forward(tgt_in, hs, state, mask), want, rtol=1e-12, atol=1e-14)


def test_decoding_state_shapes():
    """(N, H) each for the book's decoder; stacked rows otherwise, h~ as h's last row with input feeding."""
    src, _ = padded_sources()
    N, H = src.shape[0], 6
    for opts, h_shape, c_shape in (({}, (N, H), (N, H)),
                                   (dict(decoder_layers=2), (N, 2, H), (N, 2, H)),
                                   (dict(input_feeding=True), (N, 2, H), (N, 1, H)),
                                   (dict(input_feeding=True, decoder_layers=3, encoder_layers=2),
                                    (N, 4, H), (N, 3, H))):
        with random_model(**opts).eval_mode() as m:
            _, (h, c), _ = m.encode(src)
        assert h.shape == h_shape and c.shape == c_shape, opts
        if opts.get("input_feeding"):
            assert not h[:, -1].any()                               # h~_0 = 0
    for opts, h_shape in (({}, (N, H)), (dict(decoder_layers=2, bidirectional=True), (N, 2, H)),
                          (dict(input_feeding=True, decoder_layers=2), (N, 3, H))):
        with random_model(cell="gru", **opts).eval_mode() as m:
            _, state, _ = m.encode(src)
        assert len(state) == 1 and state[0].shape == h_shape, opts    # a GRU's state: h alone


# -- greedy and beam over every option ----------------------------------------------------------
@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_is_the_argmax_of_teacher_forcing(variant):
    """Greedy ids are forward's argmax when forward reads [bos, ids...], up to each row's eos."""
    model = random_model(**VARIANTS[variant])
    src, _ = padded_sources()
    ids, weights = model.generate(src, max_len=8)
    tgt = np.concatenate([np.full((len(ids), 1), model.bos_id), ids], axis=1)
    with model.eval_mode():
        logits = to_numpy(model.logits(src, tgt))
        forced = to_numpy(model.attention_weights)
    for n, row in enumerate(ids):
        L = list(row).index(model.eos_id) + 1 if model.eos_id in row else len(row)
        np.testing.assert_array_equal(logits[n, :L].argmax(-1), row[:L])
        np.testing.assert_allclose(weights[n, :L], forced[n, :L], rtol=1e-10, atol=1e-12)


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_hypotheses_score_their_teacher_forced_log_probs(variant):
    """Each beam hypothesis's log-probability is the sum of forward's log-probabilities of its ids: the
    state (stacked layers, h~) follows every reordering of the beam. Beam 1 is greedy."""
    model = random_model(**VARIANTS[variant])
    src, _ = padded_sources(1)
    found = beam_search(model, src, beam_size=3, max_len=7, n_best=3)
    for n, hyps in enumerate(found):
        assert len(hyps) == 3
        for hyp in hyps:
            tgt = np.array([[model.bos_id] + hyp.ids])
            with model.eval_mode():
                logp = to_numpy(log_softmax(model.logits(src[n:n + 1, :int((src[n] != 0).sum())], tgt)))[0]
            want = sum(logp[t, tok] for t, tok in enumerate(hyp.ids))
            assert hyp.logprob == pytest.approx(want, rel=1e-9, abs=1e-9)
    greedy = model.generate(src, max_len=7)[0]
    one = beam_search(model, src, beam_size=1, max_len=7)
    for n, hyps in enumerate(one):
        row = list(greedy[n])
        L = row.index(model.eos_id) + 1 if model.eos_id in row else len(row)
        assert hyps[0].ids == row[:L]


def test_greedy_decode_rows_match_one_batch():
    """Length-sorted batches over threads give each row what one batch gives (stacked state, h~)."""
    model = random_model(**ALL)
    src, lengths = padded_sources(2, lengths=(2, 6, 1, 4, 3, 5))
    outs = greedy_decode(model, src, lengths, batch_size=2, max_len=6, threads=2)
    ids, _ = model.generate(src, max_len=6)
    for n, out in enumerate(outs):
        row = list(ids[n])
        assert list(out) == row[:row.index(model.eos_id) + 1 if model.eos_id in row else len(row)]


@pytest.mark.usefixtures("kernel_path")
def test_model_step_reuses_the_keys_of_one_batch():
    """The additive score's keys (hs Wk + b) are made once per batch, not at every step."""
    model = random_model(attention="additive")
    src, _ = padded_sources()
    calls = []
    weights = model.decoder.attention.weight
    original = weights.keys
    weights.keys = lambda hs: calls.append(hs.shape) or original(hs)
    model.generate(src, max_len=6)
    assert calls == [(4, 6, 6)]


# -- label smoothing --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_smoothed_loss_and_gradient_same_on_both_paths_and_by_hand(dtype, tol, eps):
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 5, 7)) * 3).astype(dtype)
    targets = np.array([[1, 2, 0, 0, 0], [3, 3, 3, 6, 0], [5, 4, 2, 1, 6]])  # 0 is padding
    got = {}
    for path in ("numba", "numpy"):
        with kernels.using(path):
            ce = SoftmaxCrossEntropy(ignore_index=0, smoothing=eps)
            loss = ce.forward(logits, targets)
            got[path] = (float(loss), ce.backward().copy())
            assert loss.dtype == dtype and got[path][1].dtype == dtype
    z = logits.astype(np.float64).reshape(-1, 7)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    t = targets.ravel()
    q = np.full(z.shape, eps / 7) + (1 - eps) * np.eye(7)[t]       # the smoothed target distribution
    real = t != 0
    want_loss = -(q * logp).sum(1)[real].sum() / real.sum()
    want_grad = ((np.exp(logp) - q) * real[:, None] / real.sum()).reshape(logits.shape)
    for path, (loss, grad) in got.items():
        assert loss == pytest.approx(want_loss, rel=tol), path
        np.testing.assert_allclose(grad, want_grad, rtol=tol * 10, atol=tol, err_msg=path)
    assert got["numba"][0] == pytest.approx(got["numpy"][0], rel=tol)
    np.testing.assert_allclose(got["numba"][1], got["numpy"][1], rtol=tol * 10, atol=tol)


def test_label_smoothing_changes_the_training_loss_only():
    """The smoothed model trains on the smoothed loss; its logits are the same network's."""
    src, _ = padded_sources()
    tgt = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 2, 0, 0, 0], [1, 3, 3, 2, 0]])
    plain, smooth = AttentionSeq2seq(11, 9, 5, 6, seed=2), AttentionSeq2seq(11, 9, 5, 6, seed=2, label_smoothing=0.2)
    np.testing.assert_array_equal(plain.logits(src, tgt), smooth.logits(src, tgt))
    assert float(smooth.forward(src, tgt)) != float(plain.forward(src, tgt))


# -- tied embeddings ----------------------------------------------------------------------------
def test_tied_embeddings_hold_one_array():
    """No decoder.out.W: the output layer reads decoder.embed.W itself (a zero row of it gives that
    token the output bias as its logit), and the checkpoint keys name it once."""
    model = random_model(dtype="float64", tie_embeddings=True)
    keys = list(model.state_dict())
    assert "decoder.out.W" not in keys
    assert {"decoder.out.proj.W", "decoder.out.proj.b", "decoder.out.b"} <= set(keys)
    assert [k for k, v in model.state_dict().items() if v.shape == (9, 5)] == ["decoder.embed.W"]
    src, _ = padded_sources()
    tgt = np.array([[1, 4, 5]] * 4)                                 # token 3 not read as an input
    model.decoder.embed.params[0][3] = 0.0
    with model.eval_mode():
        logits = model.logits(src, tgt)
    np.testing.assert_array_equal(logits[..., 3], model.decoder.out.params[0][3])


# -- config and checkpoints -------------------------------------------------------------------
def test_config_holds_every_option_and_rebuilds_the_model():
    model = AttentionSeq2seq(11, 9, 5, 6, **ALL)
    for key, value in ALL.items():
        assert model.config[key] == value
    again = AttentionSeq2seq.from_config(json.loads(json.dumps(model.config.to_dict())))
    assert list(again.state_dict()) == list(model.state_dict())
    assert again.config == model.config


def test_a_config_without_the_options_is_the_books_model():
    """Checkpoints from before the options: their config lacks the keys and gives the same model."""
    old = dict(src_vocab_size=11, tgt_vocab_size=9, wordvec_size=5, hidden_size=6, dropout=0.0, init="xavier",
               dtype="float32", seed=4, pad_id=0, bos_id=1, eos_id=2)
    model = AttentionSeq2seq.from_config(old)
    assert list(model.state_dict()) == BOOK_KEYS
    assert model.config.to_dict() == dict(old, encoder_layers=1, decoder_layers=1, bidirectional=False, attention="dot",
                                input_feeding=False, label_smoothing=0.0, tie_embeddings=False, cell="lstm")
    book = AttentionSeq2seq(11, 9, 5, 6, seed=4)
    for (k, a), b in zip(model.state_dict().items(), book.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_checkpoint_round_trip_with_every_option(tmp_path, cell):
    from attnseq.data.tokenizers import CharTokenizer
    from attnseq.run.checkpoint import load_checkpoint, save_checkpoint
    src_tok, tgt_tok = CharTokenizer.build(["abcdefg"]), CharTokenizer.build(["xyz"])
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, 5, 6, cell=cell, **ALL)
    save_checkpoint(tmp_path / "ck", model, None, src_tok, tgt_tok, {}, {"epoch": 0, "step": 0})
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.model.config == model.config
    src = np.array([[4, 5, 6], [7, 0, 0]])
    np.testing.assert_array_equal(ck.model.generate(src, max_len=5)[0], model.generate(src, max_len=5)[0])
    with np.load(tmp_path / "ck" / "weights.npz") as z:
        assert sorted(z.files) == sorted(model.state_dict())


def test_model_step_runs_every_option():
    """``decoding.model_step`` (what translate and the explorer use) over every option at once."""
    model = random_model(**ALL)
    src, _ = padded_sources()
    with model.eval_mode():
        hs, state, mask = model.encode(src)
        step = model_step(model, hs, mask, log_probs=True)
        logp, state, a = step(np.full(len(src), model.bos_id), state)
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-12)
    assert a.shape == mask.shape and not a[~mask].any()


@pytest.mark.usefixtures("kernel_path")
def test_data_parallel_replicas_give_the_models_gradient():
    """Two threads' replicas (each with its own buffers and step caches) sum to one model's gradient."""
    from attnseq.run.parallel import DataParallel
    model = random_model(**ALL)
    src, _ = padded_sources(3, lengths=(6, 3, 1, 5, 2, 4))
    tgt = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 2, 0, 0, 0], [1, 3, 3, 2, 0], [1, 8, 2, 0, 0],
                    [1, 5, 6, 7, 2]])
    want_loss = float(model.forward(src, tgt))
    model.backward()
    want = [g.copy() for g in model.gradients()]
    with DataParallel(model, 2, trim=True) as dp:
        if dp.threads < 2:
            pytest.skip("threadpoolctl is needed for data-parallel threads")
        assert float(dp.forward(src, tgt)) == pytest.approx(want_loss, rel=1e-12)
        dp.backward()
    for (path, _, _), g, w in zip(model.named_parameters(), model.gradients(), want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=path)


@pytest.mark.slow
def test_every_option_at_once_learns_to_reverse():
    """Trained as test_model's book model is, the model with every option learns the task (a fresh sample)."""
    from helpers import train_steps
    from test_model import exact_match, reverse_task
    src, tgt = reverse_task(np.random.default_rng(0), 4000)
    test_src, test_tgt = reverse_task(np.random.default_rng(1), 300)
    model = AttentionSeq2seq(14, 14, 16, 64, seed=0, **ALL)
    train_steps(model, src, tgt, epochs=8)
    pred, _ = model.generate(test_src, max_len=10)
    assert exact_match(pred, test_tgt) >= 0.95


@pytest.mark.parametrize("input_feeding", [False, True])
def test_the_additive_backward_makes_its_largest_tensor_once(monkeypatch, input_feeding):
    """The additive score's pre_grad, ds v (1 - e^2) (N, To, Ts, A), is made once per backward (with input
    feeding: once per step, (N, 1, Ts, A)), and both halves of the backward, to the queries and to the keys,
    read it."""
    from attnseq.nn.attention import AdditiveWeights
    shapes, real = [], AdditiveWeights.pre_grad
    monkeypatch.setattr(AdditiveWeights, "pre_grad",
                        lambda self, ds, e, out=None: shapes.append(e.shape) or real(self, ds, e, out))
    model = random_model(attention="additive", input_feeding=input_feeding)
    src = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [9, 4, 5, 6]])
    tgt = np.array([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 7, 8, 5, 2]])
    model.forward(src, tgt)
    model.backward()
    N, To, Ts, A = 3, 4, 4, 6
    assert shapes == ([(N, 1, Ts, A)] * To if input_feeding else [(N, To, Ts, A)])
