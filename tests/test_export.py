"""ONNX export (attnseq.export): graphs, manifest, onnxruntime translation identical to attnseq's."""
import ast
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import require_extra, translate_at_prompt

onnx, ort = require_extra("export")

from attnseq.cli import main                                           # noqa: E402
from attnseq.data.io import read_pairs                                 # noqa: E402
from attnseq.data.tokenizers import EOS_ID, WordTokenizer                     # noqa: E402
from attnseq.errors import CheckpointError, ConfigError                # noqa: E402
from attnseq.export import MissingExtraError, OnnxSeq2seq, OnnxTranslator, export_onnx  # noqa: E402
from attnseq.export.exporter import exportable_weights, self_check     # noqa: E402
from attnseq.export.onnx_graphs import build_graphs                    # noqa: E402
from attnseq.nn.config import ModelConfig                              # noqa: E402
from attnseq.nn.model import AttentionSeq2seq                          # noqa: E402
from attnseq.nn.output_length import LEGACY_RULE, OutputLengthRule    # noqa: E402
from attnseq.nn.search import log_softmax                              # noqa: E402
from attnseq.run.checkpoint import load_checkpoint, save_checkpoint    # noqa: E402
from attnseq.run import decoding                                       # noqa: E402
from attnseq.run.inference import Translator                           # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "onnx_greedy_example.py"


# model options, one at a time and all at once: every one must export and translate as attnseq does
ALL_OPTIONS = dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="additive", input_feeding=True,
                   label_smoothing=0.1, tie_embeddings=True)
OPTIONS = {
    "encoder_layers": dict(encoder_layers=2),
    "decoder_layers": dict(decoder_layers=2),
    "layers_bridged": dict(encoder_layers=3, decoder_layers=2),
    "bidirectional": dict(bidirectional=True),
    "general": dict(attention="general"),
    "additive": dict(attention="additive"),
    "input_feeding": dict(input_feeding=True),
    "tie_embeddings": dict(tie_embeddings=True),
    "all": ALL_OPTIONS,
    "gru": dict(cell="gru"),
    "gru_bidirectional": dict(cell="gru", bidirectional=True),
    "gru_layers_bridged": dict(cell="gru", encoder_layers=3, decoder_layers=2),
    "gru_input_feeding": dict(cell="gru", input_feeding=True, decoder_layers=2),
    "gru_all": dict(ALL_OPTIONS, cell="gru"),
}


def random_model(dtype="float32", seed=3, Vs=13, Vt=11, hidden_size=7, scale=0.7, **options):
    """A small model whose every parameter (biases included) is random, so a misplaced gate shows."""
    model = AttentionSeq2seq(Vs, Vt, wordvec_size=5, hidden_size=hidden_size, dtype=dtype, seed=seed, **options)
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: (rng.standard_normal(v.shape) * scale).astype(dtype)
                           for k, v in model.state_dict().items()})
    return model


def padded_batch(Vs, lengths, seed=0):
    rng = np.random.default_rng(seed)
    src = np.zeros((len(lengths), max(lengths)), dtype=np.int64)       # (N, Ts), right-padded with 0
    for row, n in enumerate(lengths):
        src[row, :n] = rng.integers(1, Vs, n)
    return src


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def export_dir(tiny_run, tmp_path_factory):
    return export_onnx(tiny_run, tmp_path_factory.mktemp("export") / "date-onnx")


@pytest.fixture(scope="module")
def translators(tiny_run, export_dir):
    return Translator(str(tiny_run)), OnnxTranslator(export_dir)


@pytest.fixture(scope="module")
def word_ckpt(tmp_path_factory):
    """An untrained word-level model with random weights that never picks eos: every output runs to
    the length limit, a path trained models rarely take. Its config.json has no max_output_len, as
    those saved before rules were fitted."""
    texts = ["the cat sat on the mat", "a dog ran in the park", "we read good songs"]
    src_tok, tgt_tok = WordTokenizer.build(texts), WordTokenizer.build([t.upper() for t in texts])
    model = random_model(Vs=src_tok.vocab_size, Vt=tgt_tok.vocab_size, seed=5)
    model.state_dict()["decoder.out.b"][EOS_ID] = -100.0
    d = tmp_path_factory.mktemp("word") / "ckpt"
    save_checkpoint(d, model, None, src_tok, tgt_tok, {"reverse_source": True, "max_len": 4}, {"epoch": 0, "step": 0})
    config = json.loads((d / "config.json").read_text())
    del config["max_output_len"]
    (d / "config.json").write_text(json.dumps(config))
    return d


