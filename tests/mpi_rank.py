"""One rank of an MPI test job: ``mpiexec -n 2 python tests/mpi_rank.py [--on RANK:WHAT]... -- ARGS`` runs
``attnseq ARGS`` on every rank, with test-only changes on the ranks named (``distributed.launch()``
tells a rank its number before MPI starts). WHAT is one of

    NAME=VALUE    set an environment variable on that rank (ATTNSEQ_KILL_AT=train-step:30:STOP)
    cd:DIR        work in DIR (where relative paths, such as --train train.tsv, then lead)
    fail-step:N   its N-th shard forward raises MemoryError (a rank failing inside a step)
    fail-metrics  writing metrics.jsonl meets a full disk (rank 0 failing alone, outside a collective)
    digest        print "digest RANK HEX" at the end: a hash of its weights and optimizer state
"""
import errno
import hashlib
import os
import sys

from attnseq.run.distributed import launch


def _fail_step(n: int) -> None:
    from attnseq.nn.model import AttentionSeq2seq
    forward, calls = AttentionSeq2seq.forward, [0]

    def failing(self, src, tgt):
        calls[0] += 1
        if calls[0] == n:
            raise MemoryError("Unable to allocate 9.31 GiB for an array with shape (50000, 50000)")
        return forward(self, src, tgt)
    AttentionSeq2seq.forward = failing


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
        elif what.startswith("fail-step:"):
            _fail_step(int(what.split(":")[1]))
        elif what == "fail-metrics":
            _fail_metrics()
        elif what == "digest":
            _digest()
        else:
            raise SystemExit(f"mpi_rank.py: unknown change {what!r}")
    from attnseq.cli import main as attnseq
    return attnseq(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
