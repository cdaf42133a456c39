"""Optimizers that update parameters in place, with hooks that run before each update.

An optimizer holds a ``Module``; each ``step()`` reads the parameters and their
gradients from it, runs the hooks (gradient clipping, weight decay) on the
gradients, then updates every parameter in place. Per-parameter state (moments,
velocities) is keyed by the parameter's path, created with the parameter's
array module, and follows the parameter when the model moves between devices.

Adam on numpy arrays with the kernels on (``kernels.fused``) updates each
parameter in one compiled pass, with the clipping factor folded in: clipping
then measures the norm (one read of the gradients) and leaves them unscaled,
and the update applies the factor as it reads them. Results, optimizer state
and checkpoints are the same as the plain code's.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels
from .backend import device_of, get_array_module, to_device
from .module import Module


# -- hooks ------------------------------------------------------------------------
def global_norm(grads):
    """The L2 norm of all gradients together, as a 0-d array (no host synchronisation).

    With the kernels on, one compiled pass per gradient, summed in float64.
    """
    k = kernels.fused(*grads)
    if k is not None:
        return np.sqrt(np.float64(sum(k.sum_squares(g) for g in grads)))
    xp = get_array_module(grads[0])
    return xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()) for g in grads))


class ClipGradNorm:
    """Scale all gradients so their global L2 norm is at most ``max_norm``.

    ``last_norm`` keeps the norm before clipping as a 0-d array (no host sync). An
    optimizer that folds clipping into its update (fused Adam) calls ``factor``
    instead and applies the factor itself; the gradients are then left unscaled.
    """

    def __init__(self, max_norm: float):
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)
        self.last_norm = None

    def __call__(self, params, grads):
        scale = self.factor(grads)
        for g in grads:
            g *= scale

    def factor(self, grads):
        """Measures the global norm (kept in ``last_norm``) -> min(1, max_norm / (norm + 1e-6)), 0-d."""
        xp = get_array_module(grads[0])
        total = global_norm(grads)
        self.last_norm = total
        return xp.minimum(1.0, self.max_norm / (total + 1e-6)).astype(grads[0].dtype)


class WeightDecay:
    """Add ``rate * p`` to the gradient of every weight matrix (ndim >= 2; biases are left alone)."""

    def __init__(self, rate: float):
        if rate < 0:
            raise ValueError(f"weight decay must be >= 0, got {rate}")
        self.rate = float(rate)

    def __call__(self, params, grads):
        for p, g in zip(params, grads):
            if p.ndim >= 2:
                g += self.rate * p


# -- optimizers -----------------------------------------------------------------
class Optimizer:
    """Base class: ``step()`` runs the hooks, then ``update(p, g, state)`` per parameter.

    A subclass with a compiled update (``fused_update(k, p, g, state, scale)``, ``fused``
    True) gets it on numpy arrays with the kernels on, the clipping factor folded in.
    """

    slots: tuple[str, ...] = ()
    fused = False

    def __init__(self, model: Module, lr: float, hooks=()):
        if not isinstance(model, Module):
            raise TypeError("an optimizer takes the model (a Module) whose parameters it updates")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.model = model
        self.lr = float(lr)
        self.hooks = list(hooks)
        self.t = 0
        self.state: dict[str, dict] = {}

    def step(self) -> None:
        named = list(self.model.named_parameters())
        params = [m.params[i] for _, m, i in named]
        grads = [m.grads[i] for _, m, i in named]
        k = kernels.fused(*params, *grads) if self.fused else None
        scale = self._run_hooks(params, grads, fold_clip=k is not None)
        self.t += 1
        for (path, _, _), p, g in zip(named, params, grads):
            if k is None:
                self.update(p, g, self._state(path, p))
            else:
                self.fused_update(k, p, g, self._state(path, p), scale)

    def _run_hooks(self, params, grads, fold_clip: bool) -> float:
        """Runs the hooks in order -> the clipping factor left for the update to apply (1.0 if none).

        With ``fold_clip`` a ``ClipGradNorm`` followed by nothing but ``FiniteGuard`` only
        measures (no later hook sees the gradients it would have scaled).
        """
        folded = None
        if fold_clip:
            for hook in reversed(self.hooks):
                if isinstance(hook, ClipGradNorm):
                    folded = hook
                if not isinstance(hook, FiniteGuard):
                    break
        scale = 1.0
        for hook in self.hooks:
            if hook is folded:
                scale = float(hook.factor(grads))
            else:
                hook(params, grads)
        return scale

    def _state(self, path: str, p) -> dict:
        """The slot arrays of one parameter, created or moved to the parameter's device."""
        st = self.state.get(path)
        if st is None:
            xp = get_array_module(p)
            st = self.state[path] = {s: xp.zeros_like(p) for s in self.slots}
        elif self.slots and device_of(st[self.slots[0]]) != device_of(p):
            dev = device_of(p)
            for s in self.slots:
                st[s] = to_device(st[s], dev)
        return st

    def update(self, p, g, state: dict) -> None:
        raise NotImplementedError

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Flat dict of arrays ``"{path}/{slot}"`` plus ``"t"`` and ``"lr"``, for ``.npz`` files."""
        out = {f"{path}/{s}": st[s] for path, st in self.state.items() for s in self.slots}
        out["t"] = np.asarray(self.t, dtype=np.int64)
        out["lr"] = np.asarray(self.lr, dtype=np.float64)
        return out

    def load_state_dict(self, arrays: dict) -> None:
        self.t = int(arrays["t"])
        self.lr = float(arrays["lr"])
        self.state = {}
        for path, m, i in self.model.named_parameters():
            p = m.params[i]
            xp = get_array_module(p)
            if self.slots:
                self.state[path] = {s: xp.asarray(arrays[f"{path}/{s}"], dtype=p.dtype) for s in self.slots}

    def init_state(self) -> None:
        """Every parameter's slots now, zeros as the first step would make them, so that ``state_dict()``
        is complete before any step (a checkpoint of a run that has not trained yet)."""
        for path, m, i in self.model.named_parameters():
            self._state(path, m.params[i])

    def expected_arrays(self) -> dict:
        """Name -> an array of the shape and dtype ``state_dict()`` has for this model (to check a file)."""
        out = {f"{path}/{s}": np.broadcast_to(np.zeros((), m.params[i].dtype), m.params[i].shape)
               for path, m, i in self.model.named_parameters() for s in self.slots}
        out["t"] = np.zeros((), np.int64)
        out["lr"] = np.zeros((), np.float64)
        return out


class SGD(Optimizer):
    """p -= lr * g"""

    def update(self, p, g, state):
        p -= self.lr * g


class Momentum(Optimizer):
    """v = mu * v - lr * g;  p += v"""

    slots = ("v",)

    def __init__(self, model, lr=0.01, momentum=0.9, hooks=()):
        super().__init__(model, lr, hooks)
        self.momentum = momentum

    def update(self, p, g, state):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * g
        p += v


class Nesterov(Momentum):
    """v = mu * v - lr * g;  p += mu * v - lr * g   (Sutskever's form, as PyTorch's nesterov=True)."""

    def update(self, p, g, state):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * g
        p += self.momentum * v - self.lr * g


class AdaGrad(Optimizer):
    """h += g^2;  p -= lr * g / (sqrt(h) + eps)"""

    slots = ("h",)

    def __init__(self, model, lr=0.01, eps=1e-7, hooks=()):
        super().__init__(model, lr, hooks)
        self.eps = eps

    def update(self, p, g, state):
        h = state["h"]
        h += g * g
        p -= self.lr * g / (get_array_module(h).sqrt(h) + self.eps)


class RMSProp(Optimizer):
    """h = rho * h + (1 - rho) * g^2;  p -= lr * g / (sqrt(h) + eps)"""

    slots = ("h",)

    def __init__(self, model, lr=0.01, rho=0.99, eps=1e-7, hooks=()):
        super().__init__(model, lr, hooks)
        self.rho, self.eps = rho, eps

    def update(self, p, g, state):
        h = state["h"]
        h *= self.rho
        h += (1 - self.rho) * g * g
        p -= self.lr * g / (get_array_module(h).sqrt(h) + self.eps)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba), fused in place.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    p -= lr * m_hat / (sqrt(v_hat) + eps), computed as
    p -= lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t)) with lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t).
    On numpy with the kernels on, ``kernels.cpu.adam_update`` does all of it in one pass.
    """

    slots = ("m", "v")
    fused = True

    def __init__(self, model, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, hooks=()):
        super().__init__(model, lr, hooks)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _corrected(self):
        """-> lr_t and eps_hat: the bias correction of step t folded into two constants."""
        corr2 = math.sqrt(1.0 - self.beta2 ** self.t)
        return self.lr * corr2 / (1.0 - self.beta1 ** self.t), self.eps * corr2

    def fused_update(self, k, p, g, state, scale):
        """``update`` on g * scale (the clipping factor) in one compiled pass."""
        lr_t, eps_hat = self._corrected()
        k.adam_update(p, g, state["m"], state["v"], scale, lr_t, self.beta1, self.beta2, eps_hat)

    def update(self, p, g, state):
        xp = get_array_module(p)
        m, v = state["m"], state["v"]
        b1, b2 = self.beta1, self.beta2
        lr_t, eps_hat = self._corrected()
        tmp = g - m
        tmp *= 1 - b1
        m += tmp                                                    # m = b1 m + (1-b1) g
        xp.multiply(g, g, out=tmp)
        tmp -= v
        tmp *= 1 - b2
        v += tmp                                                    # v = b2 v + (1-b2) g^2
        xp.sqrt(v, out=tmp)
        tmp += eps_hat
        xp.divide(m, tmp, out=tmp)
        tmp *= lr_t
        p -= tmp


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
              "adagrad": AdaGrad, "rmsprop": RMSProp, "adam": Adam}


