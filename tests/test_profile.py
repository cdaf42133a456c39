"""nn/profile.py and ``attnseq bench --profile``: where a training step goes, by part.

The breakdown's arithmetic on a fake clock (shard parts averaged over the shard threads, shared
parts not, a compiled loop split by its ticks, the rest of the wall time as "rest"), the markers
inert when nothing records, and the bench's profile on a tiny workload naming every part.
"""
import json
import threading

import numpy as np
import pytest

from attnseq.cli import main
from attnseq.nn import profile
from attnseq.nn.profile import LOOP, Profile, loop_ticks, part, recording


class Clock:
    """A perf_counter that moves only when told."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t


def shard(prof, clock, ticks):
    """One shard thread's parts: attention 10 ms, a compiled loop 40 ms with ``ticks`` (products, cells)."""
    with prof.part("attention"):
        clock.t += 0.010
    with prof.part(LOOP):
        clock.t += 0.040
    prof.ticks()[:] = ticks


def run_shards(prof, clock, ticks):
    for _ in range(2):                                              # one after the other: the clock is shared
        t = threading.Thread(target=shard, args=(prof, clock, ticks))
        t.start()
        t.join()
    with prof.part("optimizer"):                                    # once per step, outside the shards
        clock.t += 0.004


def test_breakdown_averages_shards_splits_the_loop_and_keeps_the_rest(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(profile, "time", clock)
    prof = Profile()
    run_shards(prof, clock, [3, 1])
    out = prof.breakdown(wall_s=0.100, steps=2, shards=2)
    assert list(out) == ["recurrent matmul", "cell", "attention", "optimizer", "rest"]
    assert out["recurrent matmul"] == pytest.approx(15.0)          # 2 x 40 ms x 3/4, over 2 steps and 2 shards
    assert out["cell"] == pytest.approx(5.0)
    assert out["attention"] == pytest.approx(5.0)
    assert out["optimizer"] == pytest.approx(2.0)                  # 4 ms over 2 steps, not shared out
    assert out["rest"] == pytest.approx(50.0 - 27.0)


def test_a_loop_without_ticks_stays_one_line(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(profile, "time", clock)
    prof = Profile()
    run_shards(prof, clock, [0, 0])
    out = prof.breakdown(wall_s=0.100, steps=2, shards=2)
    assert out["recurrent matmul + cell"] == pytest.approx(20.0)
    assert "recurrent matmul" not in out and "cell" not in out


def test_markers_do_nothing_unless_recording():
    assert loop_ticks().shape == (0,)
    with part("attention") as p:
        assert not hasattr(p, "seconds")
    with recording() as prof:
        assert loop_ticks() is prof.ticks() and loop_ticks().shape == (2,)
        with part("cell"):
            pass
    assert loop_ticks().shape == (0,)
    assert "cell" in prof.breakdown(1.0, 1, 1)


def test_bench_profile_names_every_part(capsys):
    args = ["--hidden-size", "16", "--wordvec-size", "8", "--iters", "2", "--n-greedy", "8", "--n-beam", "4",
            "--threads", "2", "--kernels", "numba", "--profile"]
    assert main(["bench", "--json", *args]) == 0
    r = json.loads(capsys.readouterr().out)
    ms = r["profile_ms"]
    split = ["recurrent matmul", "cell"] if "cell" in ms else ["recurrent matmul + cell"]
    parts = [*split, "input projections", "weight gradients", "attention", "output layer", "gradient sum", "optimizer"]
    assert list(ms) == [*parts, "rest"]
    assert all(ms[p] > 0 for p in parts), ms
    assert np.isfinite(ms["rest"])
    assert r["profile_gflops"]["weight gradients"] > 0
    assert main(["bench", *args]) == 0
    table = capsys.readouterr().out
    assert "profile (ms per step, per thread)" in table and "  weight gradients" in table and "GFLOP/s" in table
