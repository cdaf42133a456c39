"""--keep-last K and attnseq average: the mean of the last K kept checkpoints, a checkpoint eval and translate take."""
import json
import shutil

import numpy as np
import pytest
from conftest import TINY

from attnseq.cli import main
from attnseq.errors import CheckpointError, ConfigError
from attnseq.run.averaging import average_run
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.rundir import RunDir
from attnseq.run.inference import Translator


@pytest.fixture(scope="module")
def kept_run(tiny_data, tmp_path_factory):
    """4 epochs with --keep-last 3: epoch-0002 .. epoch-0004 kept."""
    out = tmp_path_factory.mktemp("avg") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--epochs", "4", "--hidden-size", "16",
                 "--keep-last", "3", "--examples", "0"]) == 0
    return out


def _weights(path):
    with np.load(path / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def test_keep_last_keeps_the_last_epochs(kept_run):
    assert sorted(p.name for p in kept_run.glob("epoch-*")) == ["epoch-0002", "epoch-0003", "epoch-0004"]
    for epoch in (2, 3, 4):
        assert json.loads((kept_run / f"epoch-{epoch:04d}" / "state.json").read_text())["epoch"] == epoch
    for name in ("weights.npz", "optimizer.npz"):                     # the last one is last/
        assert (kept_run / "epoch-0004" / name).read_bytes() == (kept_run / "last" / name).read_bytes()


def test_average_is_the_mean_of_the_arrays(kept_run, tmp_path, capsys):
    out = tmp_path / "avg"
    assert main(["average", str(kept_run), "--last", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    parts = [_weights(kept_run / f"epoch-{e:04d}") for e in (3, 4)]
    got = _weights(out)
    assert sorted(got) == sorted(parts[0])
    for k, a in got.items():
        want = ((parts[0][k].astype(np.float64) + parts[1][k]) / 2).astype(parts[0][k].dtype)
        assert a.dtype == parts[0][k].dtype
        np.testing.assert_array_equal(a, want, err_msg=k)
    assert any(not np.array_equal(parts[0][k], parts[1][k]) for k in got)    # two different models were averaged
    state = json.loads((out / "state.json").read_text())
    assert state["averaged"] == dict(run=str(kept_run), checkpoints=["epoch-0003", "epoch-0004"], epochs=[3, 4],
                                     steps=[3 * 24, 4 * 24])
    assert not (out / "optimizer.npz").exists()


def test_the_average_loads_in_eval_and_translate(kept_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "avg3"
    average_run(kept_run, 3, out)
    assert main(["eval", "--ckpt", str(out), "--data", str(tiny_data / "test.tsv")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 200 and 0 <= result["exact_match"] <= 1
    src = tiny_data.joinpath("test.tsv").read_text().splitlines()[0].split("\t")[0]
    (tmp_path / "in.txt").write_text(src + "\n")
    assert main(["translate", "--ckpt", str(out), "--input", str(tmp_path / "in.txt")]) == 0
    text = capsys.readouterr().out.strip()
    assert text and text == Translator(out).translate([src])[0].text
    assert load_checkpoint(out).config["model"] == load_checkpoint(kept_run / "epoch-0004").config["model"]


def test_average_refuses_more_than_are_kept(kept_run, tmp_path, capsys):
    assert main(["average", str(kept_run), "--last", "4", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert err == (f"attnseq average: error: {kept_run} keeps 3 epoch checkpoint(s) (epoch-0002, epoch-0003, "
                   "epoch-0004); --last 4 needs 4 (train with --keep-last 4 or more)\n")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="--last must be a positive integer, got 0"):
        average_run(kept_run, 0, tmp_path / "a")


def test_average_refuses_checkpoints_that_differ(kept_run, tiny_data, tmp_path):
    """A kept checkpoint of another shape (hidden size 32) among them: one error naming both."""
    run = tmp_path / "mixed"
    shutil.copytree(kept_run, run)
    other = tmp_path / "other"
    assert main(["train", "--data", str(tiny_data), "--out", str(other), *TINY, "--epochs", "1", "--hidden-size", "32",
                 "--keep-last", "1", "--examples", "0"]) == 0
    shutil.copytree(other / "epoch-0001", run / "epoch-0005")
    with pytest.raises(CheckpointError, match=r"epoch-0004 and epoch-0005 have different model configs "
                                              r"\(hidden_size 16 vs 32\); cannot average them"):
        average_run(run, 2, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_average_refuses_arrays_of_another_shape_under_the_same_config(kept_run, tmp_path):
    run = tmp_path / "tampered"
    shutil.copytree(kept_run, run)
    w = _weights(run / "epoch-0004")
    name = next(k for k, a in w.items() if a.ndim == 2)
    w[name] = w[name][:, :-1]
    np.savez(run / "epoch-0004" / "weights.npz", **w)
    with pytest.raises(CheckpointError, match=rf"epoch-0004/weights.npz: {name} has shape"):
        average_run(run, 2, tmp_path / "a")


def test_average_out_must_be_new_or_an_earlier_average(kept_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not an earlier average"):
        average_run(kept_run, 2, taken)
    with pytest.raises(ConfigError, match="is the run directory"):
        average_run(kept_run, 2, kept_run)
    again = tmp_path / "again"
    average_run(kept_run, 2, again)
    average_run(kept_run, 3, again)                                  # an earlier average is replaced
    assert json.loads((again / "state.json").read_text())["averaged"]["epochs"] == [2, 3, 4]


def test_resume_from_an_average_is_refused(kept_run, tmp_path, capsys):
    out = tmp_path / "avg"
    average_run(kept_run, 2, out)
    before = sorted(p.name for p in out.iterdir())
    assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"attnseq train: error: --out {out} is an averaged checkpoint (attnseq average): it has "
                          "no optimizer state") and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before          # untouched: no lock, no last/ left behind
    assert RunDir(kept_run).kept()[-1][0] == 4


def test_train_average_last_writes_scores_and_reports_the_average(tiny_data, tmp_path, capsys):
    """--average-last 2: RUN/averaged/ is the mean of the last two kept epochs (as attnseq average
    makes it), scored on valid and test like best/, in the log and result.json; best/ is untouched."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--epochs", "3", "--hidden-size", "16",
                 "--keep-last", "2", "--average-last", "2", "--examples", "0"]) == 0
    log = capsys.readouterr().out
    line = next(l for l in log.splitlines() if l.startswith("averaged/ (epochs 2-3): valid exact"))
    assert "| test exact" in line and "than best/ by valid BLEU" in line        # a corpus: selected by BLEU
    want = average_run(out, 2, tmp_path / "by-hand")
    for k, a in _weights(want).items():
        np.testing.assert_array_equal(_weights(out / "averaged")[k], a, err_msg=k)
    result = json.loads((out / "result.json").read_text())["averaged"]
    assert result["epochs"] == [2, 3] and result["path"] == str(out / "averaged")
    assert main(["eval", "--ckpt", str(out / "averaged"), "--data", str(tiny_data / "test.tsv")]) == 0
    assert json.loads(capsys.readouterr().out)["exact_match"] == pytest.approx(result["test"]["exact_match"])
    rows = RunDir(out).read_metrics()                              # best/: the epoch best by (BLEU, -loss)
    best = max([r["valid_bleu"], -r["valid_loss"]] for r in rows)
    assert result["better_than_best"] == ([result["valid"]["bleu"], -result["valid"]["loss"]] > best)


def test_average_last_needs_as_many_kept(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *TINY, "--keep-last", "1",
                 "--average-last", "2"]) == 1
    assert "--average-last 2 needs --keep-last 2 or more (got 1)" in capsys.readouterr().err