# -- graphs -----------------------------------------------------------------------------------
def test_exported_graphs_pass_the_onnx_checker(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for g in ("encoder", "decoder_step"):
        model = onnx.load(str(export_dir / manifest["graphs"][g]["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == manifest["opset"]
        assert [i.name for i in model.graph.input] == [e["name"] for e in manifest["graphs"][g]["inputs"]]
        assert [o.name for o in model.graph.output] == [e["name"] for e in manifest["graphs"][g]["outputs"]]


def test_manifest_says_what_a_runtime_needs(export_dir, tiny_run):
    m = json.loads((export_dir / "manifest.json").read_text())
    ck = load_checkpoint(tiny_run)
    assert m["special_ids"] == dict(pad=0, bos=1, eos=2, unk=3)
    assert m["reverse_source"] is False and m["max_input_len"] == Translator(str(tiny_run)).max_input_len
    rule, own = m["max_output_len"], ck.model.output_len_rule           # the checkpoint's config.json's
    assert ck.config["max_output_len"]["scale"] == own.scale
    assert all(rule["scale"] * ts + rule["offset"] == own(ts) for ts in range(1, 5000))
    assert m["model"]["tgt_vocab_size"] == ck.tgt_tok.vocab_size
    assert m["tokenizers"]["source"] == dict(kind="char", name="src_vocab", files=["src_vocab.json"])
    assert sorted(os.listdir(export_dir)) == sorted(list(m["files"]) + ["manifest.json"])
    for name in m["tokenizers"]["target"]["files"]:                    # copied byte for byte
        assert (export_dir / name).read_bytes() == (ck.path / name).read_bytes()


def runner_of(model) -> OnnxSeq2seq:
    graphs = build_graphs(exportable_weights(model, Path("config.json")), model.config)
    return OnnxSeq2seq(*(graphs[g].SerializeToString() for g in ("encoder", "decoder_step")))


def state_as_runner_keeps_it(model, state) -> list:
    """attnseq's decoding state ((h, c) or a GRU's (h,); h~ as h's last row with input feeding) as the
    runtime's (h[, c][, feed])."""
    h, *rest = state
    if not model.config["input_feeding"]:
        return [h, *rest]
    L = model.config["decoder_layers"]
    return [h[:, 0] if L == 1 else h[:, :L], *(c[:, 0] if L == 1 else c for c in rest), h[:, L]]


@pytest.mark.parametrize("which", ["random", "trained", *OPTIONS])
def test_onnxruntime_log_probs_match_attnseq_per_step(which, tiny_run):
    """Encoder outputs and teacher-forced decoder steps of a padded batch, against attnseq's forward:
    the book model random and trained, and random models with each option and all at once."""
    if which in OPTIONS:
        model = random_model(hidden_size=8, **OPTIONS[which])
    else:
        model = random_model() if which == "random" else load_checkpoint(tiny_run).model
    Vs, Vt = model.config["src_vocab_size"], model.config["tgt_vocab_size"]
    lengths = [9, 5, 1, 7]
    src = padded_batch(Vs, lengths)
    tgt = np.concatenate([np.ones((4, 1), np.int64), np.random.default_rng(1).integers(3, Vt, (4, 8))], axis=1)
    with model.eval_mode():
        hs_ref, state_ref, _ = model.encode(src)
        want = log_softmax(model.logits(src, tgt))                        # (N, 8, V) for tgt[:, 1:]
        att_ref = model.attention_weights.copy()                          # (N, 8, Ts)
    runner = runner_of(model)
    memory, state, mask = runner.encode(src)
    real = mask[:, :, None]
    np.testing.assert_allclose(np.where(real, memory["hs"], 0), np.where(real, hs_ref, 0), atol=1e-5)
    assert len(state) == len(state_ref) + model.config["input_feeding"]
    for got, ref in zip(state, state_as_runner_keeps_it(model, state_ref)):
        np.testing.assert_allclose(got, ref, atol=1e-5)                   # the decoder's start
    step = runner.step_fn(memory, mask)
    for t in range(tgt.shape[1] - 1):
        logp, state, a = step(tgt[:, t], state)
        np.testing.assert_allclose(logp, want[:, t], atol=1e-4, err_msg=f"step {t}")
        np.testing.assert_allclose(a, att_ref[:, t], atol=1e-5)
        assert (a[~mask] == 0).all()


# -- translation: identical outputs -----------------------------------------------------------
def assert_same(ours, theirs, score_tol=1e-4):
    assert [t.text for t in ours] == [t.text for t in theirs]
    for a, b in zip(ours, theirs):
        assert a.out_tokens == b.out_tokens and a.src_tokens == b.src_tokens
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)
        assert [t for t, _ in a.nbest] == [t for t, _ in b.nbest]
        for (_, s1), (_, s2) in zip(a.nbest, b.nbest):
            assert (s1 is None and s2 is None) or abs(s1 - s2) < score_tol


def test_greedy_identical_on_the_test_split(translators, tiny_data):
    ref, ours = translators
    texts = [s for s, _ in read_pairs(tiny_data / "test.tsv")] + ["", "  ", "¿ünknown chars?"]
    got, want = ours.translate(texts, batch_size=32), ref.translate(texts, batch_size=32)
    assert_same(got, want)
    assert_same(OnnxTranslator(ours.directory, threads=1).translate(texts, batch_size=32), want)
    assert got[-3].text == "" and got[-2].text == ""


def test_greedy_identical_on_the_shipped_date_test_set(translators):
    ref, ours = translators
    texts = [s for s, _ in read_pairs(ROOT / "data" / "date" / "test.tsv")]
    assert len(texts) == 5000
    assert [t.text for t in ours.translate(texts)] == [t.text for t in ref.translate(texts)]


def test_beam_identical_on_a_sample(translators, tiny_data):
    ref, ours = translators
    texts = [s for s, _ in read_pairs(tiny_data / "test.tsv")][:100]
    assert_same(ours.translate(texts, beam=5, n_best=3), ref.translate(texts, beam=5, n_best=3))
    assert_same(ours.translate(texts[:30], beam=3, alpha=0.6), ref.translate(texts[:30], beam=3, alpha=0.6))


def test_outputs_cut_at_max_len_and_reversed_sources_match(word_ckpt, tmp_path):
    """Random word model: no eos in sight, so outputs stop at 2 * Ts + 10 (its config.json, as those saved
    before rules were fitted, has no rule) or --max-len; sources reversed, and cut to the run's max_len (4)."""
    d = export_onnx(word_ckpt, tmp_path / "word-onnx")
    texts = ["the cat sat on the mat", "a dog", "we read good songs in the park", "unknown words here", ""]
    ref, ours = Translator(str(word_ckpt)), OnnxTranslator(d)
    with pytest.warns(UserWarning):
        assert_same(ours.translate(texts), ref.translate(texts))
    with pytest.warns(UserWarning):
        kw = dict(max_len=3, beam=2, n_best=2)
        assert_same(ours.translate(texts, **kw), ref.translate(texts, **kw))
    assert [len(t.out_tokens) for t in ours.translate(["a dog", "we read"])] == [2 * 2 + 10] * 2


def test_the_manifest_carries_the_checkpoints_rule_or_an_override(word_ckpt, tmp_path):
    """The manifest records the checkpoint's own rule (config.json's max_output_len), or export's
    --max-output-len; onnxruntime follows the manifest as attnseq follows config.json; translate's
    max_len beats both."""
    config = json.loads((word_ckpt / "config.json").read_text())
    assert "max_output_len" not in config and load_checkpoint(word_ckpt).model.output_len_rule == LEGACY_RULE
    ckpt = tmp_path / "ruled"
    shutil.copytree(word_ckpt, ckpt)
    config["max_output_len"] = OutputLengthRule(3, 1).to_json()
    (ckpt / "config.json").write_text(json.dumps(config))
    texts = ["a dog", "we read", "the cat"]                               # no eos: outputs run to the limit
    ref = Translator(str(ckpt))
    for override, want in ((None, 3 * 2 + 1), ("5", 5), ("1*Ts+4", 2 + 4)):
        d = export_onnx(ckpt, tmp_path / f"export-{override}", max_output_len=override)
        rule = json.loads((d / "manifest.json").read_text())["max_output_len"]
        ours = OnnxTranslator(d)
        assert [len(t.out_tokens) for t in ours.translate(texts)] == [want] * 3, rule["rule"]
        assert_same(ours.translate(texts), ref.translate(texts, max_len=override and OutputLengthRule.parse(override)))
        assert [len(t.out_tokens) for t in ours.translate(texts, max_len=4, beam=2)] == [4] * 3
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "cli"), "--max-output-len", "2*Ts+1"]) == 0
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["max_output_len"]["rule"] == "2 * Ts + 1"


