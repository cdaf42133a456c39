"""Learning-rate schedules: each one's curve against values worked out by hand, plateau's cuts, and the
Trainer setting exactly those values before each update."""
import math
from types import SimpleNamespace

import pytest

from attnseq.run.config import resolve_config
from attnseq.run.rundir import RunDir
from attnseq.run.schedules import SCHEDULES, Constant, Cosine, Linear, Plateau, WarmupRsqrt, build_schedule, check_state
from attnseq.run.training import Trainer


def _curve(schedule, steps, total=None):
    opt = SimpleNamespace(lr=-1.0)
    schedule.total_steps = total or 0
    out = []
    for step in steps:
        schedule.before_step(opt, step)
        out.append(opt.lr)
    return out


def test_warmup_rsqrt_by_hand():
    # lr 0.5, W 4: 0.5 * min(s/4, sqrt(4/s))
    want = [0.125, 0.25, 0.375, 0.5, 0.5 * math.sqrt(4 / 5), 0.5 * math.sqrt(4 / 6), 0.5 * math.sqrt(4 / 7),
            0.5 * math.sqrt(0.5), 0.5 * math.sqrt(4 / 16) * 1.0]
    got = _curve(WarmupRsqrt(0.5, warmup=4), [1, 2, 3, 4, 5, 6, 7, 8, 16])
    assert got == pytest.approx(want, rel=1e-15, abs=0)
    assert got[3] == 0.5 and got[-1] == 0.25                       # the peak at W, then 1/sqrt decay


def test_cosine_by_hand():
    # lr 1, W 2, T 6: 1/2, 1, then (1 + cos(pi * k / 3)) / 2 for k = 0..3, 0 at the last step T; past T, 0
    want = [0.5, 1.0, 1.0, 0.75, 0.25, 0.0, 0.0, 0.0]
    got = _curve(Cosine(1.0, warmup=2), range(1, 9), total=6)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15) and got[5] == 0.0
    no_warmup = _curve(Cosine(2.0), range(1, 5), total=4)          # lr 2 over 4 steps: k = 0..3 of 3
    assert no_warmup == pytest.approx([2.0, 1.5, 0.5, 0.0], rel=1e-12, abs=1e-15)


def test_linear_by_hand():
    # lr 1, W 2, T 6: 1/2, 1, then 1 - k / 3 for k = 0..3, 0 at the last step T; past T, 0
    got = _curve(Linear(1.0, warmup=2), range(1, 9), total=6)
    assert got == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0], rel=1e-12, abs=1e-15)
    assert got[5] == 0.0 and Linear(1.0).state_dict() == {"name": "linear", "ends": "last_step"}


def test_plateau_cuts_after_patience_epochs_without_a_better_best():
    sched, opt = Plateau(0.8, warmup=2, factor=0.5, patience=2), SimpleNamespace(lr=0.0)
    assert _curve(sched, [1, 2, 3]) == [0.4, 0.8, 0.8]              # the warm-up, then lr · scale
    notes, lrs = [], []
    for improved in [True, False, True, False, False, False, False, True, False]:
        notes.append(sched.epoch_end(opt, improved))
        sched.before_step(opt, 100)
        lrs.append(opt.lr)
    assert lrs == [0.8, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.2]
    assert [n is not None for n in notes] == [False, False, False, False, True, False, True, False, False]
    assert "lr now 0.2 (--lr × 0.25)" in notes[6]
    assert sched.state_dict() == {"name": "plateau", "scale": 0.25, "bad_epochs": 1}
    again = Plateau(0.8, warmup=2, factor=0.5, patience=2)
    again.load_state_dict(check_state(sched.state_dict()))
    assert again.lr_at(50) == 0.2 and again.bad_epochs == 1


def test_constant_leaves_the_steps_alone_and_decays_per_epoch():
    sched, opt = Constant(1.0, decay=0.5), SimpleNamespace(lr=0.3)        # opt.lr as optimizer.npz had it
    sched.before_step(opt, 7)
    assert opt.lr == 0.3
    sched.epoch_end(opt, improved=False)
    sched.epoch_end(opt, improved=True)
    assert opt.lr == 0.075 and sched.state_dict() == {"name": "constant"}


