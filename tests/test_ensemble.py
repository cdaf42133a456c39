"""Ensembles (issue 23): each member's step on the same batch, log-probabilities combined linearly or
log-linearly with weights; an ensemble of one checkpoint is that checkpoint, of two copies in log_linear
mode is one; greedy, beam, sampling and score all take one; members of different model variants mix,
members with other vocabularies or source reversal are refused in one line naming the two."""
import json
import shutil

import numpy as np
import pytest

from golden_decoding import case_checkpoint, sources

from attnseq.cli import main
from attnseq.errors import ConfigError
from attnseq.nn.search import Ensemble, combine_log_probs, log_softmax
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.inference import Translator

SEARCHES = [dict(), dict(beam=3, n_best=2, alpha=0.6), dict(sample=True, seed=4, n_best=2),
            dict(beam=2, no_repeat_ngram=2, prefix="1")]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """date-book, a byte copy of it elsewhere, date-all (other model options, the same vocabularies) and
    toy-book (other vocabularies)."""
    d = tmp_path_factory.mktemp("ensemble")
    book = case_checkpoint("date-book", d)
    shutil.copytree(book, d / "copy")
    return dict(book=book, copy=d / "copy", all=case_checkpoint("date-all", d), toy=case_checkpoint("toy-book", d))


@pytest.fixture(scope="module")
def texts():
    return sources("date-book")


def same(a, b, exact=True):
    assert [t.nbest for t in a] == [t.nbest for t in b] if exact else [t.text for t in a] == [t.text for t in b]
    for x, y in zip(a, b):
        (np.testing.assert_array_equal if exact else np.testing.assert_allclose)(x.weights, y.weights)


def test_an_ensemble_of_one_is_that_checkpoint(ckpts, texts):
    one, alone = Translator([str(ckpts["book"])]), Translator(str(ckpts["book"]))
    assert one.engine is one.model                                   # no wrapper at all
    for kw in SEARCHES:
        same(one.translate(texts, **kw), alone.translate(texts, **kw))
    assert [s.logprob for s in one.score(texts, texts)] == [s.logprob for s in alone.score(texts, texts)]


@pytest.mark.parametrize("kw", SEARCHES)
def test_two_copies_in_log_linear_mode_are_one(ckpts, texts, kw):
    pair = Translator([str(ckpts["book"]), str(ckpts["copy"])], ensemble_mode="log_linear")
    alone = Translator(str(ckpts["book"]))
    assert isinstance(pair.engine, Ensemble)
    same(pair.translate(texts, **kw), alone.translate(texts, **kw), exact=kw == dict() or "beam" in kw)
    if kw.get("sample"):                                             # the same draws from the same distribution
        assert [t.nbest for t in pair.translate(texts, **kw)] == [t.nbest for t in alone.translate(texts, **kw)]


@pytest.mark.filterwarnings("ignore:.*over the model's limits")      # outputs cut at the limit, scored whole
def test_two_copies_score_as_one(ckpts, texts):
    refs = [t.text for t in Translator(str(ckpts["all"])).translate(texts)]
    for mode, check in (("log_linear", np.testing.assert_array_equal),
                        ("linear", lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12))):
        pair = Translator([str(ckpts["book"]), str(ckpts["copy"])], ensemble_mode=mode)
        got, want = pair.score(texts, refs), Translator(str(ckpts["book"])).score(texts, refs)
        for a, b in zip(got, want):
            check(a.token_logprobs, b.token_logprobs)
            check(a.weights, b.weights)


