"""Training through the CLI, checkpoints, resume, the NaN guard, eval, translate and plots."""
import json
import re
import shutil

import numpy as np
import pytest
from conftest import TINY

from attnseq.run.checkpoint import load_checkpoint, save_checkpoint
from attnseq.cli import main
from attnseq.errors import CheckpointError, NonFiniteError
from attnseq.run.config import resolve_config
from attnseq.run.rundir import RunDir
from attnseq.run.training import Trainer


def test_train_writes_run_dir(tiny_run):
    for name in ("best", "last"):
        files = {p.name for p in (tiny_run / name).iterdir()}
        assert {"weights.npz", "optimizer.npz", "config.json", "state.json", "src_vocab.json",
                "tgt_vocab.json"} <= files
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "valid_loss", "valid_token_accuracy", "valid_exact_match", "samples_per_s"):
        assert key in rows[0]
    assert 0.0 <= rows[-1]["valid_exact_match"] <= 1.0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_refuses_to_overwrite_a_run(tiny_run, tiny_data, capsys):
    assert main(["train", "--data", str(tiny_data), "--out", str(tiny_run), *TINY]) == 1
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_resume_equals_uninterrupted(tiny_data, tmp_path):
    """Two epochs straight vs one epoch, stop, resume for the second: the same metrics and weights."""
    args = ["--data", str(tiny_data), *TINY, "--dropout", "0.1"]
    assert main(["train", "--out", str(tmp_path / "a"), *args]) == 0
    one = [a if a != "2" else "1" for a in args]  # --epochs 1
    assert main(["train", "--out", str(tmp_path / "b"), *one]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), *args, "--resume"]) == 0
    ra = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    drop = ("epoch_time_s", "samples_per_s", "elapsed_s")
    strip = lambda r: {k: v for k, v in r.items() if k not in drop}
    assert [strip(r) for r in ra] == [strip(r) for r in rb]
    wa = np.load(tmp_path / "a" / "last" / "weights.npz")
    wb = np.load(tmp_path / "b" / "last" / "weights.npz")
    for k in wa.files:
        np.testing.assert_array_equal(wa[k], wb[k])


def test_resume_refuses_changed_model_options(tiny_run, capsys):
    assert main(["train", "--out", str(tiny_run), "--resume", "--hidden-size", "64", "--no-plot"]) == 1
    assert "--hidden-size differ from the run" in capsys.readouterr().err


