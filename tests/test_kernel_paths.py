"""The two CPU paths, fused numba kernels and plain numpy, give one model the same numbers.

A whole training step (forward, backward, Adam with clipping and weight decay), greedy and
beam decoding, data-parallel threads, a CLI run with numba made unimportable against one
with numba, and ``attnseq bench --kernels``. float64 agrees to 1e-10, float32 to 1e-5
(the kernels' polynomial exp and rational tanh). A spy checks that each kernel really runs.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import padded_batch, small_model, write_date_splits
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq.nn import kernels
from attnseq.nn.model import AttentionSeq2seq
from attnseq.nn.layers import SoftmaxCrossEntropy
from attnseq.nn.optim import build_optimizer
from attnseq.run.decoding import beam_decode, greedy_decode
from attnseq.run.parallel import DataParallel

numba = pytest.importorskip("numba")
from attnseq.nn.kernels import cpu  # noqa: E402  (needs numba)

TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}
KERNELS = ("lstm_cell_forward", "lstm_cell_backward", "masked_softmax", "masked_softmax_backward",
           "softmax_cross_entropy", "cross_entropy_loss", "embedding_grad", "sum_squares", "adam_update")
LOOPS = ("lstm_forward", "lstm_backward", "lstm_step_forward")    # kernels/recurrent.py, where numpy's BLAS is found


def train_step(path, dtype, dropout):
    """On one path: loss, gradients, then parameters and loss after one Adam step (clip, weight decay)."""
    src, tgt = padded_batch(one_token_row=1)
    with kernels.using(path):
        m = small_model(dtype, dropout)
        opt = build_optimizer("adam", m, lr=0.01, clip=1.0, weight_decay=0.01)
        loss = float(m.forward(src, tgt))
        m.backward()
        grads = [g.copy() for g in m.gradients()]                   # the plain path clips them in place
        opt.step()
        return loss, grads, [p.copy() for p in m.parameters()], float(m.forward(src, tgt))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_step_same_on_both_paths(dtype, dropout):
    fused, plain = train_step("numba", dtype, dropout), train_step("numpy", dtype, dropout)
    np.testing.assert_allclose(fused[0], plain[0], **TOL[dtype])
    paths = [path for path, _, _ in small_model().named_parameters()]
    for path, a, b in zip(paths, fused[1], plain[1]):
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=f"gradient of {path}")
    for path, a, b in zip(paths, fused[2], plain[2]):
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=f"{path} after Adam")
    np.testing.assert_allclose(fused[3], plain[3], **TOL[dtype])


def decode(path):
    """Greedy and beam-3 outputs of a random float64 model on padded sources."""
    src, _ = padded_batch(seed=5, N=9, one_token_row=1)
    lengths = (src != 0).sum(axis=1)
    with kernels.using(path):
        m = small_model()
        ids, weights = greedy_decode(m, src, lengths, batch_size=4, max_len=8, with_weights=True, threads=1)
        beams = beam_decode(m, src, lengths, beam_size=3, max_len=8, n_best=2, batch_size=4, threads=1)
    return ids, weights, beams


def test_greedy_and_beam_same_on_both_paths():
    (ids1, w1, beams1), (ids2, w2, beams2) = decode("numba"), decode("numpy")
    for a, b, wa, wb in zip(ids1, ids2, w1, w2):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(wa, wb, **TOL["float64"])
    for row1, row2 in zip(beams1, beams2):
        assert [h.ids for h in row1] == [h.ids for h in row2]
        np.testing.assert_allclose([h.score for h in row1], [h.score for h in row2], **TOL["float64"])
        for h1, h2 in zip(row1, row2):
            np.testing.assert_allclose(h1.weights, h2.weights, **TOL["float64"])


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("threads", [1, 2])
def test_threads_agree_with_one_model(threads):
    src, tgt = padded_batch(N=9, one_token_row=1)
    alone = small_model()
    loss = float(alone.forward(src, tgt))
    alone.backward()
    shared = small_model()
    with DataParallel(shared, threads) as dp:
        assert float(dp.forward(src, tgt)) == pytest.approx(loss, rel=1e-12)
        dp.backward()
    for g, g_alone in zip(shared.gradients(), alone.gradients()):
        np.testing.assert_allclose(g, g_alone, rtol=1e-9, atol=1e-12)


@pytest.fixture
def spy(monkeypatch):
    """Counts calls of every compiled kernel and time loop (the layers look them up on ``cpu`` and
    ``recurrent`` at each call); without the loops, their counts stay out."""
    calls = {}
    with kernels.using("numba"):
        loops = kernels.loops(np.zeros(1))
    for module, names in ((cpu, KERNELS), (loops, LOOPS if loops else ())):
        for name in names:
            calls[name] = 0

            def counted(*args, _name=name, _fn=getattr(module, name), **kw):
                calls[_name] += 1
                return _fn(*args, **kw)
            monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_every_kernel_runs_on_the_numba_path_and_none_on_numpy(spy, path):
    """With the compiled time loops the cells run inside them (not counted here); without dropout the LSTMs take
    the embeddings' tokens (no embedding_grad), with dropout they take the embedded rows."""
    src, tgt = padded_batch(one_token_row=1)
    with kernels.using(path):
        for dropout in (0.0, 0.3):
            m = small_model("float32", dropout)
            opt = build_optimizer("adam", m, lr=0.01, clip=1.0)
            m.forward(src, tgt)
            m.backward()
            opt.step()
        m.generate(src, max_len=3)
        SoftmaxCrossEntropy(ignore_index=0).forward(m.logits(src, tgt), tgt[:, 1:], need_grad=False)   # evaluation's loss
    if path == "numpy":
        assert not any(spy.values()), spy
    else:
        inside = ("lstm_cell_forward", "lstm_cell_backward") if "lstm_forward" in spy else ()
        assert all(n for name, n in spy.items() if name not in inside), spy
        assert not any(spy[name] for name in inside), spy


