"""Array backend: numpy on the CPU, cupy on a GPU.

There is no global device flag. The array module always comes from the data
(``get_array_module(x)``), and models move with ``model.to("cpu"|"gpu"|"gpu:1")``.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from ..errors import DeviceError


@functools.lru_cache(maxsize=None)
def _cupy():
    """The cupy module, or None; imported once (a failed import is slow to repeat)."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a cupy array, else ``numpy``."""
    cp = _cupy()
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return np


def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def parse_device(device: str) -> tuple[str, int]:
    """Split ``"cpu"``, ``"gpu"`` or ``"gpu:N"`` into (kind, index)."""
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string like 'cpu', 'gpu' or 'gpu:1', got {device!r}")
    kind, _, idx = device.strip().lower().partition(":")
    if kind == "cuda":
        kind = "gpu"
    if kind not in ("cpu", "gpu") or (idx and not idx.isdigit()) or (kind == "cpu" and idx):
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'gpu' or 'gpu:N'")
    return kind, int(idx or 0)


def check_device(device: str) -> tuple[str, int]:
    """Validate a device string and, for a GPU, that cupy and the device exist."""
    kind, idx = parse_device(device)
    if kind == "gpu":
        cp = _cupy()
        if cp is None:
            raise DeviceError(
                f"device {device!r} needs cupy, which is not installed. Install the "
                "GPU extra matching your CUDA, e.g. pip install 'attnseq[gpu]' "
                "(cupy-cuda12x) or pip install cupy-cuda13x for CUDA 13.")
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver, no device
            raise DeviceError(f"device {device!r}: cupy is installed but CUDA reports no usable GPU ({e})") from None
        if idx >= n:
            raise DeviceError(f"device {device!r}: only {n} GPU(s) found (valid indices 0..{n - 1})")
    return kind, idx


def use_device(device: str) -> None:
    """Make gpu:N the current CUDA device (cupy launches kernels there); nothing for "cpu"."""
    kind, idx = check_device(device)
    if kind == "gpu":
        _cupy().cuda.Device(idx).use()


def to_device(x, device: str):
    """Copy an array to ``device`` ("cpu", "gpu", "gpu:N"); a no-op when it is already there."""
    kind, idx = check_device(device)
    cp = _cupy()
    if kind == "cpu":
        if cp is not None and isinstance(x, cp.ndarray):
            return cp.asnumpy(x)
        return np.asarray(x)
    with cp.cuda.Device(idx):
        if isinstance(x, cp.ndarray) and x.device.id == idx:
            return x
        return cp.asarray(x)


def to_numpy(x):
    """Any array (numpy, cupy, scalar) as a numpy array on the host."""
    cp = _cupy()
    if cp is not None and isinstance(x, cp.ndarray):
        return cp.asnumpy(x)
    return np.asarray(x)


def device_of(x) -> str:
    """The device string of an array: "cpu" or "gpu:N"."""
    cp = _cupy()
    if cp is not None and isinstance(x, cp.ndarray):
        return f"gpu:{x.device.id}"
    return "cpu"


def scatter_add(target, indices, values):
    """``target[indices] += values`` with repeated indices accumulated (in place)."""
    xp = get_array_module(target)
    if xp is np:
        np.add.at(target, indices, values)
    else:
        import cupyx
        cupyx.scatter_add(target, indices, values)


def ignore_overflow(xp):
    """numpy's errstate(over="ignore"); cupy raises no floating-point warnings, so nothing there."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()