def test_details_token_probs_match(translators, tiny_data):
    """translate(details=True): the candidates' token probabilities, teacher forced through the graphs."""
    ref, ours = translators
    texts = [s for s, _ in read_pairs(tiny_data / "test.tsv")][:20] + [""]
    for kw in (dict(), dict(beam=3, n_best=2)):
        got, want = ours.translate(texts, details=True, **kw), ref.translate(texts, details=True, **kw)
        assert_same(got, want)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
            assert [c.out_tokens for c in a.candidates] == [c.out_tokens for c in b.candidates]
            for ca, cb in zip(a.candidates, b.candidates):
                np.testing.assert_allclose(ca.probs, cb.probs, atol=1e-4)


def run_example(export, lines):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    out = subprocess.run([sys.executable, str(EXAMPLE), str(export)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, encoding="utf-8", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:-1]


def test_plain_python_example_matches_attnseq_greedy(export_dir, tiny_run, tiny_data, word_ckpt, tmp_path):
    tree = ast.parse(EXAMPLE.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"json", "sys", "pathlib", "numpy", "onnxruntime", "sentencepiece"}, imported
    texts = [s for s, _ in read_pairs(tiny_data / "test.tsv")][:80] + ["", "¿ünknown?"]
    want = [t.text for t in Translator(str(tiny_run)).translate(texts, batch_size=1)]
    assert run_example(export_dir, texts) == want
    word = export_onnx(word_ckpt, tmp_path / "word-onnx")
    texts = ["the cat sat on the mat", "a dog", "unknown words", ""]
    with pytest.warns(UserWarning):
        want = [t.text for t in Translator(str(word_ckpt)).translate(texts, batch_size=1)]
    assert run_example(word, texts) == want


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:input line .* truncated")         # long test sentences: --max-len 40 cuts them
def test_toy_en_ko_sentencepiece_model(tmp_path):
    """A tiny EN->KO subword model, reversed sources: greedy, beam and the example give attnseq's outputs."""
    pytest.importorskip("sentencepiece")
    pairs = read_pairs(ROOT / "data" / "toy-en-ko" / "train.tsv")
    for name, rows in (("train", pairs[:2000]), ("valid", pairs[2000:2100])):
        (tmp_path / f"{name}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "--train", str(tmp_path / "train.tsv"), "--valid", str(tmp_path / "valid.tsv"),
                 "--out", str(run), "--tokenizer", "sentencepiece", "--vocab-size", "250", "--epochs", "1",
                 "--hidden-size", "32", "--wordvec-size", "16", "--reverse-source", "--max-len", "40",
                 "--examples", "0", "--no-plot"]) == 0
    d = export_onnx(run, tmp_path / "enko-onnx")
    m = json.loads((d / "manifest.json").read_text())
    assert m["reverse_source"] is True and m["tokenizers"]["target"]["kind"] == "sentencepiece"
    texts = [s for s, _ in read_pairs(ROOT / "data" / "toy-en-ko" / "test.tsv")][:150] + ["", "Zebras?"]
    ref, ours = Translator(str(run)), OnnxTranslator(d)
    assert_same(ours.translate(texts), ref.translate(texts))
    assert_same(ours.translate(texts[:40], beam=4, n_best=2), ref.translate(texts[:40], beam=4, n_best=2))
    assert run_example(d, texts[:40]) == [t.text for t in ref.translate(texts[:40], batch_size=1)]


