"""--max-minutes: the time budget (``attnseq.run.budget``), the lr schedule that anneals to its end, step
checkpoints in its last part (--keep-every), and resume.

Time is made deterministic: the Trainer takes a fake clock, which a training step moves by 5 s and an
evaluation by 10 s, so every plan, lr and stop is exact and the same on every machine.
"""
import json
import math
import signal

import numpy as np
import pytest

from attnseq import TrainingStopped
from attnseq.errors import CheckpointError
from attnseq.run.budget import BudgetState, TimeBudget
from attnseq.run.config import resolve_config
from attnseq.run.rundir import RunDir
from attnseq.run.train_state import TrainState
from attnseq.run.training import Trainer

STEP_S, EVAL_S = 5.0, 10.0
BATCHES = 24                                    # 1500 pairs in batches of 64


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cfg_of(tiny_data, out, **kw):
    base = dict(data=str(tiny_data), out=str(out), epochs=9, hidden_size=16, wordvec_size=8, batch_size=64,
                tokenizer="char", examples=0, patience=20, lr=0.01, save_every="0")
    return resolve_config({**base, **kw})


def timed_trainer(cfg, clock, logs=None, saved=None):
    """A Trainer on ``clock``, whose steps take STEP_S and evaluations EVAL_S; it records (step, lr) of
    every update in ``trainer.lrs``."""
    trainer = Trainer(cfg, log=(logs.append if logs is not None else lambda *a: None), clock=clock)
    forward, evaluate, opt_step = trainer.runner.forward, trainer._evaluate, trainer.opt.step
    trainer.lrs = []

    def timed_forward(*a):
        clock.t += STEP_S
        return forward(*a)

    def timed_evaluate(*a, **k):
        clock.t += EVAL_S
        return evaluate(*a, **k)

    def recorded_step():
        trainer.lrs.append((trainer.step, trainer.opt.lr))
        opt_step()
    trainer.runner.forward, trainer._evaluate, trainer.opt.step = timed_forward, timed_evaluate, recorded_step
    return trainer


# -- the plan -----------------------------------------------------------------------------------------
def test_the_last_step_is_what_the_time_left_allows():
    clock = FakeClock()
    b = TimeBudget(7.0, clock)
    assert b.last_step(0, 0, BATCHES, 500) == 500                      # nothing timed yet: --epochs' end
    b.setup_done()
    for _ in range(BATCHES):
        clock.t += STEP_S
        b.step_done()
    b.eval_started()
    clock.t += EVAL_S
    b.eval_done()
    # 130 s used, 290 left: 52 more steps of 5 s and their 3 evaluations (2 epoch ends and the last) of 10 s
    assert b.last_step(24, 0, BATCHES, 500) == 24 + 52
    assert b.last_step(24, 0, BATCHES, 60) == 60                       # never past --epochs
    clock.t += 1000.0                                                   # out of time: the coming step is the last
    assert b.last_step(24, 0, BATCHES, 500) == 25
    assert TimeBudget(None, clock).last_step(24, 0, BATCHES, 500) == 500
    snap = b.snapshot()
    assert (snap.used_s, snap.eval_s, snap.evals, snap.steps) == (1130.0, 10.0, 1, 24)
    again = TimeBudget(7.0, clock)                                      # a resume: the time used goes on
    again.resume(BudgetState.from_json(json.loads(json.dumps(snap.__dict__))))
    assert again.used() == 1130.0


@pytest.mark.parametrize("bad", [None, {"used_s": 1.0}, dict(used_s=-1.0, setup_s=0, eval_s=0, evals=0, steps=0),
                                 dict(used_s="x", setup_s=0, eval_s=0, evals=0, steps=0)])
def test_a_malformed_budget_in_state_json_is_named(tmp_path, bad):
    st = dict(epoch=1, step=2, best=[0.5, -1.0], bad_epochs=0, rng=np.random.PCG64(0).state,
              dropout_rng=np.random.PCG64(1).state, budget=bad)
    if bad is None:
        assert TrainState.from_json(st, tmp_path / "state.json").budget is None   # a state.json from before it
        return
    with pytest.raises(CheckpointError, match="malformed field 'budget'"):
        TrainState.from_json(st, tmp_path / "state.json")


