"""Scoring given pairs (issue 23): attnseq.score and ``attnseq score`` give each target's log-probability
as the training loss computes it, the beam's own score for the beam's output, the attention over the
reference (teacher forced), never truncate or skip a pair (longer ones are scored whole and flagged),
and name the line of any pair they cannot read."""
import json
import shutil

import numpy as np
import pytest

from golden_decoding import case_checkpoint, sources

import attnseq
from attnseq.cli import main
from attnseq.data.tokenizers import BOS_ID, EOS_ID
from attnseq.nn.search import log_softmax
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.inference import Translator


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return case_checkpoint("date-all", tmp_path_factory.mktemp("score"))


@pytest.fixture(scope="module")
def pairs():
    from attnseq.data.io import read_pairs
    from golden_decoding import ROOT
    return read_pairs(ROOT / "data" / "date" / "test.tsv")[:40]


def test_score_is_minus_the_training_loss(ckpt, pairs):
    """float64: the sum of -loss over a pair's tokens, as model.forward computes the training loss, to 1e-9."""
    ck = load_checkpoint(ckpt)
    model = ck.model.eval()
    assert model.config["label_smoothing"] == 0
    scored = attnseq.score(str(ckpt), [s for s, _ in pairs], [t for _, t in pairs], alpha=0.0)
    for (s, t), sc in zip(pairs, scored):
        src = np.array([ck.src_tok.encode(s)])
        tgt = np.array([[BOS_ID, *ck.tgt_tok.encode(t), EOS_ID]])
        n = tgt.shape[1] - 1
        assert sc.n_tokens == n and sc.tokens == ck.tgt_tok.pieces(tgt[0, 1:])
        assert sc.logprob == pytest.approx(-float(model.forward(src, tgt)) * n, abs=1e-9)
        assert sc.score == sc.logprob                                 # alpha 0: no length penalty
        gold = np.take_along_axis(log_softmax(model.logits(src, tgt))[0], tgt[0, 1:, None], axis=1)[:, 0]
        np.testing.assert_allclose(sc.token_logprobs, gold, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sc.weights, model.attention_weights[0], rtol=0, atol=1e-9)   # teacher forced
        assert sc.weights.shape == (n, len(sc.src_tokens)) and sc.over_limit == []


@pytest.mark.filterwarnings("ignore:.*over the model's limits")   # the batch's limit can exceed a row's own
def test_the_beams_output_scores_what_the_beam_gave_it(ckpt, pairs):
    tr = Translator(str(ckpt))
    srcs = [s for s, _ in pairs]
    for alpha in (0.0, 0.6, 1.0):
        found = tr.translate(srcs, beam=4, n_best=3, alpha=alpha, details=True)
        tok = tr.tgt_tok
        ended = [(s, c) for s, t in zip(srcs, found) for c in t.candidates
                 if c.out_tokens == tok.pieces(tok.encode(c.text)) + ["<eos>"]]
        assert len(ended) > len(srcs) // 2
        scored = tr.score([s for s, _ in ended], [c.text for _, c in ended], alpha=alpha)
        np.testing.assert_allclose([x.score for x in scored], [c.score for _, c in ended], rtol=1e-9)


def test_reversed_sources_and_pairs_over_the_limits_are_scored_whole(ckpt, tmp_path):
    """A run trained with --reverse-source --max-len 6: the attention comes back in source order; a source
    over 6 tokens is not truncated (as translate would) but scored whole and flagged; so is a target over
    the output-length rule."""
    rev = tmp_path / "rev"
    shutil.copytree(ckpt, rev)
    config = json.loads((rev / "config.json").read_text())
    config["train"].update(reverse_source=True, max_len=6)
    (rev / "config.json").write_text(json.dumps(config))
    ck = load_checkpoint(rev)
    srcs, tgts = ["1/2/03", "Tuesday, Sept 25 1984", "5/5/55"], ["2003-01-02", "1984-09-25", "5" * 60]
    with pytest.warns(UserWarning, match=r"2 pair\(s\) over the model's limits scored whole, not truncated "
                                         r"\(pair 2, 3\): source over 6 tokens"):
        scored = attnseq.score(str(rev), srcs, tgts)
    assert [s.over_limit for s in scored] == [[], ["source"], ["target"]]
    model = ck.model.eval()
    for s, t, sc in zip(srcs, tgts, scored):
        assert sc.src_tokens == ck.src_tok.pieces(ck.src_tok.encode(s))          # all of it, in source order
        src = np.array([ck.src_tok.encode(s)[::-1]])
        tgt = np.array([[BOS_ID, *ck.tgt_tok.encode(t), EOS_ID]])
        model.logits(src, tgt)
        np.testing.assert_allclose(sc.weights, model.attention_weights[0][:, ::-1], atol=1e-9)
        L = sc.n_tokens
        assert sc.score == pytest.approx(sc.logprob / ((5 + L) / 6), rel=1e-12)    # alpha 1 by default


