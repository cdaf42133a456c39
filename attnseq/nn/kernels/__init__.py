"""Fused CPU kernels for the hot loops, compiled with numba, with a numpy reference.

Two implementations with the same functions and signatures:

- ``cpu``: compiled with numba (``nogil``, cached on disk), one pass over memory each;
- ``reference``: plain numpy, the oracle in the tests and the fallback without numba.

Call them through this module (``kernels.lstm_cell_forward(...)``), not by importing
the names, so that ``use`` takes effect. The implementation is chosen on first use:
numba when it imports, else the reference, with one notice line on stderr. The
environment variable ``ATTNSEQ_KERNELS`` (``numba``, ``numpy`` or ``auto``) or
``use(...)`` forces one; ``active()`` names the one in use (for ``attnseq bench``).
All kernels take numpy arrays only; cupy arrays keep their own path.
"""
from __future__ import annotations

import os
import sys

from ...errors import ConfigError

KERNELS = ("lstm_cell_forward", "lstm_cell_backward", "masked_softmax", "masked_softmax_backward",
           "softmax_cross_entropy", "embedding_grad", "sum_squares", "adam_update")
CHOICES = ("auto", "numba", "numpy")
ENV = "ATTNSEQ_KERNELS"
NOTICE = "attnseq: numba not available ({}); using the numpy reference kernels (slower, same results)"

_active = None          # "numba" or "numpy" once chosen
_noticed = False        # the fallback notice is printed once per process


def _numba_module():
    """The compiled kernels, or the reason they cannot be had (a string)."""
    try:
        from . import cpu
    except Exception as e:  # ImportError, or numba failing against this numpy/llvm
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    return cpu, None


def use(name: str = "auto") -> str:
    """Choose the kernels: "numba", "numpy" (the reference) or "auto"; returns the one now active.

    "auto" takes numba when it imports and otherwise the reference, printing one
    notice line to stderr the first time. "numba" where numba cannot import is an error.
    """
    global _active, _noticed
    choice = (name or "auto").strip().lower()
    if choice == "reference":
        choice = "numpy"
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
    if impl is None:
        from . import reference as impl
    globals().update({k: getattr(impl, k) for k in KERNELS})
    _active = "numpy" if impl.__name__.endswith("reference") else "numba"
    return _active


def active() -> str:
    """The kernels in use, "numba" or "numpy"; chooses from ``ATTNSEQ_KERNELS`` if none is yet."""
    if _active is None:
        use(os.environ.get(ENV, "auto"))
    return _active


def __getattr__(name):
    """The first access to a kernel chooses the implementation (numba is imported only then)."""
    if name in KERNELS:
        active()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
