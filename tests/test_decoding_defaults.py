"""With no new decoding option, greedy and beam search give what they gave before sampling, ensembles,
prefixes and guards existed (issue 23): outputs saved from that code (``golden_decoding.py``) on the date
and toy en->ko tasks, four models, four searches, against today's Translator."""
import json

import numpy as np
import pytest

from golden_decoding import CASES, GOLDEN, SEARCHES, case_checkpoint, sources

from attnseq.run.inference import Translator


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES)
def test_default_outputs_are_the_saved_ones(case, golden, tmp_path):
    tr = Translator(str(case_checkpoint(case, tmp_path)))
    texts = sources(case)
    for search, kw in SEARCHES.items():
        want = golden[case][search]
        got = tr.translate(texts, details=True, **kw)
        assert len(got) == len(want) == len(texts)
        for k, (t, w) in enumerate(zip(got, want)):
            where = f"{case} {search} row {k}"
            assert [text for text, _ in t.nbest] == w["nbest"], where          # every n-best text, in order
            assert t.out_tokens == w["tokens"], where
            assert t.weights.argmax(axis=1).tolist() == w["w_argmax"], where
            scores = [s for _, s in t.nbest]
            if w["scores"][0] is None:                                         # greedy: no score
                assert scores == w["scores"], where
            else:
                np.testing.assert_allclose(scores, w["scores"], rtol=1e-12, err_msg=where)
            if "probs" in w:
                np.testing.assert_allclose(t.probs, w["probs"], rtol=1e-12, atol=1e-300, err_msg=where)
                np.testing.assert_allclose(t.weights @ np.arange(t.weights.shape[1]), w["w_pos"], rtol=1e-12,
                                           atol=1e-12, err_msg=where)
    ended = [r["tokens"][-1] == "<eos>" for r in golden[case]["greedy-max5"]]
    assert any(ended) and not all(ended)                                      # rows that end and rows cut