# -- a run on the budget ----------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_run_ends_within_its_budget_and_its_lr_reaches_zero_at_the_last_step(tiny_data, tmp_path, schedule):
    """7 minutes: 76 steps (3 epochs and 4 batches of a 4th) of 5 s and 4 validations of 10 s are exactly
    420 s; the 4th epoch is cut short, validated and saved; the lr, annealed over the budget, is 0 at the
    last step. Testing best/ is the one evaluation after the budget."""
    clock, logs = FakeClock(), []
    start = clock.t
    cfg = cfg_of(tiny_data, tmp_path / schedule, lr_schedule=schedule, warmup=5, max_minutes=7.0)
    trainer = timed_trainer(cfg, clock, logs)
    finish, at_finish = trainer.finish, []
    trainer.finish = lambda: (at_finish.append(clock.t), finish())[1]
    result = trainer.run()
    steps = [s for s, _ in trainer.lrs]
    assert steps == list(range(1, 77)) and result["steps"] == 76 and result["stopped"] == "max_minutes"
    assert at_finish == [start + 7 * 60]                                # training and validation: the budget
    assert clock.t - at_finish[0] == EVAL_S * (1 + ("test_long" in result))   # then testing best/, once
    assert trainer.lrs[-1][1] == 0.0 and trainer.lrs[4][1] == 0.01     # the end value; the peak after warm-up
    assert all(a[1] >= b[1] for a, b in zip(trainer.lrs[5:], trainer.lrs[6:]))   # falling all the way
    rows = RunDir(cfg["out"]).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[-1]["step"] == 76
    state = json.loads((tmp_path / schedule / "last" / "state.json").read_text())
    assert state["step"] == 76 and "in_epoch" not in state and state["budget"]["used_s"] == 420.0
    assert "--max-minutes 7: 7.0 min used; the run ends at step 76 (epoch 4, batch 4 of 24), as now estimated" \
        in logs
    assert json.loads((tmp_path / schedule / "result.json").read_text())["stopped"] == "max_minutes"


def test_the_constant_schedule_also_trains_to_the_budget(tiny_data, tmp_path):
    clock = FakeClock()
    trainer = timed_trainer(cfg_of(tiny_data, tmp_path / "c", max_minutes=7.0), clock)
    result = trainer.run()
    assert result["steps"] == 76 and {lr for _, lr in trainer.lrs} == {0.01}


def test_early_stopping_still_applies(tiny_data, tmp_path):
    """--patience 1 on a budget: the run stops at the first epoch that does not beat best/, not at the budget."""
    clock = FakeClock()
    trainer = timed_trainer(cfg_of(tiny_data, tmp_path / "p", lr_schedule="cosine", max_minutes=60.0, patience=1),
                            clock)
    best = trainer.best
    best.beaten_by = lambda valid: trainer.epoch == 1                  # only epoch 1 beats best/
    result = trainer.run()
    assert result["epochs"] == 2 and "stopped" not in result and clock.t < 1000 + 60 * 60 / 4


@pytest.mark.parametrize("stop_at", [40, 48])                          # inside epoch 2, at its end
def test_a_resumed_run_takes_the_same_lr_at_every_step(tiny_data, tmp_path, stop_at):
    """Stopped by a signal after step ``stop_at`` (last/ saved there), then resumed: every step's lr, the
    planned end, the weights and state.json are the uninterrupted run's, bit for bit."""
    kw = dict(lr_schedule="cosine", warmup=5, max_minutes=7.0, dropout=0.1)
    ref = timed_trainer(cfg_of(tiny_data, tmp_path / "ref", **kw), FakeClock())
    ref.run()
    out = tmp_path / "stopped"
    clock = FakeClock()
    first = timed_trainer(cfg_of(tiny_data, out, **kw), clock)
    real = first.runner.forward

    def forward(*a):
        if first.step == stop_at - 1:
            first.stop._handle(signal.SIGINT, None)                    # stops after this step
        return real(*a)
    first.runner.forward = forward
    with pytest.raises(TrainingStopped):
        first.run()
    clock.t += 3600.0                                                   # time between the stop and the resume
    logs = []
    second = timed_trainer(resolve_config(dict(out=str(out), resume=True), RunDir(out).saved_options()), clock, logs)
    second.run()
    assert first.lrs + second.lrs == ref.lrs
    assert any("min used by the checkpoint count against it" in line for line in logs)
    for name in ("weights.npz", "optimizer.npz"):
        a, b = np.load(tmp_path / "ref" / "last" / name), np.load(out / "last" / name)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
    states = [json.loads((d / "last" / "state.json").read_text()) for d in (tmp_path / "ref", out)]
    assert states[0] == states[1]


