"""One rank of an MPI test job: ``mpiexec -n 2 python tests/mpi_rank.py [--on RANK:WHAT]... -- ARGS`` runs
``attnseq ARGS`` on every rank, with test-only changes on the ranks named (``launch.launch()``
tells a rank its number before MPI starts). WHAT is one of

    NAME=VALUE    set an environment variable on that rank (ATTNSEQ_KILL_AT=train-step:30:STOP)
    cd:DIR        work in DIR (where relative paths, such as --train train.tsv, then lead)
    fail-step:N   its N-th shard forward raises MemoryError (a rank failing inside a step)
    nan-step:N    its N-th shard forward's loss is NaN
    fail-metrics  writing metrics.jsonl meets a full disk (rank 0 failing alone, outside a collective)
    digest        print "digest RANK HEX" at the end: a hash of its weights and optimizer state
    device-runner its steps run as a GPU rank's do (``allreduce.RankDevice``: one shard on the model itself,
                  the gradients through host copies), here on the CPU
    clock:F       its time.perf_counter runs F times as fast as the real one (a clock that disagrees with
                  rank 0's)
"""
import errno
import hashlib
import os
import sys

from attnseq.run.launch import launch


def _on_step(n: int, what: str) -> None:
    """The n-th shard forward on this rank raises MemoryError (``what`` "fail") or gives a NaN loss ("nan")."""
    import numpy as np

    from attnseq.nn.model import AttentionSeq2seq
    forward, calls = AttentionSeq2seq.forward, [0]

    def changed(self, src, tgt):
        calls[0] += 1
        loss = forward(self, src, tgt)
        if calls[0] == n and what == "fail":
            raise MemoryError("Unable to allocate 9.31 GiB for an array with shape (50000, 50000)")
        return np.asarray(np.nan, dtype=loss.dtype) if calls[0] == n else loss
    AttentionSeq2seq.forward = changed


def _fail_metrics() -> None:
    from attnseq.run.rundir import RunDir

    def full(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "metrics.jsonl"))
    RunDir.append_metrics = full


def _digest() -> None:
    import numpy as np

    from attnseq.run import training
    close = training.Trainer.close

    def close_and_print(self):
        close(self)
        h = hashlib.sha256()
        for a in [*self.model.parameters(), *self.opt.state_dict().values()]:
            h.update(np.ascontiguousarray(a).tobytes())
        print(f"digest {self.group.rank} {h.hexdigest()}", flush=True)
    training.Trainer.close = close_and_print


def _device_runner() -> None:
    from attnseq.run.allreduce import RankDevice
    from attnseq.run.ranks import Ranks
    Ranks.runner = lambda self, model, threads, batch_size: RankDevice(model, self)


def _fast_clock(factor: float) -> None:
    import time
    real = time.perf_counter
    start = real()
    time.perf_counter = lambda: start + factor * (real() - start)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    ons, args = argv[:split], argv[split + 1:]
    here = launch()
    rank = here.rank if here is not None else 0
    for flag, on in zip(ons[::2], ons[1::2]):
        assert flag == "--on", flag
        who, what = on.split(":", 1)
        if who != "all" and int(who) != rank:
            continue
        if what.startswith("cd:"):
            os.chdir(what[3:])
        elif "=" in what:
            os.environ.__setitem__(*what.split("=", 1))
        elif what.startswith(("fail-step:", "nan-step:")):
            _on_step(int(what.split(":")[1]), what.split("-")[0])
        elif what == "fail-metrics":
            _fail_metrics()
        elif what == "digest":
            _digest()
        elif what == "device-runner":
            _device_runner()
        elif what.startswith("clock:"):
            _fast_clock(float(what.split(":")[1]))
        else:
            raise SystemExit(f"mpi_rank.py: unknown change {what!r}")
    from attnseq.cli import main as attnseq
    return attnseq(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
