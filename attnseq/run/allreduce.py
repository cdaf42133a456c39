"""One training step on MPI ranks: each rank's share of the batch, then one Allreduce over one flat buffer.

The batch (``--batch-size`` rows, the same on every rank: every rank draws the same batch order from
the seed) is cut into ``ranks × threads`` row shards exactly as ``DataParallel`` cuts it into
``threads`` (``parallel.cut_rows``), and rank r runs shards ``r·threads ...`` on its threads. So
``mpiexec -n 2`` with ``--threads 1`` computes what one process with ``--threads 2`` computes, the
same shards, the same dropout streams (one seed per shard from the model's generator, drawn alike on
every rank), each shard's loss and gradient weighted by its share of the batch's real target tokens.

Each rank sums its own shards' gradients into ``StepBuffer``, one preallocated flat array::

    [ every gradient, model's order | each shard's loss | non-finite | failed | each rank's signal | rank 0's clock ]

whose gradient part the model's gradients (and a lone thread's replica's) are views of, so nothing is
copied in or out. One in-place ``Allreduce`` (sum) per step leaves on every rank the batch gradient
(for two ranks exactly the sum ``DataParallel`` makes of two shards) and every shard's loss (a rank
fills only its own slots, so the sum copies them), from which each rank sums the batch loss in shard
order as ``DataParallel`` does. Clipping, ``--skip-nonfinite`` and the optimizer then see the same numbers on
every rank, and the weights stay identical. The flags ride along: a rank whose shard loss is NaN/inf
(then it skips its backward, as one process does), a rank whose shard raised (every rank then
stops, the failure named once), a stop signal any rank received and rank 0's clock for
``--save-every 10m`` (the group's ``step_signal`` and ``root_clock`` read them after the step).

``RankShards`` is that step on CPU threads (a ``DataParallel``); ``RankDevice`` on a GPU, one shard
per rank, its gradients copied through host memory for the Allreduce (no NCCL).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..nn.backend import to_numpy
from ..nn.layers import Dropout
from .parallel import DataParallel, _blas_controller, cut_rows, usable_cores


class StepBuffer:
    """The flat array one step reduces, for gradients shaped like ``grads`` (in ``dtype``), ``shards`` shard
    losses and ``ranks`` ranks; views into it by name. ``seconds``: time spent in Allreduce, per step."""

    def __init__(self, grads: list, dtype, shards: int, ranks: int):
        sizes = [int(g.size) for g in grads]
        n = sum(sizes)
        self.data = np.zeros(n + shards + 2 + ranks + 1, dtype=dtype)
        ends = np.cumsum([0] + sizes)
        self.grads = [self.data[a:b] for a, b in zip(ends[:-1], ends[1:])]
        self.gradient_part = self.data[:n]
        self.losses = self.data[n:n + shards]
        self.nonfinite, self.failed = self.data[n + shards:n + shards + 1], self.data[n + shards + 1:n + shards + 2]
        self.signals = self.data[n + shards + 2:n + shards + 2 + ranks]
        self.clock = self.data[-1:]
        self.seconds: list[float] = []

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def start(self) -> None:
        """Zero everything but the gradients (each step writes all of those)."""
        self.data[self.gradient_part.size:] = 0

    def allreduce(self, comm, mpi) -> None:
        t0 = time.perf_counter()
        comm.Allreduce(mpi.IN_PLACE, self.data, op=mpi.SUM)
        self.seconds.append(time.perf_counter() - t0)


def _home_gradients(module, step: StepBuffer) -> None:
    """``module``'s gradient arrays become views of the buffer's gradient slices, each with its own shape
    and memory order (C or F, as ``parallel._flat`` reads them), so nothing is copied in or out."""
    for (_, m, i), flat in zip(module.named_parameters(), step.grads):
        g = m.grads[i]
        order = "F" if g.flags.f_contiguous and not g.flags.c_contiguous else "C"
        m.grads[i] = flat.reshape(g.shape, order=order)


class _Reduced:
    """What ``RankShards`` and ``RankDevice`` share: the buffer, its packing and the Allreduce."""

    def _set_up_buffer(self, group, grads, dtype, shards: int) -> None:
        self.group, self.step = group, StepBuffer(grads, dtype, shards, group.size)

    def _reduce(self, first: int, losses: list, finite: bool, failure: BaseException | None) -> None:
        """Pack this rank's losses (slots from ``first``) and flags, Allreduce, and stop every rank if
        one failed (``group.failed``: the failure named once, on rank 0)."""
        step = self.step
        for k, loss in enumerate(losses):
            step.losses[first + k] = float(loss)
        step.nonfinite[0], step.failed[0] = float(not finite), float(failure is not None)
        self.group.pack_control(step)
        step.allreduce(self.group.comm, self.group.mpi)
        if step.failed[0] > 0:
            self.group.failed(failure)
        self.group.unpack_control(step)

    def _batch_loss(self, shares):
        """Every shard's loss weighted by its share, summed in shard order (as ``DataParallel`` sums): NaN
        or inf when a shard's is, on every rank alike (whose backward was skipped: ``nonfinite``)."""
        total = sum(float(x) * w for x, w in zip(self.step.losses[:len(shares)], shares))
        return np.asarray(total, dtype=self.step.data.dtype)


