"""--select-by: which epoch becomes best/, early stopping and the plateau schedule on that score, ties by loss,
per-task defaults, and runs resumed with another selection than they were trained with."""
import json
import shutil

import pytest

from attnseq.run import finish, selection, training
from attnseq.run.config import resolve_config
from attnseq.run.rundir import RunDir
from attnseq.run.selection import score
from attnseq.run.training import Trainer, train

# valid scores of five epochs: exact peaks at 2 (tied with 4, whose loss is lower), BLEU at 3, loss at 5
ROWS = [dict(epoch=1, valid_exact_match=0.10, valid_bleu=20.0, valid_loss=2.0),
        dict(epoch=2, valid_exact_match=0.50, valid_bleu=30.0, valid_loss=1.5),
        dict(epoch=3, valid_exact_match=0.40, valid_bleu=45.0, valid_loss=1.4),
        dict(epoch=4, valid_exact_match=0.50, valid_bleu=35.0, valid_loss=1.3),
        dict(epoch=5, valid_exact_match=0.45, valid_bleu=44.0, valid_loss=1.2)]


def test_score_is_the_metric_then_lower_loss():
    valid = dict(exact_match=0.5, bleu=31.0, loss=1.25)
    assert score(valid, "exact") == [0.5, -1.25]
    assert score(valid, "bleu") == [31.0, -1.25]
    assert score(valid, "loss") == [-1.25, -1.25]
    assert score(dict(valid, loss=1.0), "exact") > score(valid, "exact")             # a tie goes to the lower loss
    assert score(valid, "exact") > selection.initial_best()


def _valid(row):
    return {k[len("valid_"):]: v for k, v in row.items() if k != "epoch"}


def _best_epoch(rows, by):
    """The epoch ``selection.Best`` keeps as best/ after the valid scores of ``rows``, in order, and its
    count of the epochs since."""
    best, epoch = selection.Best(by), None
    for row in rows:
        if best.update(_valid(row)):
            epoch = row["epoch"]
    return epoch, best.bad_epochs


@pytest.mark.parametrize("by, epoch", [("exact", 4), ("bleu", 3), ("loss", 5)])
def test_best_epoch_of_known_rows(by, epoch):
    assert _best_epoch(ROWS, by) == (epoch, 5 - epoch)
    assert _best_epoch(ROWS[:3], by) == {"exact": (2, 1), "bleu": (3, 0), "loss": (3, 0)}[by]


def test_best_keeps_the_score_and_counts_the_epochs_since():
    best = selection.Best("bleu")
    assert best.score == selection.initial_best() and best.bad_epochs == 0
    assert best.update(_valid(ROWS[2])) and best.score == [45.0, -1.4] and best.bad_epochs == 0
    assert not best.update(_valid(ROWS[4])) and best.bad_epochs == 1           # 44 < 45
    assert not best.update(_valid(ROWS[2])) and best.bad_epochs == 2           # equal: not better
    assert best.update(dict(_valid(ROWS[2]), loss=1.0)) and best.bad_epochs == 0    # equal BLEU, lower loss
    assert best.value() == {"best_valid_bleu": 45.0}
    assert selection.Best("loss", [-1.2, -1.2], 3).value() == {"best_valid_loss": 1.2}
    with pytest.raises(ValueError, match="--select-by 'chrf'"):
        selection.Best("chrf")


def test_rechoosing_best_by_another_metric_reads_its_row():
    best = selection.Best("exact", [40.0, -1.4], bad_epochs=1)
    note = best.rechoose("bleu", ROWS, 3)
    assert best.score == [0.40, -1.4] and best.bad_epochs == 1
    assert note == "note: best/ was chosen by valid BLEU; from now on by valid exact match"
    assert best.rechoose("bleu", ROWS, 9).endswith("(best/'s is not recorded: the next epoch replaces it)")
    assert best.score == selection.initial_best()


def test_rows_without_the_metric_are_passed_over():
    assert selection.score_of_row(dict(epoch=1, valid_loss=1.0), "bleu") is None
    assert selection.score_of_row(dict(epoch=1, valid_loss=1.0, valid_exact_match=0.5), "exact") == [0.5, -1.0]


def _scripted(monkeypatch, trainer, rows):
    """The Trainer's valid evaluation returns ``rows``' scores, epoch by epoch (other sets: the real ones)."""
    real, scripted = training.evaluate, iter(rows)

    def evaluate(model, data, *a, **k):
        out = real(model, data, *a, **k)
        if data is trainer.sets["valid"]:
            row = next(scripted)
            out.update(exact_match=row["valid_exact_match"], bleu=row["valid_bleu"], loss=row["valid_loss"])
        return out
    monkeypatch.setattr(training, "evaluate", evaluate)


