"""The fast LSTM against the reference cell (the book's LSTM, one step), float64.

``reference_forward``/``reference_backward`` are plain loops over
``lstm_cell_reference``/``lstm_cell_reference_backward``: fresh arrays every step,
the weight products one step at a time. The fast ``forward``, ``backward``, ``step``
and the step-by-step pass (``begin_steps``/``run_step``/``backward_step``) must equal
them to ~1e-10, with and without padding, for N = 1 and for H not a multiple of 8, on
both CPU paths (``kernel_path``: the compiled cells and the xp cells with the
gate-scale trick); the whole-sequence and step-by-step paths must equal each other. On the
numba path, where numpy's BLAS is found, the whole sequence runs in the compiled time loops
(``kernels/recurrent.py``), and an input given as embedding rows (``tokens``) through the
table E Wx + b.
"""
import numpy as np
import pytest
from helpers import numerical_grad, random_like, rel_error
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq import LSTM
from attnseq.nn import kernels
from attnseq.nn.backend import get_array_module, to_numpy
from attnseq.nn.lstm_cell import lstm_cell_reference, lstm_cell_reference_backward, sigmoid

# every test on both CPU paths: the fused kernels and the plain numpy code
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


def close(actual, desired, what=""):
    np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), rtol=1e-10, atol=1e-12, err_msg=what)


def close_grads(lstm, got, want):
    """got, want: (the weight gradients, dxs, dh0, dc0)."""
    names = [f"d{name}" for name in lstm.param_names] + ["dxs", "dh0", "dc0"]
    for name, a, b in zip(names, [*got[0], *got[1:]], [*want[0], *want[1:]]):
        close(a, b, name)


def make(xp, N, H, seed=0):
    """An LSTM in float64 on xp's device, inputs xs (N, T, D) and a start state (N, H)."""
    lstm = LSTM(D, H, np.random.default_rng(seed), dtype=np.float64).to("cpu" if xp is np else "gpu")
    lstm.params[2][...] = random_like(xp, (4 * H,), seed + 1)      # a random bias, not just the forget 1s
    return lstm, random_like(xp, (N, T, D), seed + 2), random_like(xp, (N, H), seed + 3), random_like(xp, (N, H), seed + 4)


def reference_forward(lstm, xs, h0, c0, lengths):
    """-> hs (N, T, H), h_final, c_final, and each step's (x, h_prev, c_prev, c, gates) for the backward."""
    xp = get_array_module(xs)
    Wx, Wh, b = lstm.params
    h, c, hs, cs, steps = h0, c0, [h0], [c0], []
    for t in range(xs.shape[1]):
        h_new, c_new, gates = lstm_cell_reference(xs[:, t] @ Wx + h @ Wh + b, c)
        steps.append((xs[:, t], h, c, c_new, gates))
        h, c = h_new, c_new
        hs.append(h)
        cs.append(c)
    last = np.full(xs.shape[0], xs.shape[1]) if lengths is None else np.asarray(lengths)
    rows = np.arange(xs.shape[0])
    h_final = xp.stack([hs[last[n]][n] for n in rows])
    c_final = xp.stack([cs[last[n]][n] for n in rows])
    return xp.stack(hs[1:], axis=1), h_final, c_final, steps


def reference_backward(lstm, steps, dhs, dh_final, dc_final, lengths):
    """-> (dWx, dWh, db), dxs (N, T, D), dh0, dc0: the book's backward, step by step."""
    xp = get_array_module(dhs)
    Wx, Wh, b = lstm.params
    N, T, _ = dhs.shape
    dWx, dWh, db = xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)
    dxs = xp.zeros((N, T, Wx.shape[0]))
    dh, dc = xp.zeros_like(dh_final), xp.zeros_like(dc_final)
    last = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
    for t in reversed(range(T)):
        ends = xp.asarray(last == t)[:, None]                       # rows whose final state is step t
        dh = dh + dhs[:, t] + xp.where(ends, dh_final, 0.0)
        dc = dc + xp.where(ends, dc_final, 0.0)
        x, h_prev, c_prev, c, gates = steps[t]
        da, dc = lstm_cell_reference_backward(dh, dc, c_prev, c, gates)
        dWx += x.T @ da
        dWh += h_prev.T @ da
        db += da.sum(axis=0)
        dxs[:, t] = da @ Wx.T
        dh = da @ Wh.T
    return (dWx, dWh, db), dxs, dh, dc


