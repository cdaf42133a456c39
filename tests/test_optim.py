"""Each optimizer against a hand-computed step; Adam's bias correction; the hooks.

Adam runs on both CPU paths (``kernel_path``): one compiled pass per parameter with
the clipping factor folded in, and the plain numpy code.
"""
import math

import numpy as np
import pytest
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq import SGD, AdaGrad, Adam, ClipGradNorm, Module, Momentum, Nesterov, RMSProp, WeightDecay
from attnseq.nn import kernels
from attnseq.nn.optim import FiniteGuard, NonFiniteGradient, build_optimizer


class One(Module):
    def __init__(self, p, g, xp=np):
        super().__init__()
        self.add_param("w", xp.array(p, dtype=np.float64))
        self.grads[0][...] = xp.asarray(g)


P, G = np.array([1.0, -2.0, 0.5]), np.array([0.1, -0.4, 2.0])


def run(opt_cls, steps=2, xp=np, **kw):
    m = One(P, G, xp)
    opt = opt_cls(m, **kw)
    for _ in range(steps):
        opt.step()
    return np.asarray(m.params[0].tolist())


def test_sgd(xp):
    np.testing.assert_allclose(run(SGD, xp=xp, lr=0.1), P - 2 * 0.1 * G)


def test_momentum(xp):
    v1 = -0.1 * G
    v2 = 0.9 * v1 - 0.1 * G
    np.testing.assert_allclose(run(Momentum, xp=xp, lr=0.1, momentum=0.9), P + v1 + v2)


def test_nesterov(xp):
    v1 = -0.1 * G
    p1 = P + 0.9 * v1 - 0.1 * G
    v2 = 0.9 * v1 - 0.1 * G
    np.testing.assert_allclose(run(Nesterov, xp=xp, lr=0.1, momentum=0.9), p1 + 0.9 * v2 - 0.1 * G)


def test_adagrad(xp):
    h1 = G * G
    p1 = P - 0.1 * G / (np.sqrt(h1) + 1e-7)
    h2 = h1 + G * G
    np.testing.assert_allclose(run(AdaGrad, xp=xp, lr=0.1), p1 - 0.1 * G / (np.sqrt(h2) + 1e-7))


def test_rmsprop(xp):
    h1 = 0.01 * G * G
    p1 = P - 0.1 * G / (np.sqrt(h1) + 1e-7)
    h2 = 0.99 * h1 + 0.01 * G * G
    np.testing.assert_allclose(run(RMSProp, xp=xp, lr=0.1), p1 - 0.1 * G / (np.sqrt(h2) + 1e-7))


@pytest.mark.usefixtures("kernel_path")
def test_adam_bias_correction(xp):
    """With a constant gradient, bias-corrected m_hat = g and v_hat = g^2, so each step moves lr * sign(g)."""
    lr, eps = 1e-3, 1e-8
    out = run(Adam, steps=3, xp=xp, lr=lr, eps=eps)
    np.testing.assert_allclose(out, P - 3 * lr * G / (np.abs(G) + eps), rtol=1e-10)
    # and the textbook formula, step by step
    m = v = np.zeros(3)
    p = P.copy()
    for t in (1, 2, 3):
        m = 0.9 * m + 0.1 * G
        v = 0.999 * v + 0.001 * G * G
        p = p - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + eps)
    np.testing.assert_allclose(out, p, rtol=1e-10)


def test_clip_grad_norm(xp):
    m = One(P, G, xp)
    clip = ClipGradNorm(1.0)
    opt = SGD(m, lr=1.0, hooks=[clip])
    opt.step()
    norm = np.linalg.norm(G)
    assert float(clip.last_norm) == pytest.approx(norm)
    np.testing.assert_allclose(np.asarray(m.grads[0].tolist()), G / norm, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m.params[0].tolist()), P - G / norm, rtol=1e-5)
    # a small gradient is left alone
    m2 = One(P, G * 1e-3, xp)
    SGD(m2, lr=1.0, hooks=[ClipGradNorm(1.0)]).step()
    np.testing.assert_allclose(np.asarray(m2.params[0].tolist()), P - G * 1e-3, rtol=1e-5)


