"""Data-parallel CPU work: one batch split by rows over threads (training), or batches over threads (decoding).

numpy's multi-threaded BLAS speeds up the matmuls, but the LSTM's gate
arithmetic runs on one core, so on a CPU a second core idles for a third of
each step. ``DataParallel`` splits every batch into K row shards and runs the
whole forward and backward of each shard in its own thread, each with
single-threaded BLAS. numpy releases the GIL inside matmuls and ufunc loops, so
all K cores stay busy through both kinds of work.

The K replicas share the model's parameter arrays (the optimizer updates them
in place) and own their gradients, caches and buffers. ``backward`` sums the
replicas' gradients into the model's, each weighted by its shard's share of the
batch's real target tokens, so the result equals the single-thread gradient up
to float rounding (tests check this). Shards are fixed by row order and summed in
a fixed order, so a run is as deterministic as a single-thread one.

``map_batches`` does the same for inference: whole batches go to threads, each
with its own replica, and the results come back in order.

Only numpy models: on a GPU the kernels are already parallel.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from ..nn.layers import Dropout
from ..nn.profile import part
from .launch import share_of_cores

MIN_ROWS_PER_THREAD = 32        # below this the matmuls get too thin to pay for a thread


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, or its share of it where an MPI launcher started
    several ranks on this machine without binding them (``launch.share_of_cores``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return share_of_cores(cores)


def default_threads(batch_size: int) -> int:
    """One thread per usable core, but at least ``MIN_ROWS_PER_THREAD`` rows each."""
    return max(1, min(usable_cores(), batch_size // MIN_ROWS_PER_THREAD))


@functools.cache
def _blas_controller():
    """threadpoolctl's controller when it can set this numpy's BLAS threads, else None (looked up once)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController()
    return controller if controller.select(user_api="blas").lib_controllers else None


def _trim(src, tgt, pad_id):
    """Drop the columns that are padding in every row of this shard."""
    ts = max(int((src != pad_id).sum(axis=1).max()), 1)
    to = max(int((tgt != pad_id).sum(axis=1).max()), 2)
    return src[:, :ts], tgt[:, :to]