@pytest.mark.parametrize("N, H, lengths", CASES)
def test_forward_equals_reference(xp, N, H, lengths):
    lstm, xs, h0, c0 = make(xp, N, H)
    hs_ref, h_ref, c_ref, _ = reference_forward(lstm, xs, h0, c0, lengths)
    for training in (True, False):                                  # buffers kept / fresh
        lstm.train(training)
        hs = lstm.forward(xs, h0, c0, None if lengths is None else xp.asarray(lengths))
        close(hs, hs_ref, f"hs (training={training})")
        close(lstm.h_final, h_ref, "h_final")
        close(lstm.c_final, c_ref, "c_final")


def test_forward_zero_start_state(xp):
    lstm, xs, h0, _ = make(xp, 3, 5)
    zeros = xp.zeros_like(h0)
    close(lstm.forward(xs), reference_forward(lstm, xs, zeros, zeros, None)[0])


@pytest.mark.parametrize("N, H, lengths", CASES)
@pytest.mark.parametrize("final_grads", [True, False])
def test_backward_equals_reference(xp, N, H, lengths, final_grads):
    lstm, xs, h0, c0 = make(xp, N, H)
    dhs = random_like(xp, (N, T, H), 10)                            # nonzero at padded steps too
    dh_final, dc_final = random_like(xp, (N, H), 11), random_like(xp, (N, H), 12)
    if not final_grads:
        dh_final, dc_final = xp.zeros_like(dh_final), xp.zeros_like(dc_final)
    _, _, _, steps = reference_forward(lstm, xs, h0, c0, lengths)
    grads_ref, dxs_ref, dh0_ref, dc0_ref = reference_backward(lstm, steps, dhs, dh_final, dc_final, lengths)
    lstm.forward(xs, h0, c0, None if lengths is None else xp.asarray(lengths))
    if final_grads:
        dxs, dh0, dc0 = lstm.backward(dhs, dh_final, dc_final)
    else:
        dxs, dh0, dc0 = lstm.backward(dhs)
    close_grads(lstm, (lstm.grads, dxs, dh0, dc0), (grads_ref, dxs_ref, dh0_ref, dc0_ref))


@pytest.mark.parametrize("N, H", [(3, 5), (1, 3), (2, 11)])
def test_step_equals_forward_at_every_position(xp, N, H):
    lstm, xs, h0, c0 = make(xp, N, H)
    hs_ref, _, _, steps = reference_forward(lstm, xs, h0, c0, None)
    lstm.eval()
    hs = lstm.forward(xs, h0, c0)
    h, c = h0, c0
    for t in range(T):
        h, c = lstm.step(lstm.project(xs[:, t]), h, c)
        close(h, hs[:, t], f"h at step {t}")
        close(c, steps[t][3], f"c at step {t}")
    close(hs, hs_ref, "forward")


def run_step_by_step(lstm, xs, h0, c0, dhs, fixed):
    """``begin_steps`` with the first ``fixed`` input features up front, the rest written before each
    ``run_step``; then the backward step by step -> hs, dxs (N, T, D), dh0, dc0 and the weight gradients."""
    xp = get_array_module(xs)
    N, T, D = xs.shape
    xs_tm = xs.transpose(1, 0, 2)                                   # (T, N, D)
    lstm.begin_steps(T, N, h0, c0, fixed=xp.ascontiguousarray(xs_tm[:, :, :fixed]) if fixed else None,
                     dtype=xs.dtype, xp=xp)
    hs = []
    for t in range(T):
        lstm.inputs(t)[...] = xs_tm[t, :, fixed:]
        hs.append(lstm.run_step(t).copy())
    lstm.begin_backward_steps()
    dxs = xp.zeros_like(xs)
    for t in range(T - 1, -1, -1):
        rest = lstm.backward_step(t, dhs[:, t])
        if rest is not None:
            dxs[:, t, fixed:] = rest
    dfixed, dh0, dc0 = lstm.end_backward_steps()
    if fixed:
        dxs[:, :, :fixed] = dfixed.transpose(1, 0, 2)
    return xp.stack(hs, axis=1), dxs, dh0.copy(), dc0.copy(), [g.copy() for g in lstm.grads]


