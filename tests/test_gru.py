"""The GRU layer against the reference cell (the book's GRU, one step), float64 and float32.

``reference_forward``/``reference_backward`` are plain loops over ``gru_cell_reference``/
``gru_cell_reference_backward``: fresh arrays every step, the weight gradients one step at a time.
The layer's ``forward``, ``backward``, ``step`` and the step-by-step pass (``begin_steps``/``run_step``/
``backward_step``) must equal them to ~1e-10 in float64 (1e-5 in float32), with and without padding,
for N = 1 and for odd H, on both CPU paths (``kernel_path``: the compiled cells and the xp cells).
"""
import numpy as np
import pytest
from helpers import random_like
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq.nn.backend import get_array_module, to_numpy
from attnseq.nn.gru import GRU
from attnseq.nn.gru_cell import gru_cell_reference, gru_cell_reference_backward

pytestmark = pytest.mark.usefixtures("kernel_path")

T, D = 5, 4
CASES = [  # N, H, lengths
    (3, 5, None),
    (3, 5, [5, 3, 1]),
    (1, 3, None),
    (1, 3, [2]),
    (4, 8, [5, 5, 4, 2]),
    (2, 11, [1, 4]),
]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}


def close(actual, desired, what="", dtype=np.float64):
    np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), err_msg=what, **TOL[dtype])


def make(xp, N, H, seed=0, dtype=np.float64):
    """A GRU on xp's device, inputs xs (N, T, D) and a start state (N, H); a random bias."""
    gru = GRU(D, H, np.random.default_rng(seed), dtype=dtype).to("cpu" if xp is np else "gpu")
    gru.params[2][...] = random_like(xp, (3 * H,), seed + 1)
    xs, h0 = random_like(xp, (N, T, D), seed + 2), random_like(xp, (N, H), seed + 3)
    return gru, xs.astype(dtype), h0.astype(dtype)


def reference_forward(gru, xs, h0, lengths):
    """The book's cell in float64 -> hs (N, T, H), h_final, and each step's cache for the backward."""
    xp = get_array_module(xs)
    Wx, Wh, b = (p.astype(np.float64) for p in gru.params)
    h, hs, caches = h0.astype(np.float64), [h0.astype(np.float64)], []
    for t in range(xs.shape[1]):
        h, cache = gru_cell_reference(xs[:, t].astype(np.float64), h, Wx, Wh, b)
        caches.append(cache)
        hs.append(h)
    last = np.full(xs.shape[0], xs.shape[1]) if lengths is None else np.asarray(lengths)
    h_final = xp.stack([hs[last[n]][n] for n in range(xs.shape[0])])
    return xp.stack(hs[1:], axis=1), h_final, caches


def reference_backward(gru, caches, dhs, dh_final, lengths):
    """-> (dWx, dWh, db), dxs (N, T, D), dh0: the book's backward, step by step, in float64."""
    xp = get_array_module(dhs)
    Wx, Wh, b = (p.astype(np.float64) for p in gru.params)
    N, T, _ = dhs.shape
    grads = [xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)]
    dxs = xp.zeros((N, T, Wx.shape[0]))
    dh = xp.zeros((N, Wh.shape[0]))
    last = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
    for t in reversed(range(T)):
        ends = xp.asarray(last == t)[:, None]                       # rows whose final state is step t
        dh = dh + dhs[:, t] + xp.where(ends, dh_final, 0.0)
        dxs[:, t], dh, step_grads = gru_cell_reference_backward(dh, caches[t], Wx, Wh)
        for g, s in zip(grads, step_grads):
            g += s
    return grads, dxs, dh


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, H, lengths", CASES)
def test_forward_equals_reference(xp, N, H, lengths, dtype):
    gru, xs, h0 = make(xp, N, H, dtype=dtype)
    hs_ref, h_ref, _ = reference_forward(gru, xs, h0, lengths)
    for training in (True, False):                                  # buffers kept / fresh
        gru.train(training)
        hs = gru.forward(xs, h0, None if lengths is None else xp.asarray(lengths))
        assert hs.dtype == dtype
        close(hs, hs_ref, f"hs (training={training})", dtype)
        close(gru.h_final, h_ref, "h_final", dtype)
        assert len(gru.final_state) == 1 and gru.final_state[0] is gru.h_final


