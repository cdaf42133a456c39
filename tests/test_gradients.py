"""Gradient checks: analytic gradients against centred finite differences, float64, masks present.

Each ``*_errors(xp)`` function runs one layer's forward and backward and returns the
relative error of every gradient it checks, by name. ``CHECKS`` lists them all: each
is a test of its own, and ``test_report_worst_error`` runs them all again to report
the worst, so no test depends on another having run. Every test runs on both CPU paths
(``kernel_path``): the fused numba kernels and the plain numpy code.
"""
import functools

import numpy as np
import pytest
from helpers import numerical_grad, random_like, rel_error
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq import LSTM, Attention, AttentionSeq2seq, Embedding, Linear, SoftmaxCrossEntropy
from attnseq.nn.attention import AttentionWeights, WeightedSum, make_weights
from attnseq.nn.encoders import BiLSTM, BiRNN, Bridge
from attnseq.nn.gru import GRU
from attnseq.nn.layers import TiedOutput

# every test on both CPU paths: the fused kernels and the plain numpy code
pytestmark = pytest.mark.usefixtures("kernel_path")

TOL = 1e-6
N, T, D, H = 3, 5, 4, 3


def device_of(xp):
    return "cpu" if xp is np else "gpu"


def param_errors(layer, loss_fn, name):
    """{name.param: error} for every parameter gradient of ``layer`` (already backpropagated)."""
    return {f"{name}.{pname}": rel_error(g.copy(), numerical_grad(loss_fn, p))
            for pname, p, g in zip(layer.param_names, layer.params, layer.grads)}


def source_mask(xp, lengths, Ts):
    """(N, Ts) bool, True at the first lengths[n] positions of row n."""
    return xp.asarray(np.arange(Ts)[None, :] < np.asarray(lengths)[:, None])


def embedding_errors(xp):
    emb = Embedding(7, D, np.random.default_rng(0), dtype=np.float64).to(device_of(xp))
    ids = xp.asarray([[1, 2, 2, 0], [6, 1, 1, 1]])                  # repeated ids accumulate
    R = random_like(xp, (2, 4, D))
    emb.forward(ids)
    emb.backward(R)
    return param_errors(emb, lambda: (emb.forward(ids) * R).sum(), "embedding")


