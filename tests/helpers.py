"""Shared test helpers: centred finite differences in float64."""
import numpy as np

from attnseq.nn.backend import to_numpy


def numerical_grad(f, x, eps=1e-5):
    """Centred differences of scalar f() w.r.t. every element of array x (changed in place, restored)."""
    grad = np.zeros(x.shape)
    flat = x.reshape(-1)
    for k in range(flat.size):
        old = float(flat[k])
        flat[k] = old + eps
        fp = float(f())
        flat[k] = old - eps
        fm = float(f())
        flat[k] = old
        grad.reshape(-1)[k] = (fp - fm) / (2 * eps)
    return grad


def rel_error(analytic, numeric) -> float:
    a, n = to_numpy(analytic).astype(np.float64), np.asarray(numeric, dtype=np.float64)
    denom = max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12)
    return float(np.linalg.norm(a - n) / denom)


def random_like(xp, shape, seed=0):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape))

