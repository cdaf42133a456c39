"""The fused CPU kernels against the layers' own numpy code, and that code against the maths.

``ref`` below puts the plain code each kernel replaces (``kernels/__init__`` lists the
pairs) behind the kernel's signature: the LSTM cells of the xp path, attention's
``masked_softmax``/``softmax_backward``, ``SoftmaxCrossEntropy`` on the numpy path,
``scatter_add``, float64 sums and ``Adam.update``. The kernels must match it, and the
book's LSTM cell (``lstm_cell_reference``) too. float64 must agree to 1e-10 (relative),
float32 (rational tanh, polynomial exp) to 1e-5 relative / 1e-6 absolute. Shapes cover
N = 1, H not a multiple of 8, padding, sources with a single real position, and inputs
that are not contiguous.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import numerical_grad

from attnseq import Adam, Module
from attnseq.errors import ConfigError
from attnseq.nn import kernels
from attnseq.nn.attention import masked_softmax, softmax_backward
from attnseq.nn.backend import scatter_add
from attnseq.nn.layers import SoftmaxCrossEntropy
from attnseq.nn.lstm_cell import (lstm_cell_backward_, lstm_cell_forward_, lstm_cell_reference,
                                  lstm_cell_reference_backward)

numba = pytest.importorskip("numba")
from attnseq.nn.kernels import cpu  # noqa: E402  (needs numba)


class ref:
    """The layers' plain numpy code behind the kernels' signatures (an output may also be an
    input where the kernel allows it: gates over xa or ha, dc_prev over dc, ds over da)."""

    @staticmethod
    def lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h):
        """The xp path's cell ``lstm_cell_forward_`` (the gate-scale trick, one exp)."""
        N, H = c_prev.shape
        _check_lstm("lstm_cell_forward", N, H, (xa, ha, gates), (c_prev, c, tc, h))
        lstm_cell_forward_(xa, ha, c_prev, gates, c, tc, h)

    @staticmethod
    def lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev):
        """The xp path's ``lstm_cell_backward_``."""
        N, H = dh.shape
        _check_lstm("lstm_cell_backward", N, H, (gates, da), (dh_rec, dc, c_prev, tc, dc_prev))
        lstm_cell_backward_(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev)

    @staticmethod
    def masked_softmax(scores, lengths):
        """attention.masked_softmax with the lengths as its -inf bias (N, 1, Ts)."""
        Ts = scores.shape[-1]
        if lengths.shape != (scores.shape[0],) or lengths.min() < 1 or lengths.max() > Ts:
            raise ValueError("masked_softmax: lengths must be (N,), each in 1..Ts")
        bias = np.where(np.arange(Ts) < lengths[:, None], 0.0, -np.inf).astype(scores.dtype)[:, None, :]
        masked_softmax(scores if scores.ndim == 3 else scores[:, None, :], bias)
        return scores

    @staticmethod
    def masked_softmax_backward(a, da, ds):
        ds[...] = softmax_backward(a, da)
        return ds

    @staticmethod
    def softmax_cross_entropy(logits, targets, ignore_index, dlogits, scale=None, smoothing=0.0):
        """SoftmaxCrossEntropy on the numpy path: (mean * count, count), dlogits for d(loss) = scale * count."""
        count = int((targets != ignore_index).sum())
        with kernels.using("numpy"):
            ce = SoftmaxCrossEntropy(ignore_index, smoothing)
            mean = float(ce.forward(logits.copy()[None], targets[None]))
            d = ce.backward(1.0 if scale is None else scale * max(count, 1))[0]
        dlogits[...] = d
        return mean * count, count

    @staticmethod
    def embedding_grad(ids, dout, dW):
        """Embedding.backward's plain code: zero, then scatter_add."""
        dW.fill(0)
        scatter_add(dW, ids.ravel(), dout.reshape(-1, dW.shape[1]))
        return dW

    @staticmethod
    def sum_squares(x):
        return float((x.astype(np.float64) ** 2).sum())

    @staticmethod
    def adam_update(p, g, m, v, scale, lr_t, b1, b2, eps_hat):
        """``Adam.update`` (the plain code) on g * scale, at step 1 with lr and eps giving these lr_t, eps_hat."""
        corr2 = math.sqrt(1.0 - b2)
        opt = Adam(Module(), lr=lr_t * (1.0 - b1) / corr2, beta1=b1, beta2=b2, eps=eps_hat / corr2)
        opt.t = 1
        opt.update(p, g * p.dtype.type(scale), {"m": m, "v": v})


