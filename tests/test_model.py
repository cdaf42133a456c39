"""The public model API: convergence on held-out data, bad input, dtypes, device moves.

Tests of the model's arithmetic run on both CPU paths (``kernel_path``).
"""
import numpy as np
import pytest
from helpers import train_steps
from kernel_paths import kernel_path  # noqa: F401 (a fixture)

from attnseq import Adam, AttentionDecoder, AttentionSeq2seq, ClipGradNorm, DeviceError, Encoder
from attnseq.nn.attention import mask_bias
from attnseq.nn.backend import to_numpy
from attnseq.nn.model import BOS_ID, EOS_ID


def reverse_task(rng, n, lo=3, hi=7):
    """Digit strings (ids 4..13) of length lo..hi; the target is the string reversed."""
    lens = rng.integers(lo, hi + 1, n)
    src = np.zeros((n, hi), dtype=np.int64)
    tgt = np.zeros((n, hi + 2), dtype=np.int64)
    for k, L in enumerate(lens):
        s = rng.integers(4, 14, L)
        src[k, :L] = s
        tgt[k, 0], tgt[k, 1:L + 1], tgt[k, L + 1] = BOS_ID, s[::-1], EOS_ID
    return src, tgt


def exact_match(pred, tgt):
    ok = 0
    for p, t in zip(pred, tgt):
        t = list(t[1:])
        t = t[:t.index(EOS_ID) + 1]
        ok += list(p[:len(t)]) == t
    return ok / len(pred)


@pytest.mark.slow
def test_learns_to_reverse_held_out():
    rng = np.random.default_rng(0)
    src, tgt = reverse_task(rng, 4000)
    test_src, test_tgt = reverse_task(np.random.default_rng(1), 500)
    train_set = {tuple(r) for r in src}
    keep = [k for k, r in enumerate(test_src) if tuple(r) not in train_set]
    test_src, test_tgt = test_src[keep], test_tgt[keep]
    model = AttentionSeq2seq(14, 14, 16, 64, seed=0)
    train_steps(model, src, tgt, epochs=12)
    pred, w = model.generate(test_src, max_len=10)
    acc = exact_match(pred, test_tgt)
    assert acc >= 0.99, acc
    assert w.shape == (len(test_src), pred.shape[1], test_src.shape[1])


@pytest.mark.usefixtures("kernel_path")
def test_encoder_and_decoder_compose_by_hand():
    rng = np.random.default_rng(0)
    enc = Encoder(10, 4, 8, rng=rng)
    dec = AttentionDecoder(6, 4, 8, rng=rng)
    src = np.array([[4, 5, 6], [7, 8, 0]])
    hs, (h, c) = enc.forward(src, lengths=np.array([3, 2]))
    assert hs.shape == (2, 3, 8) and h.shape == c.shape == (2, 8)
    np.testing.assert_array_equal(h[1], hs[1, 1])  # final state at the last real token
    logits = dec.forward(np.array([[1, 4], [1, 5]]), hs, (h, c), src != 0)
    assert logits.shape == (2, 2, 6)
    assert dec.attention_weights[1, :, 2].max() == 0.0


@pytest.mark.usefixtures("kernel_path")
def test_float64_end_to_end():
    model = AttentionSeq2seq(14, 14, 4, 8, dtype="float64")
    src, tgt = reverse_task(np.random.default_rng(0), 8)
    loss = model.forward(src, tgt)
    assert loss.dtype == np.float64
    model.backward()
    assert all(g.dtype == np.float64 for g in model.gradients())
    ids, w = model.generate(src)
    assert w.dtype == np.float64


@pytest.mark.usefixtures("kernel_path")
def test_float32_stays_float32():
    model = AttentionSeq2seq(14, 14, 4, 8)
    src, tgt = reverse_task(np.random.default_rng(0), 8)
    assert model.forward(src, tgt).dtype == np.float32
    model.backward()
    assert all(g.dtype == np.float32 for g in model.gradients())


@pytest.mark.parametrize("src, tgt, match", [
    (np.zeros((2, 3), dtype=np.float32), np.ones((2, 3), dtype=np.int64), "src: token ids must be integers"),
    (np.ones((2, 3, 1), dtype=np.int64), np.ones((2, 3), dtype=np.int64), r"src: expected 2 dims"),
    (np.full((2, 3), 99), np.ones((2, 3), dtype=np.int64), "src: token id 99 is out of range"),
    (np.full((2, 3), -1), np.ones((2, 3), dtype=np.int64), "src: token id -1 is out of range"),
    (np.ones((2, 3), dtype=np.int64), np.full((2, 3), 50), "tgt: token id 50 is out of range"),
    (np.array([[4, 5], [0, 0]]), np.ones((2, 3), dtype=np.int64), "row 1 has no valid"),
    (np.array([[4, 5], [0, 5]]), np.ones((2, 3), dtype=np.int64), "right padding"),
    (np.ones((2, 3), dtype=np.int64), np.ones((3, 3), dtype=np.int64), "tgt: batch size 3"),
])
def test_bad_input_names_the_argument(src, tgt, match):
    model = AttentionSeq2seq(14, 14, 4, 8)
    with pytest.raises(ValueError, match=match):
        model.forward(src, tgt)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dtype"):
        AttentionSeq2seq(5, 5, dtype="float16")
    with pytest.raises(ValueError, match="hidden_size"):
        AttentionSeq2seq(5, 5, 4, 0)
    with pytest.raises(ValueError, match="init"):
        AttentionSeq2seq(5, 5, init="orthogonal")


def test_unknown_device_is_a_clear_error():
    model = AttentionSeq2seq(5, 5, 4, 8)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        model.to("tpu")