def cut_rows(src, tgt, n: int, pad_id: int, trim: bool = True):
    """A batch src (N, Ts), tgt (N, To + 1) cut into ``n`` row shards of nearly equal size, in row order
    (``trim``: each without its all-padding columns) -> (shards [(src, tgt)], shares (n,)): each shard's
    share of the batch's real target tokens, which weights its loss and gradient."""
    bounds = np.linspace(0, len(src), n + 1).astype(int)
    shards = [(src[a:b], tgt[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    if trim:
        shards = [_trim(s, t, pad_id) for s, t in shards]
    counts = np.array([(t[:, 1:] != pad_id).sum() for _, t in shards], dtype=np.float64)
    return shards, counts / max(counts.sum(), 1.0)


def _flat(a):
    """A 1-d view of a contiguous array (C or F order: replicas' gradients share the model's layout)."""
    flat = a.ravel(order="K")
    if not np.may_share_memory(flat, a):
        raise ValueError("DataParallel needs contiguous gradient arrays")
    return flat


def _sum_slice(parts, total, k, n):
    """total[j][slice k of n] = the sum over shards of parts[shard][j] there, in shard order."""
    for j, out in enumerate(total):
        a, b = out.size * k // n, out.size * (k + 1) // n
        if n == 1:
            if not np.may_share_memory(out, parts[0][j]):          # else the shard wrote it there
                out[:] = parts[0][j]
            continue
        np.add(parts[0][j][a:b], parts[1][j][a:b], out=out[a:b])   # one pass for two shards
        for other in parts[2:]:
            out[a:b] += other[j][a:b]


class DataParallel:
    """Runs ``model``'s training forward/backward on ``threads`` row shards of each batch.

    Use it where the model's own ``forward(src, tgt)`` and ``backward(dout)`` would go:
    ``loss = dp.forward(src, tgt); dp.backward()`` leaves the batch gradient in
    ``model``'s grads. ``trim`` drops each shard's all-padding columns. Build it after
    the model is on its device and loaded: the replicas hold the model's parameter
    arrays. ``close()`` (or ``with``) stops the threads.
    """

    def __init__(self, model, threads: int, trim: bool = True):
        if model.xp is not np:
            raise ValueError("DataParallel is for numpy (CPU) models; a GPU parallelises by itself")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.model, self.trim = model, trim
        self.blas = _blas_controller() if threads > 1 else None
        self.threads = threads if self.blas is not None else 1
        self.pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None
        self.shares = []
        # dropout: the model's generator seeds one generator per replica and batch
        drops = [m for _, m in model.named_modules() if isinstance(m, Dropout) and m.p > 0]
        self.dropout_rng = drops[0].rng if drops else None
        self.release()

    def release(self) -> None:
        """Start over with fresh replicas, letting go of the old ones' scratch memory (their buffers
        and the caches that view them) until the next batch allocates it again. Results do not
        change: a replica keeps nothing between batches that a batch needs. The Trainer calls it
        before each epoch's evaluation, whose own buffers then do not come on top."""
        self.replicas = [self.model.replica() for _ in range(self.threads)]
        self.replica_dropouts = [[m for _, m in rep.named_modules() if isinstance(m, Dropout)]
                                 for rep in self.replicas]

    def _run(self, fn, n):
        """fn(k) for k < n: shard 0 in this thread, the rest in the pool; single-threaded BLAS meanwhile."""
        if n == 0:
            return []
        if n == 1:
            return [fn(0)]
        with self.blas.limit(limits=1, user_api="blas"):
            futures = [self.pool.submit(fn, k) for k in range(1, n)]
            try:
                first = fn(0)
            finally:                                                # no shard outlives the BLAS limit
                wait(futures)
            return [first] + [f.result() for f in futures]

    def _seed_dropout(self, n, first=0):
        """Each replica's dropout draws from its own generator, seeded from the model's: ``n`` seeds, one
        per shard of the batch, of which the replicas take those from shard ``first`` on (an MPI rank's)."""
        if self.dropout_rng is None:
            return
        seeds = self.dropout_rng.integers(2**63, size=n)
        for drops, seed in zip(self.replica_dropouts, seeds[first:]):
            rng = np.random.default_rng(seed)
            for m in drops:
                m.rng = rng

    def forward(self, src, tgt):
        """src (N, Ts), tgt (N, To + 1) -> mean cross-entropy per real target token (0-d array)."""
        n = min(self.threads, len(src))
        shards, self.shares = cut_rows(src, tgt, n, self.model.pad_id, self.trim)
        self._seed_dropout(n)
        losses = self._forward_shards(shards)
        return np.asarray(sum(float(x) * w for x, w in zip(losses, self.shares)), dtype=self.model.dtype)

    def _forward_shards(self, shards) -> list:
        """Shard k's forward on replica k, in the model's training mode -> the shards' losses (0-d arrays)."""
        for rep in self.replicas[:len(shards)]:
            if rep.training != self.model.training:
                rep.train(self.model.training)
        return self._run(lambda k: self.replicas[k].forward(*shards[k]), len(shards))

    def backward(self, dout: float = 1.0, into: list | None = None) -> None:
        """The batch gradient into the model's grads (or into the flat arrays ``into``, one per gradient
        in the model's order): sum over shards of their token-weighted gradients.

        The sum runs on the threads too, each over its own slice of every gradient, in the same
        order (shard 0 + shard 1 + ...) whatever the slicing, so the result does not change."""
        n = len(self.shares)
        self._run(lambda k: self.replicas[k].backward(dout * float(self.shares[k])), n)
        parts = [[_flat(g) for g in rep.gradients()] for rep in self.replicas[:n]]
        total = into if into is not None else [_flat(g) for g in self.model.gradients()]

        def reduce(k):
            with part("gradient sum"):
                _sum_slice(parts, total, k, n)
        self._run(reduce, n)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def for_training(model, threads: int, batch_size: int, trim: bool = True):
    """What to call forward/backward on: ``model`` itself, or a ``DataParallel`` over CPU threads.

    threads 0 means ``default_threads(batch_size)``; GPU models are returned as they are.
    """
    if threads < 0:
        raise ValueError(f"threads must be 0 (one per core) or a positive integer, got {threads}")
    if model.xp is not np:
        return model
    n = threads or default_threads(batch_size)
    return DataParallel(model, n, trim) if n > 1 else model


def map_batches(model, fn, batches: list, threads: int = 0) -> list:
    """``[fn(m, b) for b in batches]`` with ``m`` a replica of ``model``, over CPU threads.

    Each thread takes the next batch not yet taken, on its own replica (the first
    thread uses ``model``), with single-threaded BLAS meanwhile; ``fn`` must only read
    the parameters. Results come back in the order of ``batches``. threads 0: one per
    core. GPU models, one thread or one batch: a plain loop here.
    """
    n = min(threads or usable_cores(), len(batches))
    blas = _blas_controller() if n > 1 and model.xp is np else None
    if blas is None:
        return [fn(model, b) for b in batches]
    results = [None] * len(batches)
    order, lock, failed = iter(range(len(batches))), threading.Lock(), threading.Event()

    def worker(m):
        try:
            while not failed.is_set():
                with lock:
                    k = next(order, None)
                if k is None:
                    return
                results[k] = fn(m, batches[k])
        except BaseException:
            failed.set()                                            # the others stop taking batches
            raise

    with blas.limit(limits=1, user_api="blas"), ThreadPoolExecutor(n - 1) as pool:
        futures = [pool.submit(worker, model.replica()) for _ in range(n - 1)]
        worker(model)
        for f in futures:
            f.result()
    return results
