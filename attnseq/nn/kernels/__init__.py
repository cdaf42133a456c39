"""Fused CPU kernels compiled with numba, and the switch between them and the plain numpy code.

Each hot operation has one plain version, written with ``xp = get_array_module(...)`` in
the layer that uses it: it reads like the book, runs on cupy arrays as it is, and is the
numpy path when the kernels are off. Its compiled twin in ``cpu`` does the same arithmetic
in one pass over memory, and the tests hold the two together:

    kernel (``cpu``)                        plain version
    lstm_cell_forward, lstm_cell_backward   lstm_cell.lstm_cell_forward_, lstm_cell_backward_ (and the book's cell)
    gru_gates_forward ... (``gru_cpu``)     gru_cell.gru_gates_forward_ ... (and the book's cell)
    masked_softmax, masked_softmax_backward attention.masked_softmax, attention.softmax_backward
    softmax_cross_entropy                   layers.SoftmaxCrossEntropy (also with label smoothing)
    cross_entropy_loss                      layers.SoftmaxCrossEntropy with need_grad=False
    embedding_grad                          layers.Embedding.backward (scatter_add)
    sum_squares, adam_update                optim.global_norm, optim.Adam.update
    recurrent.lstm_forward, lstm_backward   the loops over steps in ``lstm.LSTM`` (forward, backward)
    recurrent.lstm_step_forward, ..._backward  lstm.LSTM.run_step / backward_step / step on the xp cells

A layer asks ``fused(*arrays)``: the compiled module when the kernels are on and every
array is a numpy array, else None, and then runs its plain code (always so for cupy).
``loops(*arrays)`` is the same for the LSTM's compiled time loops (module ``recurrent``),
which also need numpy's BLAS callable from compiled code (``blas.py``): where it is not,
they are None with one notice line, and the LSTM runs its steps from Python on the
compiled cells. The GRU cell's kernels live in a module of their own, ``gru_cpu``, which
``fused_gru`` gives on the same terms.

Which path runs: the environment variable ``ATTNSEQ_KERNELS`` (``auto``, the default,
``numba`` or ``numpy``) read on first use, or ``use(...)`` / ``using(...)`` in code
(``attnseq bench --kernels``). ``auto`` takes numba when it imports and otherwise the numpy
path, with one notice line on stderr; ``active()`` names the path in use.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from ...errors import ConfigError

CHOICES = ("auto", "numba", "numpy")
ENV = "ATTNSEQ_KERNELS"
NOTICE = "attnseq: numba not available ({}); using the plain numpy code (slower, same results)"
LOOP_NOTICE = "attnseq: {}; the LSTM runs its time loop step by step from Python (slower, same results)"

_active = None          # "numba" or "numpy" once chosen
_cpu = None             # the compiled module while "numba" is active
_loops = None           # the compiled time loops (module ``recurrent``) while "numba" is active, if BLAS was found
_noticed = False        # the fallback notice is printed once per process
_loop_noticed = False


def _numba_module():
    """The compiled kernels, or the reason they cannot be had (a string)."""
    try:
        from . import cpu
    except Exception as e:  # ImportError, or numba failing against this numpy/llvm
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    return cpu, None


def _loop_module():
    """The compiled time loops, or the reason they cannot be had (a string)."""
    try:
        from . import recurrent
    except Exception as e:  # no 64-bit CBLAS gemm in numpy's BLAS, or numba failing
        return None, f"{e}".splitlines()[0] or type(e).__name__
    return recurrent, None


def use(name: str = "auto") -> str:
    """Choose the path: "numba", "numpy" or "auto"; returns the one now active.

    "auto" takes numba when it imports and otherwise numpy, printing one notice line to
    stderr the first time. "numba" where numba cannot import is an error.
    """
    global _active, _cpu, _loops, _noticed, _loop_noticed
    choice = (name or "auto").strip().lower()
    if choice not in CHOICES:
        raise ConfigError(f"kernels must be one of {', '.join(CHOICES)}, got {name!r} (from {ENV} or use())")
    impl = None
    if choice != "numpy":
        impl, why = _numba_module()
        if impl is None and choice == "numba":
            raise ConfigError(f"kernels 'numba' asked for, but numba is not available ({why})")
        if impl is None and not _noticed:
            print(NOTICE.format(why), file=sys.stderr)
            _noticed = True
    loops = None
    if impl is not None:
        loops, why = _loop_module()
        if loops is None and not _loop_noticed:
            print(LOOP_NOTICE.format(why), file=sys.stderr)
            _loop_noticed = True
    _cpu, _loops, _active = impl, loops, ("numpy" if impl is None else "numba")
    return _active


def active() -> str:
    """The path in use, "numba" or "numpy"; chosen from ``ATTNSEQ_KERNELS`` if none is yet."""
    if _active is None:
        use(os.environ.get(ENV, "auto"))
    return _active


@contextlib.contextmanager
def using(name: str):
    """``with using("numpy"):`` run on that path, then back to the one before."""
    before = active()
    try:
        yield use(name)
    finally:
        use(before)


def fused(*arrays):
    """The compiled kernels (module ``cpu``) when they are on and every array is numpy's, else None."""
    if _active is None:
        active()
    if _cpu is None:
        return None
    for a in arrays:
        if not isinstance(a, np.ndarray):
            return None
    return _cpu


def loops(*arrays):
    """The compiled time loops (module ``recurrent``) when they are on and every array is numpy's, all of one
    float dtype (float32 or float64), else None."""
    if _active is None:
        active()
    if _loops is None:
        return None
    dtype = None
    for a in arrays:
        if not isinstance(a, np.ndarray):
            return None
        if a.dtype.kind == "f":
            if dtype is not None and a.dtype != dtype:
                return None
            dtype = a.dtype
    return _loops if dtype in (np.float32, np.float64) else None


def fused_gru(*arrays):
    """The compiled GRU kernels (module ``gru_cpu``) where ``fused`` gives the compiled module, else None."""
    if fused(*arrays) is None:
        return None
    from . import gru_cpu
    return gru_cpu
