"""The longest output: fitted to the training split and saved in config.json; 2 * Ts + 10 for checkpoints
saved before; ``--max-output-len`` (train, eval, translate, explore, plot-attention) wins over both.

The task here is the case the old fixed rule broke: each source letter becomes six target tokens
("ab" -> "A12345B12345"), so a 4-letter source needs 25 output tokens (eos included) where
2 * Ts + 10 allows 18.
"""
import itertools
import json
import shutil

import numpy as np
import pytest

from attnseq.cli import main
from attnseq.data.batching import encode_pairs
from attnseq.data.io import read_pairs
from attnseq.errors import CheckpointError, ConfigError
from attnseq.explorer import read_embedded
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.config import resolve_config
from attnseq.nn.output_length import LEGACY_RULE, MIN_MARGIN, OutputLengthRule
from attnseq.run.evaluation import evaluate
from attnseq.run.inference import Translator, TranslatorBase, evaluate_file

EXPAND = 6
TRAIN = ["--tokenizer", "char", "--hidden-size", "32", "--wordvec-size", "8", "--batch-size", "32",
         "--lr", "0.01", "--examples", "0", "--no-plot"]


def expansion_pairs():
    """Every source of 1-4 letters over "abcd", each letter x becoming X12345 (six target tokens)."""
    sources = ["".join(t) for n in range(1, 5) for t in itertools.product("abcd", repeat=n)]
    return [(s, "".join(c.upper() + "12345" for c in s)) for s in sources]