# -- building one for a run --------------------------------------------------------
class NonFiniteGradient(FloatingPointError):
    """Raised by ``FiniteGuard`` before any parameter changes; ``args[0]`` is the norm (nan or inf)."""


class FiniteGuard:
    """Optimizer hook, run last: stops the update when the global gradient norm is NaN or inf.

    It reuses the norm ``clip`` just computed (or computes it when there is no clipping), so the
    check costs one host synchronisation per step and no extra pass over the gradients.
    """

    def __init__(self, clip: ClipGradNorm | None = None):
        self.clip = clip

    def __call__(self, params, grads):
        norm = self.clip.last_norm if self.clip is not None else global_norm(grads)
        if not math.isfinite(float(norm)):
            raise NonFiniteGradient(float(norm))


def build_optimizer(name: str, model: Module, lr: float, clip: float = 0.0, weight_decay: float = 0.0) -> Optimizer:
    """``OPTIMIZERS[name]`` on ``model`` with its hooks, in order: weight decay (when > 0), clipping
    to global norm ``clip`` (when > 0), then ``FiniteGuard``. A NaN/inf gradient makes ``step()``
    raise ``NonFiniteGradient`` with every parameter untouched."""
    hooks = [WeightDecay(weight_decay)] if weight_decay else []
    clipper = ClipGradNorm(clip) if clip and clip > 0 else None
    if clipper is not None:
        hooks.append(clipper)
    hooks.append(FiniteGuard(clipper))
    return OPTIMIZERS[name](model, lr=lr, hooks=hooks)