def test_checkpoint_round_trip(tiny_run, tmp_path):
    ck = load_checkpoint(tiny_run, with_optimizer=True)
    assert ck.path.name == "best" and ck.optimizer["t"] > 0
    save_checkpoint(tmp_path / "copy", ck.model, None, ck.src_tok, ck.tgt_tok, ck.config["train"], ck.state)
    ck2 = load_checkpoint(tmp_path / "copy")
    for (k, a), (_, b) in zip(ck.model.state_dict().items(), ck2.model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def _copy(run, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(run / "best", dst)
    return dst


def test_corrupt_weights_are_refused(tiny_run, tmp_path):
    ck = _copy(tiny_run, tmp_path)
    data = (ck / "weights.npz").read_bytes()
    (ck / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="weights.npz: corrupt or truncated"):
        load_checkpoint(ck)


def test_wrong_shape_is_refused(tiny_run, tmp_path):
    ck = _copy(tiny_run, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"]["hidden_size"] = 48
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"encoder.lstm.Wx has shape \(8, 128\), the model needs \(8, 192\)"):
        load_checkpoint(ck)


def test_malformed_config_is_refused(tiny_run, tmp_path):
    ck = _copy(tiny_run, tmp_path)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: malformed JSON"):
        load_checkpoint(ck)


def test_vocab_mismatch_is_refused(tiny_run, tmp_path):
    ck = _copy(tiny_run, tmp_path)
    vocab = json.loads((ck / "tgt_vocab.json").read_text())
    vocab["tokens"].append("Z")
    (ck / "tgt_vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match="target vocabulary has .* entries but the weights expect"):
        load_checkpoint(ck)


def test_object_array_is_refused(tiny_run, tmp_path):
    ck = _copy(tiny_run, tmp_path)
    arrays = dict(np.load(ck / "weights.npz"))
    arrays["encoder.embed.W"] = np.array([object()], dtype=object)
    np.savez(ck / "weights.npz", **arrays)
    with pytest.raises(CheckpointError, match="object array"):
        load_checkpoint(ck)


def poison_loss(monkeypatch, trainer, calls_to_poison, factor):
    """Multiply the loss by ``factor`` (nan, inf) on the given forward calls (1-based).

    ``trainer.runner`` is what training calls: the model, or its data-parallel wrapper.
    """
    real_forward, calls = trainer.runner.forward, {"n": 0}

    def poisoned(src, tgt):
        calls["n"] += 1
        loss = real_forward(src, tgt)
        return loss * np.float32(factor) if calls["n"] in calls_to_poison else loss
    monkeypatch.setattr(trainer.runner, "forward", poisoned)


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY[:-1], "--epochs", "1"]) == 0
    before = (out / "last" / "weights.npz").read_bytes()
    cfg = resolve_config(dict(out=str(out), epochs=2, resume=True, examples=0), RunDir(out).saved_options())
    trainer = Trainer(cfg, log=lambda *a: None)
    poison_loss(monkeypatch, trainer, (5,), "nan")
    with pytest.raises(NonFiniteError, match=r"step 29 \(epoch 2\): loss is nan"):
        trainer.run()
    assert (out / "last" / "weights.npz").read_bytes() == before


def test_skip_nonfinite_counts_and_goes_on(tiny_data, tmp_path, monkeypatch):
    cfg = resolve_config(dict(data=str(tiny_data), out=str(tmp_path / "skip"), epochs=1, hidden_size=16,
                              wordvec_size=8, batch_size=64, skip_nonfinite=True, examples=0, tokenizer="char"))
    trainer = Trainer(cfg, log=lambda *a: None)
    poison_loss(monkeypatch, trainer, (3, 7), "inf")
    trainer.run()
    row = json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["nonfinite_skipped"] == 2 and np.isfinite(row["train_loss"])


def test_eval_prints_one_json_line(tiny_run, tiny_data, tmp_path, capsys):
    assert main(["eval", "--ckpt", str(tiny_run), "--data", str(tiny_data / "test.tsv"),
                 "--output", str(tmp_path / "pred.txt")]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert {"n", "loss", "token_accuracy", "exact_match", "bleu", "chrf"} <= set(result)
    assert result["n"] == 200 and 0 <= result["exact_match"] <= 1 and 0 <= result["bleu"] <= 100
    assert len((tmp_path / "pred.txt").read_text().splitlines()) == 200


def test_plot_curves_reads_metrics(tiny_run, tmp_path):
    out = tmp_path / "curves.png"
    assert main(["plot-curves", str(tiny_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_reads_old_rows_with_test_scores_beside_new_ones(tmp_path, monkeypatch):
    """metrics.jsonl of a run resumed across versions: its old rows hold test scores (written every epoch
    then), its new rows valid BLEU; each curve is drawn over the epochs whose rows hold it."""
    from attnseq import plotting
    rows = [dict(epoch=1, train_loss=2.0, valid_loss=2.1, valid_token_accuracy=0.5, valid_exact_match=0.1,
                 test_exact_match=0.12, test_loss=2.2, test_eval_s=0.5),
            dict(epoch=2, train_loss=1.0, valid_loss=1.1, valid_token_accuracy=0.7, valid_exact_match=0.3,
                 valid_bleu=20.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figs = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, out: figs.append(fig) or out)
    assert main(["plot-curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in figs[0].axes[1].get_lines()}
    plotting._plt().close(figs[0])
    assert lines["test exact match"] == ([1], [pytest.approx(12.0)])
    assert lines["valid BLEU"] == ([2], [20.0])
    assert lines["valid exact match"] == ([1, 2], [pytest.approx(10.0), pytest.approx(30.0)])


def test_plot_curves_marks_best_and_averaged(tmp_path, monkeypatch):
    """plot-curves marks best/ (its epoch, from best/state.json: a star on its valid loss and scores) and
    averaged/ (result.json's "averaged": its epochs shaded, a diamond on its valid scores at the last one)."""
    from attnseq import plotting
    rows = [dict(epoch=e, step=10 * e, train_loss=2.0 / e, valid_loss=l, valid_token_accuracy=a, valid_exact_match=x)
            for e, l, a, x in ((1, 2.0, 0.5, 0.1), (2, 1.2, 0.8, 0.6), (3, 1.4, 0.7, 0.4), (4, 1.5, 0.7, 0.45))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "config.json").write_text("{}")
    (tmp_path / "best" / "state.json").write_text(json.dumps({"epoch": 2}))
    averaged = dict(epochs=[3, 4], valid=dict(loss=1.1, token_accuracy=0.85, exact_match=0.65))
    (tmp_path / "result.json").write_text(json.dumps({"averaged": averaged}))
    figs = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, out: figs.append(fig) or out)
    assert main(["plot-curves", str(tmp_path)]) == 0
    loss, scores = ({line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
                    for ax in figs[0].axes[:2])
    spans = [p.get_x() for p in figs[0].axes[1].patches]
    plotting._plt().close(figs[0])
    assert loss["best/ (epoch 2)"] == ([2], [1.2]) and loss["averaged/ (epochs 3-4)"] == ([4], [1.1])
    assert scores["best/ (epoch 2)"] == ([2, 2], [pytest.approx(60.0), pytest.approx(80.0)])
    assert scores["averaged/ (epochs 3-4)"] == ([4, 4], [pytest.approx(65.0), pytest.approx(85.0)])
    assert scores["valid exact match"][1] == [pytest.approx(100 * r["valid_exact_match"]) for r in rows]
    assert spans == [2.5]
    (tmp_path / "result.json").unlink()                                  # a run still going: best/ only
    assert main(["plot-curves", str(tmp_path)]) == 0
    labels = [line.get_label() for line in figs[1].axes[0].get_lines()]
    assert [label for label in labels if not label.startswith("_")] == ["train", "valid", "best/ (epoch 2)"]


def test_the_test_split_is_scored_once_at_the_end(tiny_data, tmp_path, monkeypatch):
    """No test scores while training, neither in the epoch lines nor in metrics.jsonl: the test split is
    decoded after the last epoch, once on best/ and once on averaged/ (--average-last)."""
    from attnseq.run import training
    from attnseq.run.rundir import RunDir
    out, real, calls, logs = tmp_path / "end", training.evaluate, [], []

    def spy(model, data, *a, **k):                  # (is it the test split, metrics rows written so far)
        calls.append((data is trainer.sets["test"], len(RunDir(out).read_metrics())))
        return real(model, data, *a, **k)
    monkeypatch.setattr(training, "evaluate", spy)
    trainer = Trainer(resolve_config(dict(data=str(tiny_data), out=str(out), epochs=3, hidden_size=16, wordvec_size=8,
                                          batch_size=64, tokenizer="char", examples=0, keep_last=2, average_last=2)),
                      log=logs.append)
    result = trainer.run()
    assert [rows for is_test, rows in calls if is_test] == [3, 3]              # best/, averaged/: after epoch 3
    assert [rows for is_test, rows in calls if not is_test][:3] == [0, 1, 2]    # valid, at each epoch's end
    rows = RunDir(out).read_metrics()
    assert len(rows) == 3 and not [k for r in rows for k in r if k.startswith("test")]
    epoch_lines = [line for line in logs if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and not any("test" in line for line in epoch_lines)
    assert result["test"]["n"] == 200 and result["averaged"]["test"]["n"] == 200
    assert any(line.startswith("test (200 pairs, best/)") for line in logs)
    chosen = "averaged" if result["averaged"]["better_than_best"] else "best"   # the run's choice, said last
    assert result["chosen"] == chosen and logs[-1].startswith(f"--ckpt {out} means {out}/{chosen}/")
    assert json.loads((out / "result.json").read_text())["chosen"] == chosen


def test_config_file_and_flags(tiny_data, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{tiny_data}"\nhidden-size = 16\nwordvec_size = 8\nepochs = 3\nbatch_size = 64\n')
    assert main(["train", "--config", str(toml), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-plot",
                 "--examples", "0"]) == 0
    cfg = json.loads((tmp_path / "r" / "last" / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 16 and cfg["train"]["epochs"] == 1


def test_reverse_source_is_undone_for_display(tiny_data, tmp_path):
    """Trained on reversed sources, translate still shows the source in reading order, weights aligned to it."""
    from attnseq.run.inference import Translator
    out = tmp_path / "rev"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--epochs", "1", "--reverse-source"]) == 0
    tr = Translator(str(out))
    fwd = tr.translate(["Sept 25, 1984"])[0]
    assert "".join(fwd.src_tokens) == "Sept 25, 1984"
    assert fwd.weights.shape == (len(fwd.out_tokens), 13)
    # the weights are the reversed model's, flipped back: feeding the reversed text by hand gives them mirrored
    tr.reverse = False
    raw = tr.translate(["4891 ,52 tpeS"])[0]
    np.testing.assert_allclose(raw.weights[:, ::-1], fwd.weights, atol=1e-6)


@pytest.mark.parametrize("damage, message", [
    (lambda d: np.savez(d / "optimizer.npz", t=np.array(1), lr=np.array(0.1)), r"optimizer.npz: array names"),
    (lambda d: (d / "state.json").write_text('{"epoch": 1}'), r"state.json: missing or malformed field"),
])
def test_resume_from_a_damaged_run_is_a_clear_error(tiny_run, tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for name in ("best", "last"):
        damage(run / name)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_training_flags_reach_the_run(tiny_data, tmp_path, capsys):
    """--optimizer, --lr-decay, --weight-decay, --init, --dtype, --no-bucket, --max-len, --swap-sides."""
    out = tmp_path / "flags"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--epochs", "2", "--optimizer",
                 "momentum", "--lr", "0.05", "--lr-decay", "0.5", "--weight-decay", "1e-4", "--init", "he",
                 "--dtype", "float64", "--no-bucket", "--max-len", "14", "--swap-sides"]) == 0
    assert "pairs longer than --max-len 14 were left out" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [0.05, 0.025]
    assert rows[0]["padding_fraction"] > 0.05                       # random batches, not buckets
    ck = load_checkpoint(out, with_optimizer=True)
    train = ck.config["train"]
    assert (train["optimizer"], train["init"], train["weight_decay"], train["swap_sides"]) == ("momentum", "he", 1e-4, True)
    assert all(p.dtype == np.float64 for p in ck.model.parameters())
    assert any(k.endswith("/v") for k in ck.optimizer)               # momentum's velocity
    assert set(ck.src_tok.tokens[4:]) <= set("0123456789-")          # swapped: ISO dates are the sources


def test_patience_stops_early(tiny_data, tmp_path, monkeypatch):
    import attnseq.run.training as training
    real = training.evaluate

    def flat(model, data, *a, **k):  # the same score every epoch: never an improvement after the first
        r = real(model, data, *a, **k)
        r.update(exact_match=0.5, loss=1.0)
        if "bleu" in r:                                  # a data directory selects by BLEU: flat too
            r.update(bleu=10.0, chrf=10.0)
        return r

    monkeypatch.setattr(training, "evaluate", flat)
    logs = []
    cfg = resolve_config(dict(data=str(tiny_data), out=str(tmp_path / "p"), epochs=9, patience=2, hidden_size=16,
                              wordvec_size=8, tokenizer="char", examples=0))
    result = Trainer(cfg, log=logs.append).run()
    assert result["epochs"] == 3 and any("early stop" in line for line in logs)


def test_final_test_scores_are_best_slash_on_the_test_split(tiny_data, tmp_path, capsys):
    """result.json's test scores (computed from best/ at the end of the run) are what attnseq eval gives
    for best/ on the test split, including after a resume whose epoch (at lr 0.5) does not beat best/."""
    out = tmp_path / "r"
    for more in (["--epochs", "2"], ["--epochs", "3", "--resume", "--lr", "0.5"]):   # epoch 3: worse
        assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, *more]) == 0
        capsys.readouterr()
        assert main(["eval", "--ckpt", str(out), "--data", str(tiny_data / "test.tsv")]) == 0
        want = json.loads(capsys.readouterr().out)
        got = json.loads((out / "result.json").read_text())["test"]
        for key in ("n", "exact_match", "token_accuracy", "loss", "bleu", "chrf"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert json.loads((out / "best" / "state.json").read_text())["epoch"] == 2     # epoch 3 did not beat it
