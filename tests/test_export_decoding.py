"""The onnxruntime engine runs every decoding option through attnseq's own search code (issue 23):
sampling, ensembles, prefixes, guards and scoring give what the attnseq engine gives (texts equal, scores
within float32's reach). A trained date model and a random one with every model option, both float32."""
import json

import numpy as np
import pytest

from helpers import require_extra

require_extra("export")

from attnseq.cli import main                                           # noqa: E402
from attnseq.data.io import read_pairs                                 # noqa: E402
from attnseq.export import OnnxTranslator, export_onnx                 # noqa: E402
from attnseq.nn.model import AttentionSeq2seq                          # noqa: E402
from attnseq.run.checkpoint import load_checkpoint, save_checkpoint    # noqa: E402
from attnseq.run.inference import Translator                           # noqa: E402

ALL_OPTIONS = dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="additive", input_feeding=True,
                   tie_embeddings=True)


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    """The trained tiny date run, and a random every-option model with its tokenizers, with their exports."""
    ck = load_checkpoint(tiny_run)
    model = AttentionSeq2seq(ck.src_tok.vocab_size, ck.tgt_tok.vocab_size, 8, 16, seed=5, **ALL_OPTIONS)
    rng = np.random.default_rng(5)
    model.load_state_dict({k: (rng.standard_normal(v.shape) * 0.8).astype(np.float32)
                           for k, v in model.state_dict().items()})
    d = tmp_path_factory.mktemp("decoding-export")
    other = save_checkpoint(d / "other", model, None, ck.src_tok, ck.tgt_tok, {}, {"epoch": 0, "step": 0})
    return dict(ckpts=[str(tiny_run), str(other)],
                exports=[export_onnx(tiny_run, d / "tiny-onnx"), export_onnx(other, d / "other-onnx")])


@pytest.fixture(scope="module")
def texts(tiny_data):
    return [s for s, _ in read_pairs(tiny_data / "test.tsv")][:60] + [""]


def assert_same(ours, theirs):
    assert [[text for text, _ in t.nbest] for t in ours] == [[text for text, _ in t.nbest] for t in theirs]
    for a, b in zip(ours, theirs):
        assert a.out_tokens == b.out_tokens
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-4)
        for (_, s1), (_, s2) in zip(a.nbest, b.nbest):
            assert (s1 is None and s2 is None) or s1 == pytest.approx(s2, rel=2e-5, abs=1e-4)   # float32


OPTIONS = {
    "sample": dict(sample=True, seed=3, n_best=3, temperature=0.9, top_k=6, top_p=0.95),
    "prefix-beam": dict(beam=3, n_best=2, prefix="19"),
    "prefix-greedy": dict(prefix=["2", "20", None, "1999-1"] * 15 + [None]),
    "guards-greedy": dict(no_repeat_ngram=2, min_output_len=3, repetition_penalty=1.5),
    "guards-beam": dict(beam=4, n_best=2, alpha=0.6, no_repeat_ngram=3, min_output_len=12),
}


@pytest.mark.parametrize("ensemble", [False, True], ids=["one", "ensemble"])
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_decodes_alike_in_both_engines(runs, texts, option, ensemble):
    n = 2 if ensemble else 1
    kw = dict(ensemble_mode="log_linear", weights=[3, 1]) if ensemble else {}
    ref = Translator(runs["ckpts"][:n] if ensemble else runs["ckpts"][0], **kw)
    ours = OnnxTranslator(runs["exports"][:n] if ensemble else runs["exports"][0], **kw)
    got = ours.translate(texts, **OPTIONS[option])
    assert_same(got, ref.translate(texts, **OPTIONS[option]))
    if option == "sample":                                           # draws that differ, so a mix-up would show
        assert sum(len({text for text, _ in t.nbest}) > 1 for t in got) > len(texts) // 4


@pytest.mark.parametrize("mode", ["linear", "log_linear"])
def test_ensembles_alike_in_both_engines(runs, texts, mode):
    ref, ours = Translator(runs["ckpts"], ensemble_mode=mode), OnnxTranslator(runs["exports"], ensemble_mode=mode)
    for kw in (dict(), dict(beam=3, n_best=3)):
        assert_same(ours.translate(texts, **kw), ref.translate(texts, **kw))
    greedy = [t.text for t in ref.translate(texts)]
    assert greedy != [t.text for t in Translator(runs["ckpts"][0]).translate(texts)]   # the second member counts


@pytest.mark.filterwarnings("ignore:.*over the model's limits")
def test_scores_alike_in_both_engines(runs, tiny_data):
    pairs = read_pairs(tiny_data / "test.tsv")[:50]
    srcs, tgts = [s for s, _ in pairs], [t for _, t in pairs]
    for n in (1, 2):
        ref = Translator(runs["ckpts"][:n]).score(srcs, tgts, alpha=0.6)
        ours = OnnxTranslator(runs["exports"][:n]).score(srcs, tgts, alpha=0.6)
        for a, b in zip(ours, ref):
            assert a.tokens == b.tokens and a.n_tokens == b.n_tokens and a.over_limit == b.over_limit
            assert abs(a.score - b.score) < 1e-4
            np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
            np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)


def test_cli_score_and_sample_with_onnxruntime(runs, tiny_data, tmp_path, capsys):
    data = tiny_data / "test.tsv"
    pairs = read_pairs(data)
    export_args = [a for e in runs["exports"] for a in ("--model", str(e))]
    assert main(["score", "--engine", "onnxruntime", *export_args, "--data", str(data)]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = Translator(runs["ckpts"]).score([s for s, _ in pairs], [t for _, t in pairs])
    assert len(got) == len(pairs) and [g["tokens"] for g in got] == [w.tokens for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w.score for w in want], atol=1e-4)
    (tmp_path / "in.txt").write_text("\n".join(s for s, _ in pairs[:30]) + "\n", encoding="utf-8")
    flags = ["--input", str(tmp_path / "in.txt"), "--sample", "--seed", "9", "--n-best", "2"]
    assert main(["translate", "--engine", "onnxruntime", "--model", str(runs["exports"][0]), *flags]) == 0
    onnx_lines = capsys.readouterr().out
    assert main(["translate", "--ckpt", runs["ckpts"][0], *flags]) == 0
    attnseq_lines = capsys.readouterr().out
    strip = [[part.rsplit(" (", 1)[0] for part in line.split("\t")] for line in onnx_lines.splitlines()]
    assert strip == [[part.rsplit(" (", 1)[0] for part in line.split("\t")] for line in attnseq_lines.splitlines()]
    with pytest.raises(SystemExit) as e:
        main(["score", "--engine", "onnxruntime", "--model", str(runs["exports"][0]), "--model",
              str(runs["exports"][0]), "--data", str(data)])
    assert e.value.code == 2 and "--model " in capsys.readouterr().err
