"""Sampling (issue 23): draws match the step's distribution as reshaped by temperature, top-k and top-p
(chi-square over 20,000 draws, fixed seed); near-zero temperature and top-k 1 are greedy; the same seed
gives the same samples whatever the threads; every row draws at once; n samples per input come best
first with the model's own scores."""
import numpy as np
import pytest

from golden_decoding import case_checkpoint, sources

from attnseq.nn.search import Decoding, Sampling, sample_search
from attnseq.nn.search.sampling import draw, sampling_log_weights
from attnseq.run.inference import Translator

BOS, EOS = 1, 2
# chi-square quantiles at 0.999 (statistical tables) by degrees of freedom
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}
P = np.array([0.0, 0.0, 0.05, 0.3, 0.02, 0.25, 0.18, 0.1, 0.1])   # pad and bos never; eos 0.05


def fixed_step(p):
    """A step whose next-token distribution is always ``p``; attention 1 on the one source position."""
    with np.errstate(divide="ignore"):
        logp = np.log(np.asarray(p, dtype=np.float64))

    def step(tokens, state):
        return np.tile(logp, (len(tokens), 1)), state, np.ones((len(tokens), 1))
    return step


def first_tokens(p, sampling, n=20_000, seed=0):
    ids, _, token_logp = sample_search(fixed_step(p), (), n, 1, BOS, EOS, 1, np.random.default_rng(seed), sampling)
    return ids[:, 0], token_logp[:, 0]


def chi_square(tokens, want):
    """Pearson's statistic of token counts against probabilities ``want`` (over tokens with want > 0) and
    its degrees of freedom; tokens with want == 0 must not occur."""
    counts = np.bincount(tokens, minlength=len(want))
    assert counts[want == 0].sum() == 0, counts
    expected = want[want > 0] * len(tokens)
    return float(((counts[want > 0] - expected) ** 2 / expected).sum()), int((want > 0).sum()) - 1


def test_draws_match_the_step_distribution():
    tokens, logp = first_tokens(P, Sampling())
    stat, df = chi_square(tokens, P)
    assert stat < CHI2_999[df], stat
    np.testing.assert_allclose(logp, np.log(P[tokens]))              # each draw's own log-probability
    wrong = np.roll(P[2:], 1)                                        # the test can fail: another distribution
    assert chi_square(tokens, np.concatenate([[0, 0], wrong]))[0] > 10 * CHI2_999[df]


@pytest.mark.parametrize("sampling, want", [
    (Sampling(temperature=0.5), P ** 2 / (P ** 2).sum()),
    (Sampling(temperature=2.0), np.sqrt(P) / np.sqrt(P).sum()),
    (Sampling(top_k=3), np.where(P >= 0.18, P, 0) / 0.73),                        # 0.3, 0.25, 0.18
    (Sampling(top_p=0.5), np.where(P >= 0.25, P, 0) / 0.55),                      # 0.3 < 0.5: 0.25 joins
    (Sampling(top_p=0.6), np.where(P >= 0.18, P, 0) / 0.73),                      # 0.3 + 0.25 < 0.6: 0.18 too
    (Sampling(top_k=4, top_p=0.75, temperature=0.8), None),
])
def test_temperature_top_k_and_top_p_reshape_the_distribution(sampling, want):
    if want is None:                                                 # all three: by their definitions
        z = P ** (1 / 0.8)
        top4 = np.argsort(-P)[:4]
        z = np.where(np.isin(np.arange(len(P)), top4), z, 0)
        order = np.argsort(-z)
        mass_before = np.cumsum(z[order] / z.sum()) - z[order] / z.sum()
        keep = order[mass_before < 0.75]
        want = np.where(np.isin(np.arange(len(P)), keep), z, 0)
        want = want / want.sum()
    tokens, _ = first_tokens(P, sampling, seed=3)
    stat, df = chi_square(tokens, want)
    assert stat < CHI2_999[df], (stat, sampling)


def test_log_weights_edge_cases():
    logp = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]))
    w = sampling_log_weights(logp, Sampling(top_p=0.5))              # the most likely token always stays
    assert np.isfinite(w[0]).tolist() == [True, False, False] and np.isfinite(w[1]).tolist() == [True, True, False]
    assert np.isfinite(sampling_log_weights(logp, Sampling(top_k=1))[1]).sum() == 2     # ties with the k-th stay
    keep = np.isfinite(sampling_log_weights(np.log(P[None, 2:]), Sampling(top_p=0.8)))[0]
    assert keep.tolist() == [False, True, False, True, True, True, True]   # .3 .25 .18 .1, and the other .1 (a tie)
    flat = np.log(np.full((3, 500), 1 / 500))                        # the nucleus beyond the 64 sorted first
    assert np.isfinite(sampling_log_weights(flat, Sampling(top_p=0.5))).sum(axis=1).tolist() == [500] * 3
    rng = np.random.default_rng(2)
    for V, scale in ((5, 3), (70, 3), (300, 3), (300, 0.3)):        # against the definition, sorting everything
        z = rng.standard_normal((20, V)) * scale                      # (0.3: flat rows, past the 64 sorted first)
        lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        for top_p in (0.1, 0.5, 0.9, 0.999):
            got = np.isfinite(sampling_log_weights(lp, Sampling(top_p=top_p)))
            srt = np.sort(np.exp(lp), axis=1)[:, ::-1]
            need = (np.cumsum(srt, axis=1) - srt < top_p).sum(axis=1)          # tokens the nucleus needs
            np.testing.assert_array_equal(got.sum(axis=1), need)
            np.testing.assert_array_equal(got, np.exp(lp) >= srt[np.arange(20), need - 1][:, None])
    w = sampling_log_weights(logp, Sampling(temperature=1e-300))      # no overflow: the max is 0, the rest ~ -inf
    assert np.exp(w).tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    with np.errstate(divide="ignore"):
        assert (draw(np.log([[0.0, 1.0, 0.0]] * 50), np.random.default_rng(0)) == 1).all()


