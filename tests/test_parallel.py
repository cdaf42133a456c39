"""Data-parallel CPU training computes the same loss and gradients as the model alone."""
import numpy as np
import pytest
from helpers import padded_batch, small_model

from attnseq.nn.model import AttentionSeq2seq
from attnseq.run import parallel
from attnseq.run.parallel import MIN_ROWS_PER_THREAD, DataParallel, default_threads, for_training


@pytest.mark.parametrize("threads", [1, 2, 3, 7, 12])
@pytest.mark.parametrize("trim", [True, False])
def test_same_loss_and_gradients_as_onesmall_model(threads, trim):
    src, tgt = padded_batch()
    ref = small_model()
    loss_ref = float(ref.forward(src, tgt))
    ref.backward()
    model = small_model()
    with DataParallel(model, threads, trim=trim) as dp:
        loss = float(dp.forward(src, tgt))
        dp.backward()
        # a second batch reuses the replicas' buffers and must not see the first one's gradients
        src2, tgt2 = padded_batch(seed=1)
        ref.forward(src2, tgt2)
        ref.backward()
        loss2, loss2_ref = float(dp.forward(src2, tgt2)), float(ref.forward(src2, tgt2))
        dp.backward()
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert loss2 == pytest.approx(loss2_ref, rel=1e-12)
    for (path, m, i), g_ref in zip(model.named_parameters(), ref.gradients()):
        np.testing.assert_allclose(m.grads[i], g_ref, rtol=1e-9, atol=1e-12, err_msg=path)


def test_float32_gradients_agree_and_stay_float32():
    src, tgt = padded_batch(N=64, Ts=20, To=10)
    ref = small_model("float32")
    ref.forward(src, tgt)
    ref.backward()
    model = small_model("float32")
    with DataParallel(model, 2) as dp:
        loss = dp.forward(src, tgt)
        dp.backward()
    assert loss.dtype == np.float32
    for g, g_ref in zip(model.gradients(), ref.gradients()):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, g_ref, rtol=2e-4, atol=2e-6)


def test_replicas_follow_in_place_parameter_updates():
    model = small_model()
    with DataParallel(model, 2) as dp:
        for p in model.parameters():
            p *= 0.5                                                # as every optimizer updates: in place
        src, tgt = padded_batch()
        loss = float(dp.forward(src, tgt))
    assert loss == pytest.approx(float(model.forward(src, tgt)), rel=1e-12)


def test_dropout_is_deterministic_and_differs_between_shards():
    def grads_after_two_steps():
        model = small_model(dropout=0.3)
        with DataParallel(model, 2) as dp:
            for seed in (0, 1):
                dp.forward(*padded_batch(seed))
                dp.backward()
            masks = [rep.decoder.drop_in.mask for rep in dp.replicas]
        return [g.copy() for g in model.gradients()], masks

    g1, masks = grads_after_two_steps()
    g2, _ = grads_after_two_steps()
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    # the shards draw from different generators, not the same mask twice
    assert not np.array_equal(masks[0][:3], masks[1][:3])


def test_release_frees_the_replicas_scratch_and_changes_no_result():
    """release() between steps (the Trainer's, before evaluating) drops the replicas' buffers and
    caches; the next steps give bit for bit what they give without it, dropout included."""
    def grads(release):
        model = small_model(dropout=0.3)
        with DataParallel(model, 2) as dp:
            for seed in (0, 1, 2):
                dp.forward(*padded_batch(seed))
                dp.backward()
                if release:
                    old = dp.replicas
                    dp.release()
                    assert all(r is not o and not any(m._buffers for _, m in r.named_modules())
                               for r, o in zip(dp.replicas, old))
        return [g.copy() for g in model.gradients()]

    for a, b in zip(grads(False), grads(True)):
        np.testing.assert_array_equal(a, b)


