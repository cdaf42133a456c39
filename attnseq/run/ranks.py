"""An MPI job as the Trainer's group: every rank trains the same model on its share of each batch.

``Ranks`` wraps mpi4py's ``COMM_WORLD`` and answers the questions ``distributed.Solo`` answers for one
process. Rank 0 owns the run directory and decides what hangs on a clock or a file; the others
follow, and every decision reaches them in a collective call they all make at the same point:

- a step: one Allreduce (``allreduce``) carries the gradients, the losses, and, as flags, a stop
  signal any rank received and rank 0's clock (``step_signal``, ``root_clock``: what the last step
  carried, so a decision lags the moment it was taken by at most one step, the same on every rank);
- before each step, with ``--max-minutes``: rank 0's estimate of the run's last step (``root_decides``),
  which sets the lr schedule's end and where the run stops;
- an epoch's end: the valid split scored in parts and gathered (``evaluate``) and the stop signals
  (``signal_now``);
- the start: ``ranks_setup`` (the options, rank 0's checkpoint, the data, numba's cache).

Failures: where every rank meets anyway (the start, a step, an evaluation) a rank that fails says so
there (``settle``, ``failed``): rank 0 prints one line naming the rank and why, and every rank exits
1. Anywhere else a failing rank prints that line itself and aborts the job (``guard``), so nothing
hangs. What every rank raises alike (a stop signal, a NaN loss) rank 0 reports, the others quietly.
Messages between ranks are JSON or plain arrays, never pickles.
"""
from __future__ import annotations

import contextlib
import json
import sys

import numpy as np

from ..errors import ConfigError, NonFiniteError, QuietExit, RanksFailed, TrainingStopped, one_line
from .launch import Launch


