"""The compiled time loops (``kernels/recurrent.py``) and the BLAS they call (``kernels/blas.py``).

The loops against the numpy path's LSTM in float32 (1e-5; float64 to 1e-10 is ``test_lstm``), the
step-by-step compiled calls against the whole loops, the gemm they call against numpy's matmul
(strided rows, one row, K = 0, both dtypes), the tiled transpose, bad shapes and token ids refused
in one line, and whole models (bidirectional, stacked, input feeding) trained alike on the loops,
on the fallback where numpy's BLAS offers no 64-bit CBLAS gemm (one notice, the compiled cells
stepped from Python) and on the numpy path.
"""
import numpy as np
import pytest
from helpers import padded_batch, random_like

from attnseq import LSTM
from attnseq.nn import kernels

numba = pytest.importorskip("numba")
with kernels.using("numba"):
    recurrent = kernels.loops(np.zeros(1))
if recurrent is None:
    pytest.skip("numpy's BLAS is not callable from compiled code here (see kernels/blas.py)", allow_module_level=True)

T, D = 6, 5
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


@numba.njit
def gemm_into(a, b, c, beta):
    recurrent.gemm(a, b, c, beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(4, 3, 5), (1, 7, 2), (3, 0, 4), (64, 33, 17)])
def test_gemm_matches_numpy(dtype, M, K, N):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K + 3)).astype(dtype)[:, 1:K + 1]   # rows strided: a leading dimension > K
    b = rng.standard_normal((K, N)).astype(dtype)
    c0 = rng.standard_normal((M, N + 2)).astype(dtype)
    for beta in (0.0, 1.0):
        c = c0.copy()
        gemm_into(a, b, c[:, 2:], beta)
        np.testing.assert_allclose(c[:, 2:], a @ b + beta * c0[:, 2:], **TOL[dtype])
        np.testing.assert_array_equal(c[:, :2], c0[:, :2])             # nothing outside the view


def test_gemm_refuses_what_blas_cannot_take():
    a, b, c = np.ones((3, 4)), np.ones((4, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm_into(a, b[:3], c, 0.0)
    with pytest.raises(ValueError, match="rows must be contiguous"):
        gemm_into(np.ones((3, 8))[:, ::2], b, c, 0.0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (256, 1024), (33, 31)])
def test_transpose_into(shape):
    src = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    dst = np.empty(shape[::-1], np.float32)
    recurrent.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.T)
    with pytest.raises(ValueError, match="dst must be"):
        recurrent.transpose_into(src, dst.T.copy() if shape[0] != shape[1] else np.empty((shape[0] + 1, 1), np.float32))


def run(path, dtype, N, H, lengths, tokens):
    """An LSTM's forward and backward on one path -> hs, dxs or dE, dh0, dc0 and the weight gradients."""
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 4, (N, T))
    E = rng.standard_normal((4, D)).astype(dtype)
    xs = E[ids]
    with kernels.using(path):
        lstm = LSTM(D, H, np.random.default_rng(0), dtype=dtype)
        lstm.params[2][...] = rng.standard_normal(4 * H)
        h0, c0 = random_like(np, (N, H), 1).astype(dtype), random_like(np, (N, H), 2).astype(dtype)
        hs = lstm.forward(xs, h0, c0, None if lengths is None else np.asarray(lengths),
                          tokens=(ids, E) if tokens else None).copy()
        dxs, dh0, dc0 = lstm.backward(random_like(np, (N, T, H), 3).astype(dtype), random_like(np, (N, H), 5).astype(dtype),
                                      random_like(np, (N, H), 6).astype(dtype))
        if dxs is None:
            dE = lstm.dE.copy()
        else:
            dE = np.zeros_like(E)
            np.add.at(dE, ids.reshape(-1), dxs.reshape(-1, D))
        return [hs, dE, dh0.copy(), dc0.copy(), *[g.copy() for g in lstm.grads]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, H, lengths", [(3, 5, [6, 2, 1]), (1, 3, None), (4, 16, [6, 6, 5, 3])])
@pytest.mark.parametrize("tokens", [False, True])
def test_compiled_loops_match_the_numpy_path(dtype, N, H, lengths, tokens):
    """float32 to 1e-5 and float64 to 1e-10: forward states, E's gradient, dh0, dc0, dWx, dWh, db."""
    got, want = run("numba", dtype, N, H, lengths, tokens), run("numpy", dtype, N, H, lengths, tokens)
    for name, a, b in zip(["hs", "dE", "dh0", "dc0", "dWx", "dWh", "db"], got, want):
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=name)