def test_blas_runs_single_threaded_inside_and_is_restored_after():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    model = small_model()
    seen = []
    with DataParallel(model, 2) as dp:
        if dp.threads == 1:
            pytest.skip("this numpy's BLAS cannot be limited, so DataParallel runs one thread")
        rep_forward = dp.replicas[1].forward

        def spy(*a):
            seen.append(threadpoolctl.threadpool_info())
            return rep_forward(*a)

        dp.replicas[1].forward = spy
        before = threadpoolctl.threadpool_info()
        dp.forward(*padded_batch())
    assert seen and all(lib["num_threads"] == 1 for lib in seen[0] if lib["user_api"] == "blas")
    assert threadpoolctl.threadpool_info() == before


def test_errors_from_a_shard_reach_the_caller():
    src, tgt = padded_batch()
    src[5, 0] = 99                                                  # out of the source vocabulary, in shard 2
    with DataParallel(small_model(), 2) as dp, pytest.raises(ValueError, match="src"):
        dp.forward(src, tgt)


# batch size -> threads on 2, 4 and 8 usable cores, worked out by hand from the promise:
# one thread per core, but at least MIN_ROWS_PER_THREAD (32) rows each, and never none
DEFAULT_THREADS = {1: (1, 1, 1), 31: (1, 1, 1), 32: (1, 1, 1), 63: (1, 1, 1), 64: (2, 2, 2), 95: (2, 2, 2),
                   96: (2, 3, 3), 128: (2, 4, 4), 255: (2, 4, 7), 256: (2, 4, 8), 10**6: (2, 4, 8)}


@pytest.mark.parametrize("batch_size", sorted(DEFAULT_THREADS))
def test_default_threads_one_per_core_with_enough_rows_each(monkeypatch, batch_size):
    assert MIN_ROWS_PER_THREAD == 32                                # the table above assumes it
    for cores, want in zip((2, 4, 8), DEFAULT_THREADS[batch_size]):
        monkeypatch.setattr(parallel, "usable_cores", lambda: cores)
        assert default_threads(batch_size) == want, (batch_size, cores)


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
def test_default_threads_is_the_most_the_promise_allows(monkeypatch, cores):
    monkeypatch.setattr(parallel, "usable_cores", lambda: cores)
    for batch_size in range(1, 40 * MIN_ROWS_PER_THREAD):
        t = default_threads(batch_size)
        assert 1 <= t <= cores, (batch_size, t)
        assert t == 1 or batch_size // t >= MIN_ROWS_PER_THREAD, (batch_size, t)          # enough rows each
        assert t == cores or batch_size // (t + 1) < MIN_ROWS_PER_THREAD, (batch_size, t)  # no thread left idle


def test_for_training_choices():
    model = small_model()
    assert for_training(model, 1, 128) is model
    assert default_threads(16) == 1                                 # too few rows to split
    dp = for_training(model, 2, 128)
    try:
        assert isinstance(dp, DataParallel) and dp.threads in (1, 2)
    finally:
        dp.close()
    with pytest.raises(ValueError, match="threads"):
        DataParallel(model, 0)


def test_train_with_threads_matches_one_thread(tiny_data, tmp_path):
    """Two threads train the same model as one, up to float rounding: same accuracy to the last pair."""
    from attnseq.cli import main
    from conftest import TINY
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--threads", str(threads)]) == 0
        results[threads] = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    import json
    r1, r2 = (json.loads(results[t][-1]) for t in (1, 2))
    assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    assert r1["valid_loss"] == pytest.approx(r2["valid_loss"], rel=1e-2)