@pytest.mark.parametrize("N, H", [(3, 5), (1, 3), (2, 11)])
@pytest.mark.parametrize("fixed", [0, 2, D])
def test_step_by_step_pass_equals_the_reference(xp, N, H, fixed):
    """``begin_steps``/``run_step`` and ``backward_step``/``end_backward_steps`` (input feeding's time loop),
    with the first ``fixed`` input features given up front and the rest written before each step, give the
    reference's states and every gradient."""
    lstm, xs, h0, c0 = make(xp, N, H)
    dhs = random_like(xp, (N, T, H), 10)
    hs_ref, _, _, steps = reference_forward(lstm, xs, h0, c0, None)
    grads_ref, dxs_ref, dh0_ref, dc0_ref = reference_backward(lstm, steps, dhs, xp.zeros_like(h0), xp.zeros_like(c0),
                                                              None)
    hs, dxs, dh0, dc0, grads = run_step_by_step(lstm, xs, h0, c0, dhs, fixed)
    close(hs, hs_ref, "hs")
    close_grads(lstm, (grads, dxs, dh0, dc0), (grads_ref, dxs_ref, dh0_ref, dc0_ref))


@pytest.mark.parametrize("fixed", [0, 2, D])
def test_whole_sequence_and_step_by_step_agree(xp, fixed):
    """``forward``/``backward`` against the same layer driven one step at a time (``begin_steps``, ``run_step``,
    ``backward_step``): the same states and gradients, and bit for bit when the whole input is ``fixed``
    (then the two run the same operations)."""
    N, H = 3, 5
    lstm, xs, h0, c0 = make(xp, N, H)
    dhs = random_like(xp, (N, T, H), 10)
    hs = lstm.forward(xs, h0, c0).copy()
    dxs, dh0, dc0 = (a.copy() for a in lstm.backward(dhs))
    grads = [g.copy() for g in lstm.grads]
    got = run_step_by_step(lstm, xs, h0, c0, dhs, fixed)
    for name, a, b in zip(["hs", "dxs", "dh0", "dc0"] + [f"d{p}" for p in lstm.param_names],
                          (hs, dxs, dh0, dc0, *grads), (*got[:4], *got[4])):
        if fixed == D:
            np.testing.assert_array_equal(to_numpy(b), to_numpy(a), err_msg=name)
        close(b, a, name)


def test_backward_needs_a_training_forward(xp):
    lstm, xs, h0, c0 = make(xp, 2, 3)
    lstm.eval()
    lstm.forward(xs, h0, c0)
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        lstm.backward(random_like(xp, (2, T, 3), 5))


def test_reference_backward_matches_numerical_gradients():
    """The oracle itself: the reference cell's backward against finite differences."""
    N, H = 2, 3
    a, c_prev = random_like(np, (N, 4 * H), 1), random_like(np, (N, H), 2)
    Rh, Rc = random_like(np, (N, H), 3), random_like(np, (N, H), 4)

    def loss():
        h, c, _ = lstm_cell_reference(a, c_prev)
        return (h * Rh).sum() + (c * Rc).sum()

    _, c, gates = lstm_cell_reference(a, c_prev)
    da, dc_prev = lstm_cell_reference_backward(Rh, Rc, c_prev, c, gates)
    assert rel_error(da, numerical_grad(loss, a)) < 1e-8
    assert rel_error(dc_prev, numerical_grad(loss, c_prev)) < 1e-8