def _check_lstm(name, N, H, four_h, one_h):
    if any(a.shape != (N, 4 * H) for a in four_h) or any(a.shape != (N, H) for a in one_h):
        raise ValueError(f"{name}: expected (N, 4H) and (N, H) arrays")


TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}
DTYPES = [np.float64, np.float32]
LSTM_SHAPES = [(1, 1), (1, 13), (3, 8), (5, 13), (2, 37), (4, 64)]


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def strided(a):
    """The same values as a, in a view that is not contiguous (every other column of a wider array)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


def assert_same(got, want, dtype):
    np.testing.assert_allclose(got, want, **TOL[dtype])


def nans(shape, dtype):
    """Outputs start as NaN, so an element a kernel forgets to write fails the comparison."""
    return np.full(shape, np.nan, dtype=dtype)


# -- the compiled scalar math -----------------------------------------------------------
@numba.njit(fastmath=cpu.FASTMATH, error_model="numpy")
def _apply_math(x, e, t, s):
    for k in range(x.size):
        e[k], t[k], s[k] = cpu.exp(x[k]), cpu.tanh(x[k]), cpu.sigmoid(x[k])


MATH_BOUNDS = {  # dtype: (exp relative, tanh absolute and relative, sigmoid absolute and relative)
    np.float32: (2e-7, 5e-7, 3e-7),
    np.float64: (1e-15, 1e-15, 1e-15),
}


@pytest.mark.parametrize("dtype", DTYPES)
def test_polynomial_exp_tanh_sigmoid_accuracy(dtype):
    """The vectorizable exp, tanh and sigmoid against numpy's (float64), over their whole range."""
    lo, hi = (-87.0, 88.0) if dtype == np.float32 else (-708.0, 709.0)
    grids = np.linspace(lo, hi, 400_001), np.linspace(-1, 1, 100_001), np.linspace(-1e-6, 1e-6, 1001)
    x = np.concatenate(grids).astype(dtype)
    e, t, s = (np.empty_like(x) for _ in range(3))
    _apply_math(x, e, t, s)
    x64 = x.astype(np.float64)
    exp_bound, tanh_bound, sig_bound = MATH_BOUNDS[dtype]
    want = np.exp(x64)
    assert np.max(np.abs(e - want) / want) < exp_bound
    want = np.tanh(x64)
    floor = 1.0 if dtype == np.float32 else 1e-300                  # float32: absolute error
    assert np.max(np.abs(t - want) / np.maximum(np.abs(want), floor)) < tanh_bound
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-x64))
    keep = want > 1e-300                                            # below, float64's result is clamped
    denom = np.maximum(want, 1.0) if dtype == np.float32 else want
    assert np.max((np.abs(s - want) / denom)[keep]) < sig_bound


# -- LSTM cell ------------------------------------------------------------------------
def lstm_inputs(rng, N, H, dtype):
    xa, ha = rand(rng, (N, 4 * H), dtype, 2.0), rand(rng, (N, 4 * H), dtype, 2.0)
    xa[0, :2] = (30.0, -30.0)                                       # saturated gates
    return xa, ha, rand(rng, (N, H), dtype)


def run_forward(mod, xa, ha, c_prev):
    N, H = c_prev.shape
    out = [nans((N, 4 * H), xa.dtype)] + [nans((N, H), xa.dtype) for _ in range(3)]
    mod.lstm_cell_forward(xa, ha, c_prev, *out)
    return out                                                      # gates, c, tc, h