# -- a broken export directory: one clear error naming the file --------------------------------
@pytest.fixture
def broken(export_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(export_dir, d)
    return d


def edit_manifest(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_truncated_graph_is_named(broken):
    f = broken / "decoder_step.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="decoder_step.onnx.*truncated") as e:
        OnnxTranslator(broken)
    one_line(e)


def test_truncated_graph_with_a_matching_manifest_is_named(broken):
    """Checksums updated too: onnxruntime itself then refuses the file, and the error still names it."""
    from attnseq.export.spec import file_digest
    f = broken / "decoder_step.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    edit_manifest(broken, lambda m: m["files"].update({"decoder_step.onnx": file_digest(f.read_bytes())}))
    with pytest.raises(CheckpointError, match="decoder_step.onnx: onnxruntime cannot load it") as e:
        OnnxTranslator(broken)
    one_line(e)


@pytest.mark.parametrize("key", ["reverse_source", "special_ids", "files", "max_output_len"])
def test_missing_manifest_key(broken, key):
    edit_manifest(broken, lambda m: m.pop(key))
    with pytest.raises(CheckpointError, match=f"manifest.json: missing key '{key}'") as e:
        OnnxTranslator(broken)
    one_line(e)


@pytest.mark.parametrize("rule", [{"scale": -1, "offset": 3}, {"scale": 2}, {"scale": 0, "offset": 0},
                                  {"scale": "2", "offset": 1}])
def test_a_bad_output_length_rule_is_named(broken, rule):
    """The manifest's max_output_len is read as config.json's is (OutputLengthRule.from_json)."""
    edit_manifest(broken, lambda m: m.update(max_output_len=rule))
    with pytest.raises(CheckpointError, match=r"manifest.json: max_output_len: expected \{\"scale\": int") as e:
        OnnxTranslator(broken)
    one_line(e)


def test_missing_nested_key_and_missing_file(broken):
    edit_manifest(broken, lambda m: m["model"].pop("hidden_size"))
    with pytest.raises(CheckpointError, match="missing key 'model.hidden_size'"):
        OnnxTranslator(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="missing manifest.json"):
        OnnxTranslator(broken)


def test_vocab_size_disagreeing_with_the_graph(broken):
    def bump(m):                                            # a self-consistent manifest that lies about V
        m["model"]["tgt_vocab_size"] += 1
        m["graphs"]["decoder_step"]["outputs"][0]["shape"][1] += 1
    edit_manifest(broken, bump)
    with pytest.raises(CheckpointError, match="decoder_step.onnx: outputs are") as e:
        OnnxTranslator(broken)
    one_line(e)
    edit_manifest(broken, lambda m: m["model"].update(tgt_vocab_size=m["model"]["tgt_vocab_size"] + 1))
    with pytest.raises(CheckpointError, match="graphs.decoder_step.outputs"):  # the manifest against itself
        OnnxTranslator(broken)


def test_vocab_file_disagreeing_with_the_manifest(broken):
    from attnseq.export.spec import file_digest
    f = broken / "tgt_vocab.json"
    meta = json.loads(f.read_text())
    f.write_text(json.dumps({"kind": "char", "tokens": meta["tokens"][:-1]}))
    edit_manifest(broken, lambda m: m["files"].update({"tgt_vocab.json": file_digest(f.read_bytes())}))
    with pytest.raises(CheckpointError, match="target tokenizer has"):
        OnnxTranslator(broken)


# -- exporting ----------------------------------------------------------------------------------
def test_out_dir_rules(tiny_run, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and not an earlier attnseq ONNX export") as e:
        export_onnx(tiny_run, busy)
    one_line(e)
    assert os.listdir(busy) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export_onnx(tiny_run, empty)
    (empty / "stale.txt").write_text("left over")
    export_onnx(tiny_run, empty)                            # an earlier export is replaced whole
    assert not (empty / "stale.txt").exists() and (empty / "manifest.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["busy", "empty"]   # no temporary directories left
    OnnxTranslator(empty)


def test_options_the_export_cannot_express_are_refused():
    later = dataclasses.make_dataclass("LaterConfig", [("coverage_penalty", float, 0.2)], bases=(ModelConfig,),
                                       frozen=True)        # a model option from a later attnseq
    model = random_model()
    model.config = later(**model.config.to_dict())
    with pytest.raises(ConfigError, match="model option.*coverage_penalty.*not supported") as e:
        exportable_weights(model, Path("run/best/config.json"))
    one_line(e)


def test_a_parameter_the_graphs_do_not_read_is_refused():
    """A parameter no node reads is an option the graphs do not express: refused by name, never dropped."""
    model = random_model(hidden_size=8, **ALL_OPTIONS)
    weights = exportable_weights(model, Path("config.json"))
    weights["decoder.coverage.W"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ConfigError, match="parameters decoder.coverage.W are not read by the ONNX graphs") as e:
        build_graphs(weights, model.config)
    one_line(e)


@pytest.mark.parametrize("which", OPTIONS)
def test_greedy_and_beam_identical_for_every_option(which):
    """Random models with each option and all at once: onnxruntime's greedy ids and beam hypotheses are
    attnseq's (the state, stacked and with h~, reordered by the beam alike), scores within 1e-4."""
    # weights large enough that outputs follow the source; a GRU's random dynamics at std 2 are chaotic
    # enough that float32 rounding alone (attnseq's float32 against its float64) moves scores by 2e-3
    scale = 1.5 if OPTIONS[which].get("cell") == "gru" else 2.0
    model = random_model(hidden_size=8, seed=7, scale=scale, **OPTIONS[which])
    src = padded_batch(13, [6, 2, 4, 1, 5], seed=4)
    runner = runner_of(model)
    ids, weights = model.generate(src, max_len=9)
    assert len({tuple(row) for row in ids.tolist()}) >= 3                   # not one output for every row
    got_ids, got_weights = runner.greedy(src, 9)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_weights, weights, atol=1e-5)
    want = decoding.beam_search(model, src, beam_size=3, alpha=0.6, max_len=9, n_best=2)
    got = runner.beam(src, 3, 0.6, 9, 2)
    for hyps_got, hyps_want in zip(got, want):
        assert [h.ids for h in hyps_got] == [h.ids for h in hyps_want]
        for a, b in zip(hyps_got, hyps_want):
            assert abs(a.score - b.score) < 1e-4


@pytest.fixture(scope="module")
def options_ckpt(tmp_path_factory):
    """A word-level checkpoint with every model option at once, random weights."""
    texts = ["the cat sat on the mat", "a dog ran in the park", "we read good songs"]
    src_tok, tgt_tok = WordTokenizer.build(texts), WordTokenizer.build([t.upper() for t in texts])
    model = random_model(Vs=src_tok.vocab_size, Vt=tgt_tok.vocab_size, hidden_size=8, seed=11, **ALL_OPTIONS)
    d = tmp_path_factory.mktemp("options") / "ckpt"
    save_checkpoint(d, model, None, src_tok, tgt_tok, {"reverse_source": True}, {"epoch": 0, "step": 0})
    return d


def test_every_option_at_once_exports_and_translates_the_same(options_ckpt, tmp_path):
    """A checkpoint with every option: manifest (format 2, its state and memory), OnnxTranslator greedy
    and beam against Translator, and the plain-Python example."""
    d = export_onnx(options_ckpt, tmp_path / "options-onnx")
    m = json.loads((d / "manifest.json").read_text())
    assert m["format_version"] == 2
    assert {k: m["model"][k] for k in ALL_OPTIONS if k != "label_smoothing"} == \
        {k: v for k, v in ALL_OPTIONS.items() if k != "label_smoothing"}
    assert m["decoder_memory"] == ["hs", "keys"]
    assert [s["input"] for s in m["decoder_state"]] == ["h", "c", "feed"]
    shapes = {e["name"]: e["shape"] for e in m["graphs"]["decoder_step"]["inputs"]}
    assert shapes["h"] == [2, "N", 8] and shapes["c"] == [2, "N", 8] and shapes["feed"] == ["N", 8]
    texts = ["the cat sat on the mat", "a dog", "we read good songs in the park", "unknown words here", ""]
    ref, ours = Translator(str(options_ckpt)), OnnxTranslator(d)
    assert_same(ours.translate(texts), ref.translate(texts))
    assert_same(ours.translate(texts, beam=3, n_best=2), ref.translate(texts, beam=3, n_best=2))
    assert run_example(d, texts) == [t.text for t in ref.translate(texts, batch_size=1)]


def test_a_gru_exports_with_the_onnx_gru_operator_and_translates_the_same(tmp_path):
    """A GRU checkpoint (bidirectional, two decoder layers, input feeding): the encoder's layers are ONNX GRU
    nodes with linear_before_reset=0 (the book's cell), the manifest has format 3 and a state without c,
    and OnnxTranslator's greedy and beam outputs are Translator's."""
    texts = ["the cat sat on the mat", "a dog ran in the park", "we read good songs"]
    src_tok, tgt_tok = WordTokenizer.build(texts), WordTokenizer.build([t.upper() for t in texts])
    model = random_model(Vs=src_tok.vocab_size, Vt=tgt_tok.vocab_size, hidden_size=8, seed=5, scale=1.0, cell="gru",
                         bidirectional=True, encoder_layers=2, decoder_layers=2, input_feeding=True)
    ck = tmp_path / "ckpt"
    save_checkpoint(ck, model, None, src_tok, tgt_tok, {}, {"epoch": 0, "step": 0})
    d = export_onnx(ck, tmp_path / "gru-onnx")
    m = json.loads((d / "manifest.json").read_text())
    assert m["format_version"] == 3 and m["model"]["cell"] == "gru"
    assert [s["input"] for s in m["decoder_state"]] == ["h", "feed"]
    nodes = onnx.load(str(d / "encoder.onnx")).graph.node
    grus = [n for n in nodes if n.op_type == "GRU"]
    assert len(grus) == 2 and not any(n.op_type == "LSTM" for n in nodes)
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 0 and attrs["direction"] == b"bidirectional"
    texts = ["the cat sat on the mat", "a dog", "we read good songs in the park", "unknown words here", ""]
    ref, ours = Translator(str(ck)), OnnxTranslator(d)
    assert len({t.text for t in ref.translate(texts)}) >= 3                # outputs follow the source
    assert_same(ours.translate(texts), ref.translate(texts))
    assert_same(ours.translate(texts, beam=3, n_best=2), ref.translate(texts, beam=3, n_best=2))
    assert run_example(d, texts) == [t.text for t in ref.translate(texts, batch_size=1)]


def test_book_exports_keep_format_1_and_old_manifests_still_read(export_dir, translators, tmp_path):
    """The book model's export keeps format_version 1 (older attnseq runs it); a manifest written before
    decoder_memory, decoder_state and the option keys existed reads as the book model's."""
    m = json.loads((export_dir / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["decoder_memory"] == ["hs"]
    assert m["decoder_state"] == [dict(input="h", output="h_out", initial="h0"),
                                  dict(input="c", output="c_out", initial="c0")]
    old = tmp_path / "old"
    shutil.copytree(export_dir, old)

    def strip(m):
        del m["decoder_memory"], m["decoder_state"], m["decoding"]["step"]
        m["model"] = {k: m["model"][k] for k in ("src_vocab_size", "tgt_vocab_size", "wordvec_size", "hidden_size")}
    edit_manifest(old, strip)
    texts = ["Tuesday, Sept 25 1984", "9/25/84", ""]
    assert [t.text for t in OnnxTranslator(old).translate(texts)] == [t.text for t in translators[0].translate(texts)]
    assert run_example(old, texts) == [t.text for t in translators[0].translate(texts, batch_size=1)]


def test_manifest_options_disagreeing_with_the_graphs_are_named(export_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    edit_manifest(bad, lambda m: m["model"].update(input_feeding=True))
    with pytest.raises(CheckpointError, match="format_version 1 cannot hold model options") as e:
        OnnxTranslator(bad)
    one_line(e)
    edit_manifest(bad, lambda m: m.update(format_version=2))
    with pytest.raises(CheckpointError, match="'decoder_state' is .* but the model options give") as e:
        OnnxTranslator(bad)
    one_line(e)
    edit_manifest(bad, lambda m: m.update(format_version=4))
    with pytest.raises(CheckpointError, match="format_version 4, this attnseq reads 1, 2 and 3"):
        OnnxTranslator(bad)


def test_float64_needs_an_explicit_cast():
    model = random_model(dtype="float64")
    with pytest.raises(ConfigError, match="dtype float64.*cast_float32"):
        exportable_weights(model, Path("config.json"))
    weights = exportable_weights(model, Path("config.json"), cast_float32=True)
    assert all(w.dtype == np.float32 for w in weights.values())
    graphs = {g: m.SerializeToString() for g, m in build_graphs(weights, model.config).items()}
    assert self_check(model, graphs) < 1e-4


def test_self_check_refuses_graphs_that_do_not_describe_the_model():
    model = random_model()
    weights = exportable_weights(model, Path("config.json"))
    Wh = weights["decoder.lstm.Wh"]
    H = Wh.shape[0]
    weights["decoder.lstm.Wh"] = np.concatenate([Wh[:, H:2 * H], Wh[:, :H], Wh[:, 2 * H:]], axis=1)  # i, f swapped
    graphs = {g: m.SerializeToString() for g, m in build_graphs(weights, model.config).items()}
    with pytest.raises(ConfigError, match="self-check failed"):
        self_check(model, graphs)


def test_without_onnx_the_error_says_how_to_install(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)          # import onnx now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'attnseq\[export\]'") as e:
        export_onnx(tiny_run, tmp_path / "out")
    one_line(e)
    assert not (tmp_path / "out").exists()


def test_without_onnxruntime_the_runtime_says_how_to_install(export_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"'onnxruntime'.*pip install 'attnseq\[export\]'"):
        OnnxTranslator(export_dir)


# -- the command line: attnseq export, attnseq translate --engine onnxruntime ---------------------
@pytest.fixture(scope="module")
def cli_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "date-onnx"
    assert main(["export", "--ckpt", str(tiny_run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def translate_cli(args, stdin, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["translate", *args]) == 0
    return capsys.readouterr()


@pytest.mark.parametrize("flags", [[], ["--beam", "5", "--n-best", "2"], ["--beam", "3", "--show-attention"]])
def test_cli_onnxruntime_prints_the_same_lines(flags, tiny_run, cli_export, tiny_data, monkeypatch, capsys):
    lines = [s for s, _ in read_pairs(tiny_data / "test.tsv")][:60] + ["", "¿ünknown chars?", "  "]
    stdin = "\n".join(lines) + "\n"
    ours = translate_cli(["--engine", "onnxruntime", "--model", str(cli_export), *flags], stdin, monkeypatch, capsys)
    want = translate_cli(["--ckpt", str(tiny_run), *flags], stdin, monkeypatch, capsys)
    assert ours.out.split("\n") == want.out.split("\n")
    assert len(ours.out.split("\n")) == len(lines) + 1
    if "--n-best" in flags:
        assert all(len(line.split("\t")) == 2 for line in ours.out.split("\n")[:60])
    if "--show-attention" in flags:
        assert "<-" in ours.err and ours.err == want.err


def test_cli_onnxruntime_file_to_file(tiny_run, cli_export, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("Tuesday, Sept 25 1984\n\n9/25/84\n", encoding="utf-8")
    for engine in (["--ckpt", str(tiny_run)], ["--engine", "onnxruntime", "--model", str(cli_export)]):
        out = tmp_path / f"out-{len(engine)}.txt"
        assert main(["translate", *engine, "--input", str(inp), "--output", str(out)]) == 0
    assert (tmp_path / "out-2.txt").read_text(encoding="utf-8") == (tmp_path / "out-4.txt").read_text(encoding="utf-8")
    assert capsys.readouterr().out == ""


def test_cli_onnxruntime_prompts_in_a_terminal(cli_export):
    returncode, out, err = translate_at_prompt(["--engine", "onnxruntime", "--model", str(cli_export)],
                                               b"9/25/84\n\n", timeout=120)
    assert returncode == 0, err
    assert b"type a line" in err
    want = OnnxTranslator(cli_export).translate(["9/25/84"])[0].text
    assert out.decode().split("\n") == [want, "", ""]


def cli_error(argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return rc, err


@pytest.mark.parametrize("argv, message", [
    (["--engine", "onnxruntime"], "--engine onnxruntime needs --model DIR"),
    (["--engine", "onnxruntime", "--ckpt", "{run}"], "--ckpt is for --engine attnseq"),
    (["--engine", "onnxruntime", "--model", "{model}", "--device", "gpu"], "--engine onnxruntime runs on the CPU"),
    (["--model", "{model}"], "--model DIR is an ONNX export: add --engine onnxruntime"),
    (["--ckpt", "{run}", "--model", "{model}"], "--model DIR is an ONNX export: add --engine onnxruntime"),
    ([], "--ckpt RUN is required (or --engine onnxruntime --model DIR)"),
    (["--engine", "tensorrt", "--model", "{model}"], "invalid choice: 'tensorrt'"),
])
def test_cli_translate_flags_that_do_not_fit(argv, message, tiny_run, cli_export, capsys):
    argv = [a.replace("{run}", str(tiny_run)).replace("{model}", str(cli_export)) for a in argv]
    rc, err = cli_error(["translate", *argv], capsys)
    assert rc == 2 and err.startswith("attnseq translate: error: ") and message in err
    assert "see attnseq translate --help" in err


def test_cli_translate_model_that_is_not_an_export(tiny_run, capsys):
    rc, err = cli_error(["translate", "--engine", "onnxruntime", "--model", str(tiny_run)], capsys)
    assert rc == 1 and "missing manifest.json (not an attnseq ONNX export?)" in err


@pytest.mark.parametrize("missing, argv", [
    ("onnx", ["export", "--ckpt", "{run}", "--out", "{tmp}/out"]),
    ("onnxruntime", ["export", "--ckpt", "{run}", "--out", "{tmp}/out"]),
    ("onnxruntime", ["translate", "--engine", "onnxruntime", "--model", "{model}"]),
])
def test_cli_without_the_extra_says_what_to_install(missing, argv, tiny_run, cli_export, tmp_path, monkeypatch,
                                                    capsys):
    monkeypatch.setitem(sys.modules, missing, None)          # import now raises ImportError
    monkeypatch.setattr(sys, "stdin", io.StringIO("9/25/84\n"))
    argv = [a.replace("{run}", str(tiny_run)).replace("{model}", str(cli_export)).replace("{tmp}", str(tmp_path))
            for a in argv]
    rc, err = cli_error(argv, capsys)
    assert rc == 1 and f"needs the '{missing}' package: pip install 'attnseq[export]'" in err
    assert not (tmp_path / "out").exists()


def test_cli_export_float32_flag(tmp_path, capsys):
    src_tok, tgt_tok = WordTokenizer.build(["a b c"]), WordTokenizer.build(["x y z"])
    model = random_model(dtype="float64", Vs=src_tok.vocab_size, Vt=tgt_tok.vocab_size)
    save_checkpoint(tmp_path / "ckpt", model, None, src_tok, tgt_tok, {}, {"epoch": 0, "step": 0})
    argv = ["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]
    rc, err = cli_error(argv, capsys)
    assert rc == 1 and "dtype float64" in err and "--float32" in err
    assert main(argv + ["--float32"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["dtype"] == "float32" and m["provenance"]["checkpoint_dtype"] == "float64"


def test_readme_onnx_example_matches_attnseq_greedy(translators, export_dir, tiny_data, capsys):
    """README's plain-Python ONNX example, run as written against a real export, decodes like attnseq."""
    import re
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "onnxruntime" in b)
    ns = {}
    exec(compile(block.replace('d = "date-onnx"', f"d = {str(export_dir)!r}"), "README.md", "exec"), ns)
    texts = [s for s, _ in read_pairs(tiny_data / "test.tsv")][:40]
    want = [t.text for t in translators[0].translate(texts)]
    assert [ns["translate"](t) for t in texts] == want