def test_build_schedule_from_a_config():
    cfg = resolve_config(dict(data="date", out="r", lr=0.01, lr_schedule="plateau", warmup=3, plateau_factor=0.1,
                              plateau_patience=4))
    sched = build_schedule(cfg)
    assert isinstance(sched, Plateau) and (sched.lr, sched.warmup, sched.factor, sched.patience) == (0.01, 3, 0.1, 4)
    assert {build_schedule({**cfg, "lr_schedule": name}).name for name in SCHEDULES} == set(SCHEDULES)
    with pytest.raises(ValueError, match="unknown schedule"):
        check_state({"name": "step"})


@pytest.mark.parametrize("schedule, extra, lr_of_step", [
    ("warmup-rsqrt", dict(warmup=10), lambda s, total: 0.01 * min(s / 10, math.sqrt(10 / s))),
    ("cosine", dict(warmup=5), lambda s, total: 0.01 * s / 5 if s <= 5 else
     0.01 * 0.5 * (1 + math.cos(math.pi * (s - 6) / (total - 6)))),
    ("linear", dict(warmup=5), lambda s, total: 0.01 * s / 5 if s <= 5 else 0.01 * (1 - (s - 6) / (total - 6))),
    ("constant", dict(lr_decay=0.5), lambda s, total: 0.01 * 0.5 ** ((s - 1) // 24)),
])
def test_the_trainer_sets_the_schedules_lr_before_each_update(tiny_data, tmp_path, schedule, extra, lr_of_step):
    """2 epochs of 24 steps: the lr each optimizer step runs with is the hand formula of its step."""
    cfg = resolve_config(dict(data=str(tiny_data), out=str(tmp_path / schedule), epochs=2, hidden_size=16,
                              wordvec_size=8, batch_size=64, tokenizer="char", examples=0, lr=0.01,
                              lr_schedule=schedule, **extra))
    trainer = Trainer(cfg, log=lambda *a: None)
    seen, real = [], trainer.opt.step

    def step():
        seen.append((trainer.step, trainer.opt.lr))
        real()
    trainer.opt.step = step
    trainer.run()
    total = 2 * 24
    assert [s for s, _ in seen] == list(range(1, total + 1))
    assert [lr for _, lr in seen] == pytest.approx([lr_of_step(s, total) for s, _ in seen], rel=1e-12)


@pytest.mark.parametrize("schedule, extra", [("constant", {}), ("cosine", dict(warmup=5))])
def test_resume_with_another_lr_trains_with_it(tiny_data, tmp_path, schedule, extra):
    """--resume --lr X: every later update runs at X's schedule (the constant schedule would keep
    optimizer.npz's lr), and the log says so in one line; the same --lr again changes nothing, says nothing."""
    cfg = dict(data=str(tiny_data), out=str(tmp_path / schedule), epochs=1, hidden_size=16, wordvec_size=8,
               batch_size=64, tokenizer="char", examples=0, lr=0.01, lr_schedule=schedule, **extra)
    Trainer(resolve_config(cfg), log=lambda *a: None).run()

    def cosine(s, total):                                           # W = 5, 24 steps an epoch
        return 0.002 * 0.5 * (1 + math.cos(math.pi * (s - 6) / (total - 6)))
    for epochs, note in ((2, "note: --lr changed from 0.01 to 0.002"), (3, None)):
        logs = []
        resumed = dict(out=cfg["out"], resume=True, epochs=epochs, lr=0.002)
        trainer = Trainer(resolve_config(resumed, RunDir(cfg["out"]).saved_options()), log=logs.append)
        seen, real = [], trainer.opt.step

        def step():
            seen.append(trainer.opt.lr)
            real()
        trainer.opt.step = step
        trainer.run()
        assert [line for line in logs if "--lr changed" in line] == ([note] if note else [])
        steps = range((epochs - 1) * 24 + 1, epochs * 24 + 1)
        want = [0.002] * 24 if schedule == "constant" else [cosine(s, epochs * 24) for s in steps]
        assert seen == pytest.approx(want, rel=1e-12)