def run_backward(mod, dh, dh_rec, dc, gates, c_prev, tc):
    N, H = dh.shape
    da, dc_prev = nans((N, 4 * H), dh.dtype), nans((N, H), dh.dtype)
    mod.lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev)
    return da, dc_prev


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", LSTM_SHAPES)
def test_lstm_cell_forward_matches_reference(N, H, dtype):
    xa, ha, c_prev = lstm_inputs(np.random.default_rng(N * 100 + H), N, H, dtype)
    for got, want in zip(run_forward(cpu, xa, ha, c_prev), run_forward(ref, xa, ha, c_prev)):
        assert_same(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", LSTM_SHAPES)
def test_lstm_cell_backward_matches_reference(N, H, dtype):
    rng = np.random.default_rng(N * 100 + H + 1)
    xa, ha, c_prev = lstm_inputs(rng, N, H, dtype)
    gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
    dh, dh_rec, dc = (rand(rng, (N, H), dtype) for _ in range(3))
    for got, want in zip(run_backward(cpu, dh, dh_rec, dc, gates, c_prev, tc),
                         run_backward(ref, dh, dh_rec, dc, gates, c_prev, tc)):
        assert_same(got, want, dtype)


def test_lstm_cell_accepts_strided_inputs_and_outputs():
    rng = np.random.default_rng(7)
    N, H = 3, 5
    xa, ha, c_prev = lstm_inputs(rng, N, H, np.float64)
    want = run_forward(ref, xa, ha, c_prev)
    outs = [strided(nans(a.shape, np.float64)) for a in want]
    cpu.lstm_cell_forward(strided(xa), strided(ha), strided(c_prev), *outs)
    for got, w in zip(outs, want):
        assert_same(got, w, np.float64)
    gates, c, tc, h = want
    dh, dh_rec, dc = (rand(rng, (N, H), np.float64) for _ in range(3))
    want = run_backward(ref, dh, dh_rec, dc, gates, c_prev, tc)
    outs = [strided(nans(a.shape, np.float64)) for a in want]
    cpu.lstm_cell_backward(*map(strided, (dh, dh_rec, dc, gates, c_prev, tc)), *outs)
    for got, w in zip(outs, want):
        assert_same(got, w, np.float64)


def test_lstm_cell_backward_in_place_dc():
    """dc_prev may be dc itself (slower, same numbers)."""
    rng = np.random.default_rng(8)
    xa, ha, c_prev = lstm_inputs(rng, 2, 9, np.float64)
    gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
    dh, dh_rec, dc = (rand(rng, (2, 9), np.float64) for _ in range(3))
    da_want, dc_prev_want = run_backward(ref, dh, dh_rec, dc, gates, c_prev, tc)
    for mod in (cpu, ref):
        dc2, da = dc.copy(), nans((2, 36), np.float64)
        mod.lstm_cell_backward(dh, dh_rec, dc2, gates, c_prev, tc, da, dc2)
        assert_same(da, da_want, np.float64)
        assert_same(dc2, dc_prev_want, np.float64)


def test_lstm_cell_forward_gates_in_place():
    """gates may be xa or ha itself (the xp path keeps its gates over the input projections, and
    ``LSTM.step`` over h Wh); the compiled cell gives the same numbers there too, only slower."""
    rng = np.random.default_rng(9)
    xa, ha, c_prev = lstm_inputs(rng, 3, 7, np.float64)
    want = run_forward(ref, xa, ha, c_prev)
    for mod in (cpu, ref):
        for over in ("xa", "ha"):
            a, b = xa.copy(), ha.copy()
            out = [nans(c_prev.shape, np.float64) for _ in range(3)]
            mod.lstm_cell_forward(a, b, c_prev, a if over == "xa" else b, *out)
            for got, w in zip([a if over == "xa" else b] + out, want):
                assert_same(got, w, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_cell_matches_the_book(dtype):
    """The compiled cell against ``lstm_cell_reference`` and its backward, sigmoid and tanh by name."""
    rng = np.random.default_rng(17)
    N, H = 3, 13
    xa, ha, c_prev = lstm_inputs(rng, N, H, dtype)
    gates, c, tc, h = run_forward(cpu, xa, ha, c_prev)
    h_book, c_book, gates_book = lstm_cell_reference(xa + ha, c_prev)
    for got, want in ((h, h_book), (c, c_book), (tc, np.tanh(c_book)), (gates, np.concatenate(gates_book, 1))):
        assert_same(got, want, dtype)
    dh, dh_rec, dc = (rand(rng, (N, H), dtype) for _ in range(3))
    da, dc_prev = run_backward(cpu, dh, dh_rec, dc, gates, c_prev, tc)
    da_book, dc_prev_book = lstm_cell_reference_backward(dh + dh_rec, dc, c_prev, c_book, gates_book)
    assert_same(da, da_book, dtype)
    assert_same(dc_prev, dc_prev_book, dtype)


def test_reference_lstm_forward_is_the_lstm():
    """Element by element with math.exp/math.tanh, gates in the order [i, f, o, g]."""
    rng = np.random.default_rng(3)
    N, H = 2, 3
    xa, ha, c_prev = lstm_inputs(rng, N, H, np.float64)
    gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))
    for n in range(N):
        for j in range(H):
            a = xa[n] + ha[n]
            i, f, o, g = sig(a[j]), sig(a[H + j]), sig(a[2 * H + j]), math.tanh(a[3 * H + j])
            cc = f * c_prev[n, j] + i * g
            want = [cc, math.tanh(cc), o * math.tanh(cc)]
            np.testing.assert_allclose([c[n, j], tc[n, j], h[n, j]], want, rtol=1e-12)
            np.testing.assert_allclose(gates[n, [j, H + j, 2 * H + j, 3 * H + j]], [i, f, o, g], rtol=1e-12)


