"""Where a training step's time goes, by part: what ``attnseq bench --profile`` prints.

The layers mark their hot parts with ``part(name)``, a no-op unless a ``Profile`` is recording
(``with recording() as prof:``). Each thread adds its own seconds, so the data-parallel shards
are timed as they run. The LSTM's compiled time loop is one call: it is timed whole as
``LOOP`` and split into the recurrent products and the cells by the cycles the loop itself
counts into ``loop_ticks()`` (x86's time stamp counter; where there is none the two stay one
line). Parts::

    recurrent matmul    h Wh in the forward steps, da Wh^T in the backward ones
    cell                the LSTM cell forward and backward (and the table rows gathered and scattered)
    input projections   x Wx + b for all steps (or the E Wx + b table) and the inputs' gradient
    weight gradients    dWx, dWh, db: one product each over all steps
    attention           scores, masked softmax, context, and their backward
    output layer        the output Linear, the loss and their backward
    gradient sum        the shards' gradients summed into the model's (data-parallel threads)
    optimizer           clipping and the update (once per step, in one thread)
    rest                the step's wall time less the parts: embeddings, copies, Python, waiting
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

PARTS = ("recurrent matmul", "cell", "input projections", "weight gradients", "attention", "output layer",
         "gradient sum", "optimizer")
LOOP = "time loop"                  # a compiled time loop, split by its ticks into the first two parts
SHARED = ("optimizer",)             # parts that run once per step, outside the shard threads

_recording = None                   # the Profile being recorded, or None
_NO_TICKS = np.zeros(0, dtype=np.int64)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _Null()


class _Part:
    __slots__ = ("seconds", "name", "t0")

    def __init__(self, seconds: dict, name: str):
        self.seconds, self.name = seconds, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + time.perf_counter() - self.t0
        return False


class Profile:
    """Seconds by part and loop ticks, per thread; ``breakdown`` sums them into one step's time."""

    def __init__(self):
        self._local = threading.local()
        self._threads = []                                          # (seconds, ticks) of every thread seen
        self._lock = threading.Lock()

    def _mine(self):
        mine = getattr(self._local, "data", None)
        if mine is None:
            mine = self._local.data = ({}, np.zeros(2, dtype=np.int64))
            with self._lock:
                self._threads.append(mine)
        return mine

    def part(self, name: str):
        return _Part(self._mine()[0], name)

    def ticks(self):
        return self._mine()[1]

    def breakdown(self, wall_s: float, steps: int, shards: int) -> dict:
        """{part: ms per step}: shard parts averaged over ``shards`` threads, the rest of ``wall_s`` (the steps'
        total) as "rest"."""
        total = {}
        for seconds, ticks in self._threads:
            for name, s in seconds.items():
                if name == LOOP:
                    matmul, cell = int(ticks[0]), int(ticks[1])
                    if matmul + cell > 0:
                        split = {"recurrent matmul": s * matmul / (matmul + cell),
                                 "cell": s * cell / (matmul + cell)}
                    else:
                        split = {"recurrent matmul + cell": s}
                else:
                    split = {name: s}
                for key, value in split.items():
                    total[key] = total.get(key, 0.0) + value
        out = {name: 1e3 * s / steps / (1 if name in SHARED else shards) for name, s in total.items()}
        order = [p for p in PARTS + ("recurrent matmul + cell",) if p in out]
        out = {name: out[name] for name in order}
        out["rest"] = 1e3 * wall_s / steps - sum(out.values())
        return out


def part(name: str):
    """``with part("attention"):`` adds the block's seconds to that part, while a profile records."""
    prof = _recording
    return _NULL if prof is None else prof.part(name)


def loop_ticks():
    """The (2,) int64 cycle counts a compiled loop adds to (products, cells), or an empty array when not recording."""
    prof = _recording
    return _NO_TICKS if prof is None else prof.ticks()


@contextmanager
def recording():
    """Record a ``Profile`` in every thread for the block; yields it."""
    global _recording
    prof, before = Profile(), _recording
    _recording = prof
    try:
        yield prof
    finally:
        _recording = before
