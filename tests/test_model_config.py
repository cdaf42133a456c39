"""The model's metadata, declared in attnseq.nn: ``ModelConfig`` (typed, checked, config.json's "model" section)
and the output-length rule (``model.output_len_rule``, config.json's "max_output_len"), each saved with a
checkpoint and loaded back as it was; checkpoints written without either key load as they did."""
import dataclasses
import json

import numpy as np
import pytest

from attnseq import AttentionSeq2seq, CheckpointError
from attnseq.data.tokenizers import CharTokenizer
from attnseq.nn.config import ModelConfig
from attnseq.nn.output_length import LEGACY_RULE, OutputLengthRule
from attnseq.run.checkpoint import load_checkpoint, save_checkpoint

ALL = dict(encoder_layers=2, decoder_layers=3, bidirectional=True, attention="general", input_feeding=True,
           label_smoothing=0.1, tie_embeddings=True)
SRC, TGT = CharTokenizer.build(["abcdefg"]), CharTokenizer.build(["xyz"])


def save(path, model):
    save_checkpoint(path, model, None, SRC, TGT, {}, {"epoch": 0, "step": 0})
    return path


def edit_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


def one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    return str(e.value)


# -- ModelConfig ----------------------------------------------------------------------------------
def test_the_model_is_built_from_its_config():
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6, dropout=0.1, seed=3, **ALL)
    c = model.config
    assert isinstance(c, ModelConfig)
    assert (c.src_vocab_size, c.wordvec_size, c.hidden_size, c.dropout, c.seed) == (SRC.vocab_size, 5, 6, 0.1, 3)
    assert {k: getattr(c, k) for k in ALL} == ALL
    assert model.config["hidden_size"] == 6                        # read access as for the dict it once was
    with pytest.raises(KeyError):
        model.config["heads"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hidden_size = 8
    again = AttentionSeq2seq.from_config(c)
    assert again.config == c and list(again.state_dict()) == list(model.state_dict())
    for (k, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)              # the seed is in the config too


def test_values_become_plain_json_types():
    c = ModelConfig(np.int64(11), 9, np.int32(5), hidden_size=np.int64(6), dtype=np.float64, seed=np.int64(2),
                    bidirectional=np.bool_(True), label_smoothing=0, dropout=0)
    d = c.to_dict()
    assert d["dtype"] == "float64" and d["label_smoothing"] == 0.0 and d["dropout"] == 0.0
    assert [type(d[k]) for k in ("src_vocab_size", "wordvec_size", "hidden_size", "seed", "bidirectional",
                                 "label_smoothing", "dtype")] == [int, int, int, int, bool, float, str]
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == c


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(dtype="float16"), ValueError, "dtype must be float32 or float64, got float16"),
    (dict(init="orthogonal"), ValueError, r"init must be one of \('xavier', 'he'\), got 'orthogonal'"),
    (dict(hidden_size=0), ValueError, "hidden_size must be a positive integer, got 0"),
    (dict(wordvec_size=True), ValueError, "wordvec_size must be a positive integer, got True"),
    (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    (dict(encoder_layers=0), ValueError, "encoder_layers must be a positive integer, got 0"),
    (dict(decoder_layers=2.0), ValueError, "decoder_layers must be a positive integer, got 2.0"),
    (dict(bidirectional="no"), ValueError, "bidirectional must be true or false, got 'no'"),
    (dict(attention="luong"), ValueError, "attention must be one of dot, general, additive, got 'luong'"),
    (dict(label_smoothing=True), ValueError, r"label_smoothing must be a number in \[0, 1\), got True"),
    (dict(bidirectional=True, hidden_size=7), ValueError, "hidden_size must be even for a bidirectional encoder"),
    (dict(heads=4, coverage=0.1), TypeError, "unknown option.s. coverage, heads; its options are encoder_layers, "
                                             "decoder_layers, bidirectional, attention, input_feeding, "
                                             "label_smoothing, tie_embeddings, cell$"),
    (dict(cell="rnn"), ValueError, "cell must be one of lstm, gru, got 'rnn'"),
])
def test_a_bad_option_is_one_error_naming_it(kwargs, error, match):
    values = {"src_vocab_size": 11, "tgt_vocab_size": 9, "hidden_size": 8, **kwargs}
    with pytest.raises(error, match=match):
        ModelConfig.from_dict(values)
    with pytest.raises(error, match=match):
        AttentionSeq2seq(**values)