def test_the_combination_is_the_weighted_mixture(ckpts):
    """One step of an ensemble of two model variants (book and every option), by hand."""
    a, b = load_checkpoint(ckpts["book"]).model.eval(), load_checkpoint(ckpts["all"]).model.eval()
    src = np.array([[5, 9, 12, 4], [7, 3, 0, 0]])
    tokens = np.array([1, 1, 14, 5, 9, 9])                           # 3 rows per source
    steps = [m.start(src, 3, log_probs=True) for m in (a, b)]
    outs = [step(tokens, state) for step, state in steps]
    for mode in ("linear", "log_linear"):
        ens = Ensemble([a, b], weights=[1.0, 3.0], mode=mode)
        np.testing.assert_allclose(ens.weights, [0.25, 0.75])
        step, state = ens.start(src, 3)
        assert len(state) == len(steps[0][1]) + len(steps[1][1])      # the members' states, one after another
        logp, new, att = step(tokens, state)
        p1, p2 = np.exp(outs[0][0]), np.exp(outs[1][0])
        want = np.log(0.25 * p1 + 0.75 * p2) if mode == "linear" else 0.25 * outs[0][0] + 0.75 * outs[1][0]
        np.testing.assert_allclose(logp, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(att, 0.25 * outs[0][2] + 0.75 * outs[1][2], rtol=1e-12)
        for got, w in zip(new, (*outs[0][1], *outs[1][1])):
            np.testing.assert_array_equal(got, w)
    z = np.random.default_rng(0).standard_normal((2, 5))
    with pytest.raises(ValueError, match="ensemble mode must be one of linear, log_linear"):
        combine_log_probs([log_softmax(z)], [1.0], "mean")


@pytest.mark.filterwarnings("ignore:.*over the model's limits")
def test_an_ensemble_of_variants_searches_and_scores_alike(ckpts, texts):
    """The beam's score of its own output is the ensemble's score of that output; greedy differs from each member."""
    pair = Translator([str(ckpts["book"]), str(ckpts["all"])], weights=[2, 1])
    found = pair.translate(texts, beam=3, n_best=2, alpha=0.6, details=True)
    tok = pair.tgt_tok
    ended = [(src, c) for src, t in zip(texts, found) for c in t.candidates    # those whose text reads back as
             if c.out_tokens == tok.pieces(tok.encode(c.text)) + ["<eos>"]]    # its ids (no bos, not cut short)
    assert len(ended) > len(texts)
    scored = pair.score([src for src, _ in ended], [c.text for _, c in ended], alpha=0.6)
    assert [s.tokens for s in scored] == [c.out_tokens for _, c in ended]
    np.testing.assert_allclose([s.score for s in scored], [c.score for _, c in ended], rtol=1e-9)
    greedy = [t.text for t in pair.translate(texts)]
    assert greedy != [t.text for t in Translator(str(ckpts["book"])).translate(texts)]
    assert greedy != [t.text for t in Translator(str(ckpts["all"])).translate(texts)]


def one_line_config_error(*args, **kw):
    with pytest.raises(ConfigError) as e:
        Translator(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_members_that_cannot_be_one_ensemble(ckpts, tmp_path):
    book, toy = str(ckpts["book"]), str(ckpts["toy"])
    msg = one_line_config_error([book, toy])
    assert msg.startswith(f"{book} and {toy} have different source tokenizers (char, ") and "word" in msg
    msg = one_line_config_error([book, str(ckpts["book"] / ".." / ckpts["book"].name)])
    assert "are the same checkpoint" in msg
    reversed_ = tmp_path / "reversed"
    shutil.copytree(ckpts["copy"], reversed_)
    config = json.loads((reversed_ / "config.json").read_text())
    config["train"]["reverse_source"] = True
    (reversed_ / "config.json").write_text(json.dumps(config))
    assert "differ in source reversal (False; True)" in one_line_config_error([book, str(reversed_)])
    other = tmp_path / "other-vocab"
    shutil.copytree(ckpts["copy"], other)
    vocab = json.loads((other / "tgt_vocab.json").read_text())
    vocab["tokens"][-1], vocab["tokens"][-2] = vocab["tokens"][-2], vocab["tokens"][-1]   # same size, other order
    (other / "tgt_vocab.json").write_text(json.dumps(vocab))
    assert "have different target tokenizers" in one_line_config_error([book, str(other)])
    assert "weights: 3 given for 2 ensemble members" in one_line_config_error([book, str(ckpts["all"])],
                                                                             weights=[1, 2, 3])
    assert "weights must be positive" in one_line_config_error([book, str(ckpts["all"])], weights=[1, -1])
    assert "ensemble mode must be one of" in one_line_config_error([book, str(ckpts["all"])], ensemble_mode="max")


def test_cli_ensemble(ckpts, texts, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    base = ["translate", "--input", str(tmp_path / "in.txt")]
    assert main([*base, "--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["all"]), "--ensemble-mode", "log_linear",
                 "--weights", "1", "3", "--beam", "2"]) == 0
    want = Translator([str(ckpts["book"]), str(ckpts["all"])], ensemble_mode="log_linear", weights=[1, 3])
    assert capsys.readouterr().out.splitlines() == [t.text for t in want.translate(texts, beam=2)]
    for extra, message in (
            (["--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["book"])], f"--ckpt {ckpts['book']} is given twice:"),
            (["--ckpt", str(ckpts["book"]), "--weights", "2"], "--weights is for an ensemble: give --ckpt more than once"),
            (["--ckpt", str(ckpts["book"]), "--ensemble-mode", "log_linear"], "--ensemble-mode is for an ensemble"),
            (["--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["all"]), "--weights", "1"],
             "--weights: 1 given for 2 --ckpt members"),
            (["--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["all"]), "--weights", "1", "0"],
             "argument --weights: must be a number > 0, got '0'"),
            (["--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["all"]), "--ensemble-mode", "max"],
             "argument --ensemble-mode: invalid choice: 'max'")):
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert main([*base, "--ckpt", str(ckpts["book"]), "--ckpt", str(ckpts["toy"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "have different source tokenizers" in err
