"""Shared test helpers: centred finite differences in float64, small batches and models, optional extras."""
import json

import numpy as np
import pytest

from attnseq.nn.backend import to_numpy

# The optional extras (setup.cfg's extras_require) that tests use, with the modules each brings. README's test
# command installs every one of them (tests/test_readme.py checks it); without one, its tests skip.
EXTRAS = {"export": ("onnx", "onnxruntime"), "serve": ("starlette", "uvicorn"),
          "tensorboard": ("tensorboardX", "tensorboard"), "mpi": ("mpi4py",)}


def require_extra(extra: str) -> list:
    """The modules of an optional extra, imported; where one is missing the calling test (or, at module level,
    the whole file) skips, with a reason naming the extra and how to install it."""
    return [pytest.importorskip(m, reason=f"needs the '{extra}' extra ({m} is not installed): "
                                          f"pip install -e '.[test,{extra}]'") for m in EXTRAS[extra]]


def numerical_grad(f, x, eps=1e-5):
    """Centred differences of scalar f() w.r.t. every element of array x (changed in place, restored)."""
    grad = np.zeros(x.shape)
    flat = x.reshape(-1)
    for k in range(flat.size):
        old = float(flat[k])
        flat[k] = old + eps
        fp = float(f())
        flat[k] = old - eps
        fm = float(f())
        flat[k] = old
        grad.reshape(-1)[k] = (fp - fm) / (2 * eps)
    return grad


def rel_error(analytic, numeric) -> float:
    a, n = to_numpy(analytic).astype(np.float64), np.asarray(numeric, dtype=np.float64)
    denom = max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12)
    return float(np.linalg.norm(a - n) / denom)


def random_like(xp, shape, seed=0):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape))



def padded_batch(seed=0, N=7, Ts=9, To=6, Vs=12, Vt=10, one_token_row=None):
    """Random ids right-padded with 0, rows of different lengths; tgt = [bos, .., eos, pad].
    ``one_token_row``: that row's source is a single token."""
    rng = np.random.default_rng(seed)
    src = rng.integers(4, Vs, size=(N, Ts))
    tgt = rng.integers(4, Vt, size=(N, To + 1))
    tgt[:, 0] = 1
    for i in range(N):
        ls, lt = (1 if i == one_token_row else rng.integers(1, Ts + 1)), rng.integers(2, To + 2)
        src[i, ls:] = 0
        tgt[i, lt - 1], tgt[i, lt:] = 2, 0
    return src, tgt


def small_model(dtype="float64", dropout=0.0):
    """The small model padded_batch's ids fit: vocabularies 12 and 10, embedding 6, hidden 8."""
    from attnseq.nn.model import AttentionSeq2seq
    return AttentionSeq2seq(12, 10, 6, 8, dtype=dtype, dropout=dropout, seed=3)


def write_date_splits(directory, seed, sizes):
    """Date pairs from the generator as train/valid/test .tsv files in ``directory``; sizes {split: n}."""
    from attnseq.data.datasets import GENERATORS
    splits = GENERATORS["date"](seed)
    for name, n in sizes.items():
        (directory / f"{name}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in splits[name][:n]), encoding="utf-8")
    return directory


def translate_at_prompt(args, keys: bytes, timeout=60):
    """Run ``attnseq translate ARGS`` on a pseudo-terminal, type ``keys``, then Ctrl-D -> (returncode, stdout, stderr)."""
    import os
    import pty
    import subprocess
    import sys
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "attnseq.cli", "translate", *args], stdin=follower,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(follower)
    os.write(leader, keys)
    os.write(leader, b"\x04")
    out, err = p.communicate(timeout=timeout)
    os.close(leader)
    return p.returncode, out, err


def train_steps(model, src, tgt, epochs, batch_size=64, lr=1e-2):
    """Plain minibatch training with Adam and clipping at 5: the loop README's example runs."""
    from attnseq.nn.optim import Adam, ClipGradNorm
    opt = Adam(model, lr=lr, hooks=[ClipGradNorm(5.0)])
    for _ in range(epochs):
        for b in range(0, len(src), batch_size):
            model.forward(src[b:b + batch_size], tgt[b:b + batch_size])
            model.backward()
            opt.step()
    return model


def start_cli(args, fault=""):
    """``attnseq ARGS`` (``python -m attnseq.cli``) in a subprocess, stopped or killed at fault point ``fault``
    (``attnseq.run.faults``: ATTNSEQ_KILL_AT), its output unbuffered and piped as text."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, ATTNSEQ_KILL_AT=fault, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "attnseq.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p, timeout=120):
    """Wait for subprocess ``p`` -> (returncode, stdout, stderr)."""
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def start_browser(width=1300, height=850):
    """Headless Chromium through selenium, or pytest.skip saying what is missing (the browser tests)."""
    import shutil

    import pytest
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("no selenium (pip install -e '.[test]')")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: install chromium and chromium-driver (apt-get) for the browser tests")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.binary_location = binary
    try:
        return webdriver.Chrome(options=opts, service=Service(driver))
    except Exception as e:                       # installed but cannot start here (no display libraries, ...)
        pytest.skip(f"{binary} with {driver} does not start: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def serve_process(args, stderr_path, timeout=120):
    """``attnseq serve ARGS --port 0`` in a subprocess (stderr to ``stderr_path``): a context manager giving
    (process, url) once the process prints its URL line; on leaving it sends SIGTERM (SIGKILL after 20 s)."""
    import contextlib
    import re
    import select
    import signal
    import subprocess
    import sys
    import time

    @contextlib.contextmanager
    def run():
        with open(stderr_path, "w") as err:
            p = subprocess.Popen([sys.executable, "-m", "attnseq.cli", "serve", *args, "--port", "0"],
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            deadline, line = time.monotonic() + timeout, ""
            while not line and p.poll() is None and time.monotonic() < deadline:
                if select.select([p.stdout], [], [], 0.5)[0]:
                    line = p.stdout.readline()
            found = re.search(r"http://\S+", line)
            assert found, f"no URL line from attnseq serve: {line!r}; stderr: {open(stderr_path).read()[-2000:]}"
            yield p, found[0]
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stdout.close()
    return run()


TIMING = ("epoch_time_s", "samples_per_s", "elapsed_s")       # metrics.jsonl's keys that vary run to run


def run_metrics(run):
    """RUN/metrics.jsonl's rows without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_checkpoints(run, ref):
    """Two runs alike: metrics.jsonl (all but timings), best/ and last/ weights and optimizer state bit for bit."""
    assert run_metrics(run) == run_metrics(ref)
    for name in ("best", "last"):
        for arrays in ("weights.npz", "optimizer.npz"):
            a, b = np.load(ref / name / arrays), np.load(run / name / arrays)
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}/{arrays}/{k}")
