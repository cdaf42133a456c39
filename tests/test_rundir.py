"""RunDir: preparing a run directory, resuming from it (with its .old fallbacks), metrics.jsonl."""
import json
import re
import shutil

import numpy as np
import pytest

from attnseq.errors import CheckpointError, ConfigError
from attnseq.nn.optim import build_optimizer
from attnseq.run.rundir import RunDir
from attnseq.run.train_state import TrainState


def _copy(tiny_run, tmp_path, name="run"):
    run = tmp_path / name
    shutil.copytree(tiny_run, run)
    return run


def _resume(run):
    """What the trainer does on --resume: load last/, build its optimizer, restore it and the state."""
    rd = RunDir(run)
    assert rd.prepare(resume=True)
    ck = rd.load_last()
    opt = build_optimizer(ck.config["train"]["optimizer"], ck.model, ck.config["train"]["lr"])
    return rd, ck, opt, rd.restore(ck, opt)


def test_prepare_removes_only_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    (run / ".last.tmp-4242").mkdir(parents=True)
    (run / ".last.tmp-4242" / "weights.npz").write_bytes(b"half")
    (run / ".metrics.jsonl.k3j_x.tmp").write_text("{}")
    (run / "notes.txt").write_text("mine")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert RunDir(run).prepare(resume=False) is False
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "notes.txt"]


def test_prepare_refuses_a_run_without_resume(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    shutil.rmtree(run / "best")
    (run / "last").rename(run / "last.old")                      # only an interrupted swap's leftover
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        RunDir(run).prepare(resume=False)
    assert RunDir(run).prepare(resume=True) is True
    assert RunDir(tmp_path / "new").prepare(resume=True) is False  # nothing yet: a fresh start


def test_prepare_refuses_an_unwritable_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*file/run: cannot write there"):
        RunDir(tmp_path / "file" / "run").prepare(resume=False)


def test_resume_falls_back_to_old_and_the_next_save_restores_the_name(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / "last").rename(run / "last.old")                      # killed between the two renames of a swap
    rd, ck, opt, state = _resume(run)
    assert ck.path == run / "last.old" and state.epoch == 2 and opt.t == state.step
    state.epoch = 3
    rd.save(ck.model, opt, ck.src_tok, ck.tgt_tok, ck.config["train"], state, best=False)
    assert (run / "last").is_dir() and not (run / "last.old").exists()
    assert json.loads((run / "last" / "state.json").read_text())["epoch"] == 3


def test_state_round_trips(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    rd, ck, opt, state = _resume(run)
    rng = np.random.default_rng(0)
    rng.bit_generator.state = state.rng                          # a state RunDir passed is one a generator takes
    rd.save(ck.model, opt, ck.src_tok, ck.tgt_tok, ck.config["train"], state, best=True)
    for name in ("best", "last"):
        assert json.loads((run / name / "state.json").read_text()) == json.loads(
            (tiny_run / "last" / "state.json").read_text())
    assert _resume(run)[3] == state


@pytest.mark.parametrize("field, value", [
    ("epoch", "two"), ("best", [0.5]), ("best", "high"), ("rng", {"bit_generator": "MT19937"}), ("dropout_rng", 3),
    ("bad_epochs", None), ("step", "x"),
])
def test_malformed_state_json_names_the_file(tiny_run, tmp_path, field, value):
    run = _copy(tiny_run, tmp_path)
    path = run / "last" / "state.json"
    state = json.loads(path.read_text())
    state[field] = value
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: missing or malformed field '{field}'")):
        _resume(run)


def test_state_json_without_a_field_names_it(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    path = run / "last" / "state.json"
    state = json.loads(path.read_text())
    del state["bad_epochs"], state["nonfinite_skipped"]          # the second was added later: optional
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: missing or malformed field 'bad_epochs' (not there)")):
        _resume(run)


def test_state_json_that_is_not_json(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / "last" / "state.json").write_text('{"epoch": 1,')
    with pytest.raises(CheckpointError, match=r"last/state.json: malformed JSON"):
        _resume(run)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), r"optimizer.npz: corrupt or truncated"),
    (lambda p: np.savez(p, **{k: (v[:1] if v.ndim else v) for k, v in np.load(p).items()}),
     r"optimizer.npz: .* has shape"),
    (lambda p: np.savez(p, t=np.array(1), lr=np.array(0.1)), r"optimizer.npz: array names do not match"),
])
def test_malformed_optimizer_npz_names_the_file(tiny_run, tmp_path, damage, message):
    run = _copy(tiny_run, tmp_path)
    damage(run / "last" / "optimizer.npz")
    with pytest.raises(CheckpointError, match=message):
        _resume(run)