class Ranks:
    """The group of an MPI job's ranks (see the module's docstring); built by ``distributed.world()``."""

    def __init__(self, launch: Launch):
        import mpi4py
        mpi4py.rc.thread_level = "funneled"     # only the main thread calls MPI; shards run on other threads
        from mpi4py import MPI
        self.mpi, self.comm = MPI, MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        if (self.size, self.rank) != (launch.size, launch.rank):
            raise ConfigError(f"the launcher says rank {launch.rank} of {launch.size}, MPI says rank {self.rank} "
                              f"of {self.size}: is mpi4py built for the MPI that mpiexec belongs to?")
        self.local_rank, self.is_root = launch.local_rank, self.rank == 0
        self._pending_signal, self._pending_clock = 0, False       # this rank's, for the next step to carry
        self._agreed_signal, self._agreed_clock = None, False      # what the last step carried
        self._alone = False
        previous = sys.excepthook

        def abort_on_exception(kind, value, tb):                  # a library caller's uncaught error
            previous(kind, value, tb)
            if not self._alone:
                self.abort(1)
        sys.excepthook = abort_on_exception

    def __repr__(self) -> str:
        return f"<Ranks: rank {self.rank} of {self.size}>"

    # -- JSON between ranks ------------------------------------------------------------------------
    def bcast_json(self, obj):
        """Rank 0's ``obj`` (JSON-able) on every rank."""
        data = np.frombuffer(json.dumps(obj, default=str).encode(), np.uint8) if self.is_root else None
        n = np.array([0 if data is None else data.size], np.int64)
        self.comm.Bcast(n, root=0)
        buf = data.copy() if self.is_root else np.empty(int(n[0]), np.uint8)
        self.comm.Bcast(buf, root=0)
        return json.loads(buf.tobytes())

    def allgather_json(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        data = np.frombuffer(json.dumps(obj, default=str).encode(), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        self.comm.Allgather(np.array([data.size], np.int64), sizes)
        buf = np.empty(int(sizes.sum()), np.uint8)
        self.comm.Allgatherv(data, [buf, sizes.tolist()])
        ends = np.cumsum(sizes)
        return [json.loads(buf[e - s:e].tobytes()) for s, e in zip(sizes, ends)]

    def gather_json(self, obj) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0; None elsewhere."""
        data = np.frombuffer(json.dumps(obj, default=str).encode(), np.uint8)
        sizes = np.zeros(self.size, np.int64) if self.is_root else None
        self.comm.Gather(np.array([data.size], np.int64), sizes, root=0)
        buf = np.empty(int(sizes.sum()), np.uint8) if self.is_root else None
        self.comm.Gatherv(data, [buf, sizes.tolist()] if self.is_root else None, root=0)
        if not self.is_root:
            return None
        ends = np.cumsum(sizes)
        return [json.loads(buf[e - s:e].tobytes()) for s, e in zip(sizes, ends)]

    # -- failures ------------------------------------------------------------------------------------
    def settle(self, error: BaseException | None) -> None:
        """Every rank says whether its part of the work failed (``error``); if one did, every rank stops:
        rank 0 raises ``RanksFailed`` naming the failure (its own, else the first other rank's), the
        others ``QuietExit``. Also the point where every rank waits for all the others."""
        self._raise_failures(self.allgather_json(None if error is None else one_line(error)), error)

    def failed(self, failure: BaseException | None) -> None:
        """A step's Allreduce said a rank failed: which, and why (``settle``); raises on every rank."""
        self.settle(failure)
        raise RanksFailed("a rank failed, and did not say why")    # not reached: settle raises

    def _raise_failures(self, messages: list, own: BaseException | None) -> None:
        failing = [(r, m) for r, m in enumerate(messages) if m is not None]
        if not failing:
            return
        if not self.is_root:
            raise QuietExit(1)
        if own is not None:
            raise RanksFailed(one_line(own)) from own
        r, message = failing[0]
        more = f" (and {len(failing) - 1} more rank(s))" if len(failing) > 1 else ""
        raise RanksFailed(f"rank {r} of {self.size}: {message}{more}")

    def abort(self, code: int) -> None:
        """End the whole job now (MPI_Abort): every rank, whatever collective it waits in."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    @contextlib.contextmanager
    def guard(self, command: str = "train"):
        """Around a run: what every rank raises alike passes on (rank 0 reports it, the others exit
        quietly); anything else, raised by this rank alone while the others may wait for it in a
        collective, is one line naming this rank, then MPI_Abort; a second Ctrl-C aborts at once."""
        try:
            yield
        except (QuietExit, RanksFailed, TrainingStopped, NonFiniteError):
            raise
        except KeyboardInterrupt:
            if self._alone:
                raise
            if self.is_root:
                print("attnseq: interrupted", file=sys.stderr)
            self.abort(130)
        except BaseException as e:
            if self._alone:                         # rank 0 alone at the end: as one process would fail
                raise
            print(f"attnseq {command}: error on rank {self.rank} of {self.size}: {one_line(e)}", file=sys.stderr)
            self.abort(1)

    def alone(self) -> None:
        """From here on rank 0 works alone (the end of the run); the others are done."""
        self._alone = True

    # -- what the Trainer asks --------------------------------------------------------------------------
    def runner(self, model, threads: int, batch_size: int):
        """A step's runner (``allreduce``): this rank's row shards on ``threads`` CPU threads (0: its share
        of the cores, at least 32 rows each), or its one shard on a GPU."""
        from .allreduce import RankDevice, RankShards
        from .parallel import default_threads
        if model.xp is not np:
            return RankDevice(model, self)
        return RankShards(model, threads or default_threads(max(1, batch_size // self.size)), self)

    def pack_control(self, step) -> None:
        """Into a step's buffer: this rank's stop signal, and rank 0's clock (``allreduce.StepBuffer``)."""
        step.signals[self.rank] = self._pending_signal
        if self.is_root:
            step.clock[0] = float(self._pending_clock)

    def unpack_control(self, step) -> None:
        self._agreed_signal = next((int(s) for s in step.signals if s), None)
        self._agreed_clock = bool(step.clock[0])

    def step_signal(self, signum: int | None) -> int | None:
        """After a step: the first signal any rank had received when the step began (in rank order), or
        None; this rank's ``signum`` now goes with the next step."""
        self._pending_signal = signum or 0
        return self._agreed_signal

    def root_clock(self, due: bool) -> bool:
        """After a step: rank 0's time-based decision as the step carried it; rank 0's ``due`` now goes
        with the next step (dropped when a decision is taken now: it was made before it)."""
        agreed, self._agreed_clock = self._agreed_clock, False
        self._pending_clock = False if agreed else due
        return agreed

    def signal_now(self, signum: int | None) -> int | None:
        """At an epoch's end, every rank at once: the first signal any rank received, or None."""
        signals = self.allgather_json(signum)
        self._pending_signal, self._pending_clock = 0, False
        self._agreed_signal, self._agreed_clock = None, False
        return next((s for s in signals if s), None)

    def root_decides(self, fn, *args):
        """``fn(*args)`` on rank 0 (a JSON-able answer: a clock's, say), the same answer on every rank."""
        return self.bcast_json(fn(*args) if self.is_root else None)

    def evaluate(self, model, data, tgt_tok, batch_size: int, bleu: bool = False, max_len=None) -> dict:
        """``evaluation.evaluate`` of the valid split, its length-sorted batches dealt out to the ranks
        in turn, gathered on rank 0 and summed there in batch order (the numbers one process gets);
        the scores, predictions included, on every rank."""
        from .evaluation import score_batches, summarize
        failure, mine = None, []
        try:
            mine = [[idx.tolist(), nll, correct, n, ids.tolist()] for idx, (nll, correct, n, ids)
                    in score_batches(model, data, batch_size, max_len, part=(self.rank, self.size))]
        except Exception as e:
            failure = e
        gathered = self.gather_json(None if failure is not None else mine)
        verdict = None
        if self.is_root:
            try:
                verdict = self._summarize(gathered, data, tgt_tok, bleu, summarize)
            except Exception as e:
                failure = failure or e
        verdict = self.bcast_json(verdict if failure is None else None)
        if verdict is None or verdict.get("failed"):
            self.settle(failure)
        return verdict

    def _summarize(self, gathered: list, data, tgt_tok, bleu: bool, summarize) -> dict:
        """Rank 0: the ranks' batches back in batch order (rank r scored batches r, r + size ...), scored."""
        if any(part is None for part in gathered):
            return {"failed": True}
        batches = [None] * sum(len(part) for part in gathered)
        for r, part in enumerate(gathered):
            batches[r::self.size] = [(idx, (nll, correct, n, np.array(ids))) for idx, nll, correct, n, ids in part]
        return summarize(batches, data, tgt_tok, bleu)

    def local_device(self, device: str) -> str:
        """``--device gpu`` on a rank: the GPU of its local rank (wrapping round where ranks outnumber
        GPUs); any other device as it is."""
        if device.strip().lower() not in ("gpu", "cuda"):
            return device
        from ..nn.backend import _cupy
        cp = _cupy()
        try:
            count = cp.cuda.runtime.getDeviceCount() if cp is not None else 0
        except Exception:
            count = 0
        return f"gpu:{self.local_rank % count}" if count else device

    # -- a run ------------------------------------------------------------------------------------
    def train(self, cfg: dict, log, trainer_class):
        """``training.train`` on this rank: the ranks agree on the start (``ranks_setup``), train
        together, and rank 0 ends the run alone. -> the result on rank 0, None on the others."""
        from .ranks_setup import start_trainer
        with self.guard():
            trainer = start_trainer(self, cfg, log, trainer_class)
            try:
                return trainer.run()
            except (TrainingStopped, NonFiniteError) as e:
                if self.is_root:
                    raise
                raise QuietExit(getattr(e, "exit_code", 1)) from None
