"""Each optimizer against a hand-computed step; Adam's bias correction; the hooks."""
import numpy as np
import pytest

from attnseq import SGD, AdaGrad, Adam, ClipGradNorm, Module, Momentum, Nesterov, RMSProp, WeightDecay


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