@pytest.fixture(scope="module")
def expand_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("expand")
    pairs = expansion_pairs()
    order = np.random.default_rng(0).permutation(len(pairs))
    rows = "".join(f"{pairs[k][0]}\t{pairs[k][1]}\n" for k in order)
    (d / "train.tsv").write_text(rows * 3, encoding="utf-8")
    for split in ("valid", "test"):
        (d / f"{split}.tsv").write_text(rows, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def expand_run(expand_data, tmp_path_factory):
    """A model trained through the CLI until it gets the task right (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "expand"
    assert main(["train", "--data", str(expand_data), "--out", str(out), "--epochs", "16", *TRAIN]) == 0
    return out


def legacy_share(pairs) -> float:
    """The share of pairs whose target text fits in 2 * Ts + 10 tokens (chars here): what the old rule
    leaves uncut when each row is its own batch."""
    return float(np.mean([len(t) <= LEGACY_RULE(len(s)) for s, t in pairs]))


# -- the rule --------------------------------------------------------------------------------------
def test_fit_follows_the_ratio_and_covers_every_pair():
    src = np.array([1, 2, 3, 4])
    # ratios (6 Ts + 1) / Ts = 7, 6.5, 6.33, 6.25: 99th percentile 6.985 -> 7; 7 Ts covers all; offset 10
    assert OutputLengthRule.fit(src, EXPAND * src + 1) == OutputLengthRule(7, 10)
    # one odd pair (1 source token, 40 output tokens) among 999 (10, 11): the offset takes it, not the slope
    src, out = np.r_[np.full(999, 10), 1], np.r_[np.full(999, 11), 40]
    assert OutputLengthRule.fit(src, out) == OutputLengthRule(2, 40 - 2 + MIN_MARGIN)
    # long outputs: the margin is a tenth of the longest (20 > 10)
    assert OutputLengthRule.fit([50], [200]) == OutputLengthRule(4, 20)
    # date-like data (6-30 chars in, 11 tokens out) keeps the old rule exactly
    assert OutputLengthRule.fit(np.arange(6, 31), np.full(25, 11)) == LEGACY_RULE


def test_fit_never_cuts_a_training_pair_nor_goes_below_the_old_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        src = rng.integers(1, 40, 300)
        out = np.maximum(1, (src * rng.uniform(0.2, 9)).astype(int) + rng.integers(-3, 20, 300))
        rule = OutputLengthRule.fit(src, out)
        assert all(rule(s) >= o + MIN_MARGIN for s, o in zip(src, out))
        assert all(rule(ts) >= LEGACY_RULE(ts) for ts in range(1, 500))
    with pytest.raises(ValueError, match="positive"):
        OutputLengthRule.fit([3, 0], [4, 4])
    with pytest.raises(ValueError):
        OutputLengthRule.fit([], [])


@pytest.mark.parametrize("text, want", [("60", (0, 60)), (60, (0, 60)), ("3*Ts+5", (3, 5)),
                                        (" 3 * ts - 2 ", (3, -2)), ("2*Ts", (2, 0))])
def test_parse(text, want):
    rule = OutputLengthRule.parse(text)
    assert (rule.scale, rule.offset) == want
    assert OutputLengthRule.parse(rule.text) == rule                   # the text reads back


@pytest.mark.parametrize("text", ["x", "0", "-3", "2*Ts-2", "1.5*Ts", "Ts+3", ""])
def test_parse_refuses(text):
    with pytest.raises(ValueError):
        OutputLengthRule.parse(text)


def test_a_bad_rule_is_named(tmp_path, expand_run):
    with pytest.raises(ConfigError, match="--max-output-len must be N .*got 'lots'"):
        resolve_config(dict(data="date", out=str(tmp_path / "r"), max_output_len="lots"))
    ckpt = tmp_path / "bad"
    shutil.copytree(expand_run / "best", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["max_output_len"] = {"scale": -1, "offset": 3}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"bad/config.json: max_output_len: expected") as e:
        load_checkpoint(ckpt)
    assert "\n" not in str(e.value)


# -- a run: fitted, saved, not cut -------------------------------------------------------------------
def test_the_fitted_rule_is_saved_in_config_json(expand_run, expand_data):
    ck = load_checkpoint(expand_run)
    enc = encode_pairs(read_pairs(expand_data / "train.tsv"), ck.src_tok, ck.tgt_tok)
    out_len = enc.tgt_len - 1                                           # target tokens and eos
    want = OutputLengthRule.fit(enc.src_len, out_len)
    for name in ("best", "last"):
        assert json.loads((expand_run / name / "config.json").read_text())["max_output_len"] == want.to_json()
    assert ck.model.output_len_rule == want
    assert all(want(s) >= n + MIN_MARGIN for s, n in zip(enc.src_len, out_len))
    assert np.mean([n > LEGACY_RULE(s) for s, n in zip(enc.src_len, out_len)]) > 0.5   # the old rule: most cut


def test_long_outputs_are_no_longer_cut(expand_run, expand_data, capsys):
    """All right with the fitted rule; with the old one exactly the pairs it cuts are wrong."""
    assert main(["eval", "--ckpt", str(expand_run), "--data", str(expand_data / "test.tsv")]) == 0
    assert json.loads(capsys.readouterr().out)["exact_match"] == 1.0
    ck = load_checkpoint(expand_run)
    pairs = read_pairs(expand_data / "test.tsv")
    enc = encode_pairs(pairs, ck.src_tok, ck.tgt_tok)
    old = evaluate(ck.model, enc, ck.tgt_tok, batch_size=1, max_len=LEGACY_RULE)
    assert old["exact_match"] == legacy_share(pairs) < 0.1
    assert old["token_accuracy"] == 1.0                                 # teacher forced: the model is right


def test_checkpoints_saved_without_a_rule_keep_two_ts_plus_ten(expand_run, expand_data, tmp_path):
    ckpt = tmp_path / "old"
    shutil.copytree(expand_run / "best", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    del config["max_output_len"]                                        # as written before rules were fitted
    (ckpt / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(ckpt).model.output_len_rule == LEGACY_RULE
    pairs = read_pairs(expand_data / "test.tsv")
    assert evaluate_file(str(ckpt), str(expand_data / "test.tsv"), batch_size=1)["exact_match"] == legacy_share(pairs)
    for beam in (1, 3):
        out = Translator(str(ckpt)).translate(["abcd"], beam=beam)[0]
        assert len(out.out_tokens) == LEGACY_RULE(4) and out.out_tokens[-1] != "<eos>"


def test_resuming_an_old_run_keeps_its_rule(expand_run, tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(expand_run, run)
    for name in ("best", "last"):
        path = run / name / "config.json"
        config = json.loads(path.read_text())
        del config["max_output_len"]
        path.write_text(json.dumps(config))
    epochs = json.loads((run / "last" / "state.json").read_text())["epoch"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(epochs + 1), "--patience", "50"]) == 0
    assert json.loads((run / "last" / "config.json").read_text())["max_output_len"] == LEGACY_RULE.to_json()


# -- --max-output-len wins -------------------------------------------------------------------------
def test_the_override_wins_in_eval_translate_and_explore(expand_run, expand_data, tmp_path, capsys):
    test = str(expand_data / "test.tsv")
    pairs = read_pairs(test)
    ones = float(np.mean([len(s) == 1 for s, _ in pairs]))              # 7 tokens: 1-letter sources only
    for flag in (["--max-output-len", "7"], ["--max-output-len", "2*Ts+10", "--batch-size", "1"]):
        assert main(["eval", "--ckpt", str(expand_run), "--data", test, *flag]) == 0
        got = json.loads(capsys.readouterr().out)["exact_match"]
        assert got == (ones if flag[1] == "7" else legacy_share(pairs))
    for flag in (["--max-output-len", "8"], ["--max-len", "8"], ["--max-output-len", "1*Ts+4", "--beam", "3"]):
        assert main(["translate", "--ckpt", str(expand_run), "--input", str(_lines(tmp_path, "abcd", "a")),
                     *flag]) == 0
        assert capsys.readouterr().out.splitlines() == ["A12345B1", "A12345"]
    page = tmp_path / "page.html"
    assert main(["explore", "--ckpt", str(expand_run), "--data", test, "--n", "0", "--out", str(page),
                 "--max-output-len", "7"]) == 0
    data = read_embedded(page.read_text(encoding="utf-8"))
    assert data["summary"]["exact_match"] == ones
    assert max(len(e["hyps"][0]["tokens"]) for e in data["examples"]) == 7


def test_the_override_wins_in_plot_attention(expand_run, tmp_path, monkeypatch):
    lengths = []
    real = TranslatorBase.translate
    monkeypatch.setattr(TranslatorBase, "translate",
                        lambda self, *a, **kw: [lengths.append(len(t.out_tokens)) or t for t in real(self, *a, **kw)])
    out = tmp_path / "att.png"
    assert main(["plot-attention", "--ckpt", str(expand_run), "--text", "abcd", "--out", str(out),
                 "--max-output-len", "9"]) == 0
    assert out.exists() and lengths == [9]
    assert main(["plot-attention", "--ckpt", str(expand_run), "--text", "abcd", "--out", str(out)]) == 0
    assert lengths == [9, 4 * EXPAND + 1]                              # the fitted rule: not cut, eos included


def test_the_override_wins_in_train(expand_run, tmp_path):
    """--max-output-len cuts the run's own validation and test decoding; the checkpoint keeps its fitted rule."""
    run = tmp_path / "capped"
    shutil.copytree(expand_run, run)
    epochs = json.loads((run / "last" / "state.json").read_text())["epoch"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(epochs + 1), "--patience", "50",
                 "--max-output-len", "7"]) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["epoch"] == epochs + 1
    ones = float(np.mean([len(s) == 1 for s, _ in expansion_pairs()]))
    test = json.loads((run / "result.json").read_text())["test"]                # best/'s, at the end
    assert row["valid_exact_match"] <= ones and test["exact_match"] <= ones
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["train"]["max_output_len"] == "7"
    assert config["max_output_len"] == json.loads((expand_run / "last" / "config.json").read_text())["max_output_len"]


def _lines(tmp_path, *lines):
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
