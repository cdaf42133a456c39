"""Training and decoding speed, against this machine's own sgemm (``attnseq bench`` in ``cli``).

The default workload is the classic date model (embedding 16, hidden 256, batch
128) on the shipped date data with every batch padded to the longest source (29)
and target (11 decoder steps), as the book's code runs it. In the same run it
times float32 matmuls at the model's own shapes, so ``efficiency`` (the model's
useful GFLOP/s over sgemm GFLOP/s) holds on a noisy machine.

``kernels`` picks the CPU path for the elementwise work: "numba" (the fused
compiled kernels), "numpy" (the plain array code) or "auto" (numba when it
imports); the result names the one that ran. Training takes the same choice
from the environment variable ``ATTNSEQ_KERNELS``.

``profile`` times as many training steps again with ``nn.profile`` recording, and
adds their breakdown by part (ms per step, each shard thread's share) to the result:
where the step goes on this CPU.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from .data.batching import encode_pairs, take
from .data.tokenizers import CharTokenizer
from .nn import kernels as kernel_paths
from .nn.backend import check_device
from .nn.model import AttentionSeq2seq
from .nn.optim import Adam, ClipGradNorm
from .nn.profile import part, recording
from .run.decoding import EVAL_BATCH_SIZE, beam_decode, greedy_decode
from .run.parallel import for_training


def _sync(xp):
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def _median_time(fn, reps: int, xp=np) -> float:
    times = []
    for _ in range(reps):
        _sync(xp)
        t = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_flops(N, Ts, To, D, H, V) -> float:
    """Useful FLOPs of one training step: 2mnk per matmul in the forward pass, times 3."""
    fwd = (2 * N * (Ts + To) * D * 4 * H          # input projections
           + 2 * N * (Ts + To) * H * 4 * H        # recurrent h @ Wh
           + 2 * 2 * N * To * Ts * H              # attention scores and context
           + 2 * N * To * 2 * H * V)              # output layer
    return 3.0 * fwd


def sgemm_gflops(N, H, xp=np, reps: int = 50) -> float:
    """float32 matmul throughput at the LSTM's recurrent shape (N, H) @ (H, 4H)."""
    a = xp.asarray(np.random.default_rng(0).standard_normal((N, H)), dtype=np.float32)
    b = xp.asarray(np.random.default_rng(1).standard_normal((H, 4 * H)), dtype=np.float32)
    out = xp.empty((N, 4 * H), dtype=np.float32)
    fn = lambda: xp.matmul(a, b, out=out)
    for _ in range(5):
        fn()
    inner = 20
    t = _median_time(lambda: [fn() for _ in range(inner)], reps // 5 + 3, xp)
    return 2 * N * H * 4 * H * inner / t / 1e9


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def run_bench(device: str = "cpu", batch_size: int = 128, hidden_size: int = 256, wordvec_size: int = 16,
              iters: int = 20, warmup: int = 3, padded: bool = True, n_greedy: int = 5000, n_beam: int = 500,
              threads: int = 0, kernels: str = "auto", profile: bool = False) -> dict:
    """Times training and decoding; ``kernels`` ("auto", "numba", "numpy") is the CPU path, for this run only;
    ``profile`` adds the training step's breakdown by part."""
    check_device(device)
    with kernel_paths.using(kernels) as path:
        out = _run(device, batch_size, hidden_size, wordvec_size, iters, warmup, padded, n_greedy, n_beam, threads,
                   profile)
    out["kernels"] = path if device == "cpu" else "cupy"
    return out


def _run(device, batch_size, hidden_size, wordvec_size, iters, warmup, padded, n_greedy, n_beam, threads,
         profile=False) -> dict:
    from .data.corpus import load_data
    data = load_data(dict(data="date", train=None))
    src_tok = CharTokenizer.build(s for s, _ in data["train"])
    tgt_tok = CharTokenizer.build(t for _, t in data["train"])
    train = encode_pairs(data["train"], src_tok, tgt_tok)
    test = encode_pairs(data["test"][:n_greedy], src_tok, tgt_tok)
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, wordvec_size, hidden_size, seed=0)
    if device != "cpu":
        model.to(device)
    xp = model.xp
    opt = Adam(model, lr=1e-3, hooks=[ClipGradNorm(5.0)])
    rng = np.random.default_rng(0)
    n_batches = len(train) // batch_size
    batches = [take(train, rng.permutation(len(train))[:batch_size], pad_full=padded)
               for _ in range(warmup + iters * (2 if profile else 1))]

    runner = for_training(model, threads, batch_size, trim=not padded)   # padded: every column is computed
    n_threads = getattr(runner, "threads", 1)
    s_iter, breakdown = _time_training(runner, opt, batches, warmup, iters, xp, n_threads if profile else 0)
    if runner is not model:
        runner.close()
    Ts, To1 = batches[-1][0].shape[1], batches[-1][1].shape[1]
    flops = train_flops(batch_size, Ts, To1 - 1, wordvec_size, hidden_size, tgt_tok.vocab_size)
    useful = flops / s_iter / 1e9
    sgemm = sgemm_gflops(batch_size, hidden_size, xp)

    # decoding runs the target's length (10 characters + eos), where a trained model stops; the
    # barely trained model here would otherwise run on to the default_max_len cap (2 Ts + 10)
    steps = To1 - 1
    t_greedy = _median_time(lambda: greedy_decode(model, test.src, test.src_len, EVAL_BATCH_SIZE, max_len=steps), 3, xp)
    beam_src, beam_len = test.src[:n_beam], test.src_len[:n_beam]
    t_beam = _median_time(lambda: beam_decode(model, beam_src, beam_len, beam_size=5, max_len=steps,
                                              batch_size=EVAL_BATCH_SIZE), 1, xp)
    out = dict(device=_device_name(device), workload=f"date classic: emb {wordvec_size}, hidden {hidden_size}, "
               f"batch {batch_size}, src {Ts}, tgt {To1 - 1}" + (" (padded)" if padded else ""),
               train_threads=n_threads, train_s_per_iter=s_iter, train_s_per_epoch=s_iter * n_batches,
               train_samples_per_s=batch_size / s_iter, greedy_sent_per_s=len(test) / t_greedy,
               greedy_s=t_greedy, greedy_n=len(test), beam5_sent_per_s=len(beam_src) / t_beam, beam5_n=len(beam_src),
               peak_rss_mib=peak_rss_mib(), useful_gflops=useful, sgemm_gflops=sgemm, efficiency=useful / sgemm)
    if xp is not np:
        out["peak_device_mib"] = xp.get_default_memory_pool().total_bytes() / 2**20
    if breakdown is not None:
        out["profile_ms"] = breakdown
        out["profile_gflops"] = _part_rates(breakdown, batch_size, Ts + To1 - 1, wordvec_size, hidden_size, n_threads)
    return out