def test_the_budget_counts_the_whole_run(tiny_data, tmp_path):
    """A run that spent its 7 minutes, resumed with --max-minutes 9, has 2 minutes left: 24 more steps of
    5 s less one validation (the last) of 10 s, 22 steps; the log says what the checkpoint had used."""
    out, clock = tmp_path / "r", FakeClock()
    timed_trainer(cfg_of(tiny_data, out, lr_schedule="linear", max_minutes=7.0), clock).run()
    logs = []
    resumed = resolve_config(dict(out=str(out), resume=True, max_minutes=9.0), RunDir(out).saved_options())
    trainer = timed_trainer(resumed, clock, logs)
    result = trainer.run()
    assert "--max-minutes 9: 7.0 min used by the checkpoint count against it; 2.0 min left" in logs
    assert [s for s, _ in trainer.lrs] == list(range(77, 77 + 22)) and result["steps"] == 98
    assert trainer.lrs[-1][1] == 0.0


# -- step checkpoints in the last part ---------------------------------------------------------------------
def test_keep_every_keeps_step_checkpoints_in_the_last_part_and_averages_them(tiny_data, tmp_path):
    """--keep-last 3 --keep-every 10 on a 76-step budget: steps 50, 60, 70 fall in the last 30 (47-76) and
    are kept with the last step, 76, the three newest survive and --average-last 3 averages them."""
    out = tmp_path / "k"
    cfg = cfg_of(tiny_data, out, lr_schedule="cosine", max_minutes=7.0, keep_last=3, keep_every=10, average_last=3)
    logs = []
    result = timed_trainer(cfg, FakeClock(), logs).run()
    assert sorted(p.name for p in out.glob("step-*")) == ["step-0000060", "step-0000070", "step-0000076"]
    assert not list(out.glob("epoch-*"))
    assert [n for n, _ in RunDir(out).kept()] == [60, 70, 76]
    assert result["averaged"]["steps"] == [60, 70, 76]
    state = json.loads((out / "averaged" / "state.json").read_text())
    assert state["averaged"]["steps"] == [60, 70, 76]
    assert json.loads((out / "step-0000060" / "state.json").read_text())["in_epoch"]["batches_done"] == 12
    assert logs[-1].startswith(f"--ckpt {out} means {out}/{result['chosen']}/")


def test_keep_every_needs_keep_last(tiny_data, tmp_path):
    from attnseq.errors import ConfigError
    with pytest.raises(ConfigError, match="--keep-every 10 needs --keep-last K"):
        cfg_of(tiny_data, tmp_path / "x", keep_every=10)


def test_cosine_state_from_before_ends_keeps_its_old_curve():
    """A cosine run saved before the schedule reached 0 at its last step resumes on the curve it began."""
    from attnseq.run.schedules import Cosine
    new, old = Cosine(1.0, warmup=2), Cosine(1.0, warmup=2)
    old.load_state_dict({"name": "cosine"})
    new.load_state_dict(new.state_dict())
    new.total_steps = old.total_steps = 10
    assert new.lr_at(10) == 0.0 and old.lr_at(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert new.state_dict() == {"name": "cosine", "ends": "last_step"} and old.state_dict() == {"name": "cosine"}