class CountingGenerator:
    """A numpy Generator that records the size of every draw."""
    def __init__(self, seed):
        self.rng, self.sizes = np.random.default_rng(seed), []

    def random(self, size):
        self.sizes.append(size)
        return self.rng.random(size)


def test_every_row_draws_at_once_with_one_uniform_per_row():
    """No loop over rows: each step draws one array of N uniforms, and never more."""
    table = np.full((6, 6), 1 / 4)
    table[:, :2] = 0.0

    def step(tokens, state):
        return np.log(table[tokens]), state, np.ones((len(tokens), 1))
    gen = CountingGenerator(1)
    with np.errstate(divide="ignore"):
        ids, _, _ = sample_search(step, (), 37, 1, BOS, EOS, 12, gen)
    assert gen.sizes == [37] * ids.shape[1] and ids.shape[1] > 1


@pytest.fixture(scope="module")
def tr(tmp_path_factory):
    return Translator(str(case_checkpoint("toy-general", tmp_path_factory.mktemp("sampling"))))


@pytest.fixture(scope="module")
def texts():
    return sources("toy-general")


def test_near_zero_temperature_and_top_k_1_are_greedy(tr, texts):
    greedy = tr.translate(texts)
    for kw in (dict(temperature=1e-6), dict(top_k=1), dict(top_k=1, temperature=3.0)):
        got = tr.translate(texts, sample=True, seed=7, **kw)
        assert [t.text for t in got] == [t.text for t in greedy], kw
        for a, b in zip(got, greedy):
            np.testing.assert_allclose(a.weights, b.weights, rtol=1e-12, atol=1e-15)
    assert [t.text for t in tr.translate(texts, sample=True, seed=7)] != [t.text for t in greedy]


def test_the_same_seed_gives_the_same_samples_whatever_the_threads(tr, texts):
    many = texts * 8                                                 # several batches of 16
    first = [t.nbest for t in tr.translate(many, sample=True, seed=11, n_best=2, batch_size=16)]
    assert [t.nbest for t in tr.translate(many, sample=True, seed=np.random.default_rng(11), n_best=2,
                                          batch_size=16)] == first
    try:
        tr.threads = 1
        assert [t.nbest for t in tr.translate(many, sample=True, seed=11, n_best=2, batch_size=16)] == first
    finally:
        tr.threads = 0
    other = [t.nbest for t in tr.translate(many, sample=True, seed=12, n_best=2, batch_size=16)]
    assert other != first
    assert len({tuple(n[0] for n in nb) for nb in first[:16]}) > 1     # samples differ between inputs ...
    assert sum(a != b for a, b in zip(first[:16], first[16:32])) > 8   # ... and between draws of one input


def test_n_samples_per_input_best_first_with_the_models_scores(tr, texts):
    found = tr.translate(texts, sample=True, seed=5, n_best=4, alpha=0.6, details=True)
    for t in found:
        scores = [s for _, s in t.nbest]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)
        for c in t.candidates:                                       # the teacher-forced probabilities' log sum
            L = len(c.out_tokens)
            assert c.score == pytest.approx(np.log(c.probs).sum() / ((5 + L) / 6) ** 0.6, rel=1e-9)


def test_bad_sampling_values_are_one_line(tr):
    for kw, msg in ((dict(temperature=-1.0), "temperature must be a positive"), (dict(temperature=0), "temperature"),
                    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"), (dict(top_p=1.5), "top_p"),
                    (dict(top_k=-2), "top_k must be 0"), (dict(beam=3), "does not go with beam 3")):
        with pytest.raises(ValueError, match=msg) as e:
            tr.translate(["x"], sample=True, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="temperature is for sampling: add sample=True"):
        tr.translate(["x"], temperature=0.5)
    with pytest.raises(ValueError, match="seed is for sampling"):
        tr.translate(["x"], seed=3)
    with pytest.raises(ValueError, match="sampling draws each token"):
        Decoding(beam=2, sampling=Sampling())
