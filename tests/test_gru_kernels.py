"""The GRU cell's compiled kernels (``kernels/gru_cpu.py``) against its xp twins and the book's cell.

A step on the fast cell is ``gates_forward``, hh = (r * h_prev) Wh_h, ``state_forward``; backwards
``state_backward``, drh = da_h Wh_h^T, ``gates_backward``, dh_prev = da_zr Wh_zr^T + dhp. Run on the
kernels, on the xp twins and as the book's ``gru_cell_reference`` (float64, from the same values), the
three must agree: float64 to 1e-10 (relative), float32 to 1e-5. Shapes cover N = 1 and H not a multiple
of 8; every output starts as NaN, so one a kernel forgets to write fails.
"""
import threading

import numpy as np
import pytest

from attnseq.nn import kernels
from attnseq.nn.gru_cell import (gates_backward, gates_forward, gru_cell_reference, gru_cell_reference_backward,
                                 state_backward, state_forward)

pytest.importorskip("numba")
from attnseq.nn.kernels import gru_cpu  # noqa: E402  (needs numba)

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
SHAPES = [(1, 1), (1, 13), (3, 8), (5, 13), (2, 37), (4, 64)]       # N, H
DIN = 6


def nans(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def case(N, H, dtype, seed=0):
    """x (N, D), h_prev (N, H), the weights, and the gradient reaching h: dh, dh_rec (N, H)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)
    return dict(x=r(N, DIN), h=r(N, H), Wx=r(DIN, 3 * H), Wh=r(H, 3 * H) * dtype(0.5), b=r(3 * H), dh=r(N, H),
                dh_rec=r(N, H))


def fast_step(k, c):
    """One step forward and back on the fast cell (``k``: the kernels, or None: the xp twins)."""
    x, h, Wx, Wh, b = c["x"], c["h"], c["Wx"], c["Wh"], c["b"]
    N, H = h.shape
    dt = h.dtype
    xa = x @ Wx + b
    gates, rh, h_new = nans((N, 3 * H), dt), nans((N, H), dt), nans((N, H), dt)
    gates_forward(k, xa, h @ Wh[:, :2 * H], h, gates, rh)
    state_forward(k, xa, rh @ Wh[:, 2 * H:], h, gates, h_new)
    da, dhp = nans((N, 3 * H), dt), nans((N, H), dt)
    state_backward(k, c["dh"], c["dh_rec"], gates, h, da, dhp)
    gates_backward(k, da[:, 2 * H:] @ Wh[:, 2 * H:].T, gates, h, da, dhp)
    dh_prev = da[:, :2 * H] @ Wh[:, :2 * H].T + dhp
    return dict(h=h_new, gates=gates, rh=rh, da=da, dh_prev=dh_prev, dx=da @ Wx.T, dWx=x.T @ da,
                dWh=np.concatenate([h.T @ da[:, :2 * H], rh.T @ da[:, 2 * H:]], axis=1), db=da.sum(0))


def book_step(c):
    """The same step as the book's cell, in float64."""
    x, h, Wx, Wh, b = (c[k].astype(np.float64) for k in ("x", "h", "Wx", "Wh", "b"))
    h_new, cache = gru_cell_reference(x, h, Wx, Wh, b)
    dx, dh_prev, (dWx, dWh, db) = gru_cell_reference_backward((c["dh"] + c["dh_rec"]).astype(np.float64),
                                                              cache, Wx, Wh)
    _, _, z, r, cand = cache
    return dict(h=h_new, gates=np.concatenate([z, r, cand], 1), rh=r * h, dh_prev=dh_prev, dx=dx, dWx=dWx, dWh=dWh,
                db=db)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, H", SHAPES)
def test_kernels_match_the_xp_twins_and_the_book(N, H, dtype):
    c = case(N, H, dtype)
    kernel, twin, book = fast_step(gru_cpu, c), fast_step(None, c), book_step(c)
    for name, want in book.items():
        for path, got in (("kernel", kernel), ("xp twin", twin)):
            assert got[name].dtype == dtype
            np.testing.assert_allclose(got[name], want, err_msg=f"{path} {name}", **TOL[dtype])
    np.testing.assert_allclose(kernel["da"], twin["da"], err_msg="da", **TOL[dtype])


def test_fused_gru_names_the_kernels_for_numpy_arrays_only():
    a = np.zeros((2, 3))
    with kernels.using("numba"):
        assert kernels.fused_gru(a, a) is gru_cpu
    with kernels.using("numpy"):
        assert kernels.fused_gru(a, a) is None


def test_kernels_take_strided_inputs_and_outputs():
    """Column slices of wider arrays (as the layer passes blocks of one (N, 3H) row): the same numbers."""
    c = case(3, 5, np.float64, seed=2)
    want = fast_step(None, c)
    N, H = 3, 5
    xa = c["x"] @ c["Wx"] + c["b"]
    wide = lambda a: np.concatenate([a, np.zeros_like(a)], axis=1)[:, :a.shape[1]]
    gates, rh, h_new = wide(nans((N, 3 * H), np.float64)), wide(nans((N, H), np.float64)), wide(nans((N, H), np.float64))
    gru_cpu.gru_gates_forward(wide(xa), wide(c["h"] @ c["Wh"][:, :2 * H]), wide(c["h"]), gates, rh)
    gru_cpu.gru_state_forward(wide(xa), wide(rh @ c["Wh"][:, 2 * H:]), wide(c["h"]), gates, h_new)
    assert not gates.flags.c_contiguous
    np.testing.assert_allclose(h_new, want["h"], rtol=1e-13)
    np.testing.assert_allclose(gates, want["gates"], rtol=1e-13)


@pytest.mark.parametrize("kernel, args", [
    ("gru_gates_forward", lambda N, H: [(N, 3 * H), (N, 2 * H + 1), (N, H), (N, 3 * H), (N, H)]),
    ("gru_state_forward", lambda N, H: [(N, 3 * H), (N, H), (N, H), (N, 2 * H), (N, H)]),
    ("gru_state_backward", lambda N, H: [(N, H), (N, H), (N, 3 * H), (N, H), (N, 3 * H), (N + 1, H)]),
    ("gru_gates_backward", lambda N, H: [(N, H), (N, 3 * H), (N, H), (N, 4 * H), (N, H)]),
])
def test_kernels_reject_wrong_shapes(kernel, args):
    arrays = [np.zeros(shape) for shape in args(2, 3)]
    with pytest.raises(ValueError, match=kernel):
        getattr(gru_cpu, kernel)(*arrays)


def test_kernels_from_threads_at_once():
    """nogil kernels on separate arrays from four threads give each thread's own single-threaded result."""
    cases = [case(4, 16, np.float32, seed=s) for s in range(4)]
    want = [fast_step(gru_cpu, c)["h"] for c in cases]
    got = [None] * 4

    def run(i):
        for _ in range(50):
            got[i] = fast_step(gru_cpu, cases[i])["h"]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