def test_model_config_round_trip_through_config_json(tmp_path):
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6, dtype="float64", seed=7, **ALL)
    ckpt = save(tmp_path / "ck", model)
    written = json.loads((ckpt / "config.json").read_text())["model"]
    assert written == model.config.to_dict()
    assert set(written) == {f.name for f in dataclasses.fields(ModelConfig)}
    ck = load_checkpoint(ckpt)
    assert ck.model.config == model.config
    src = np.array([[4, 5, 6], [7, 0, 0]])
    np.testing.assert_array_equal(ck.model.generate(src)[0], model.generate(src)[0])


def test_a_config_json_without_a_key_means_its_default(tmp_path):
    """A checkpoint from before the options (or from before any later field): the missing keys take
    their defaults, and it loads as the book's model it was."""
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6, seed=2)
    ckpt = save(tmp_path / "old", model)
    edit_config(ckpt, lambda c: [c["model"].pop(k) for k in ModelConfig.options()])
    ck = load_checkpoint(ckpt)
    assert ck.model.config == model.config
    for (k, a), b in zip(ck.model.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(attention="luong"), "attention must be one of"),
    (lambda m: m.update(coverage_penalty=0.2), "unknown option.s. coverage_penalty"),
    (lambda m: m.pop("src_vocab_size"), "src_vocab_size"),
])
def test_a_bad_model_section_is_one_checkpoint_error(tmp_path, change, match):
    ckpt = save(tmp_path / "bad", AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6))
    edit_config(ckpt, lambda c: change(c["model"]))
    msg = one_line_error(ckpt, f"bad/config.json: bad model config .*{match}")
    assert "Traceback" not in msg


# -- the output-length rule ---------------------------------------------------------------------
def test_the_rule_is_a_declared_attribute_that_defaults_to_the_legacy_rule():
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6)
    assert "output_len_rule" in AttentionSeq2seq.__annotations__
    assert vars(model)["output_len_rule"] == LEGACY_RULE == OutputLengthRule(2, 10)
    assert model.replica().output_len_rule is model.output_len_rule


def test_the_rule_is_saved_and_loaded_with_the_checkpoint(tmp_path):
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6)
    new = load_checkpoint(save(tmp_path / "new", model))
    assert json.loads((tmp_path / "new" / "config.json").read_text())["max_output_len"] == \
        {"scale": 2, "offset": 10, "rule": "2 * Ts + 10"}
    assert new.model.output_len_rule == LEGACY_RULE
    model.output_len_rule = OutputLengthRule(7, -3)
    ckpt = save(tmp_path / "fitted", model)
    assert json.loads((ckpt / "config.json").read_text())["max_output_len"] == \
        {"scale": 7, "offset": -3, "rule": "7 * Ts - 3"}
    loaded = load_checkpoint(ckpt).model
    assert loaded.output_len_rule == OutputLengthRule(7, -3)
    loaded.state_dict()["decoder.out.b"][loaded.eos_id] = -1e4     # never ends: runs to the limit
    assert loaded.generate(np.array([[4, 5, 6, 7]]))[0].shape == (1, 7 * 4 - 3)


def test_a_checkpoint_without_the_rule_keeps_the_legacy_one(tmp_path):
    model = AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6)
    model.output_len_rule = OutputLengthRule(5, 0)
    for name, change in (("absent", lambda c: c.pop("max_output_len")),
                         ("null", lambda c: c.update(max_output_len=None))):
        ckpt = save(tmp_path / name, model)
        edit_config(ckpt, change)
        assert load_checkpoint(ckpt).model.output_len_rule == LEGACY_RULE


@pytest.mark.parametrize("value", [{"scale": -1, "offset": 3}, {"scale": 2}, "2*Ts+10", {"scale": 0, "offset": 0},
                                   {"scale": 1.5, "offset": 2}])
def test_a_malformed_rule_is_one_checkpoint_error(tmp_path, value):
    ckpt = save(tmp_path / "bad", AttentionSeq2seq(SRC.vocab_size, TGT.vocab_size, 5, 6))
    edit_config(ckpt, lambda c: c.update(max_output_len=value))
    one_line_error(ckpt, r"bad/config.json: max_output_len: expected \{\"scale\": int, \"offset\": int\}")