def test_step_calls_equal_the_whole_loops():
    """``run_step``/``backward_step`` (one compiled call a step) give the whole loops' numbers: bit for bit with
    the whole input given up front (the same operations), to rounding with part of it projected per step."""
    N, H = 3, 7
    rng = np.random.default_rng(2)
    lstm = LSTM(D, H, rng)
    xs, dhs = rng.standard_normal((N, T, D)).astype(np.float32), rng.standard_normal((N, T, H)).astype(np.float32)
    with kernels.using("numba"):
        hs = lstm.forward(xs).copy()
        dxs, dh0, dc0 = (a.copy() for a in lstm.backward(dhs))
        grads = [g.copy() for g in lstm.grads]
        for fixed in (D, 2):
            lstm.begin_steps(T, N, fixed=np.ascontiguousarray(xs[:, :, :fixed].transpose(1, 0, 2)), dtype=np.float32)
            steps = []
            for t in range(T):
                lstm.inputs(t)[...] = xs[:, t, fixed:]
                steps.append(lstm.run_step(t).copy())
            lstm.begin_backward_steps()
            rest = [lstm.backward_step(t, dhs[:, t]) for t in range(T - 1, -1, -1)]
            assert (rest[0] is None) == (fixed == D)
            dfixed, dh0_s, dc0_s = lstm.end_backward_steps()
            check = np.testing.assert_array_equal if fixed == D else (
                lambda a, b, err_msg="": np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=err_msg))
            check(np.stack(steps, axis=1), hs, err_msg="hs")
            check(dfixed.transpose(1, 0, 2), dxs[:, :, :fixed], err_msg="dxs")
            check(dh0_s, dh0, err_msg="dh0")
            check(dc0_s, dc0, err_msg="dc0")
            for name, a, b in zip(lstm.param_names, lstm.grads, grads):
                check(a, b, err_msg=f"d{name}")


def test_blas_is_numpys_own():
    """The gemm the loops call lives in a BLAS this process has loaded (numpy's): no library of its own."""
    from attnseq.nn.kernels import blas
    s, d, path = blas.find()
    assert s and d and path in blas._loaded_blas_paths()


