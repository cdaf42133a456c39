"""Training steps on MPI ranks or CPU threads: s/iter, and what the Allreduce costs.

    python benchmarks/mpi_step.py --threads 2 -- --data date                       # 1 process x 2 threads
    mpiexec -n 2 python benchmarks/mpi_step.py --threads 1 -- --data date          # 2 ranks x 1 thread
    mpiexec -n 2 python benchmarks/mpi_step.py -- --config configs/translation.toml --train train.tsv

Everything after ``--`` is ``attnseq train``'s options. The run is set up as ``attnseq train`` sets
it up (on ranks: rank 0's start sent to the others, numba compiled by rank 0 first), then times
``--steps`` real training steps (forward, backward, Allreduce, optimizer) after ``--warmup`` more, on
the first batches of the first epoch's order, the same batches whatever the layout. Rank 0 prints
one JSON line: the median and mean s/iter, the median of each phase (``forward_s``: on ranks the
forward, backward and Allreduce; ``backward_s``: on threads the backward and the shards' sum;
``update_s``: the optimizer); on ranks also the bytes each Allreduce reduces, its
median time inside the step (waiting for the slowest rank included) and, after a barrier, alone
(``--probes`` Allreduces of the same buffer: the communication itself), each as a share of the step.
The run directory is ``TMPDIR/attnseq-mpi-step``, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def timed_trainer(warmup: int, steps: int, probes: int):
    from attnseq.data.batching import batch_order, take
    from attnseq.run.training import Trainer

    class Timed(Trainer):
        """A Trainer whose ``run`` times training steps, phase by phase, instead of training epochs."""

        def run(self):
            try:
                data, cfg = self.sets["train"], self.cfg
                batches = batch_order(data.src_len, cfg["batch_size"], self.rng, cfg["bucket"],
                                      cfg["bucket_jitter"], then_by=data.tgt_len)[:warmup + steps]
                phases = [self._step_phases(data, idx) for idx in batches][warmup:]
                walls = [sum(p) for p in phases]
                med = [statistics.median(p[k] for p in phases) for k in range(3)]
                out = dict(ranks=self.group.size, threads=getattr(self.runner, "threads", 1), steps=len(walls),
                           s_per_iter=statistics.median(walls), mean_s_per_iter=statistics.fmean(walls),
                           forward_s=med[0], backward_s=med[1], update_s=med[2],
                           batch_size=cfg["batch_size"], parameters=self.model.num_parameters())
                if self.group.size > 1:
                    out.update(self._allreduce_cost(walls, warmup, probes))
                return out
            finally:
                self.close()

        def _step_phases(self, data, idx) -> tuple:
            """One step as ``_train_batch`` and ``_step`` take it -> seconds of (forward: on ranks also the
            backward and the Allreduce; backward: on threads with their sum; the optimizer's update)."""
            src, tgt = take(data, idx)
            t0 = time.perf_counter()
            self.runner.forward(src, tgt)
            t1 = time.perf_counter()
            self.runner.backward()
            t2 = time.perf_counter()
            self.step += 1
            self.schedule.before_step(self.opt, self.step)
            self.opt.step()
            return t1 - t0, t2 - t1, time.perf_counter() - t2

        def _allreduce_cost(self, walls, warmup: int, probes: int) -> dict:
            """The Allreduce's bytes and median seconds: inside the steps (with any wait for the slowest
            rank), and alone after a barrier; each also as a share of the median step."""
            step, comm, mpi = self.runner.step, self.group.comm, self.group.mpi
            inside = statistics.median(step.seconds[warmup:])
            alone = []
            for _ in range(probes):
                comm.Barrier()
                t0 = time.perf_counter()
                comm.Allreduce(mpi.IN_PLACE, step.data, op=mpi.SUM)
                alone.append(time.perf_counter() - t0)
            alone_s, wall = statistics.median(alone), statistics.median(walls)
            return dict(allreduce_bytes=step.nbytes, allreduce_s_in_step=inside, allreduce_share_in_step=inside / wall,
                        allreduce_s_alone=alone_s, allreduce_share_alone=alone_s / wall)

    return Timed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="threads per process (0: one per core it owns)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--probes", type=int, default=50, help="Allreduces timed alone, after a barrier each")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    from attnseq.cli import train_config
    from attnseq.cli_flags import build_parser
    from attnseq.run import distributed
    from attnseq.run.config import resolve_config
    group = distributed.world()
    out = Path(tempfile.gettempdir()) / "attnseq-mpi-step"             # the same on every rank; rank 0's alone
    train_args = ["train", *argv[split + 1:], "--out", str(out), "--threads", str(args.threads), "--no-plot"]
    cfg = train_config(build_parser().parse_args(train_args))
    Timed = timed_trainer(args.warmup, args.steps, args.probes)
    quiet = lambda *a, **k: None                                        # noqa: E731
    try:
        result = group.train(cfg, quiet, Timed) if group.size > 1 else Timed(resolve_config(cfg), quiet).run()
    finally:
        if group.is_root:
            shutil.rmtree(out, ignore_errors=True)
    if group.is_root:
        from attnseq.bench import cpu_model
        print(json.dumps(dict(result, cpu=cpu_model(), argv=argv[split + 1:])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