def test_metrics_rows_of_a_redone_epoch_are_replaced(tmp_path):
    rd = RunDir(tmp_path)
    rd.append_metrics({"epoch": 1, "loss": 3.0})
    rd.append_metrics({"epoch": 2, "loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "loss": 1.')                           # a torn line from a crash
    rd.append_metrics({"epoch": 2, "loss": 1.5})                    # epoch 2 redone after a resume
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 1.5}]


def test_every_reader_of_metrics_jsonl_reads_it_alike(tmp_path):
    """The trainer (append_metrics, read_metrics) and plot-curves (cli.read_epochs) read metrics.jsonl in one
    place: torn lines and lines that are no object are left out, nowhere a traceback."""
    from attnseq.cli import read_epochs
    rd = RunDir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss": 3.0}\n[1, 2]\n"text"\n{"epoch": "x"}\n'
                                            '{"epoch": 2, "loss": 2.5}\n{"epoch": 3, "lo')
    rd.append_metrics({"epoch": 2, "loss": 2.0})                    # epoch 2 redone: its old row goes
    rows = [{"epoch": 1, "loss": 3.0}, {"epoch": "x"}, {"epoch": 2, "loss": 2.0}]
    assert rd.read_metrics() == rows
    assert read_epochs(tmp_path) == rows
    with pytest.raises(ConfigError, match="metrics.jsonl: no such file"):
        read_epochs(tmp_path / "none")


def test_train_state_json_layout():
    state = TrainState(epoch=1, step=5, best=[0.5, -1.0], bad_epochs=0, nonfinite_skipped=0, rng={}, dropout_rng={})
    from dataclasses import asdict
    assert list(asdict(state)) == ["epoch", "step", "best", "bad_epochs", "nonfinite_skipped", "rng", "dropout_rng",
                                   "best_metric", "schedule", "budget"]
    assert (state.best_metric, state.schedule, state.budget) == ("exact", None, None)   # what an old state.json means


