"""Gradient checks: analytic gradients against centred finite differences, float64, masks present."""
import numpy as np
import pytest
from helpers import WORST, numerical_grad, random_like, record, rel_error

from attnseq import LSTM, Attention, AttentionSeq2seq, Embedding, Linear, SoftmaxCrossEntropy
from attnseq.nn.attention import AttentionWeights, WeightedSum

TOL = 1e-6
N, T, D, H = 3, 5, 4, 3


def check_params(layer, loss_fn, name):
    """Compare every parameter gradient of ``layer`` (already backpropagated) with numerics."""
    for pname, p, g in zip(layer.param_names, layer.params, layer.grads):
        analytic = g.copy()
        num = numerical_grad(loss_fn, p)
        assert record(f"{name}.{pname}", rel_error(analytic, num)) < TOL, f"{name}.{pname}"


def test_embedding(xp):
    emb = Embedding(7, D, np.random.default_rng(0), dtype=np.float64).to("cpu" if xp is np else "gpu")
    ids = xp.asarray([[1, 2, 2, 0], [6, 1, 1, 1]])
    R = random_like(xp, (2, 4, D))
    emb.forward(ids)
    emb.backward(R)
    check_params(emb, lambda: (emb.forward(ids) * R).sum(), "embedding")


@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm(xp, with_lengths):
    dev = "cpu" if xp is np else "gpu"
    lstm = LSTM(D, H, np.random.default_rng(1), dtype=np.float64).to(dev)
    xs = random_like(xp, (N, T, D), 2)
    h0, c0 = random_like(xp, (N, H), 3), random_like(xp, (N, H), 4)
    lengths = xp.asarray([5, 3, 1]) if with_lengths else None
    R, Rh, Rc = random_like(xp, (N, T, H), 5), random_like(xp, (N, H), 6), random_like(xp, (N, H), 7)
    if with_lengths:  # gradients at padded positions are zero, as attention makes them
        R = R * (xp.arange(T)[None, :, None] < lengths[:, None, None])

    def loss():
        hs = lstm.forward(xs, h0, c0, lengths)
        return (hs * R).sum() + (lstm.h_final * Rh).sum() + (lstm.c_final * Rc).sum()

    loss()
    dxs, dh0, dc0 = lstm.backward(R, Rh, Rc)
    check_params(lstm, loss, f"lstm(lengths={with_lengths})")
    for name, analytic, x in (("xs", dxs, xs), ("h0", dh0, h0), ("c0", dc0, c0)):
        assert record(f"lstm.d{name}", rel_error(analytic, numerical_grad(loss, x))) < TOL, name


def test_lstm_final_state_ignores_padding(xp):
    """Padded steps must not change a row's final state."""
    dev = "cpu" if xp is np else "gpu"
    lstm = LSTM(D, H, np.random.default_rng(1), dtype=np.float64).to(dev)
    xs = random_like(xp, (2, T, D), 2)
    lstm.forward(xs[:, :3], lengths=None)
    h_short = lstm.h_final.copy()
    lstm.forward(xs, lengths=xp.asarray([3, 3]))
    np.testing.assert_allclose(np.asarray(lstm.h_final.tolist()), np.asarray(h_short.tolist()), atol=1e-12)


def test_linear(xp):
    dev = "cpu" if xp is np else "gpu"
    lin = Linear(D, 6, np.random.default_rng(0), dtype=np.float64).to(dev)
    x, R = random_like(xp, (N, T, D), 1), random_like(xp, (N, T, 6), 2)
    lin.forward(x)
    dx = lin.backward(R)
    f = lambda: (lin.forward(x) * R).sum()
    check_params(lin, f, "linear")
    assert record("linear.dx", rel_error(dx, numerical_grad(f, x))) < TOL


def test_attention_pieces_and_mask(xp):
    hs, hd = random_like(xp, (N, T, H), 1), random_like(xp, (N, 4, H), 2)
    mask = xp.asarray(np.arange(T)[None, :] < np.array([5, 2, 1])[:, None])
    R = random_like(xp, (N, 4, H), 3)
    att = Attention()
    f = lambda: (att.forward(hd, hs, mask) * R).sum()
    f()
    a = att.weights
    assert float(xp.abs(a[~xp.broadcast_to(mask[:, None, :], a.shape)]).max()) == 0.0  # exactly zero
    np.testing.assert_allclose(np.asarray(a.sum(-1).tolist()), 1.0, rtol=1e-12)
    dhd, dhs = att.backward(R)
    assert record("attention.dhd", rel_error(dhd, numerical_grad(f, hd))) < TOL
    assert record("attention.dhs", rel_error(dhs, numerical_grad(f, hs))) < TOL
    # the two pieces alone
    w, s = AttentionWeights(), WeightedSum()
    Ra = random_like(xp, (N, 4, T), 4)
    fw = lambda: (w.forward(hd, hs, mask) * Ra).sum()
    fw()
    dhd, dhs = w.backward(Ra)
    assert rel_error(dhd, numerical_grad(fw, hd)) < TOL and rel_error(dhs, numerical_grad(fw, hs)) < TOL
    fs = lambda: (s.forward(hs, a) * R).sum()
    fs()
    dhs, da = s.backward(R)
    assert rel_error(dhs, numerical_grad(fs, hs)) < TOL and rel_error(da, numerical_grad(fs, a)) < TOL


def test_softmax_cross_entropy_ignores_padding(xp):
    logits = random_like(xp, (N, 4, 6), 1)
    targets = xp.asarray([[1, 2, 0, 0], [3, 3, 3, 0], [5, 0, 0, 0]])
    ce = SoftmaxCrossEntropy(ignore_index=0)
    f = lambda: ce.forward(logits, targets)
    loss = float(f())
    dl = ce.backward()
    assert record("cross_entropy", rel_error(dl, numerical_grad(f, logits))) < TOL
    # the mean is over the 6 real tokens only
    lg = np.asarray(logits.tolist())
    logp = lg - lg.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    t = np.asarray(targets.tolist())
    ref = -sum(logp[n, k, t[n, k]] for n in range(N) for k in range(4) if t[n, k] != 0) / 6
    assert loss == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_whole_model(xp, dropout):
    """Every parameter of AttentionSeq2seq, with padded sources and targets."""
    model = AttentionSeq2seq(9, 8, 3, 4, dtype="float64", seed=3, dropout=dropout)
    if xp is not np:
        model.to("gpu")
    src = np.array([[5, 6, 7, 8, 4], [4, 4, 6, 0, 0], [8, 0, 0, 0, 0]])
    tgt = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 2, 0, 0, 0]])
    seed = [0]

    def loss():  # same dropout masks on every call
        for _, mod in model.named_modules():
            if hasattr(mod, "rng"):
                mod.rng = np.random.default_rng(seed[0])
        return model.forward(src, tgt)

    loss()
    model.backward()
    for path, mod, i in model.named_parameters():
        analytic = mod.grads[i].copy()
        err = rel_error(analytic, numerical_grad(loss, mod.params[i]))
        assert record(f"model.{path}", err) < TOL, path


def test_report_worst_error():
    """Runs last in this module: prints the worst relative error seen (see -s)."""
    print(f"\nworst gradient relative error: {WORST['rel_error']:.2e} at {WORST['where']}")
    assert WORST["rel_error"] < TOL