def test_threads_flag_is_checked(tmp_path, capsys):
    from attnseq.cli import main
    run = tmp_path / "r"
    assert main(["train", "--data", "date", "--out", str(run), "--threads", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err                                # one line, no traceback
    assert "--threads" in err and "0 (one per core) or a positive integer" in err and "-1" in err, err
    assert not run.exists() or not any(run.rglob("*")), sorted(run.rglob("*"))   # nothing trained or saved


def test_replica_shares_parameters_and_owns_the_rest():
    model = small_model()
    rep = model.replica()
    for (path, m, i), (_, r, j) in zip(model.named_parameters(), rep.named_parameters()):
        assert r.params[j] is m.params[i], path
        assert r.grads[j] is not m.grads[i], path
    assert rep.loss_layer is not model.loss_layer and rep.decoder.lstm is not model.decoder.lstm
    src, tgt = padded_batch()
    rep.forward(src, tgt)
    rep.backward()
    assert all(float(abs(g).sum()) == 0 for g in model.gradients())      # the original's grads untouched
    assert any(float(abs(g).sum()) > 0 for g in rep.gradients())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_map_batches_keeps_order_and_matches_a_loop(threads):
    from attnseq.run.parallel import map_batches
    model = small_model()
    batches = [padded_batch(seed)[0] for seed in range(7)]
    got = map_batches(model, lambda m, src: m.generate(src, 5), batches, threads)
    for src, (ids, w) in zip(batches, got):
        ids_ref, w_ref = model.generate(src, 5)
        np.testing.assert_array_equal(ids, ids_ref)
        np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [0, 1, 5])
def test_map_batches_passes_errors_on_and_stops(bad):
    import time
    from attnseq.run.parallel import map_batches
    calls = []

    def fn(m, k):
        calls.append(k)
        if k == bad:
            raise ValueError(f"batch {bad} is bad")
        time.sleep(0.005)
        return k
    with pytest.raises(ValueError, match=f"batch {bad}"):
        map_batches(small_model(), fn, list(range(60)), 2)
    assert len(calls) < 20                                          # the other thread stopped taking batches


def test_greedy_decode_same_on_threads(tiny_run):
    from attnseq.run.checkpoint import load_checkpoint
    from attnseq.run.decoding import greedy_decode
    ck = load_checkpoint(tiny_run)
    rng = np.random.default_rng(0)
    src = rng.integers(4, ck.model.config["src_vocab_size"], size=(300, 12))
    src_len = rng.integers(3, 13, size=300)
    src[np.arange(12)[None, :] >= src_len[:, None]] = 0
    one = greedy_decode(ck.model, src, src_len, 64, threads=1)
    two = greedy_decode(ck.model, src, src_len, 64, threads=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_without_threadpoolctl_it_runs_one_thread(monkeypatch, request):
    """BLAS that cannot be limited would oversubscribe the cores: fall back to one thread, same results."""
    import sys
    from attnseq.run.parallel import _blas_controller
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)         # import fails
    _blas_controller.cache_clear()                                  # looked up once per process: look again
    request.addfinalizer(_blas_controller.cache_clear)
    model = small_model()
    src, tgt = padded_batch()
    with DataParallel(model, 2) as dp:
        assert dp.threads == 1
        loss = float(dp.forward(src, tgt))
    assert loss == pytest.approx(float(small_model().forward(src, tgt)), rel=1e-12)
    from attnseq.run.parallel import map_batches
    assert map_batches(model, lambda m, k: k * 2, [1, 2, 3], 2) == [2, 4, 6]


@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_threads_decoding_one_shared_model_get_what_each_gets_alone(path):
    """Decoding steps keep nothing on the model (LSTM.step allocates its scratch per call): two threads
    stepping ONE model, no replica, through different batches at once get exactly the sequential outputs.
    (Encoding leaves final states on the layers, so the batches are encoded first, in this thread.)"""
    import threading

    from threadpoolctl import threadpool_limits

    from attnseq.nn import kernels
    from attnseq.run.decoding import greedy_encoded
    if path == "numba":
        pytest.importorskip("numba")
    with kernels.using(path), threadpool_limits(limits=1, user_api="blas"):
        model = AttentionSeq2seq(12, 10, 16, 64, seed=4, decoder_layers=2, attention="general").eval()
        model.state_dict()["decoder.out.b"][2] = -100.0             # no eos: every row runs all 60 steps
        encoded = [model.encode(padded_batch(seed=s, N=40, Ts=9)[0]) for s in (1, 2)]
        want = [greedy_encoded(model, *enc, max_len=60) for enc in encoded]
        got, start = [[], []], threading.Barrier(2)

        def decode(k):
            start.wait()
            for _ in range(4):
                got[k].append(greedy_encoded(model, *encoded[k], max_len=60))
        threads = [threading.Thread(target=decode, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in (0, 1):
        assert len(got[k]) == 4
        for ids, weights in got[k]:
            np.testing.assert_array_equal(ids, want[k][0])
            np.testing.assert_array_equal(weights, want[k][1])