def test_gpu_without_gpu_names_what_is_missing():
    from attnseq.nn.backend import gpu_available
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="cupy|GPU"):
        AttentionSeq2seq(5, 5, 4, 8).to("gpu")


@pytest.mark.gpu
def test_cpu_gpu_agreement(device):
    """LSTM, attention and one training step agree between numpy and cupy."""
    if device == "cpu":
        pytest.skip("agreement needs the GPU case")
    src, tgt = reverse_task(np.random.default_rng(0), 16)
    cpu = AttentionSeq2seq(14, 14, 8, 16, dtype="float64", seed=1)
    gpu = AttentionSeq2seq(14, 14, 8, 16, dtype="float64", seed=1).to("gpu")
    losses = []
    for m in (cpu, gpu):
        opt = Adam(m, lr=1e-2, hooks=[ClipGradNorm(5.0)])
        loss = float(m.forward(src, tgt))
        m.backward()
        opt.step()
        losses.append((loss, float(m.forward(src, tgt))))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    for (path, m1, i), (_, m2, j) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(m1.params[i], m2.params[j].get(), rtol=1e-9, atol=1e-12, err_msg=path)
    w_cpu = cpu.generate(src)[1]
    w_gpu = gpu.generate(src)[1]
    np.testing.assert_allclose(w_cpu, w_gpu, atol=1e-9)
    gpu.to("cpu")
    assert gpu.xp is np


def test_module_helpers():
    model = AttentionSeq2seq(14, 12, 4, 8)
    src, tgt = reverse_task(np.random.default_rng(0), 4)
    tgt = np.minimum(tgt, 11)
    model.forward(src, tgt)
    model.backward()
    assert any(float(np.abs(g).sum()) > 0 for g in model.gradients())
    model.zero_grad()
    assert all(float(np.abs(g).sum()) == 0 for g in model.gradients())
    expected = 14 * 4 + 12 * 4 + 2 * (4 * 32 + 8 * 32 + 32) + 16 * 12 + 12
    assert model.num_parameters() == expected
    assert list(model.state_dict())[:3] == ["encoder.embed.W", "encoder.lstm.Wx", "encoder.lstm.Wh"]


def decoder_case(xp, seed=0):
    """A float64 AttentionDecoder in eval mode (its dropout off) and random encoder output,
    hs (3, 4, H) with source lengths 4, 2, 1, and a start state."""
    rng = np.random.default_rng(seed)
    V, D, H, N, Ts = 9, 4, 5, 3, 4
    dec = AttentionDecoder(V, D, H, rng=rng, dtype=np.float64, dropout=0.3).to("cpu" if xp is np else "gpu").eval()
    hs = xp.asarray(rng.standard_normal((N, Ts, H)))
    state = (xp.asarray(rng.standard_normal((N, H))), xp.asarray(rng.standard_normal((N, H))))
    mask = xp.asarray(np.arange(Ts)[None, :] < np.array([4, 2, 1])[:, None])
    return dec, hs, state, mask, rng


@pytest.mark.parametrize("with_table", [True, False])
@pytest.mark.usefixtures("kernel_path")
def test_decoder_step_reproduces_teacher_forcing(xp, with_table):
    """Fed the teacher-forced tokens one at a time, step gives forward's logits and attention weights."""
    dec, hs, state, mask, rng = decoder_case(xp)
    tgt_in = xp.asarray(rng.integers(0, dec.vocab_size, (hs.shape[0], 6)))
    logits = to_numpy(dec.forward(tgt_in, hs, state, mask))        # (N, To, V)
    weights = to_numpy(dec.attention_weights)                       # (N, To, Ts)
    bias = mask_bias(mask, hs.dtype)
    table = dec.input_table() if with_table else None
    for t in range(tgt_in.shape[1]):
        step_logits, state, a = dec.step(tgt_in[:, t], state, hs, bias, table)
        np.testing.assert_allclose(to_numpy(step_logits), logits[:, t], rtol=1e-10, atol=1e-12, err_msg=f"t={t}")
        np.testing.assert_allclose(to_numpy(a), weights[:, t], rtol=1e-10, atol=1e-12, err_msg=f"t={t}")
        assert float(abs(a[~mask]).max()) == 0.0                    # padding gets weight exactly 0


@pytest.mark.usefixtures("kernel_path")
def test_generate_agrees_with_teacher_forcing_on_its_own_output(xp):
    """Greedy ids are the argmax of forward's logits when forward reads [bos, ids...] (up to eos)."""
    dec, hs, state, mask, _ = decoder_case(xp, seed=1)
    bos = 1
    free = to_numpy(dec.generate(hs, state, mask, bos, -1, max_len=7)[0])   # no eos: runs to max_len
    eos = int(free[0, 1])                                           # so row 0 ends by its second token
    ids, weights = dec.generate(hs, state, mask, bos, eos, max_len=7)
    ids, weights = to_numpy(ids), to_numpy(weights)
    tgt_in = np.concatenate([np.full((len(ids), 1), bos), ids[:, :-1]], axis=1)
    logits = to_numpy(dec.forward(xp.asarray(tgt_in), hs, state, mask))
    forced = to_numpy(dec.attention_weights)
    for n, row in enumerate(ids):
        L = list(row).index(eos) + 1 if eos in row else len(row)   # positions up to and including eos
        np.testing.assert_array_equal(logits[n, :L].argmax(-1), row[:L])
        np.testing.assert_allclose(weights[n, :L], forced[n, :L], rtol=1e-10, atol=1e-12)
        assert not weights[n, L:].any()                             # zeros after eos
