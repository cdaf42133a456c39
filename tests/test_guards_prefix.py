"""Guards and target prefixes (issue 23), for every search: --no-repeat-ngram never lets an n-gram repeat
(property test over random small models), --min-output-len holds eos back, --repetition-penalty is CTRL's on
log-probabilities; an empty prefix is no prefix, a prefix equal to the greedy output's start gives that
output, and every beam hypothesis and sample starts with the prefix. All off by default."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden_decoding import case_checkpoint, sources

from attnseq.cli import main
from attnseq.nn.model import AttentionSeq2seq
from attnseq.nn.search import Decoding, Guards, Sampling, constrain, log_softmax, run_search
from attnseq.nn.search.processors import process
from attnseq.run.inference import Translator

SEARCHES = {"greedy": Decoding(), "beam": Decoding(beam=3, n_best=3),
            "sample": Decoding(n_best=3, sampling=Sampling())}


def small_model(seed: int, V: int = 7, eos_bias: float = -2.0):
    """A float64 model over a tiny target vocabulary (4 real tokens), so outputs repeat themselves."""
    model = AttentionSeq2seq(9, V, 4, 8, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: rng.standard_normal(v.shape) * 1.5 for k, v in model.state_dict().items()})
    model.state_dict()["decoder.out.b"][model.eos_id] = eos_bias
    return model.eval()


def sources_batch(seed: int, N: int = 5, Ts: int = 6):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 9, (N, Ts))
    for n, L in enumerate(rng.integers(1, Ts + 1, N)):
        src[n, L:] = 0
    return src


def outputs(model, src, decoding, max_len=14, seed=0, prefixes=None):
    found = run_search(model, src, max_len, decoding, prefixes, np.random.default_rng(seed))
    return [[list(h.ids[:-1] if len(h.ids) and h.ids[-1] == model.eos_id else h.ids) for h in hyps] for hyps in found]


def repeats(ids, n):
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(list(SEARCHES)), st.sampled_from([1, 2, 3]))
def test_no_repeat_ngram_never_outputs_an_ngram_twice(seed, search, n):
    model, src = small_model(seed), sources_batch(seed)
    decoding = Decoding(**{**SEARCHES[search].__dict__, "guards": Guards(no_repeat_ngram=n)})
    for hyps in outputs(model, src, decoding, seed=seed):
        for ids in hyps:
            assert repeats(ids, n) == 0, (ids, n)


def test_without_the_guard_the_same_models_repeat():
    """The property above is not vacuous: unguarded, these models' outputs repeat bigrams."""
    found = [ids for seed in range(5) for hyps in outputs(small_model(seed), sources_batch(seed), Decoding())
             for ids in hyps]
    assert sum(repeats(ids, 2) > 0 for ids in found) > len(found) // 2


@pytest.mark.parametrize("search", SEARCHES)
def test_min_output_len_holds_eos_back(search):
    model, src = small_model(1, eos_bias=30.0), sources_batch(1)      # eos first, unguarded
    assert all(hyps[0] == [] for hyps in outputs(model, src, SEARCHES[search]))
    decoding = Decoding(**{**SEARCHES[search].__dict__, "guards": Guards(min_output_len=4)})
    found = run_search(model, src, 14, decoding, None, np.random.default_rng(0))
    for hyps in found:
        assert len(hyps[0].ids) == 5 and hyps[0].ids[-1] == model.eos_id   # 4 tokens, then eos at once
        assert all(len(h.ids) >= 5 for h in hyps)


def test_repetition_penalty_is_ctrls_on_log_probabilities():
    rng = np.random.default_rng(0)
    logp = log_softmax(rng.standard_normal((3, 6)))
    emitted = np.array([[3, 3], [4, 5], [0, 0]])
    got = process(logp, emitted, 2, Guards(repetition_penalty=2.5))
    seen = np.zeros((3, 6), dtype=bool)
    seen[[0, 1, 1, 2], [3, 4, 5, 0]] = True
    np.testing.assert_allclose(got, log_softmax(np.where(seen, 2.5 * logp, logp)), rtol=1e-12)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0)
    assert (got[seen] < logp[seen]).all() and (got[~seen] > logp[~seen]).all()
    loops = [ids for seed in range(4) for hyps in outputs(small_model(seed), sources_batch(seed), Decoding())
             for ids in hyps]
    fewer = [ids for seed in range(4) for hyps in outputs(small_model(seed), sources_batch(seed),
                                                          Decoding(guards=Guards(repetition_penalty=3.0)))
             for ids in hyps]
    assert sum(repeats(i, 1) for i in fewer) < 0.85 * sum(repeats(i, 1) for i in loops)