def test_reference_lstm_backward_is_the_gradient():
    """da and dc_prev against central differences of L = sum(wh * h) + sum(wc * c) (float64)."""
    rng = np.random.default_rng(4)
    N, H = 2, 3
    xa, ha, c_prev = lstm_inputs(rng, N, H, np.float64)
    xa[0, :2] = 0.3, -0.2                                           # no saturated gates here
    wh, wc, dh_rec = (rand(rng, (N, H), np.float64) for _ in range(3))

    def loss(xa, c_prev):
        gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
        return float((wh * h).sum() + (wc * c).sum() + (dh_rec * h).sum())

    gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
    da, dc_prev = run_backward(ref, wh, dh_rec, wc, gates, c_prev, tc)
    for x, analytic in ((xa, da), (c_prev, dc_prev)):
        numeric = numerical_grad(lambda: loss(xa, c_prev), x, eps=1e-6)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_lstm_cell_from_threads_at_once():
    """The kernels release the GIL and share no state: two threads get what one thread gets."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(15)
    inputs = [lstm_inputs(rng, 8, 40, np.float32) for _ in range(2)]
    want = [run_forward(cpu, *a) for a in inputs]

    def repeat(a):
        return [run_forward(cpu, *a) for _ in range(200)]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(repeat, inputs))
    for runs, w in zip(results, want):
        for outs in runs:
            for got, expected in zip(outs, w):
                np.testing.assert_array_equal(got, expected)


def test_lstm_cell_rejects_wrong_shapes():
    """numba does not check bounds: the kernels check shapes before any loop."""
    xa, ha, c_prev = lstm_inputs(np.random.default_rng(0), 2, 4, np.float64)
    gates, c, tc, h = run_forward(ref, xa, ha, c_prev)
    with pytest.raises(ValueError, match="lstm_cell_forward"):
        cpu.lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h[:1])
    with pytest.raises(ValueError, match="lstm_cell_backward"):
        cpu.lstm_cell_backward(h, h, c, gates[:, :8], c_prev, tc, gates, c)


# -- attention softmax -------------------------------------------------------------
SOFTMAX_CASES = [  # (N, To, Ts); To None for decoding's (N, Ts)
    (1, 1, 1), (1, 11, 29), (4, 3, 7), (6, None, 29), (1, None, 5), (3, 2, 17)]


def scores_and_lengths(rng, N, To, Ts, dtype, single=False):
    shape = (N, Ts) if To is None else (N, To, Ts)
    lengths = np.ones(N, dtype=np.int64) if single else rng.integers(1, Ts + 1, N)
    lengths[0] = 1 if single else Ts                                 # a row without padding
    return rand(rng, shape, dtype, 3.0), lengths


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("single", [False, True], ids=["padded", "one-real"])
@pytest.mark.parametrize("N,To,Ts", SOFTMAX_CASES)
def test_masked_softmax_matches_reference(N, To, Ts, single, dtype):
    s, lengths = scores_and_lengths(np.random.default_rng(N + Ts), N, To, Ts, dtype, single)
    got, want = cpu.masked_softmax(s.copy(), lengths), ref.masked_softmax(s.copy(), lengths)
    assert_same(got, want, dtype)
    real = np.arange(Ts) < lengths[:, None]                         # (N, Ts)
    if To is not None:
        real = np.broadcast_to(real[:, None, :], s.shape)
    for a in (got, want):
        assert np.all(a[~real] == 0)                                # padding: exactly 0
        np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-5)
        if single:
            assert np.all(a[..., 0] == 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,To,Ts", SOFTMAX_CASES)
def test_masked_softmax_backward_matches_reference(N, To, Ts, dtype):
    rng = np.random.default_rng(N * Ts)
    s, lengths = scores_and_lengths(rng, N, To, Ts, dtype)
    a = ref.masked_softmax(s, lengths)
    da = rand(rng, a.shape, dtype)
    got = cpu.masked_softmax_backward(a, da, nans(a.shape, dtype))
    want = ref.masked_softmax_backward(a, da, nans(a.shape, dtype))
    assert_same(got, want, dtype)
    assert np.all(got[a == 0] == 0)                                 # no gradient into padding
    for mod in (cpu, ref):                                          # ds may be da
        d = da.copy()
        assert mod.masked_softmax_backward(a, d, d) is d
        assert_same(d, want, dtype)


def test_reference_softmax_backward_is_the_gradient():
    """ds against central differences of sum(w * softmax(s)) over the real positions (float64)."""
    rng = np.random.default_rng(5)
    s, lengths = scores_and_lengths(rng, 3, 2, 6, np.float64)
    w = rand(rng, s.shape, np.float64)
    loss = lambda s: float((w * ref.masked_softmax(s.copy(), lengths)).sum())
    ds = ref.masked_softmax_backward(ref.masked_softmax(s.copy(), lengths), w, np.empty_like(s))
    numeric = numerical_grad(lambda: loss(s), s, eps=1e-6)
    np.testing.assert_allclose(ds, numeric, rtol=1e-6, atol=1e-9)


def test_masked_softmax_on_strided_views():
    rng = np.random.default_rng(6)
    s, lengths = scores_and_lengths(rng, 4, 3, 9, np.float64)
    want = ref.masked_softmax(s.copy(), lengths)
    view = strided(s)
    assert cpu.masked_softmax(view, lengths) is view
    assert_same(view, want, np.float64)
    da = rand(rng, s.shape, np.float64)
    ds = strided(nans(s.shape, np.float64))
    cpu.masked_softmax_backward(strided(want), strided(da), ds)
    assert_same(ds, ref.masked_softmax_backward(want, da, np.empty_like(da)), np.float64)


@pytest.mark.parametrize("bad", [[0, 3], [1, 6], [2]])
def test_masked_softmax_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="masked_softmax"):
        cpu.masked_softmax(np.zeros((2, 3, 5)), np.array(bad))


# -- output loss -----------------------------------------------------------------------
def ce_inputs(rng, M, V, dtype, ignore_index=0):
    logits = rand(rng, (M, V), dtype, 3.0)
    targets = rng.integers(0, V, M)
    targets[::3] = ignore_index                                     # padding rows
    if M > 1:
        targets[1] = V - 1
    return logits, targets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("scale", [None, 0.25])
@pytest.mark.parametrize("M,V", [(1, 2), (7, 13), (30, 13), (5, 300), (3, 5000)])
def test_softmax_cross_entropy_matches_reference(M, V, scale, smoothing, dtype):
    logits, targets = ce_inputs(np.random.default_rng(M * V), M, V, dtype)
    d_got, d_want = nans((M, V), dtype), nans((M, V), dtype)
    loss, count = cpu.softmax_cross_entropy(logits, targets, 0, d_got, scale, smoothing)
    loss_want, count_want = ref.softmax_cross_entropy(logits, targets, 0, d_want, scale, smoothing)
    assert count == count_want == int((targets != 0).sum())
    np.testing.assert_allclose(loss, loss_want, **TOL[dtype])
    assert_same(d_got, d_want, dtype)
    assert np.all(d_got[targets == 0] == 0)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [3, -100])
def test_softmax_cross_entropy_ignore_index_all_and_in_place(ignore_index, smoothing):
    """Another padding id than 0; -100 (no vocabulary id) only for the kernel: the plain code
    indexes the logits at every target, padding included. In place (dlogits is logits) with and
    without label smoothing: every read of a row comes before its first write."""
    rng = np.random.default_rng(9)
    logits, targets = ce_inputs(rng, 6, 11, np.float64, ignore_index=3)
    targets[targets == 3] = ignore_index
    d_want = nans(logits.shape, np.float64)
    want = ref.softmax_cross_entropy(logits, np.where(targets == -100, 3, targets), 3, d_want, smoothing=smoothing)
    for mod in (cpu, ref) if ignore_index == 3 else (cpu,):
        z = logits.copy()                                           # dlogits is logits
        got = mod.softmax_cross_entropy(z, targets, ignore_index, z, smoothing=smoothing)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        assert_same(z, d_want, np.float64)
        d = nans(logits.shape, np.float64)
        assert mod.softmax_cross_entropy(logits, np.full(6, ignore_index), ignore_index, d,
                                         smoothing=smoothing) == (0.0, 0)
        assert np.all(d == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("M,V", [(1, 2), (7, 13), (5, 300), (3, 5000)])
def test_cross_entropy_loss_is_the_gradient_kernels_loss(M, V, smoothing, dtype):
    """The loss-only kernel (evaluation) gives softmax_cross_entropy's loss and count, writing nothing."""
    logits, targets = ce_inputs(np.random.default_rng(M + V), M, V, dtype)
    before = logits.copy()
    loss, count = cpu.cross_entropy_loss(logits, targets, 0, smoothing)
    want, want_count = cpu.softmax_cross_entropy(logits, targets, 0, nans((M, V), dtype), smoothing=smoothing)
    assert count == want_count == int((targets != 0).sum())
    np.testing.assert_allclose(loss, want, **TOL[dtype])
    np.testing.assert_array_equal(logits, before)
    assert cpu.cross_entropy_loss(logits, np.zeros(M, np.int64), 0) == (0.0, 0)
    with pytest.raises(IndexError, match="target"):
        cpu.cross_entropy_loss(logits, np.full(M, V), 0)