def test_token_ids_outside_the_table_are_refused():
    N, H, V = 2, 3, 4
    A, G = np.zeros((T, N, 4 * H), np.float32), np.zeros((T, N, 4 * H), np.float32)
    Hs, Cs, TC = np.zeros((T + 1, N, H), np.float32), np.zeros((T + 1, N, H), np.float32), np.zeros((T, N, H), np.float32)
    ids = np.zeros((N, T), np.intp)
    ids[1, 3] = V
    with pytest.raises(IndexError, match="outside the table's rows"):
        recurrent.lstm_forward(A, np.zeros((H, 4 * H), np.float32), Hs, Cs, G, TC, np.zeros((N, 4 * H), np.float32),
                               ids, np.zeros((V, 4 * H), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="lstm_forward: A, G"):
        recurrent.lstm_forward(A, np.zeros((H, 4 * H), np.float32), Hs[:-1], Cs, G, TC,
                               np.zeros((N, 4 * H), np.float32), ids[:0], np.zeros((V, 4 * H), np.float32), np.zeros(0, np.int64))


def test_profile_ticks_count_products_and_cells():
    N, H = 4, 32
    lstm = LSTM(D, H, np.random.default_rng(0))
    from attnseq.nn.profile import recording
    with kernels.using("numba"), recording() as prof:
        lstm.forward(np.ones((N, T, D), np.float32))
        ticks = prof.ticks()
        out = prof.breakdown(1.0, 1, 1)
    if ticks.sum() == 0:                                            # no cycle counter (not x86): one line for both
        assert "recurrent matmul + cell" in out
    else:
        assert ticks[0] > 0 and ticks[1] > 0
        assert out["recurrent matmul"] > 0 and out["cell"] > 0
    assert out["rest"] == pytest.approx(1e3 - sum(v for k, v in out.items() if k != "rest"))


def train_once(dtype, options):
    """A model's loss and gradients for one padded batch on the path in force (odd H: 7 a direction when bidirectional)."""
    from attnseq.nn.model import AttentionSeq2seq
    src, tgt = padded_batch(To=5, one_token_row=1)                  # 9 source steps, 5 target: both odd
    H = 14 if options.get("bidirectional") else 7
    m = AttentionSeq2seq(12, 10, 6, H, dtype=dtype, seed=3, **options)
    loss = float(m.forward(src, tgt))
    m.backward()
    return loss, [g.copy() for g in m.gradients()]


OPTIONS = {"book": {}, "bidirectional": dict(bidirectional=True),
           "all": dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="general",
                       input_feeding=True, tie_embeddings=True),
           "gru": dict(cell="gru", bidirectional=True)}                # the GRU keeps its own path beside the loops


@pytest.fixture
def without_blas(monkeypatch):
    """-> a function that makes numpy's BLAS look uncallable from compiled code (the loops' module fails to
    load); after the test the path in force before is chosen again with the real module, so no later test
    in this process runs on the fallback (the path keeps the module it found when chosen)."""
    before = kernels.active()

    def simulate():
        monkeypatch.setattr(kernels, "_loop_module", lambda: (None, "no 64-bit CBLAS sgemm/dgemm in numpy's BLAS (x)"))
        monkeypatch.setattr(kernels, "_loop_noticed", False)
    yield simulate
    monkeypatch.undo()
    kernels.use(before)
    assert before == "numpy" or kernels.loops(np.zeros(1)) is not None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", OPTIONS)
def test_loops_fallback_and_numpy_train_alike(without_blas, capsys, dtype, options):
    """The compiled loops, the fallback where numpy's BLAS is not callable (simulated: the compiled cells stepped
    from Python, after one notice line) and the plain numpy path: one loss and the same gradients, float64 to 1e-10
    and float32 to 1e-5, padded rows, a one-token row, bidirectional and stacked layers, input feeding, and a
    GRU model (no LSTM: the same on every path)."""
    tol = TOL[np.dtype(dtype).type]
    with kernels.using("numpy"):
        want = train_once(dtype, OPTIONS[options])
    with kernels.using("numba"):
        assert kernels.loops(np.zeros(1)) is not None
        loops = train_once(dtype, OPTIONS[options])
    without_blas()
    with kernels.using("numba"):
        assert kernels.loops(np.zeros(1)) is None and kernels.fused(np.zeros(1)) is not None
        fallback = train_once(dtype, OPTIONS[options])
        kernels.use("numba")                                        # chosen again: no second notice
    err = capsys.readouterr().err
    assert err.count("attnseq: no 64-bit CBLAS sgemm/dgemm in numpy's BLAS (x); the LSTM runs its time loop step by "
                     "step from Python") == 1, err
    for name, got in (("loops", loops), ("fallback", fallback)):
        assert got[0] == pytest.approx(want[0], rel=tol["rtol"]), name
        for k, (a, b) in enumerate(zip(got[1], want[1])):
            np.testing.assert_allclose(a, b, **tol, err_msg=f"{name}: gradient {k}")