def test_guards_are_off_by_default():
    def step(tokens, state):
        return None
    state = (np.zeros((2, 3)),)
    assert constrain(step, state, 2, 2) == (step, state)
    assert constrain(step, state, 2, 2, Guards(0, 0, 1.0), None) == (step, state)
    assert not Guards().active and Guards(repetition_penalty=1.1).active
    for bad in (dict(min_output_len=-1), dict(no_repeat_ngram=-2), dict(repetition_penalty=0),
                dict(repetition_penalty=float("nan")), dict(no_repeat_ngram=1.5)):
        with pytest.raises(ValueError, match="must be"):
            Guards(**bad)


# -- prefixes --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tr(tmp_path_factory):
    return Translator(str(case_checkpoint("date-book", tmp_path_factory.mktemp("prefix"))))


@pytest.fixture(scope="module")
def texts():
    return sources("date-book")


def test_an_empty_prefix_is_no_prefix(tr, texts):
    for kw in (dict(), dict(beam=3, n_best=2), dict(sample=True, seed=3, n_best=2)):
        want = tr.translate(texts, **kw)
        for prefix in ("", [None] * len(texts), [""] * len(texts)):
            got = tr.translate(texts, prefix=prefix, **kw)
            assert [t.nbest for t in got] == [t.nbest for t in want]
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a.weights, b.weights)


def test_a_prefix_from_the_greedy_output_gives_that_output(tr, texts):
    greedy = tr.translate(texts)
    ids = [tr.tgt_tok.encode(t.text) for t in greedy]
    prefixes = [tr.tgt_tok.decode(i[:max(1, len(i) // 2)]) for i in ids]
    assert sum(len(p) > 1 for p in prefixes) > len(texts) // 2
    got = tr.translate(texts, prefix=prefixes)
    assert [t.text for t in got] == [t.text for t in greedy]
    for a, b in zip(got, greedy):
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kw", [dict(), dict(beam=4, n_best=3, alpha=0.6), dict(sample=True, seed=1, n_best=3),
                                dict(beam=3, n_best=2, no_repeat_ngram=2)])
def test_every_output_starts_with_its_prefix(tr, texts, kw):
    prefixes = ["2025-1", "19", None, "0000-00-00-1111-22-33", "7"] * (len(texts) // 5 + 1)
    found = tr.translate(texts, prefix=prefixes[:len(texts)], **kw)
    for t, p in zip(found, prefixes):
        for text, _ in t.nbest:
            assert p is None or text.startswith(p), (text, p)
    assert any(t.text != p for t, p in zip(found, prefixes) if p)     # the search goes on after the prefix
    long = tr.translate(texts[:2], prefix="9" * 40, max_len=5)         # longer than the limit: kept whole
    assert all(t.text.startswith("9" * 40) for t in long)


def test_bad_prefixes(tr):
    with pytest.raises(ValueError, match="prefix: 1 given for 2 texts"):
        tr.translate(["a", "b"], prefix=["x"])
    with pytest.raises(ValueError, match="prefix: expected text or None, got int"):
        tr.translate(["a"], prefix=[3])
    with pytest.warns(UserWarning, match="prefix of input line 2 and others: text the target vocabulary lacks"):
        out = tr.translate(["a", "b", "c"], prefix=["1", "zz", "é"])
    assert out[1].out_tokens[:2] == ["<unk>", "<unk>"]


def test_cli_prefix_column(tr, texts, tmp_path, capsys):
    rows = ["\t".join([src, "ref", p]) for src, p in zip(texts[:4], ["199", "", "2", "20"])]
    (tmp_path / "in.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["translate", "--ckpt", str(tr.ck.path), "--input", str(tmp_path / "in.tsv"), "--prefix-column", "3",
                 "--beam", "2", "--n-best", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = tr.translate(texts[:4], beam=2, n_best=2, prefix=["199", None, "2", "20"])
    assert lines == ["\t".join(f"{text} ({s:.3f})" for text, s in t.nbest) for t in want]
    (tmp_path / "short.tsv").write_text(f"{texts[0]}\tx\t1\n{texts[1]}\n", encoding="utf-8")
    assert main(["translate", "--ckpt", str(tr.ck.path), "--input", str(tmp_path / "short.tsv"),
                 "--prefix-column", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input line 2: no column 3 for --prefix-column (the line has 1)" in err
    with pytest.raises(SystemExit) as e:
        main(["translate", "--ckpt", str(tr.ck.path), "--prefix-column", "1"])
    assert e.value.code == 2 and "argument --prefix-column: must be a column number of 2 or more" in capsys.readouterr().err