def test_score_takes_what_explore_takes(ckpt, pairs):
    srcs, tgts = [s for s, _ in pairs[:5]], [t for _, t in pairs[:5]]
    want = [s.logprob for s in attnseq.score(str(ckpt), srcs, tgts)]
    for given in (ckpt, load_checkpoint(ckpt), Translator(str(ckpt)), [str(ckpt)]):
        assert [s.logprob for s in attnseq.score(given, srcs, tgts)] == want
    with pytest.raises(TypeError, match="needs a model with its tokenizers"):
        attnseq.score(load_checkpoint(ckpt).model, srcs, tgts)
    with pytest.raises(ValueError, match="targets: 4 given for 5 sources"):
        attnseq.score(str(ckpt), srcs, tgts[:4])
    for alpha in (-1, 1e300, float("nan")):                            # 1e300 overflowed the penalty once
        with pytest.raises(ValueError, match="alpha must be a number from 0 to 10"):
            attnseq.score(str(ckpt), srcs, tgts, alpha=alpha)
    texts = [t.text for t in attnseq.translate(str(ckpt), srcs, beam=2)]
    assert texts == [t.text for t in Translator(str(ckpt)).translate(srcs, beam=2)]


# -- the command -----------------------------------------------------------------------------------
def run_score(capsys, *argv):
    code = main(["score", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_output_types(ckpt, pairs, tmp_path, capsys):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\tcolumn 3 is ignored\n" for s, t in pairs) + "\n\n", encoding="utf-8")
    want = attnseq.score(str(ckpt), [s for s, _ in pairs], [t for _, t in pairs])
    code, out, _ = run_score(capsys, "--ckpt", str(ckpt), "--data", str(data))
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["line"] for r in rows] == list(range(1, len(pairs) + 1))
    for r, w in zip(rows, want):
        assert r == {**w.to_json(r["line"])} and set(r) == {"line", "score", "logprob", "n_tokens", "token_logprobs",
                                                            "tokens", "over_limit"}
    code, out, _ = run_score(capsys, "--ckpt", str(ckpt), "--data", str(data), "--output-type", "score")
    assert out.splitlines() == [f"{w.score:.6f}" for w in want]
    out_file = tmp_path / "scored.tsv"
    code, out, _ = run_score(capsys, "--ckpt", str(ckpt), "--data", str(data), "--output-type", "pair_with_score",
                             "--alpha", "0", "--output", str(out_file))
    assert code == 0 and out == ""
    assert out_file.read_text(encoding="utf-8").splitlines() == [f"{s}\t{t}\t{w.logprob:.6f}"
                                                                 for (s, t), w in zip(pairs, want)]


def test_cli_question_answer_file_and_ensemble(ckpt, pairs, tmp_path, capsys):
    data = tmp_path / "qa.txt"
    data.write_text("".join(f"{s}_{t}\n" for s, t in pairs[:6]), encoding="utf-8")
    other = case_checkpoint("date-book", tmp_path)
    code, out, _ = run_score(capsys, "--ckpt", str(ckpt), "--ckpt", str(other), "--data", str(data),
                             "--output-type", "score", "--ensemble-mode", "log_linear")
    want = attnseq.score([str(ckpt), str(other)], [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]],
                         ensemble_mode="log_linear")
    assert code == 0 and out.splitlines() == [f"{w.score:.6f}" for w in want]


@pytest.mark.parametrize("content, message", [
    ("a\tb\n\nc\td\n", ":2: blank line; every line of a file to score is a pair, source<TAB>target"),
    ("a\tb\nc d\n", ":2: expected source<TAB>target, found no <TAB>: 'c d'"),
    ("a\tb\nc\t \n", ":2: empty target"),
    ("a_b\n_d\n", ":2: empty source"),
    ("", ": file is empty"),
])
def test_cli_a_pair_it_cannot_read_is_named_by_its_line(ckpt, tmp_path, capsys, content, message):
    data = tmp_path / "bad.tsv"
    data.write_text(content, encoding="utf-8")
    out_file = tmp_path / "out.jsonl"
    code, out, err = run_score(capsys, "--ckpt", str(ckpt), "--data", str(data), "--output", str(out_file))
    assert code == 1 and out == "" and err.count("\n") == 1 and f"{data}{message}" in err, err
    assert not out_file.exists()


def test_cli_long_pairs_are_flagged_and_named(ckpt, tmp_path, capsys):
    data = tmp_path / "long.tsv"
    data.write_text("1/2/03\t2003-01-02\n5/5/55\t" + "5" * 80 + "\n", encoding="utf-8")
    code, out, err = run_score(capsys, "--ckpt", str(ckpt), "--data", str(data))
    assert code == 0 and [json.loads(line)["over_limit"] for line in out.splitlines()] == [[], ["target"]]
    assert "warning: 1 pair(s) over the model's limits scored whole, not truncated (line 2)" in err
    assert json.loads(out.splitlines()[1])["n_tokens"] == 81


@pytest.mark.parametrize("argv, message", [
    (["--data", "x.tsv"], "--ckpt RUN is required"),
    (["--ckpt", "r", "--data", "x.tsv", "--output-type", "bleu"], "argument --output-type: invalid choice: 'bleu'"),
    (["--ckpt", "r", "--data", "x.tsv", "--engine", "onnxruntime"], "--ckpt is for --engine attnseq"),
    (["--ckpt", "r", "--ckpt", "r", "--data", "x.tsv"], "--ckpt r is given twice"),
    (["--ckpt", "r", "--data", "x.tsv", "--weights", "1"], "--weights is for an ensemble"),
    (["--ckpt", "r", "--data", "x.tsv", "--batch-size", "0"], "argument --batch-size: must be a positive integer"),
])
def test_cli_bad_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_cli_help_says_what_happens_to_long_pairs(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Pairs are never skipped or truncated" in text and "is scored whole, flagged" in text
    assert "is an error naming the line" in text