def _cfg(tiny_data, out, **kw):
    return resolve_config({**dict(data=str(tiny_data), out=str(out), epochs=5, hidden_size=16, wordvec_size=8,
                                  batch_size=64, tokenizer="char", examples=0, patience=9), **kw})


@pytest.mark.parametrize("by, epoch", [("exact", 4), ("bleu", 3), ("loss", 5)])
def test_the_trainer_saves_the_selected_epoch_as_best(tiny_data, tmp_path, monkeypatch, by, epoch):
    trainer = Trainer(_cfg(tiny_data, tmp_path / by, select_by=by), log=lambda *a: None)
    _scripted(monkeypatch, trainer, ROWS)
    result = trainer.run()
    best = json.loads((tmp_path / by / "best" / "state.json").read_text())
    assert best["epoch"] == epoch and best["best_metric"] == by
    row = ROWS[epoch - 1]
    assert best["best"] == score({k[6:]: v for k, v in row.items() if k != "epoch"}, by)
    assert result["select_by"] == by
    key = {"exact": "exact_match", "bleu": "bleu", "loss": "loss"}[by]
    assert result[f"best_valid_{key}"] == row[f"valid_{key}"]


def test_early_stopping_and_plateau_follow_the_selection(tiny_data, tmp_path, monkeypatch):
    """By BLEU, epochs 4 and 5 do not beat epoch 3: patience 2 stops after 5, and plateau (patience 1)
    halves the lr after each of them. By exact match the same rows would have improved at epoch 4."""
    logs = []
    trainer = Trainer(_cfg(tiny_data, tmp_path / "stop", select_by="bleu", patience=2, epochs=9,
                           lr_schedule="plateau", lr=0.01), log=logs.append)
    _scripted(monkeypatch, trainer, ROWS)
    result = trainer.run()
    assert result["epochs"] == 5
    assert any(line == "early stop: no better valid BLEU (or loss) for 2 epochs" for line in logs), logs
    rows = [json.loads(x) for x in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005])
    assert json.loads((tmp_path / "stop" / "last" / "state.json").read_text())["schedule"] == \
        {"name": "plateau", "scale": 0.25, "bad_epochs": 0}


def test_select_by_bleu_scores_bleu_even_where_the_task_does_not(tmp_path, monkeypatch):
    """The date task computes no BLEU; --select-by bleu turns it on."""
    real = training.load_data
    monkeypatch.setattr(training, "load_data", lambda cfg: {k: v[:200] for k, v in real(cfg).items()})
    monkeypatch.setattr(finish, "extra_tests", lambda name, d: {})
    result = train(dict(data="date", out=str(tmp_path / "b"), epochs=1, hidden_size=16, wordvec_size=8,
                        examples=0, select_by="bleu"), log=lambda *a: None)
    row = json.loads((tmp_path / "b" / "metrics.jsonl").read_text())
    assert "valid_bleu" in row and result["best_valid_bleu"] == row["valid_bleu"]


def test_resume_with_another_selection_takes_best_s_score_from_its_metrics_row(tiny_run, tmp_path):
    """tiny_run chose best/ by BLEU (a corpus); resumed --select-by exact, best/'s score is its exact match
    and loss from metrics.jsonl, so the next epoch replaces best/ only if it beats that."""
    run = tmp_path / "switch"
    shutil.copytree(tiny_run, run)
    best_epoch_ = json.loads((run / "best" / "state.json").read_text())["epoch"]
    row = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
               if json.loads(x)["epoch"] == best_epoch_)
    logs = []
    cfg = resolve_config(dict(out=str(run), resume=True, select_by="exact", epochs=2), RunDir(run).saved_options())
    trainer = Trainer(cfg, log=logs.append)
    assert trainer.best.score == [row["valid_exact_match"], -row["valid_loss"]] and trainer.best.by == "exact"
    assert "note: best/ was chosen by valid BLEU; from now on by valid exact match" in logs
    trainer.run_dir.unlock()


def test_resume_with_another_selection_and_no_record_starts_best_over(tiny_run, tmp_path):
    run = tmp_path / "norecord"
    shutil.copytree(tiny_run, run)
    (run / "metrics.jsonl").unlink()
    logs = []
    cfg = resolve_config(dict(out=str(run), resume=True, select_by="loss", epochs=3), RunDir(run).saved_options())
    trainer = Trainer(cfg, log=logs.append)
    assert trainer.best.score == selection.initial_best()
    assert any("the next epoch replaces it" in line for line in logs)
    trainer.run()
    assert json.loads((run / "best" / "state.json").read_text())["epoch"] == 3