class RankShards(DataParallel, _Reduced):
    """A rank's step on CPU threads: ``forward(src, tgt)`` on the whole batch does the forward and
    backward of this rank's shards, the Allreduce, and leaves the batch gradient in the model's grads;
    it returns the batch loss. ``backward()`` has nothing left to do. BLAS runs on this rank's share of
    the cores (``usable_cores``) divided among its threads, until ``close()``."""

    def __init__(self, model, threads: int, group):
        super().__init__(model, threads)
        self._set_up_buffer(group, model.gradients(), model.dtype, group.size * self.threads)
        _home_gradients(model, self.step)               # the optimizer reads the reduced gradient in place
        self.release()
        controller = _blas_controller()
        self.blas_limit = None if controller is None else controller.limit(
            limits=max(1, usable_cores() // self.threads), user_api="blas")

    def forward(self, src, tgt):
        group, step = self.group, self.step
        n = min(group.size * self.threads, len(src))
        shards, shares = cut_rows(src, tgt, n, self.model.pad_id, self.trim)
        first = min(group.rank * self.threads, n)
        mine = shards[first:first + self.threads]
        self.shares = shares[first:first + len(mine)]
        self._seed_dropout(n, first)
        step.start()
        losses, finite, failure = [], True, None
        try:
            losses = self._forward_shards(mine)
            finite = all(math.isfinite(float(x)) for x in losses)
            if finite and mine:
                DataParallel.backward(self, 1.0, into=step.grads)
            else:
                step.gradient_part.fill(0)
        except Exception as e:                          # an out-of-memory, say: every rank stops, not just this one
            failure = e
        self._reduce(first, losses, finite, failure)
        return self._batch_loss(shares)

    def backward(self, dout: float = 1.0, into=None) -> None:
        """Done by ``forward``: the batch gradient is in the model's grads."""

    def release(self) -> None:
        """Fresh replicas (``DataParallel.release``); with one thread, its replica's gradients live in the
        buffer too, so its backward writes the shard's gradient where the Allreduce reads it."""
        super().release()
        if self.threads == 1 and getattr(self, "step", None) is not None:
            _home_gradients(self.replicas[0], self.step)

    def close(self) -> None:
        super().close()
        if self.blas_limit is not None:
            self.blas_limit.restore_original_limits()
            self.blas_limit = None


class RankDevice(_Reduced):
    """A rank's step on its GPU: the batch is cut into one shard per rank, this rank's runs on the model
    itself (its dropout drawing from the shard's seed, as ``RankShards`` seeds a replica); the gradients
    go to host memory for the Allreduce and back. ``forward`` does it all; ``backward`` nothing."""

    def __init__(self, model, group):
        self.model = model
        self._set_up_buffer(group, model.gradients(), model.dtype, group.size)
        self.drops = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
        self.dropout_rng = next((m.rng for m in self.drops if m.p > 0), None)

    def forward(self, src, tgt):
        group, step, model = self.group, self.step, self.model
        n = min(group.size, len(src))
        shards, shares = cut_rows(src, tgt, n, model.pad_id)
        seeds = self.dropout_rng.integers(2**63, size=n) if self.dropout_rng is not None else None
        step.start()
        losses, finite, failure = [], True, None
        try:
            if group.rank < n:
                losses = [self._shard(shards[group.rank], shares[group.rank],
                                      None if seeds is None else seeds[group.rank])]
            finite = all(math.isfinite(float(x)) for x in losses)
            if not finite or not losses:
                step.gradient_part.fill(0)
        except Exception as e:
            failure = e
        self._reduce(min(group.rank, n), losses, finite, failure)
        xp = model.xp
        for g, flat in zip(model.gradients(), step.grads):
            g[...] = xp.asarray(flat.reshape(g.shape))
        return self._batch_loss(shares)

    def _shard(self, shard, share: float, seed):
        """Forward and (when finite) backward of one shard; its gradients into the host buffer."""
        model, rngs = self.model, [m.rng for m in self.drops]
        if seed is not None:
            shard_rng = np.random.default_rng(seed)
            for m in self.drops:
                m.rng = shard_rng
        try:
            loss = model.forward(*shard)
            if math.isfinite(float(loss)):
                model.backward(float(share))
                for g, flat in zip(model.gradients(), self.step.grads):
                    flat[:] = to_numpy(g).reshape(-1)
        finally:
            for m, rng in zip(self.drops, rngs):        # the model's own generator stays the seeds' source
                m.rng = rng
        return loss

    def backward(self, dout: float = 1.0) -> None:
        """Done by ``forward``."""

    def release(self) -> None:
        """Nothing to let go of (no replicas)."""

    def close(self) -> None:
        """Nothing to stop."""