def lstm_errors(xp, with_lengths):
    lstm = LSTM(D, H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    xs = random_like(xp, (N, T, D), 2)
    h0, c0 = random_like(xp, (N, H), 3), random_like(xp, (N, H), 4)
    lengths = xp.asarray([5, 3, 1]) if with_lengths else None
    R, Rh, Rc = random_like(xp, (N, T, H), 5), random_like(xp, (N, H), 6), random_like(xp, (N, H), 7)
    if with_lengths:  # gradients at padded positions are zero, as attention makes them
        R = R * (xp.arange(T)[None, :, None] < lengths[:, None, None])

    def loss():
        hs = lstm.forward(xs, h0, c0, lengths)
        return (hs * R).sum() + (lstm.h_final * Rh).sum() + (lstm.c_final * Rc).sum()

    name = f"lstm(lengths={with_lengths})"
    loss()
    dxs, dh0, dc0 = lstm.backward(R, Rh, Rc)
    errors = param_errors(lstm, loss, name)
    for x_name, analytic, x in (("xs", dxs, xs), ("h0", dh0, h0), ("c0", dc0, c0)):
        errors[f"{name}.d{x_name}"] = rel_error(analytic, numerical_grad(loss, x))
    return errors


def gru_errors(xp, with_lengths):
    """The GRU over a sequence: parameters, inputs, the start state, with the final state's gradient."""
    gru = GRU(D, H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    gru.params[2][...] = random_like(xp, (3 * H,), 8)              # a random bias, not zeros
    xs, h0 = random_like(xp, (N, T, D), 2), random_like(xp, (N, H), 3)
    lengths = xp.asarray([5, 3, 1]) if with_lengths else None
    R, Rh = random_like(xp, (N, T, H), 5), random_like(xp, (N, H), 6)
    if with_lengths:  # gradients at padded positions are zero, as attention makes them
        R = R * (xp.arange(T)[None, :, None] < lengths[:, None, None])

    def loss():
        return (gru.forward(xs, h0, lengths) * R).sum() + (gru.h_final * Rh).sum()

    name = f"gru(lengths={with_lengths})"
    loss()
    dxs, dh0 = gru.backward(R, Rh)
    errors = param_errors(gru, loss, name)
    for x_name, analytic, x in (("xs", dxs, xs), ("h0", dh0, h0)):
        errors[f"{name}.d{x_name}"] = rel_error(analytic, numerical_grad(loss, x))
    return errors


def gru_steps_errors(xp):
    """The GRU run step by step with part of each input known up front, as input feeding runs it."""
    Df = 3
    gru = GRU(D + 2, H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    gru.params[2][...] = random_like(xp, (3 * H,), 8)
    fixed, rest = random_like(xp, (T, N, Df), 2), random_like(xp, (T, N, D + 2 - Df), 3)
    h0, R = random_like(xp, (N, H), 4), random_like(xp, (T, N, H), 6)

    def loss():
        gru.begin_steps(T, N, h0, fixed=fixed, dtype=np.float64, xp=xp)
        total = 0.0
        for t in range(T):
            gru.inputs(t)[...] = rest[t]
            total += float((gru.run_step(t) * R[t]).sum())
        return total

    loss()
    gru.begin_backward_steps()
    drest = [None] * T
    for t in range(T - 1, -1, -1):
        drest[t] = gru.backward_step(t, R[t]).copy()
    dfixed, dh0 = gru.end_backward_steps()
    errors = param_errors(gru, loss, "gru_steps")
    for x_name, analytic, x in (("fixed", dfixed, fixed), ("rest", xp.stack(drest), rest), ("h0", dh0, h0)):
        errors[f"gru_steps.d{x_name}"] = rel_error(analytic, numerical_grad(loss, x))
    return errors


def bigru_errors(xp):
    """Bidirectional GRU over padded rows: parameters of both directions, inputs, the final state."""
    bi = BiRNN(D, 2 * H, np.random.default_rng(1), dtype=np.float64, rnn=GRU).to(device_of(xp))
    for gru in (bi.fw, bi.bw):
        gru.params[2][...] = random_like(xp, gru.params[2].shape, 8)
    xs = random_like(xp, (N, T, D), 2)
    lengths = xp.asarray([5, 3, 1])
    R = random_like(xp, (N, T, 2 * H), 5) * (xp.arange(T)[None, :, None] < lengths[:, None, None])
    Rh = random_like(xp, (N, 2 * H), 6)

    def loss():
        return (bi.forward(xs, lengths=lengths) * R).sum() + (bi.h_final * Rh).sum()

    loss()
    dxs, dh0 = bi.backward(R, Rh)
    assert dh0 is None and len(bi.final_state) == 1
    errors = named_param_errors(bi, loss, "bigru")
    errors["bigru.dxs"] = rel_error(dxs, numerical_grad(loss, xs))
    return errors


def gru_bridge_errors(xp):
    """The bridge of a GRU encoder: h alone."""
    br = Bridge(2 * H, 2, H, np.random.default_rng(0), dtype=np.float64, parts=GRU.STATE).to(device_of(xp))
    hf, Rh = random_like(xp, (N, 2 * H), 1), random_like(xp, (N, 2, H), 3)

    def loss():
        h, = br.forward(hf)
        return (h * Rh).sum()

    loss()
    dhf, = br.backward(Rh)
    errors = named_param_errors(br, loss, "gru_bridge")
    errors["gru_bridge.dhf"] = rel_error(dhf, numerical_grad(loss, hf))
    return errors


def linear_errors(xp):
    lin = Linear(D, 6, np.random.default_rng(0), dtype=np.float64).to(device_of(xp))
    x, R = random_like(xp, (N, T, D), 1), random_like(xp, (N, T, 6), 2)
    lin.forward(x)
    dx = lin.backward(R)
    f = lambda: (lin.forward(x) * R).sum()
    errors = param_errors(lin, f, "linear")
    errors["linear.dx"] = rel_error(dx, numerical_grad(f, x))
    return errors


def attention_errors(xp):
    """Attention as a whole and its two pieces alone, with a padded source mask."""
    hs, hd = random_like(xp, (N, T, H), 1), random_like(xp, (N, 4, H), 2)
    mask = source_mask(xp, [5, 2, 1], T)
    R, Ra = random_like(xp, (N, 4, H), 3), random_like(xp, (N, 4, T), 4)
    att, w, s = Attention(), AttentionWeights(), WeightedSum()
    f = lambda: (att.forward(hd, hs, mask) * R).sum()
    f()
    a = att.weights.copy()
    dhd, dhs = att.backward(R)
    errors = {"attention.dhd": rel_error(dhd, numerical_grad(f, hd)),
              "attention.dhs": rel_error(dhs, numerical_grad(f, hs))}
    fw = lambda: (w.forward(hd, hs, mask) * Ra).sum()
    fw()
    dhd, dhs = w.backward(Ra)
    errors["attention_weights.dhd"] = rel_error(dhd, numerical_grad(fw, hd))
    errors["attention_weights.dhs"] = rel_error(dhs, numerical_grad(fw, hs))
    fs = lambda: (s.forward(hs, a) * R).sum()
    fs()
    dhs, da = s.backward(R)
    errors["weighted_sum.dhs"] = rel_error(dhs, numerical_grad(fs, hs))
    errors["weighted_sum.da"] = rel_error(da, numerical_grad(fs, a))
    return errors


def cross_entropy_errors(xp, smoothing=0.0):
    logits = random_like(xp, (N, 4, 6), 1)
    targets = xp.asarray([[1, 2, 0, 0], [3, 3, 3, 0], [5, 0, 0, 0]])  # 0 is padding
    ce = SoftmaxCrossEntropy(ignore_index=0, smoothing=smoothing)
    f = lambda: ce.forward(logits, targets)
    f()
    dl = ce.backward()
    return {f"cross_entropy(smoothing={smoothing}).dlogits": rel_error(dl, numerical_grad(f, logits))}


def named_param_errors(module, loss_fn, name):
    """{name.path: error} for every parameter under ``module`` (already backpropagated)."""
    return {f"{name}.{path}": rel_error(mod.grads[i].copy(), numerical_grad(loss_fn, mod.params[i]))
            for path, mod, i in module.named_parameters()}


def score_errors(xp, score):
    """The attention weights with a learned score (general, additive), padded source: hd, hs, parameters."""
    hs, hd = random_like(xp, (N, T, H), 1), random_like(xp, (N, 4, H), 2)
    mask = source_mask(xp, [5, 2, 1], T)
    Ra = random_like(xp, (N, 4, T), 4)
    w = make_weights(score, H, np.random.default_rng(5), dtype=np.float64).to(device_of(xp))
    f = lambda: (w.forward(hd, hs, mask) * Ra).sum()
    f()
    dhd, dhs = w.backward(Ra)
    errors = {f"{score}_weights.dhd": rel_error(dhd, numerical_grad(f, hd)),
              f"{score}_weights.dhs": rel_error(dhs, numerical_grad(f, hs))}
    errors.update(named_param_errors(w, f, f"{score}_weights"))
    return errors


def attention_steps_errors(xp, score):
    """Attention run one decoder step at a time (begin_steps / forward_step / backward_step), as input
    feeding runs it, against finite differences of the same loop; padded source."""
    To = 4
    hs, hd = random_like(xp, (N, T, H), 1), random_like(xp, (N, To, H), 2)
    mask = source_mask(xp, [5, 2, 1], T)
    R = random_like(xp, (N, To, H), 3)
    att = Attention(score, H, np.random.default_rng(5), dtype=np.float64).to(device_of(xp))

    def loss():
        att.begin_steps(hs, mask, To)
        return sum(float((att.forward_step(t, hd[:, t]) * R[:, t]).sum()) for t in range(To))

    loss()
    dhd = [None] * To
    for t in range(To - 1, -1, -1):
        dhd[t] = att.backward_step(t, R[:, t]).copy()
    dhs = att.end_backward_steps()
    name = f"attention_steps({score})"
    errors = {f"{name}.dhd": rel_error(xp.stack(dhd, axis=1), numerical_grad(loss, hd)),
              f"{name}.dhs": rel_error(dhs, numerical_grad(loss, hs))}
    errors.update(named_param_errors(att, loss, name))
    return errors


def lstm_steps_errors(xp):
    """The LSTM run step by step with part of each input known up front (``fixed``) and the rest
    written before each step, as input feeding runs it."""
    Df = 3
    lstm = LSTM(D + 2, H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    fixed, rest = random_like(xp, (T, N, Df), 2), random_like(xp, (T, N, D + 2 - Df), 3)
    h0, c0 = random_like(xp, (N, H), 4), random_like(xp, (N, H), 5)
    R = random_like(xp, (T, N, H), 6)

    def loss():
        lstm.begin_steps(T, N, h0, c0, fixed=fixed, dtype=np.float64, xp=xp)
        total = 0.0
        for t in range(T):
            lstm.inputs(t)[...] = rest[t]
            total += float((lstm.run_step(t) * R[t]).sum())
        return total

    loss()
    lstm.begin_backward_steps()
    drest = [None] * T
    for t in range(T - 1, -1, -1):
        drest[t] = lstm.backward_step(t, R[t]).copy()
    dfixed, dh0, dc0 = lstm.end_backward_steps()
    errors = param_errors(lstm, loss, "lstm_steps")
    for x_name, analytic, x in (("fixed", dfixed, fixed), ("rest", xp.stack(drest), rest), ("h0", dh0, h0),
                                ("c0", dc0, c0)):
        errors[f"lstm_steps.d{x_name}"] = rel_error(analytic, numerical_grad(loss, x))
    return errors


def bilstm_errors(xp):
    """Bidirectional LSTM over padded rows: parameters of both directions, inputs, final states."""
    bi = BiLSTM(D, 2 * H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    for lstm in (bi.fw, bi.bw):                                      # random biases, not just the forget 1s
        lstm.params[2][...] = random_like(xp, lstm.params[2].shape, 8)
    xs = random_like(xp, (N, T, D), 2)
    lengths = xp.asarray([5, 3, 1])
    real = xp.arange(T)[None, :, None] < lengths[:, None, None]
    R = random_like(xp, (N, T, 2 * H), 5) * real                   # zero at padding, as attention makes it
    Rh, Rc = random_like(xp, (N, 2 * H), 6), random_like(xp, (N, 2 * H), 7)

    def loss():
        hs = bi.forward(xs, lengths=lengths)
        return (hs * R).sum() + (bi.h_final * Rh).sum() + (bi.c_final * Rc).sum()

    loss()
    dxs, _, _ = bi.backward(R, Rh, Rc)
    errors = named_param_errors(bi, loss, "bilstm")
    errors["bilstm.dxs"] = rel_error(dxs, numerical_grad(loss, xs))
    return errors


def bridge_errors(xp):
    br = Bridge(2 * H, 2, H, np.random.default_rng(0), dtype=np.float64).to(device_of(xp))
    hf, cf = random_like(xp, (N, 2 * H), 1), random_like(xp, (N, 2 * H), 2)
    Rh, Rc = random_like(xp, (N, 2, H), 3), random_like(xp, (N, 2, H), 4)

    def loss():
        h, c = br.forward(hf, cf)
        return (h * Rh).sum() + (c * Rc).sum()

    loss()
    dhf, dcf = br.backward(Rh, Rc)
    errors = named_param_errors(br, loss, "bridge")
    errors["bridge.dhf"] = rel_error(dhf, numerical_grad(loss, hf))
    errors["bridge.dcf"] = rel_error(dcf, numerical_grad(loss, cf))
    return errors


def tied_output_errors(xp):
    out = TiedOutput(5, D, 7, np.random.default_rng(0), dtype=np.float64).to(device_of(xp))
    out.params[0][...] = random_like(xp, (7,), 9)                   # a random bias
    x, E, R = random_like(xp, (N, T, 5), 1), random_like(xp, (7, D), 2), random_like(xp, (N, T, 7), 3)
    f = lambda: (out.forward(x, E) * R).sum()
    f()
    dx = out.backward(R)
    errors = named_param_errors(out, f, "tied_output")
    errors["tied_output.dx"] = rel_error(dx, numerical_grad(f, x))
    errors["tied_output.dE"] = rel_error(out.dE.copy(), numerical_grad(f, E))
    return errors


def whole_model_errors(xp, dropout, **options):
    """Every parameter of AttentionSeq2seq (with model ``options``), with padded sources and targets."""
    model = AttentionSeq2seq(9, 8, 3, 4, dtype="float64", seed=3, dropout=dropout, **options)
    if options:  # every parameter random, biases too, std 1: with the small init, gradients at the far end
        # of deeper models are near 1e-5, where finite differences' rounding noise is 1e-6 of them
        rng = np.random.default_rng(4)
        model.load_state_dict({k: rng.standard_normal(v.shape) for k, v in model.state_dict().items()})
    model.to(device_of(xp))
    src = np.array([[5, 6, 7, 8, 4], [4, 4, 6, 0, 0], [8, 0, 0, 0, 0]])
    tgt = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 2, 0, 0, 0]])

    def loss():  # the same dropout masks on every call
        for _, mod in model.named_modules():
            if hasattr(mod, "rng"):
                mod.rng = np.random.default_rng(0)
        return model.forward(src, tgt)

    loss()
    model.backward()
    name = ",".join([f"dropout={dropout}"] + [f"{k}={v}" for k, v in options.items()])
    return {f"model({name}).{path}": rel_error(mod.grads[i].copy(), numerical_grad(loss, mod.params[i]))
            for path, mod, i in model.named_parameters()}


CHECKS = {
    "embedding": embedding_errors,
    "lstm": functools.partial(lstm_errors, with_lengths=False),
    "lstm_lengths": functools.partial(lstm_errors, with_lengths=True),
    "linear": linear_errors,
    "attention": attention_errors,
    "cross_entropy": cross_entropy_errors,
    "cross_entropy_smoothing": functools.partial(cross_entropy_errors, smoothing=0.1),
    "general_weights": functools.partial(score_errors, score="general"),
    "additive_weights": functools.partial(score_errors, score="additive"),
    "attention_steps_dot": functools.partial(attention_steps_errors, score="dot"),
    "attention_steps_general": functools.partial(attention_steps_errors, score="general"),
    "attention_steps_additive": functools.partial(attention_steps_errors, score="additive"),
    "lstm_steps": lstm_steps_errors,
    "bilstm": bilstm_errors,
    "bridge": bridge_errors,
    "tied_output": tied_output_errors,
    "gru": functools.partial(gru_errors, with_lengths=False),
    "gru_lengths": functools.partial(gru_errors, with_lengths=True),
    "gru_steps": gru_steps_errors,
    "bigru": bigru_errors,
    "gru_bridge": gru_bridge_errors,
    "model": functools.partial(whole_model_errors, dropout=0.0),
    "model_dropout": functools.partial(whole_model_errors, dropout=0.3),
}
# the model with each option, some together, and all at once (also with dropout): every parameter
ALL_OPTIONS = dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="additive",
                   input_feeding=True, label_smoothing=0.1, tie_embeddings=True)
MODEL_OPTIONS = {
    "model_bidirectional": dict(bidirectional=True),
    "model_encoder_layers": dict(encoder_layers=2),
    "model_decoder_layers": dict(decoder_layers=3),
    "model_layers": dict(encoder_layers=2, decoder_layers=2),
    "model_general": dict(attention="general"),
    "model_additive": dict(attention="additive"),
    "model_input_feeding": dict(input_feeding=True),
    "model_input_feeding_layers": dict(input_feeding=True, decoder_layers=2, attention="general"),
    "model_label_smoothing": dict(label_smoothing=0.1),
    "model_tied": dict(tie_embeddings=True),
    "model_tied_feeding": dict(tie_embeddings=True, input_feeding=True),
    "model_all": ALL_OPTIONS,
}
CHECKS.update({name: functools.partial(whole_model_errors, dropout=0.0, **opts)
               for name, opts in MODEL_OPTIONS.items()})
CHECKS["model_all_dropout"] = functools.partial(whole_model_errors, dropout=0.3, **ALL_OPTIONS)
# the same with the GRU: the cell alone, then with every option as above
CHECKS["model_gru"] = functools.partial(whole_model_errors, dropout=0.0, cell="gru")
CHECKS.update({f"{name}_gru": functools.partial(whole_model_errors, dropout=0.0, cell="gru", **opts)
               for name, opts in MODEL_OPTIONS.items()})
CHECKS["model_all_dropout_gru"] = functools.partial(whole_model_errors, dropout=0.3, cell="gru", **ALL_OPTIONS)


@pytest.mark.parametrize("check", CHECKS)
def test_gradients(xp, check):
    errors = CHECKS[check](xp)
    assert errors
    bad = {name: err for name, err in errors.items() if not err < TOL}
    assert not bad, f"relative error >= {TOL}: {bad}"


@pytest.mark.slow                                    # every check above, again, for one line of report
def test_report_worst_error():
    """Runs every check (numpy) and prints the worst relative error (see -s)."""
    errors = {name: err for check in CHECKS.values() for name, err in check(np).items()}
    worst = max(errors, key=errors.get)
    print(f"\nworst gradient relative error of {len(errors)}: {errors[worst]:.2e} at {worst}")
    assert errors[worst] < TOL, worst


def test_lstm_final_state_ignores_padding(xp):
    """Padded steps must not change a row's final state."""
    lstm = LSTM(D, H, np.random.default_rng(1), dtype=np.float64).to(device_of(xp))
    xs = random_like(xp, (2, T, D), 2)
    lstm.forward(xs[:, :3], lengths=None)
    h_short = lstm.h_final.copy()
    lstm.forward(xs, lengths=xp.asarray([3, 3]))
    np.testing.assert_allclose(np.asarray(lstm.h_final.tolist()), np.asarray(h_short.tolist()), atol=1e-12)


def test_attention_weights_zero_at_padding(xp):
    hs, hd = random_like(xp, (N, T, H), 1), random_like(xp, (N, 4, H), 2)
    mask = source_mask(xp, [5, 2, 1], T)
    att = Attention()
    att.forward(hd, hs, mask)
    a = att.weights
    assert float(xp.abs(a[~xp.broadcast_to(mask[:, None, :], a.shape)]).max()) == 0.0  # exactly zero
    np.testing.assert_allclose(np.asarray(a.sum(-1).tolist()), 1.0, rtol=1e-12)


def test_softmax_cross_entropy_mean_over_real_tokens(xp):
    logits = random_like(xp, (N, 4, 6), 1)
    targets = xp.asarray([[1, 2, 0, 0], [3, 3, 3, 0], [5, 0, 0, 0]])
    loss = float(SoftmaxCrossEntropy(ignore_index=0).forward(logits, targets))
    lg = np.asarray(logits.tolist())
    logp = lg - lg.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    t = np.asarray(targets.tolist())
    ref = -sum(logp[n, k, t[n, k]] for n in range(N) for k in range(4) if t[n, k] != 0) / 6
    assert loss == pytest.approx(ref, rel=1e-12)                     # the mean is over the 6 real tokens only