def test_old_state_json_without_metric_or_schedule_resumes_as_exact(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    path = run / "last" / "state.json"
    state = json.loads(path.read_text())
    assert state["best_metric"] == "bleu" and state["schedule"] == {"name": "constant"}    # a corpus: BLEU
    del state["best_metric"], state["schedule"]                   # as written before --select-by existed
    path.write_text(json.dumps(state))
    restored = _resume(run)[3]
    assert restored.best_metric == "exact" and restored.schedule is None and restored.best == state["best"]


@pytest.mark.parametrize("field, value", [("best_metric", "chrf"), ("schedule", {"name": "step"}),
                                          ("schedule", {"name": "plateau", "scale": "half", "bad_epochs": 0})])
def test_malformed_new_state_fields_name_the_file(tiny_run, tmp_path, field, value):
    run = _copy(tiny_run, tmp_path)
    path = run / "last" / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: missing or malformed field '{field}'")):
        _resume(run)


# -- kept epoch checkpoints (--keep-last) ---------------------------------------------------------
def _save_epochs(run, ck, opt, state, epochs, keep):
    rd = RunDir(run)
    for epoch in epochs:
        state.epoch = epoch
        rd.save(ck.model, opt, ck.src_tok, ck.tgt_tok, ck.config["train"], state, best=False, keep=keep)
    return rd


def test_keep_last_keeps_the_newest_k_and_prunes_the_rest(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    _, ck, opt, state = _resume(run)
    rd = _save_epochs(run, ck, opt, state, range(3, 9), keep=3)
    assert [(e, p.name) for e, p in rd.kept()] == [(6, "epoch-0006"), (7, "epoch-0007"), (8, "epoch-0008")]
    assert json.loads((run / "epoch-0007" / "state.json").read_text())["epoch"] == 7
    assert json.loads((run / "last" / "state.json").read_text())["epoch"] == 8
    _save_epochs(run, ck, opt, state, [9], keep=1)                   # a lower --keep-last on resume
    assert [p.name for _, p in rd.kept()] == ["epoch-0009"]
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-0009"]


def test_keep_last_off_and_mid_epoch_saves_keep_nothing(tiny_run, tmp_path):
    from attnseq.run.train_state import EpochProgress
    run = _copy(tiny_run, tmp_path)
    rd, ck, opt, state = _resume(run)
    _save_epochs(run, ck, opt, state, [3], keep=0)
    rd.save(ck.model, opt, ck.src_tok, ck.tgt_tok, ck.config["train"], state, best=False,
            progress=EpochProgress(batches_done=3, batches=24), keep=2)
    assert rd.kept() == [] and not list(run.glob("epoch-*"))


def test_kept_reads_an_interrupted_swap_and_ignores_other_names(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    _, ck, opt, state = _resume(run)
    rd = _save_epochs(run, ck, opt, state, [3, 4], keep=5)
    (run / "epoch-0004").rename(run / "epoch-0004.old")             # killed between a swap's renames
    (run / "epoch-12").mkdir()                                       # not a kept name
    (run / "epoch-0005").mkdir()                                     # no config.json: not a checkpoint
    assert [(e, p.name) for e, p in rd.kept()] == [(3, "epoch-0003"), (4, "epoch-0004.old")]
    _save_epochs(run, ck, opt, state, [5, 6], keep=1)
    assert sorted(p.name for p in run.glob("epoch-0*")) == ["epoch-0006"]


def test_a_checkpoint_directory_is_not_a_run_directory(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match=r"best is a checkpoint directory, not a run directory"):
        RunDir(tiny_run / "best").prepare(resume=True)


# -- the end of a run: result.json ------------------------------------------------------------------
def _small_date(monkeypatch, n=300):
    """--data date with the first n pairs of each split (and of test-short), so a run takes seconds."""
    from attnseq.run import finish, training
    real_load, real_extra = training.load_data, finish.extra_tests
    monkeypatch.setattr(training, "load_data", lambda cfg: {k: v[:n] for k, v in real_load(cfg).items()})
    monkeypatch.setattr(finish, "extra_tests",
                        lambda name, d: {f: (what, pairs[:n]) for f, (what, pairs) in real_extra(name, d).items()})


@pytest.mark.parametrize("swap", [False, True])
def test_the_date_run_reports_test_short(tmp_path, monkeypatch, swap):
    """best/ is tested on the date data's test-short.tsv too: one log line and result.json's test_short
    (not when the sides are swapped: those are ISO dates to read back)."""
    from attnseq.data.datasets import EXTRA_TESTS
    from attnseq.run.training import train
    _small_date(monkeypatch)
    logs = []
    result = train(dict(data="date", out=str(tmp_path / "d"), epochs=1, hidden_size=16, wordvec_size=8,
                        examples=0, swap_sides=swap), log=logs.append)
    saved = json.loads((tmp_path / "d" / "result.json").read_text())
    if swap:
        assert "test_short" not in saved and not any(line.startswith("test-short") for line in logs)
        return
    short = saved["test_short"]
    assert short == {k: v for k, v in result["test_short"].items()} and short["n"] == 300
    assert set(short) >= {"exact_match", "loss", "token_accuracy"}
    what = EXTRA_TESTS["date"]["test-short"]
    assert f"test-short (300 pairs, {what}): exact {100 * short['exact_match']:.2f}%" in logs


def test_saved_options_are_the_train_section_of_the_checkpoint_to_resume(tiny_run, tmp_path):
    """What resolve_config takes on --resume: last/'s "train" section (best/'s when last/ is gone), else None."""
    run = _copy(tiny_run, tmp_path)
    saved = RunDir(run).saved_options()
    assert saved == json.loads((run / "last" / "config.json").read_text())["train"] and saved["epochs"] == 2
    shutil.rmtree(run / "last")
    config = json.loads((run / "best" / "config.json").read_text())
    (run / "best" / "config.json").write_text(json.dumps(dict(config, train=dict(config["train"], epochs=7))))
    assert RunDir(run).saved_options()["epochs"] == 7
    (run / "best" / "config.json").write_text(json.dumps(dict(config, train=[1, 2])))
    assert RunDir(run).saved_options() is None                       # not an object: nothing to take
    (run / "best" / "config.json").write_text("{not json")
    assert RunDir(run).saved_options() is None
    assert RunDir(tmp_path / "new").saved_options() is None          # no run yet: a fresh start