def test_weight_decay_skips_biases():
    class Two(Module):
        def __init__(self):
            super().__init__()
            self.add_param("W", np.ones((2, 2)))
            self.add_param("b", np.ones(2))
    m = Two()
    SGD(m, lr=1.0, hooks=[WeightDecay(0.1)]).step()
    np.testing.assert_allclose(m.params[0], 0.9)
    np.testing.assert_allclose(m.params[1], 1.0)


@pytest.mark.usefixtures("kernel_path")
def test_state_round_trip():
    m = One(P, G)
    opt = Adam(m, lr=0.01)
    opt.step()
    sd = {k: np.array(v) for k, v in opt.state_dict().items()}
    m2 = One(m.params[0], G)
    opt2 = Adam(m2, lr=0.5)
    opt2.load_state_dict(sd)
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(m.params[0], m2.params[0])
    assert opt2.t == 2 and opt2.lr == 0.01


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr"):
        SGD(One(P, G), lr=0)
    with pytest.raises(ValueError, match="max_norm"):
        ClipGradNorm(-1)


class Layers(Module):
    """Two weight matrices and a bias, float64 or float32, with gradients large enough to clip."""

    def __init__(self, dtype, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        for name, shape in (("W1", (5, 7)), ("b", (7,)), ("W2", (7, 3))):
            self.add_param(name, rng.standard_normal(shape).astype(dtype))

    def set_grads(self, t):
        rng = np.random.default_rng(100 + t)
        for g in self.grads:
            g[...] = rng.standard_normal(g.shape) * 3.0


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("clip, decay", [(1.0, 0.0), (1.0, 0.01), (0.0, 0.01), (100.0, 0.0)])
def test_fused_adam_equals_plain_adam_with_its_hooks(clip, decay, dtype, tol):
    """Weight decay, clipping (folded into the update on the kernel path) and the finite check:
    three steps give the same parameters, moments and clip norm on both paths."""
    pytest.importorskip("numba")
    runs = {}
    for path in ("numba", "numpy"):
        model = Layers(dtype)
        opt = build_optimizer("adam", model, lr=0.01, clip=clip, weight_decay=decay)
        with kernels.using(path):
            for t in range(3):
                model.set_grads(t)
                opt.step()
        clipper = next((h for h in opt.hooks if isinstance(h, ClipGradNorm)), None)
        runs[path] = (model.parameters(), opt.state_dict(), None if clipper is None else float(clipper.last_norm))
    (p1, s1, n1), (p2, s2, n2) = runs["numba"], runs["numpy"]
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert s1.keys() == s2.keys()
    for key in s1:
        np.testing.assert_allclose(s1[key], s2[key], rtol=tol, atol=tol, err_msg=key)
    assert (n1 is None) == (n2 is None) and (n1 is None or math.isclose(n1, n2, rel_tol=tol))


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_nonfinite_gradient_stops_adam_before_any_change(clip):
    model = Layers(np.float64)
    opt = build_optimizer("adam", model, lr=0.01, clip=clip)
    model.set_grads(0)
    opt.step()
    before = [p.copy() for p in model.parameters()], {k: v.copy() for k, v in opt.state_dict().items()}
    model.set_grads(1)
    model.grads[2][1, 1] = np.nan
    with pytest.raises(NonFiniteGradient):
        opt.step()
    for p, b in zip(model.parameters(), before[0]):
        np.testing.assert_array_equal(p, b)
    for k, v in opt.state_dict().items():                           # moments and t untouched too
        np.testing.assert_array_equal(v, before[1][k], err_msg=k)


def test_clip_is_folded_only_when_nothing_after_it_reads_the_gradients():
    """A hook after clipping (other than FiniteGuard) sees clipped gradients on both paths."""
    pytest.importorskip("numba")
    seen = {}
    for path in ("numba", "numpy"):
        model = Layers(np.float64)
        model.set_grads(0)
        record = lambda params, grads, path=path: seen.setdefault(path, [g.copy() for g in grads])
        opt = Adam(model, lr=0.01, hooks=[ClipGradNorm(1.0), record, FiniteGuard()])
        with kernels.using(path):
            opt.step()
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in seen["numba"]))
    assert norm == pytest.approx(1.0, rel=1e-5)
    for a, b in zip(seen["numba"], seen["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
