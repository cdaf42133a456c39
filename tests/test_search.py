"""Beam search: k=1 is greedy, finished hypotheses stay finished, stopping is exact under a length
penalty, results do not depend on batch size, and beam beats greedy where greedy is provably worse."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnseq.run.checkpoint import load_checkpoint
from attnseq.nn.search import beam_search_core, length_penalty
from attnseq.run.decoding import beam_search

BOS, EOS = 1, 2


def markov_step(logp_table, fed=None):
    """A constructed model: the next-token distribution depends only on the previous token."""
    with np.errstate(divide="ignore"):
        table = np.log(np.asarray(logp_table, dtype=np.float64))

    def step(tokens, state):
        if fed is not None:
            fed.append(np.asarray(tokens).copy())
        return table[tokens], state, np.zeros((len(tokens), 1))
    return step


def run_core(table, k, alpha=0.0, max_len=4, n_best=1, fed=None):
    step = markov_step(table, fed)
    return beam_search_core(step, (), 1, 1, BOS, EOS, k, alpha, max_len, n_best)[0]


# V = 4: 0 pad, 1 bos, 2 eos, 3 "a" -- plus 4 "b"
GREEDY_TRAP = [
    [0.0, 0.0, 0.5, 0.25, 0.25],   # pad (unused)
    [0.0, 0.0, 0.0, 0.6, 0.4],     # after bos: a 0.6, b 0.4
    [0.0, 0.0, 1.0, 0.0, 0.0],     # after eos (never fed)
    [0.0, 0.0, 0.3, 0.35, 0.35],   # after a: nothing likely
    [0.0, 0.0, 0.99, 0.005, 0.005],  # after b: eos almost surely
]


def test_beam_beats_greedy_on_a_trap():
    greedy = run_core(GREEDY_TRAP, k=1)[0]
    beam = run_core(GREEDY_TRAP, k=2)[0]
    assert greedy.ids[0] == 3                      # greedy takes "a" (0.6) ...
    assert beam.ids == [4, EOS]                    # ... beam finds "b eos" (0.396 > 0.6 * 0.35)
    assert beam.logprob > greedy.logprob
    assert beam.logprob == pytest.approx(np.log(0.4 * 0.99))


def test_finished_hypotheses_are_never_extended():
    fed = []
    run_core(GREEDY_TRAP, k=3, max_len=6, n_best=3, fed=fed)
    assert all(EOS not in f for f in fed)


def exhaustive_best(table, alpha, max_len):
    """The best score over every sequence ending in eos within max_len, or cut (no eos) at max_len, and
    every sequence that reaches it."""
    with np.errstate(divide="ignore"):
        logp = np.log(np.asarray(table, dtype=np.float64))
    V = len(table)
    cands = [list(b) + [EOS] for L in range(1, max_len + 1) for b in itertools.product(range(3, V), repeat=L - 1)]
    cands += [list(b) for b in itertools.product(range(3, V), repeat=max_len)]
    scored = []
    for ids in cands:
        prev, lp = BOS, 0.0
        for t in ids:
            lp += logp[prev, t]
            prev = t
        scored.append((lp / length_penalty(len(ids), alpha), ids))
    best = max(s for s, _ in scored)
    # the same probabilities in another order tie up to rounding: every one of them is a right answer
    return best, [ids for s, ids in scored if s >= best - 1e-9 * abs(best)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.6, 1.0, 2.0]))
def test_wide_beam_matches_exhaustive_search_under_length_penalty(seed, alpha):
    """With a beam wider than all prefixes, beam search is exact; an early stop would miss the optimum."""
    rng = np.random.default_rng(seed)
    V, max_len = 5, 4
    table = rng.dirichlet(np.full(V - 2, 0.5), size=V)
    table = np.concatenate([np.full((V, 2), 1e-300), table], axis=1)
    table /= table.sum(1, keepdims=True)
    hyp = run_core(table, k=27, alpha=alpha, max_len=max_len)[0]
    want_score, tied_best = exhaustive_best(table, alpha, max_len)
    assert hyp.score == pytest.approx(want_score, rel=1e-9)
    assert hyp.ids in tied_best


def test_k1_equals_greedy(tiny_run, tiny_data):
    ck = load_checkpoint(tiny_run)
    from attnseq.data.batching import encode_pairs
    from attnseq.data.io import read_tsv
    enc = encode_pairs(read_tsv(tiny_data / "test.tsv")[:64], ck.src_tok, ck.tgt_tok)
    src = enc.src[:, :int(enc.src_len.max())]
    g_ids, g_w = ck.model.generate(src)
    found = beam_search(ck.model, src, beam_size=1)
    for k, hyps in enumerate(found):
        h = hyps[0]
        np.testing.assert_array_equal(g_ids[k, :len(h.ids)], h.ids)
        np.testing.assert_allclose(g_w[k, :len(h.ids)], h.weights, atol=1e-6)


def test_results_do_not_depend_on_batch_size(tiny_run, tiny_data):
    ck = load_checkpoint(tiny_run)
    from attnseq.data.batching import encode_pairs
    from attnseq.data.io import read_tsv
    enc = encode_pairs(read_tsv(tiny_data / "test.tsv")[:12], ck.src_tok, ck.tgt_tok)
    src = enc.src[:, :int(enc.src_len.max())]
    together = beam_search(ck.model, src, beam_size=4, alpha=0.6, n_best=3)
    for k in range(len(src)):
        alone = beam_search(ck.model, src[k:k + 1, :int(enc.src_len[k])], beam_size=4, alpha=0.6, n_best=3)[0]
        assert [h.ids for h in alone] == [h.ids for h in together[k]]
        np.testing.assert_allclose([h.score for h in alone], [h.score for h in together[k]], rtol=1e-5)
        assert together[k][0].weights.shape == (len(together[k][0].ids), src.shape[1])


def test_n_best_is_sorted_and_bounded():
    hyps = run_core(GREEDY_TRAP, k=3, n_best=3, max_len=5)
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    with pytest.raises(ValueError, match="n_best"):
        run_core(GREEDY_TRAP, k=2, n_best=3)


@pytest.mark.parametrize("threads", [1, 2])
def test_beam_decode_matches_beam_search_row_by_row(tiny_run, tiny_data, threads):
    """Length-sorted batches over threads give each row what beam search gives it alone, in row order."""
    from attnseq.data.batching import encode_pairs
    from attnseq.data.io import read_tsv
    from attnseq.run.decoding import beam_decode
    ck = load_checkpoint(tiny_run)
    enc = encode_pairs(read_tsv(tiny_data / "test.tsv")[:23], ck.src_tok, ck.tgt_tok)
    found = beam_decode(ck.model, enc.src, enc.src_len, beam_size=3, alpha=0.6, max_len=14, n_best=2,
                        batch_size=4, threads=threads)
    assert len(found) == 23
    for k, hyps in enumerate(found):
        alone = beam_search(ck.model, enc.src[k:k + 1, :int(enc.src_len[k])], beam_size=3, alpha=0.6,
                            max_len=14, n_best=2)[0]
        assert [h.ids for h in alone] == [h.ids for h in hyps]
        np.testing.assert_allclose([h.score for h in alone], [h.score for h in hyps], rtol=1e-5)