def test_gate_order_maps_from_the_book():
    """The book's cell, gates [f, g, i, o], equals ours after taking its blocks in the order (2, 0, 3, 1)."""
    N, H = 2, 3
    a_book, c_prev = random_like(np, (N, 4 * H), 1), random_like(np, (N, H), 2)
    f, g, i, o = (a_book[:, k * H:(k + 1) * H] for k in range(4))
    f, g, i, o = sigmoid(f), np.tanh(g), sigmoid(i), sigmoid(o)   # the book's LSTM.forward
    c_book = f * c_prev + g * i
    h_book = o * np.tanh(c_book)
    a_ours = np.concatenate([a_book[:, k * H:(k + 1) * H] for k in (2, 0, 3, 1)], axis=1)
    h, c, _ = lstm_cell_reference(a_ours, c_prev)
    np.testing.assert_allclose(h, h_book, rtol=1e-14)
    np.testing.assert_allclose(c, c_book, rtol=1e-14)


def test_forget_bias_starts_at_one_on_the_f_block():
    H = 5
    b = LSTM(D, H, np.random.default_rng(0)).params[2]
    np.testing.assert_array_equal(b[H:2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[H:2 * H]), 0.0)


# -- the input as embedding rows (``tokens``): a table E Wx + b on the compiled loops ----------------------
def embedded(xp, N, V, seed=20):
    """ids (N, T) over V tokens, every token used somewhere when V <= N T, and E (V, D) float64."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(N * T) % V).reshape(N, T)
    return xp.asarray(ids), random_like(xp, (V, D), seed + 1)


def rows_summed(xp, ids, dxs, V):
    """The gradient of E from the gradient of E[ids]: dxs (N, T, D) summed into rows by token."""
    dE = np.zeros((V, dxs.shape[2]))
    np.add.at(dE, to_numpy(ids).reshape(-1), to_numpy(dxs).reshape(-1, dxs.shape[2]))
    return dE


@pytest.mark.parametrize("N, H, lengths", CASES)
@pytest.mark.parametrize("V", [3, 7])
def test_tokens_equal_the_reference(xp, kernel_path, N, H, lengths, V):
    """forward/backward with ``tokens`` = (ids, E) for xs = E[ids]: the reference's states and weight gradients, and
    E's gradient either in ``dE`` (the compiled loops fold E into a table when V <= N T) or as dxs."""
    lstm, _, h0, c0 = make(xp, N, H)
    ids, E = embedded(xp, N, V)
    xs = E[ids]
    lens = None if lengths is None else xp.asarray(lengths)
    dhs, dh_final, dc_final = random_like(xp, (N, T, H), 10), random_like(xp, (N, H), 11), random_like(xp, (N, H), 12)
    hs_ref, h_ref, c_ref, steps = reference_forward(lstm, xs, h0, c0, lengths)
    grads_ref, dxs_ref, dh0_ref, dc0_ref = reference_backward(lstm, steps, dhs, dh_final, dc_final, lengths)
    hs = lstm.forward(xs, h0, c0, lens, tokens=(ids, E))
    close(hs, hs_ref, "hs")
    close(lstm.h_final, h_ref, "h_final")
    close(lstm.c_final, c_ref, "c_final")
    dxs, dh0, dc0 = lstm.backward(dhs, dh_final, dc_final)
    folded = kernel_path == "numba" and kernels.loops(to_numpy(xs)) is not None and V <= N * T
    assert (dxs is None) == folded
    dE = lstm.dE if folded else rows_summed(xp, ids, dxs, V)
    close(dE, rows_summed(xp, ids, dxs_ref, V), "dE")
    close_grads(lstm, (lstm.grads, dxs_ref, dh0, dc0), (grads_ref, dxs_ref, dh0_ref, dc0_ref))


def test_tokens_over_a_large_vocabulary_are_rows_as_given(xp):
    """V > N T: the table would cost more than the product; the input is projected as given and dxs returned."""
    N, H = 2, 5
    lstm, _, h0, c0 = make(xp, N, H)
    ids, E = embedded(xp, N, N * T + 1)
    xs = E[ids]
    hs_ref, _, _, steps = reference_forward(lstm, xs, h0, c0, None)
    close(lstm.forward(xs, h0, c0, tokens=(ids, E)), hs_ref)
    dxs, _, _ = lstm.backward(random_like(xp, (N, T, H), 10))
    assert dxs is not None and dxs.shape == xs.shape
