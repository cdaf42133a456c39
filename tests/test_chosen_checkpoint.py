"""``--ckpt RUN`` means the checkpoint the run chose by validation (``attnseq.run.checkpoint.resolve``):
averaged/ when result.json says it scored higher on valid than best/, else best/. Both cases are built
here from one trained run: averaged/ is best/ with its output bias changed, so the two score apart."""
import json
import shutil

import numpy as np
import pytest

from attnseq import cli
from attnseq.cli import main
from attnseq.data.tokenizers import EOS_ID
from attnseq.run.checkpoint import chosen, load_checkpoint, resolve, save_checkpoint
from attnseq.run import selection
from attnseq.run.inference import Translator
from attnseq.run.report import chosen_line


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the tiny run with an averaged/ that is not best/ (its eos logit pushed down)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns(".lock"))
    ck = load_checkpoint(out / "best")
    ck.model.decoder.out.params[-1][EOS_ID] -= 5.0                  # the output layer's bias
    save_checkpoint(out / "averaged", ck.model, None, ck.src_tok, ck.tgt_tok, ck.config["train"],
                    dict(ck.state, averaged=dict(run=str(out), checkpoints=["epoch-0001", "epoch-0002"])))
    return out


def write_result(run, **entries):
    result = json.loads((run / "result.json").read_text())
    result.pop("chosen", None)
    (run / "result.json").write_text(json.dumps({**result, **entries}))


def eval_loss(ckpt, data, capsys) -> float:
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(data)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]


@pytest.mark.parametrize("case, means", [
    (dict(chosen="averaged"), "averaged"),
    (dict(chosen="best"), "best"),
    (dict(averaged=dict(better_than_best=True)), "averaged"),       # result.json from before "chosen"
    (dict(averaged=dict(better_than_best=False)), "best"),
    ({}, "best"),                                                   # no averaging
])
def test_run_means_averaged_exactly_when_result_json_says_it_beat_best(run, tiny_data, capsys, case, means):
    write_result(run, **case)
    assert chosen(run) == means and resolve(run) == run / means
    assert load_checkpoint(run).path == run / means
    assert resolve(run / "best") == run / "best" and resolve(run, prefer="best") == run / "best"
    assert eval_loss(run, tiny_data / "valid.tsv", capsys) == eval_loss(run / means, tiny_data / "valid.tsv", capsys)
    other = "best" if means == "averaged" else "averaged"
    assert eval_loss(run / other, tiny_data / "valid.tsv", capsys) != eval_loss(run / means, tiny_data / "valid.tsv",
                                                                                 capsys)


def test_every_command_resolves_run_the_same_way(run, tiny_data, tmp_path, capsys, monkeypatch):
    """translate, explore, plot-attention and the server's Translator take what eval takes: averaged/ here."""
    write_result(run, chosen="averaged")
    assert Translator(str(run)).ck.path == run / "averaged"
    src = tiny_data / "valid.tsv"
    lines = [s for s, _ in (line.split("\t")[:2] for line in src.read_text().splitlines()[:20])]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    outs = {}
    for ckpt in (run, run / "averaged", run / "best"):
        out = tmp_path / f"out-{ckpt.name}.txt"
        assert main(["translate", "--ckpt", str(ckpt), "--input", str(tmp_path / "in.txt"), "--output", str(out)]) == 0
        outs[ckpt.name] = out.read_text()
    assert outs["run"] == outs["averaged"] != outs["best"]
    page = tmp_path / "page.html"
    assert main(["explore", "--ckpt", str(run), "--data", str(src), "--n", "5", "--out", str(page)]) == 0
    from attnseq.explorer import explore_file
    assert explore_file(run, src, n=5).data["examples"] == explore_file(run / "averaged", src, n=5).data["examples"]
    plotted = []
    monkeypatch.setattr(cli, "plot_translations", lambda tr, *a, **k: plotted.append(tr.ck.path) or tmp_path / "p.png")
    for extra in ([], ["--wrong-only"]):                           # two ways plot-attention builds its Translator
        args = ["plot-attention", "--ckpt", str(run), "--data", str(src), "--n", "3", "--out", str(tmp_path / "p.png")]
        assert main(args + extra) == 0
    assert plotted == [run / "averaged", run / "averaged"]


def test_the_runs_last_line_says_what_run_means():
    by = selection.NAMES["bleu"]
    assert chosen_line("r", "averaged", by) == ("--ckpt r means r/averaged/: it scored higher than best/ by valid BLEU "
                                                "(--ckpt r/best names best/)")
    assert chosen_line("r", "best", by) == "--ckpt r means r/best/"


def test_averaged_is_not_chosen_when_it_is_missing(run):
    """result.json says averaged/ won, but averaged/ was removed: RUN means best/ (never a missing directory)."""
    write_result(run, chosen="averaged")
    shutil.rmtree(run / "averaged")
    assert resolve(run) == run / "best"


def test_a_run_without_result_json_resolves_as_before(run):
    (run / "result.json").unlink()
    assert resolve(run) == run / "best"
    (run / "result.json").write_text("{not json")
    assert resolve(run) == run / "best"
    shutil.rmtree(run / "best")
    assert resolve(run) == run / "last"


def test_export_takes_the_runs_choice(run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from attnseq.export import export_onnx
    write_result(run, chosen="averaged")
    d = export_onnx(run, tmp_path / "onnx")
    assert json.loads((d / "manifest.json").read_text())["provenance"]["checkpoint"] == str(run / "averaged")


def test_average_out_refuses_a_run_directory_whose_choice_is_averaged(run):
    """attnseq average --out RUN2, where RUN2 is a run whose choice is its averaged/: refused as a run, not
    taken for an earlier average to overwrite."""
    from attnseq.errors import ConfigError
    from attnseq.run.averaging import _check_out
    write_result(run, chosen="averaged")
    with pytest.raises(ConfigError, match="is not an earlier average"):
        _check_out(run, run.parent / "elsewhere")
    assert np.load(run / "best" / "weights.npz").files                 # untouched
