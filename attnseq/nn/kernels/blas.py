"""numpy's own BLAS, made callable from numba's compiled code: sgemm and dgemm for the LSTM's time loops.

numpy 2.x wheels bundle OpenBLAS as scipy-openblas64, whose symbols carry a prefix and a suffix
(``scipy_cblas_sgemm64_``: CBLAS with 64-bit integers). ``find`` asks threadpoolctl which BLAS
libraries this process has loaded (numpy's among them), opens each again by its path (the same
library in memory, so threadpoolctl's thread limits apply to these calls as to numpy's), takes
the first that exports a known 64-bit CBLAS gemm, checks one small product against numpy, and
registers the pair under the names ``SGEMM`` and ``DGEMM`` for LLVM's linker. The compiled code
(``kernels/recurrent.py``) declares them as external functions by those names, so its on-disk
cache holds no address of this process.

SciPy is not needed: the same library numpy multiplies with is called directly. Where no such
gemm is found (numpy built on another BLAS, or with 32-bit CBLAS integers only), ``find`` says
why and attnseq runs the time loop step by step in Python, as before, with one notice line.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

SGEMM, DGEMM = "attnseq_cblas_sgemm64", "attnseq_cblas_dgemm64"   # the names the compiled code calls
# (sgemm, dgemm) symbol pairs with the CBLAS interface and 64-bit integers, most likely first
CANDIDATES = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"),      # numpy >= 2 wheels (scipy-openblas64)
              ("cblas_sgemm64_", "cblas_dgemm64_"))                   # OpenBLAS built with INTERFACE64 and a suffix
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _gemm_type(ct):
    return ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                            ctypes.c_int64, ct, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                            ct, ctypes.c_void_p, ctypes.c_int64)


def _loaded_blas_paths() -> list[str]:
    """The files of the BLAS libraries this process has loaded (numpy's among them), by threadpoolctl."""
    import numpy.linalg  # noqa: F401  (numpy's BLAS is loaded by now in any case)
    from threadpoolctl import threadpool_info
    return [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas" and i.get("filepath")]


def _agrees(fn, ct, dtype) -> bool:
    """One (2, 3) @ (3, 2) product through fn, against numpy's: the ABI is what we declared."""
    a = np.arange(6, dtype=dtype).reshape(2, 3) - 2
    b = np.arange(6, dtype=dtype).reshape(3, 2) * 0.5
    c = np.full((2, 2), 7, dtype=dtype)
    fn(ROW_MAJOR, NO_TRANS, NO_TRANS, 2, 2, 3, ct(1.0), a.ctypes.data, 3, b.ctypes.data, 2, ct(0.0), c.ctypes.data, 2)
    return bool(np.array_equal(c, a @ b))


@functools.cache
def find():
    """-> (sgemm address, dgemm address, the library's path), or (None, None, why not: one line).
    Looked up once per process; the addresses are registered with LLVM under ``SGEMM``, ``DGEMM``."""
    try:
        paths = _loaded_blas_paths()
    except Exception as e:  # threadpoolctl missing or failing
        return None, None, f"cannot list the loaded BLAS libraries ({type(e).__name__}: {e})".splitlines()[0]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s_name, d_name in CANDIDATES:
            s, d = getattr(lib, s_name, None), getattr(lib, d_name, None)
            if s is None or d is None:
                continue
            s_fn = _gemm_type(ctypes.c_float)(ctypes.cast(s, ctypes.c_void_p).value)
            d_fn = _gemm_type(ctypes.c_double)(ctypes.cast(d, ctypes.c_void_p).value)
            if not (_agrees(s_fn, ctypes.c_float, np.float32) and _agrees(d_fn, ctypes.c_double, np.float64)):
                continue
            from llvmlite import binding
            s_addr, d_addr = ctypes.cast(s, ctypes.c_void_p).value, ctypes.cast(d, ctypes.c_void_p).value
            binding.add_symbol(SGEMM, s_addr)
            binding.add_symbol(DGEMM, d_addr)
            return s_addr, d_addr, path
    names = ", ".join(p.rsplit("/", 1)[-1] for p in paths) or "none found"
    return None, None, f"no 64-bit CBLAS sgemm/dgemm in numpy's BLAS ({names})"