def test_forward_zero_start_state(xp):
    gru, xs, h0 = make(xp, 3, 5)
    close(gru.forward(xs), reference_forward(gru, xs, xp.zeros_like(h0), None)[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, H, lengths", CASES)
@pytest.mark.parametrize("final_grad", [True, False])
def test_backward_equals_reference(xp, N, H, lengths, final_grad, dtype):
    gru, xs, h0 = make(xp, N, H, dtype=dtype)
    dhs = random_like(xp, (N, T, H), 10).astype(dtype)              # nonzero at padded steps too
    dh_final = random_like(xp, (N, H), 11).astype(dtype) if final_grad else None
    _, _, caches = reference_forward(gru, xs, h0, lengths)
    zero = xp.zeros((N, H))
    grads_ref, dxs_ref, dh0_ref = reference_backward(gru, caches, dhs.astype(np.float64),
                                                     zero if dh_final is None else dh_final.astype(np.float64),
                                                     lengths)
    gru.forward(xs, h0, None if lengths is None else xp.asarray(lengths))
    dxs, dh0 = gru.backward(dhs, dh_final)
    for name, got, want in zip(["dWx", "dWh", "db", "dxs", "dh0"], [*gru.grads, dxs, dh0], [*grads_ref, dxs_ref, dh0_ref]):
        close(got, want, name, dtype)


@pytest.mark.parametrize("N, H", [(3, 5), (1, 3), (2, 11)])
def test_step_equals_forward_at_every_position(xp, N, H):
    gru, xs, h0 = make(xp, N, H)
    hs_ref, _, _ = reference_forward(gru, xs, h0, None)
    gru.eval()
    hs = gru.forward(xs, h0)
    h = h0
    for t in range(T):
        state = gru.step(gru.project(xs[:, t]), h)
        assert isinstance(state, tuple) and len(state) == 1         # the GRU's state: (h,)
        h, = state
        close(h, hs[:, t], f"h at step {t}")
    close(hs, hs_ref, "forward")


def run_step_by_step(gru, xs, h0, dhs, fixed):
    """``begin_steps`` with the first ``fixed`` input features up front, the rest written before each
    ``run_step``; then the backward step by step -> hs, dxs (N, T, D), dh0 and the weight gradients."""
    xp = get_array_module(xs)
    N, T, D = xs.shape
    xs_tm = xs.transpose(1, 0, 2)                                   # (T, N, D)
    gru.begin_steps(T, N, h0, fixed=xp.ascontiguousarray(xs_tm[:, :, :fixed]) if fixed else None,
                    dtype=xs.dtype, xp=xp)
    hs = []
    for t in range(T):
        gru.inputs(t)[...] = xs_tm[t, :, fixed:]
        hs.append(gru.run_step(t).copy())
    gru.begin_backward_steps()
    dxs = xp.zeros_like(xs)
    for t in range(T - 1, -1, -1):
        rest = gru.backward_step(t, dhs[:, t])
        if rest is not None:
            dxs[:, t, fixed:] = rest
    dfixed, dh0 = gru.end_backward_steps()
    if fixed:
        dxs[:, :, :fixed] = dfixed.transpose(1, 0, 2)
    return xp.stack(hs, axis=1), dxs, dh0.copy(), [g.copy() for g in gru.grads]


@pytest.mark.parametrize("N, H", [(3, 5), (1, 3), (2, 11)])
@pytest.mark.parametrize("fixed", [0, 2, D])
def test_step_by_step_pass_equals_the_reference(xp, N, H, fixed):
    """The pass input feeding runs (part of each input known up front, the rest written before each step)
    gives the reference's states and every gradient."""
    gru, xs, h0 = make(xp, N, H)
    dhs = random_like(xp, (N, T, H), 10)
    hs_ref, _, caches = reference_forward(gru, xs, h0, None)
    grads_ref, dxs_ref, dh0_ref = reference_backward(gru, caches, dhs, xp.zeros_like(h0), None)
    hs, dxs, dh0, grads = run_step_by_step(gru, xs, h0, dhs, fixed)
    close(hs, hs_ref, "hs")
    for name, got, want in zip(["dxs", "dh0", "dWx", "dWh", "db"], [dxs, dh0, *grads], [dxs_ref, dh0_ref, *grads_ref]):
        close(got, want, name)


@pytest.mark.parametrize("fixed", [0, 2, D])
def test_whole_sequence_and_step_by_step_agree(xp, fixed):
    """``forward``/``backward`` against the same layer driven one step at a time: the same states and
    gradients, bit for bit when the whole input is ``fixed`` (then both run the same operations)."""
    gru, xs, h0 = make(xp, 3, 5)
    dhs = random_like(xp, (3, T, 5), 10)
    hs = gru.forward(xs, h0).copy()
    dxs, dh0 = (a.copy() for a in gru.backward(dhs))
    grads = [g.copy() for g in gru.grads]
    got = run_step_by_step(gru, xs, h0, dhs, fixed)
    for name, a, b in zip(["hs", "dxs", "dh0", "dWx", "dWh", "db"], (hs, dxs, dh0, *grads), (*got[:3], *got[3])):
        if fixed == D:
            np.testing.assert_array_equal(to_numpy(b), to_numpy(a), err_msg=name)
        close(b, a, name)


def test_final_state_ignores_padding(xp):
    gru, xs, _ = make(xp, 2, 5)
    gru.forward(xs[:, :3])
    h_short = to_numpy(gru.h_final).copy()
    xs2 = xs.copy()
    xs2[:, 3:] = 100.0                                              # whatever the padding holds
    gru.forward(xs2, lengths=xp.asarray([3, 3]))
    np.testing.assert_allclose(to_numpy(gru.h_final), h_short, rtol=0, atol=1e-12)


def test_backward_needs_a_training_forward(xp):
    gru, xs, h0 = make(xp, 2, 3)
    with pytest.raises(RuntimeError, match="GRU.backward needs a forward pass in training mode"):
        gru.backward(xp.zeros((2, T, 3)))
    gru.eval()
    gru.forward(xs, h0)
    with pytest.raises(RuntimeError, match="training mode"):
        gru.backward(xp.zeros((2, T, 3)))


def test_the_reference_cell_reads_like_the_book():
    """The cell's four lines by hand, from its weight blocks [z, r, h~]; h moves from h_prev towards h~ by z."""
    rng = np.random.default_rng(0)
    H, Din = 3, 2
    x, h_prev = rng.standard_normal((1, Din)), rng.standard_normal((1, H))
    Wx, Wh, b = rng.standard_normal((Din, 3 * H)), rng.standard_normal((H, 3 * H)), rng.standard_normal(3 * H)
    sig = lambda a: 1 / (1 + np.exp(-a))
    z = sig(x @ Wx[:, :H] + h_prev @ Wh[:, :H] + b[:H])
    r = sig(x @ Wx[:, H:2 * H] + h_prev @ Wh[:, H:2 * H] + b[H:2 * H])
    cand = np.tanh(x @ Wx[:, 2 * H:] + (r * h_prev) @ Wh[:, 2 * H:] + b[2 * H:])
    h, (_, _, z2, r2, cand2) = gru_cell_reference(x, h_prev, Wx, Wh, b)
    np.testing.assert_allclose(h, (1 - z) * h_prev + z * cand, rtol=1e-14)
    np.testing.assert_allclose(np.concatenate([z2, r2, cand2], 1), np.concatenate([z, r, cand], 1), rtol=1e-14)
