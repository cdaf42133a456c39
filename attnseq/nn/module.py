"""``Module``: the parameter bookkeeping every layer and model shares.

A module keeps its own parameters in ``params`` and their gradients in
``grads`` (parallel lists, as in *Deep Learning from Scratch 2*) and names them
in ``param_names``. Child modules are registered by name, so every parameter has
a path such as ``decoder.lstm.Wh``: the key used in checkpoint ``.npz`` files.
``backward`` writes gradients in place (``grads[i][...] = ...``).
"""
from __future__ import annotations

import contextlib
import copy

import numpy as np

from .backend import get_array_module, to_device, use_device


class Module:
    def __init__(self):
        self.params: list = []
        self.grads: list = []
        self.param_names: list[str] = []
        self._children: dict[str, Module] = {}
        self._buffers: dict = {}
        self.training = True

    # -- registration ----------------------------------------------------
    def add_param(self, name: str, value):
        self.params.append(value)
        self.grads.append(get_array_module(value).zeros_like(value))
        self.param_names.append(name)

    def add_module(self, name: str, module: "Module") -> "Module":
        self._children[name] = module
        setattr(self, name, module)
        return module

    def buffer(self, name: str, shape: tuple, dtype, xp):
        """A reusable scratch array of ``shape``: a view into storage kept between calls.

        Storage grows to the largest shape asked for and is then reused, so batches
        of varying length allocate (and page-fault) nothing after the first. The
        contents stay valid until the same buffer is asked for again. In eval mode
        the array is fresh and not kept, so large inference batches hold no memory.
        """
        if not self.training:
            return xp.empty(shape, dtype=dtype)
        size = 1
        for d in shape:
            size *= d
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype or get_array_module(buf) is not xp \
                or (xp is not np and buf.device != xp.cuda.Device()):
            buf = self._buffers[name] = xp.empty(max(size, 1), dtype=dtype)
        return buf[:size].reshape(shape)

    # -- traversal ---------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        """Yield ``(path, module, index)`` for every parameter, in a fixed order."""
        for prefix, mod in self.named_modules():
            for i, name in enumerate(mod.param_names):
                yield prefix + name, mod, i

    def parameters(self) -> list:
        return [m.params[i] for _, m, i in self.named_parameters()]

    def gradients(self) -> list:
        return [m.grads[i] for _, m, i in self.named_parameters()]

    def state_dict(self) -> dict:
        return {path: m.params[i] for path, m, i in self.named_parameters()}

    def load_state_dict(self, arrays: dict) -> None:
        """Copy arrays into the parameters in place (shapes and dtypes must match)."""
        for path, m, i in self.named_parameters():
            p = m.params[i]
            p[...] = get_array_module(p).asarray(arrays[path], dtype=p.dtype)

    # -- state -----------------------------------------------------------
    @property
    def xp(self):
        params = self.parameters()
        return get_array_module(params[0]) if params else np

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else np.dtype(np.float32)

    def to(self, device: str) -> "Module":
        """Move parameters and gradients to ``"cpu"``, ``"gpu"`` or ``"gpu:N"`` (in place).

        For a GPU this also makes it cupy's current device, where the model's kernels then run.
        """
        use_device(device)
        for _, mod in self.named_modules():
            mod._buffers.clear()
            mod.params[:] = [to_device(p, device) for p in mod.params]
            mod.grads[:] = [to_device(g, device) for g in mod.grads]
        return self

    def replica(self) -> "Module":
        """A copy of this module tree that shares its parameter arrays (so in-place updates show in
        both) but owns its gradients, buffers and caches: one per thread when running on several."""
        new = copy.copy(self)
        new.params = list(self.params)
        new.grads = [get_array_module(g).zeros_like(g) for g in self.grads]
        new.param_names = list(self.param_names)
        new._buffers, new._children = {}, {}
        for name, child in self._children.items():
            new.add_module(name, child.replica())
        return new

    def zero_grad(self) -> None:
        for g in self.gradients():
            g.fill(0)

    def train(self, mode: bool = True) -> "Module":
        for _, mod in self.named_modules():
            mod.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    @contextlib.contextmanager
    def eval_mode(self):
        """``with model.eval_mode():`` the whole tree in eval mode (no dropout, fresh buffers), and on
        leaving, also by an exception, back to the training flag this module had before."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))