def _time_training(runner, opt, batches, warmup, iters, xp, profile_shards):
    """-> the median seconds of a training step over ``iters`` batches after ``warmup``, and with
    ``profile_shards`` (the shard threads; 0: no profile) the breakdown of ``iters`` more, else None."""
    def step(b):
        runner.forward(*b)
        runner.backward()
        with part("optimizer"):
            opt.step()

    for b in batches[:warmup]:
        step(b)
    s_iter = statistics.median(_step_times(step, batches[warmup:warmup + iters], xp))
    if not profile_shards:
        return s_iter, None
    with recording() as prof:
        wall = sum(_step_times(step, batches[warmup + iters:], xp))
    return s_iter, prof.breakdown(wall, iters, profile_shards)


def _step_times(step, batches, xp) -> list:
    times = []
    for b in batches:
        _sync(xp)
        t = time.perf_counter()
        step(b)
        _sync(xp)
        times.append(time.perf_counter() - t)
    return times


def _part_rates(breakdown: dict, N, steps, D, H, shards) -> dict:
    """GFLOP/s of the recurrent products (h Wh forward, da Wh^T backward: 2 x 2 N H 4H a step) and of the weight
    gradients (X^T dA and h^T dA: 2 N (D + H) 4H a step), per shard thread, from the profile's ms per step."""
    flops = {"recurrent matmul": 2 * 2 * N * steps * H * 4 * H, "weight gradients": 2 * N * steps * (D + H) * 4 * H}
    return {name: f / shards / (breakdown[name] / 1e3) / 1e9 for name, f in flops.items()
            if breakdown.get(name, 0) > 0}


def proc_cpuinfo() -> dict:
    """/proc/cpuinfo's fields, the first value of each ("model name", "cpu family", "model", "flags" ...);
    {} where there is no such file."""
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if value.strip():
                    info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's "model name", else lscpu's "Model name", else platform's."""
    name = proc_cpuinfo().get("model name")
    if name:
        return name
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and value.strip():
                return value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def cpu_class() -> str:
    """What tells apart CPUs that share a model name (an "AMD EPYC" VM may be Zen 3 or Zen 4): /proc/cpuinfo's
    family and model, and the widest vector extension its flags list (AVX-512, AVX2, or neither); "" if unknown."""
    info = proc_cpuinfo()
    flags = set(info.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    parts = [f"family {info['cpu family']} model {info['model']}"] if "cpu family" in info and "model" in info else []
    return ", ".join(parts + ([vector] if flags else []))


def _device_name(device: str) -> str:
    if device == "cpu":
        detail = cpu_class()
        return f"cpu ({cpu_model()}, {detail + ', ' if detail else ''}{os.cpu_count()} cores)"
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return f"{device} ({props['name'].decode()})"


def format_table(r: dict) -> str:
    rows = [("device", r["device"]), ("workload", r["workload"]), ("kernels", r["kernels"]),
            ("train threads", f"{r['train_threads']} x single-threaded BLAS" if r["train_threads"] > 1
             else "1 (BLAS threads as numpy sets them)"),
            ("train s/iter (median)", f"{r['train_s_per_iter'] * 1000:.1f} ms"),
            ("train s/epoch", f"{r['train_s_per_epoch']:.1f} s"),
            ("train samples/s", f"{r['train_samples_per_s']:.0f}"),
            ("useful GFLOP/s", f"{r['useful_gflops']:.1f}"),
            ("sgemm GFLOP/s (same run)", f"{r['sgemm_gflops']:.1f}"),
            ("efficiency", f"{100 * r['efficiency']:.0f}% of sgemm"),
            (f"greedy decode ({r['greedy_n']} sent.)", f"{r['greedy_s']:.2f} s = {r['greedy_sent_per_s']:.0f} sent/s"),
            (f"beam-5 decode ({r['beam5_n']} sent.)", f"{r['beam5_sent_per_s']:.0f} sent/s"),
            ("peak RSS", f"{r['peak_rss_mib']:.0f} MiB")]
    if "peak_device_mib" in r:
        rows.append(("peak device memory", f"{r['peak_device_mib']:.0f} MiB"))
    if "profile_ms" in r:
        step = sum(r["profile_ms"].values())
        rows.append(("profile (ms per step, per thread)", f"{step:.1f} ms in all"))
        for name, ms in r["profile_ms"].items():
            rate = r["profile_gflops"].get(name)
            rows.append((f"  {name}", f"{ms:5.1f} ms  {100 * ms / step:4.1f}%" + (f"  {rate:.0f} GFLOP/s" if rate else "")))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