@pytest.mark.parametrize("path", ["numba", "numpy"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_the_loss_without_a_gradient_is_the_same_loss(path, smoothing):
    """SoftmaxCrossEntropy.forward(need_grad=False): the training forward's loss, on either path; nothing is
    kept for a backward, so one is refused."""
    logits, targets = ce_inputs(np.random.default_rng(12), 20, 17, np.float64)
    logits, targets = logits.reshape(4, 5, 17), targets.reshape(4, 5)
    with kernels.using(path):
        want = float(SoftmaxCrossEntropy(0, smoothing).forward(logits, targets))
        ce = SoftmaxCrossEntropy(0, smoothing)
        assert float(ce.forward(logits, targets, need_grad=False)) == pytest.approx(want, rel=1e-12)
        assert ce.cache is None and ce.dlogits is None and not ce._buffers      # no (N*T, V) array kept
        with pytest.raises(RuntimeError, match="need_grad=True"):
            ce.backward()


def test_reference_cross_entropy_is_the_gradient():
    """dlogits against central differences of the mean loss over real rows (float64)."""
    rng = np.random.default_rng(10)
    logits, targets = ce_inputs(rng, 5, 4, np.float64)
    d = np.empty_like(logits)
    ref.softmax_cross_entropy(logits, targets, 0, d)

    def mean_loss(z):
        loss, count = ref.softmax_cross_entropy(z, targets, 0, np.empty_like(z))
        return loss / count

    numeric = numerical_grad(lambda: mean_loss(logits), logits, eps=1e-6)
    np.testing.assert_allclose(d, numeric, rtol=1e-6, atol=1e-9)
    p = np.exp(logits[1] - logits[1].max())
    assert math.isclose(ref.softmax_cross_entropy(logits[1:2], targets[1:2], 0, np.empty((1, 4)))[0],
                        -math.log(p[targets[1]] / p.sum()), rel_tol=1e-12)


def test_softmax_cross_entropy_strided_logits():
    logits, targets = ce_inputs(np.random.default_rng(11), 8, 13, np.float64)
    d_want = np.empty_like(logits)
    want = ref.softmax_cross_entropy(logits, targets, 0, d_want)
    d = strided(nans(logits.shape, np.float64))
    got = cpu.softmax_cross_entropy(strided(logits), strided(targets[None])[0], 0, d)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert_same(d, d_want, np.float64)


def test_softmax_cross_entropy_rejects_bad_targets():
    logits = np.zeros((3, 5))
    with pytest.raises(IndexError, match="target"):
        cpu.softmax_cross_entropy(logits, np.array([1, 5, 0]), 0, np.empty_like(logits))
    with pytest.raises(ValueError, match="softmax_cross_entropy"):
        cpu.softmax_cross_entropy(logits, np.array([1, 2]), 0, np.empty_like(logits))


# -- embedding gradient ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,V,D", [(1, 1, 1), (7, 3, 5), (64, 13, 16), (100, 50, 9)])
def test_embedding_grad_matches_reference(M, V, D, dtype):
    rng = np.random.default_rng(M + V + D)
    ids, dout = rng.integers(0, V, M), rand(rng, (M, D), dtype)
    got = cpu.embedding_grad(ids, dout, nans((V, D), dtype))
    want = ref.embedding_grad(ids, dout, nans((V, D), dtype))
    assert_same(got, want, dtype)
    manual = np.zeros((V, D))
    for i, row in zip(ids, dout):                                   # repeated ids accumulate
        manual[i] += row
    np.testing.assert_allclose(want, manual, **TOL[dtype])


def test_embedding_grad_strided_dout_and_bad_ids():
    rng = np.random.default_rng(12)
    ids, dout = rng.integers(0, 6, 20), rand(rng, (20, 4), np.float64)
    want = ref.embedding_grad(ids, dout, np.empty((6, 4)))
    assert_same(cpu.embedding_grad(ids, strided(dout), np.empty((6, 4))), want, np.float64)
    with pytest.raises(IndexError, match="token id"):
        cpu.embedding_grad(np.array([0, 6]), dout[:2], np.empty((6, 4)))
    with pytest.raises(IndexError, match="token id"):
        cpu.embedding_grad(np.array([-1, 0]), dout[:2], np.empty((6, 4)))
    with pytest.raises(ValueError, match="embedding_grad"):
        cpu.embedding_grad(ids, dout[:3], np.empty((6, 4)))


def test_embedding_grad_batch_major_ids_over_time_major_gradients():
    """As Embedding.backward calls it: ids (N, T), dout (N, T, D) a transposed time-major array."""
    rng = np.random.default_rng(16)
    ids, dout_tm = rng.integers(0, 7, (5, 4)), rand(rng, (4, 5, 3), np.float64)   # dout (T, N, D)
    dout = dout_tm.transpose(1, 0, 2)                               # (N, T, D), not contiguous
    want = ref.embedding_grad(ids, np.ascontiguousarray(dout), nans((7, 3), np.float64))
    assert_same(cpu.embedding_grad(ids, dout, nans((7, 3), np.float64)), want, np.float64)


# -- optimizer -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 37), (2, 3, 5)])
def test_sum_squares_matches(shape, dtype):
    x = rand(np.random.default_rng(len(shape)), shape, dtype)
    want = float((x.astype(np.float64) ** 2).sum())
    assert math.isclose(cpu.sum_squares(x), want, rel_tol=1e-12)
    assert math.isclose(ref.sum_squares(x), want, rel_tol=1e-12)
    if x.ndim == 2:
        assert math.isclose(cpu.sum_squares(x.T), want, rel_tol=1e-12)


def adam_state(rng, shape, dtype):
    p, g, m = rand(rng, shape, dtype), rand(rng, shape, dtype), rand(rng, shape, dtype, 0.1)
    return p, g, m, np.abs(rand(rng, shape, dtype, 0.1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 37), (2, 3, 5)])
def test_adam_update_matches_reference(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    p, g, m, v = adam_state(rng, shape, dtype)
    got, want = [a.copy() for a in (p, m, v)], [a.copy() for a in (p, m, v)]
    for t in (1, 2, 3):
        lr_t = 1e-3 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        eps_hat = 1e-8 * math.sqrt(1 - 0.999 ** t)
        cpu.adam_update(got[0], g, got[1], got[2], 0.5, lr_t, 0.9, 0.999, eps_hat)
        ref.adam_update(want[0], g, want[1], want[2], 0.5, lr_t, 0.9, 0.999, eps_hat)
    for a, b in zip(got, want):
        assert_same(a, b, dtype)


def test_adam_kernels_step_like_attnseq_adam_with_clipping():
    """Global norm from sum_squares, clip scale, then adam_update == ClipGradNorm + Adam (float64)."""
    from attnseq import ClipGradNorm

    rng = np.random.default_rng(13)
    shapes = [(3, 4), (4,)]
    params = [rand(rng, s, np.float64) for s in shapes]
    grads = [rand(rng, s, np.float64, 5.0) for s in shapes]

    class Two(Module):
        def __init__(self):
            super().__init__()
            for k, (p, g) in enumerate(zip(params, grads)):
                self.add_param(f"w{k}", p.copy())
                self.grads[-1][...] = g

    model = Two()
    opt = Adam(model, lr=0.01, hooks=[ClipGradNorm(1.0)])
    mine = [p.copy() for p in params]
    slots = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for t in (1, 2):
        for g, mg in zip(grads, model.grads):
            mg[...] = g                                             # the clip hook scales grads in place
        with kernels.using("numpy"):                                # Adam's plain update
            opt.step()
        scale = min(1.0, 1.0 / (math.sqrt(sum(cpu.sum_squares(g) for g in grads)) + 1e-6))
        lr_t = 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for p, g, (m, v) in zip(mine, grads, slots):
            cpu.adam_update(p, g, m, v, scale, lr_t, 0.9, 0.999, 1e-8 * math.sqrt(1 - 0.999 ** t))
    for p, want in zip(mine, model.params):
        np.testing.assert_allclose(p, want, rtol=1e-10)


def test_adam_update_needs_contiguous_state():
    p, g, m, v = adam_state(np.random.default_rng(14), (4, 6), np.float64)
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu.adam_update(p.T, g.T, m.T, v.T, 1.0, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="one shape"):
        cpu.adam_update(p, g[:2], m, v, 1.0, 1e-3, 0.9, 0.999, 1e-8)
    want = [a.copy() for a in (p, m, v)]
    ref.adam_update(want[0], g, want[1], want[2], 1.0, 1e-3, 0.9, 0.999, 1e-8)
    cpu.adam_update(p, strided(g), m, v, 1.0, 1e-3, 0.9, 0.999, 1e-8)   # a strided gradient is fine
    for a, b in zip((p, m, v), want):
        assert_same(a, b, np.float64)


# -- dispatch ---------------------------------------------------------------------------------
@pytest.fixture
def restore_kernels():
    before = kernels.active()
    yield
    kernels.use(before)


def test_fused_names_the_kernels_for_numpy_arrays_only(restore_kernels):
    a = np.zeros(3)
    assert kernels.use("numba") == "numba" == kernels.active()
    assert kernels.fused(a, a) is cpu and kernels.fused() is cpu
    assert kernels.fused(a, [1.0]) is None                          # not a numpy array (cupy's are not)
    assert kernels.use("numpy") == "numpy" == kernels.active()
    assert kernels.fused(a) is None
    with kernels.using("numba") as path:
        assert path == "numba" and kernels.fused(a) is cpu
    assert kernels.active() == "numpy"
    with pytest.raises(ConfigError, match="kernels must be one of"):
        kernels.use("fortran")


def run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if k != kernels.ENV}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


CHECK_FALLBACK = """
import sys
sys.modules['numba'] = None
import numpy as np
from attnseq.nn import kernels
from attnseq.nn.attention import masked_softmax, mask_bias
s = np.zeros((2, 1, 3))
masked_softmax(s, mask_bias(np.array([[True, False, False], [True, True, True]]), s.dtype))
kernels.use()
print(kernels.active(), kernels.fused(s) is None, s.tolist())
"""


def test_without_numba_one_notice_and_the_numpy_code():
    r = run_python(CHECK_FALLBACK)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["numpy", "True"]
    assert "[[[1.0, 0.0, 0.0]]" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("attnseq: numba not available (ModuleNotFoundError: import of numba halted")
    assert lines[0].endswith("using the plain numpy code (slower, same results)")


def test_environment_chooses_the_path():
    r = run_python("from attnseq.nn import kernels; print(kernels.active())", ATTNSEQ_KERNELS="numpy")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "numpy", "")
    r = run_python("from attnseq.nn import kernels; print(kernels.active())", ATTNSEQ_KERNELS="numba")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "numba", "")
    r = run_python("import sys; sys.modules['numba'] = None\nfrom attnseq.nn import kernels; kernels.active()",
                   ATTNSEQ_KERNELS="numba")
    assert r.returncode != 0 and "numba' asked for, but numba is not available" in r.stderr