# -- numba unimportable: the CLI trains to the same results -------------------------------------
RUN = """
import sys
if sys.argv[1] == "blocked":
    sys.modules["numba"] = None                 # import numba fails, as where it is not installed
from attnseq.cli import main
from attnseq.nn import kernels
how, out, data, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
code = main(args) or main(["eval", "--ckpt", out, "--data", data + "/test.tsv", "--output", out + "/pred.txt"])
print("path:", kernels.active())
sys.exit(code)
"""


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Date pairs: 320 training (5 steps of 64), 64 valid, 64 test."""
    return write_date_splits(tmp_path_factory.mktemp("date320"), 7, {"train": 320, "valid": 64, "test": 64})


def train_in_subprocess(how, data, out):
    env = {k: v for k, v in os.environ.items() if k != kernels.ENV}
    if how == "numba":
        env[kernels.ENV] = "numba"
    args = ["train", "--data", str(data), "--out", str(out), "--tokenizer", "char", "--epochs", "1",
            "--hidden-size", "32", "--wordvec-size", "8", "--batch-size", "64", "--lr", "0.01",
            "--threads", "1", "--examples", "0", "--no-plot"]
    r = subprocess.run([sys.executable, "-c", RUN, how, str(out), str(data), *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def test_without_numba_the_cli_trains_to_the_same_results(small_data, tmp_path):
    blocked = train_in_subprocess("blocked", small_data, tmp_path / "blocked")
    fused = train_in_subprocess("numba", small_data, tmp_path / "numba")
    assert "path: numpy" in blocked.stdout and "path: numba" in fused.stdout
    notices = [line for line in blocked.stderr.splitlines() if "numba not available" in line]
    assert len(notices) == 1 and "numba" not in fused.stderr, (blocked.stderr, fused.stderr)
    rows = [json.loads((tmp_path / how / "metrics.jsonl").read_text().splitlines()[-1]) for how in ("blocked", "numba")]
    for key in ("train_loss", "valid_loss"):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-5), key
    preds = [(tmp_path / how / "pred.txt").read_text() for how in ("blocked", "numba")]
    assert preds[0] == preds[1] and len(preds[0].splitlines()) == 64


# -- the benchmark names its path --------------------------------------------------------------
def test_bench_measures_both_paths_in_one_run(capsys):
    from attnseq.bench import cpu_model
    from attnseq.cli import main
    assert main(["bench", "--json", "--hidden-size", "16", "--wordvec-size", "8", "--iters", "2",
                 "--n-greedy", "8", "--n-beam", "4", "--kernels", "both"]) == 0
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kernels"] for r in runs] == ["numpy", "numba"]
    assert all(cpu_model() in r["device"] and r["train_s_per_iter"] > 0 for r in runs)


def test_cpu_class_names_family_model_and_vector_width():
    """bench's device names what the model name alone does not (Zen 3 or Zen 4 behind "AMD EPYC")."""
    from attnseq.bench import cpu_class
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in f) if k.strip())
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    if "flags" not in info or "cpu family" not in info:
        pytest.skip("no flags or cpu family in /proc/cpuinfo here")
    flags = info["flags"].split()
    want = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    assert cpu_class() == f"family {info['cpu family']} model {info['model']}, {want}"


def test_cpu_model_is_the_model_name_in_proc_cpuinfo():
    from attnseq.bench import cpu_model
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.split(":")[0].strip() == "model name"]
    except OSError:
        names = []
    if not names:
        pytest.skip("no model name in /proc/cpuinfo here")
    assert cpu_model() == names[0]
