"""The option table: argparse, TOML, defaults, value checks and the --resume rules all come from it."""
import argparse
import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import TINY

import attnseq.run.checkpoint as ckmod
import attnseq.run.rundir as rundir
from attnseq.run.rundir import RunDir
from attnseq.cli import build_parser, main, train_config
from attnseq.errors import ConfigError
from attnseq.nn.layers import INIT_SCHEMES
from attnseq.nn.optim import OPTIMIZERS
from attnseq.run.config import (OPTIONS, POSITIVE_INT, TASK_DEFAULTS, Option, add_flags, config_keys, model_config,
                                model_row, problem, read_toml, resolve_config)
from attnseq.nn.config import ModelConfig
from attnseq.nn.model import AttentionSeq2seq
from attnseq.run.training import train

# config.json's "train" section as written before the table existed: old checkpoints must keep resuming
OLD_KEYS = {
    "data", "train", "valid", "test", "source_lang", "target_lang", "out", "epochs", "batch_size", "wordvec_size",
    "hidden_size", "optimizer", "lr", "clip", "dropout", "weight_decay", "lr_decay", "patience", "seed", "device",
    "threads", "dtype", "init", "reverse_source", "bucket", "bucket_jitter", "tokenizer", "vocab_size",
    "shared_vocab", "max_len", "eval_batch_size", "examples", "skip_nonfinite", "resume", "quick", "bleu",
    "swap_sides", "save_every",
}
# added since: the model's shape, the lr schedule, selection, time limit, kept checkpoints, output length,
# what the run records of its training (attention history, TensorBoard)
NEW_KEYS = {
    "encoder_layers", "decoder_layers", "bidirectional", "attention", "input_feeding", "label_smoothing",
    "tie_embeddings", "lr_schedule", "warmup", "plateau_factor", "plateau_patience", "select_by", "max_minutes",
    "keep_last", "average_last", "max_output_len", "cell", "keep_every", "track_examples", "track_every",
    "tensorboard", "tensorboard_every",
}
SAVED_KEYS = OLD_KEYS | NEW_KEYS
FAKE = Option("freeze_epochs", int, 1, group="training", metavar="N", resumable=False, check=POSITIVE_INT,
              help="epochs with the embeddings frozen")


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def _table_flags(options) -> set[str]:
    out = set()
    for o in options:
        if o.flag:
            out.add(o.flag_name)
            if o.type is bool:
                out.add("--no-" + o.flag_name[2:])
    return out


def _train_parser():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _toml(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _saved_run(tmp_path, **train):
    """A run dir whose last/config.json holds ``train`` (all that RunDir.saved_options reads)."""
    last = tmp_path / "run" / "last"
    last.mkdir(parents=True)
    (last / "config.json").write_text(json.dumps({"format_version": 1, "train": train}))
    return str(tmp_path / "run")


def _resumed(cfg, options=OPTIONS):
    """resolve_config for --resume, with the saved options of the run in cfg["out"], as train() reads them."""
    return resolve_config(dict(cfg, resume=True), RunDir(cfg["out"]).saved_options(), options=options)


# -- argparse --------------------------------------------------------------------------------------
def test_train_flags_are_the_table():
    assert _flags(_train_parser()) == _table_flags(OPTIONS)
    assert "--bleu" not in _flags(_train_parser())              # a config key without a flag


def test_help_shows_defaults_and_task_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())             # undo argparse's line wrapping
    assert "--epochs N passes over the training data (default 10; date 6, addition 30" in out
    assert "--hidden-size H hidden size of the recurrent layers (default 256; numbers 128)" in out
    assert "--cell {lstm,gru} the recurrent cell: lstm (the book's) or gru" in out
    assert "--plot, --no-plot write RUN_DIR/attention.png at the end (default on)" in out
    assert "5% of --train" in out


def test_choices_come_from_their_registries():
    rows = {o.name: o for o in OPTIONS}
    for name in OPTIMIZERS:
        assert problem(rows["optimizer"], name) is None
    for name in INIT_SCHEMES:
        assert problem(rows["init"], name) is None
    assert problem(rows["optimizer"], "adamw") == f"must be one of {', '.join(OPTIMIZERS)}"


def test_a_new_row_reaches_argparse_toml_defaults_and_resume(tmp_path):
    options = OPTIONS + (FAKE,)
    parser = argparse.ArgumentParser()
    add_flags(parser, options)
    assert _flags(parser) == _table_flags(options)
    assert "--freeze-epochs N epochs with the embeddings frozen (default 1)" in " ".join(parser.format_help().split())
    assert parser.parse_args(["--freeze-epochs", "2"]).freeze_epochs == 2
    assert read_toml(_toml(tmp_path, "freeze_epochs = 2\n"), options) == {"freeze_epochs": 2}
    with pytest.raises(ConfigError, match='freeze_epochs must be an integer, got "2"'):
        read_toml(_toml(tmp_path, 'freeze_epochs = "2"\n'), options)
    with pytest.raises(ConfigError, match="unknown key"):
        read_toml(_toml(tmp_path, "freeze_epochs = 2\n"))                   # not in the real table
    assert resolve_config(dict(data="date", out="r"), options=options)["freeze_epochs"] == 1
    with pytest.raises(ConfigError, match="--freeze-epochs must be a positive integer, got 0"):
        resolve_config(dict(data="date", out="r", freeze_epochs=0), options=options)
    saved = dict(data="date", out="r", freeze_epochs=3)
    with pytest.raises(ConfigError, match="--freeze-epochs differ from the run"):
        resolve_config(dict(out="r", resume=True, freeze_epochs=5), saved, options=options)
    assert resolve_config(dict(out="r", resume=True), saved, options=options)["freeze_epochs"] == 3


# -- TOML ------------------------------------------------------------------------------------------
def test_toml_wrong_type_names_the_key(tmp_path):
    path = _toml(tmp_path, 'data = "date"\nepochs = "3"\n')
    with pytest.raises(ConfigError) as e:
        read_toml(path)
    assert str(e.value) == f'--config {path}: epochs must be an integer, got "3"'


@pytest.mark.parametrize("text, message", [
    ("hiden-size = 64\nepochs = 2\n", "unknown key(s) hiden-size"),
    ("batch-size = 64\nbatch_size = 32\n", "batch-size and batch_size are the same option"),
    ("dropout = 1.5\n", "dropout must be in [0, 1), got 1.5"),
    ("optimizer = \"adamw\"\n", "optimizer must be one of"),
    ("bucket = 1\n", "bucket must be true or false, got 1"),
    ("lr = true\n", "lr must be a number, got true"),
    ("[model]\nhidden_size = 3\n", "unknown key(s) model"),
    ("epochs = \n", "not valid TOML"),
])
def test_bad_toml_is_one_line_naming_the_key(tmp_path, capsys, text, message):
    path = _toml(tmp_path, text)
    assert main(["train", "--config", path, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--config {path}: " in err and message in err, err


def test_toml_accepts_dashes_and_underscores(tmp_path):
    cfg = read_toml(_toml(tmp_path, 'hidden-size = 16\nwordvec_size = 8\n"lr-decay" = 0.5\nlr = 1\n'))
    assert cfg == {"hidden_size": 16, "wordvec_size": 8, "lr_decay": 0.5, "lr": 1}


# -- defaults and checks -------------------------------------------------------------------------
def test_defaults_then_task_then_user():
    date = resolve_config(dict(data="date", out="r"))
    assert (date["epochs"], date["lr"], date["hidden_size"], date["tokenizer"]) == (6, 3e-3, 256, "char")
    assert resolve_config(dict(data="date", out="r", epochs=1))["epochs"] == 1
    quick = resolve_config(dict(data="date", out="r", quick=True))
    assert (quick["epochs"], quick["batch_size"], quick["lr"], quick["lr_schedule"], quick["warmup"]) == \
        (1, 64, 1e-2, "cosine", 50)
    assert resolve_config(dict(data="date", out="r", quick=True, epochs=2, lr=3e-3))["epochs"] == 2   # flags win
    mine = resolve_config(dict(data="date", out="r", quick=True, lr_schedule="constant"))
    assert (mine["lr_schedule"], mine["warmup"]) == ("constant", 0)        # the user's schedule replaces --quick's
    decay = resolve_config(dict(data="date", out="r", quick=True, lr_decay=0.9))
    assert (decay["lr_schedule"], decay["warmup"], decay["lr_decay"], decay["lr"]) == ("constant", 0, 0.9, 1e-2)
    with pytest.raises(ConfigError, match="--warmup is for"):
        resolve_config(dict(data="date", out="r", quick=True, lr_schedule="constant", warmup=5))
    other = resolve_config(dict(train="x.tsv", out="r", quick=True))
    assert (other["epochs"], other["lr_schedule"], other["batch_size"]) == (3, "constant", 64)
    corpus = resolve_config(dict(train="x.tsv", out="r"))
    assert (corpus["epochs"], corpus["tokenizer"], corpus["max_len"]) == (20, "sentencepiece", 100)
    assert set(date) == SAVED_KEYS == set(config_keys())


def test_defaults_pass_their_own_checks():
    keys = config_keys()
    for opt in OPTIONS:
        assert opt.default is None or problem(opt, opt.default) is None, opt.name
    for task, values in TASK_DEFAULTS.items():
        for name, value in values.items():
            assert name in keys, (task, name)
            assert problem(keys[name], value) is None, (task, name, value)


@pytest.mark.parametrize("cfg, message", [
    (dict(epochs=0), "--epochs must be a positive integer, got 0"),
    (dict(epochs="3"), "--epochs must be an integer, got '3'"),
    (dict(threads=-1), "--threads must be 0 (one per core) or a positive integer, got -1"),
    (dict(lr=0.0), "--lr must be positive, got 0.0"),
    (dict(dropout=1.0), "--dropout must be in [0, 1), got 1.0"),
    (dict(tokenizer="bpe"), "--tokenizer must be one of char, word, sentencepiece, got 'bpe'"),
    (dict(weight_decay=-1e-4), "--weight-decay must be >= 0"),
    (dict(max_len=0), "--max-len must be a positive integer"),
    (dict(plot=False), "unknown option(s): plot"),                 # CLI only, never saved
    (dict(out=None), "--out RUN_DIR is required"),
])
def test_bad_values_name_the_flag(cfg, message):
    with pytest.raises(ConfigError) as e:
        resolve_config({"data": "date", "out": "r", **cfg})
    assert message in str(e.value)


# -- resume ----------------------------------------------------------------------------------------
def test_resume_takes_the_saved_options_and_checks_the_fixed_ones(tmp_path):
    saved = {**resolve_config(dict(data="date", out="r", hidden_size=64, epochs=2)), "dropout": 0.2}
    run = _saved_run(tmp_path, **saved)
    cfg = _resumed(dict(out=run, epochs=5, lr=0.01))                              # resumable: accepted
    assert (cfg["epochs"], cfg["lr"], cfg["hidden_size"], cfg["dropout"], cfg["out"]) == (5, 0.01, 64, 0.2, run)
    for change, flag in ((dict(hidden_size=32), "--hidden-size"), (dict(optimizer="sgd"), "--optimizer"),
                         (dict(tokenizer="word"), "--tokenizer"), (dict(seed=1), "--seed")):
        with pytest.raises(ConfigError, match=f"--resume: {flag} differ from the run in {run}; "):
            _resumed(dict(out=run, **change))
    assert _resumed(dict(out=run, hidden_size=64))["hidden_size"] == 64          # the same: fine
    assert resolve_config(dict(data="date", out=run, resume=True, hidden_size=32))["hidden_size"] == 32  # none saved


def test_resume_config_lacking_a_newer_key_takes_its_default(tmp_path):
    saved = resolve_config(dict(data="date", out="r", bucket_jitter=2.0))
    del saved["bucket_jitter"], saved["skip_nonfinite"]
    cfg = resolve_config(dict(out="r", resume=True), saved)
    assert cfg["bucket_jitter"] == TASK_DEFAULTS["date"]["bucket_jitter"] and cfg["skip_nonfinite"] is False


def test_resume_a_run_from_before_the_new_options(tiny_run, tmp_path):
    """config.json and state.json as written before the model options, schedules and --select-by: the run
    resumes as it was trained (the book's model, constant lr, best/ by exact match even on a corpus)."""
    run = tmp_path / "older"
    shutil.copytree(tiny_run, run)
    for name in ("best", "last"):
        config = json.loads((run / name / "config.json").read_text())
        config["train"] = {k: v for k, v in config["train"].items() if k in OLD_KEYS}
        (run / name / "config.json").write_text(json.dumps(config))
        state = json.loads((run / name / "state.json").read_text())
        state["best"] = [0.0, state["best"][1]]                        # [exact, -loss], as it was
        del state["best_metric"], state["schedule"]
        (run / name / "state.json").write_text(json.dumps(state))
    cfg = _resumed(dict(out=str(run), epochs=3))
    assert cfg["select_by"] == "exact" and cfg["lr_schedule"] == "constant"
    assert model_options_of(cfg) == ModelConfig.options()
    quick = tmp_path / "older-quick-date"                              # an old `--data date --quick` run
    shutil.copytree(run, quick)
    for name in ("best", "last"):
        config = json.loads((quick / name / "config.json").read_text())
        config["train"].update(data="date", train=None, quick=True, out=str(quick))
        (quick / name / "config.json").write_text(json.dumps(config))
    old_quick = _resumed(dict(out=str(quick)))
    assert (old_quick["lr_schedule"], old_quick["warmup"]) == ("constant", 0)   # not today's --quick schedule
    assert _resumed(dict(out=str(run), select_by="bleu"))["select_by"] == "bleu"
    logs = []
    train(dict(out=str(run), resume=True, epochs=3, examples=0), log=logs.append)
    state = json.loads((run / "last" / "state.json").read_text())
    assert state["best_metric"] == "exact" and state["schedule"] == {"name": "constant"}
    assert not any("best/ was chosen by" in line for line in logs)


def test_resume_an_old_run_whose_config_lacks_a_key(tiny_run, tmp_path, monkeypatch):
    """A checkpoint written before an option existed resumes, the option at its default, config.json read once."""
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    for name in ("best", "last"):
        path = run / name / "config.json"
        config = json.loads(path.read_text())
        assert set(config["train"]) == SAVED_KEYS
        del config["train"]["skip_nonfinite"], config["train"]["threads"]
        path.write_text(json.dumps(config))
    reads = []
    real = rundir.load_checkpoint_config
    monkeypatch.setattr(rundir, "load_checkpoint_config", lambda path: reads.append(path) or real(path))
    result = train(dict(out=str(run), resume=True, epochs=3, examples=0), log=lambda *a: None)
    assert result["epochs"] == 3
    assert [p.name for p in reads].count("last") == 1                 # resume check and checkpoint load share it
    train_cfg = json.loads((run / "last" / "config.json").read_text())["train"]
    assert set(train_cfg) == SAVED_KEYS and train_cfg["skip_nonfinite"] is False and train_cfg["threads"] == 0
    assert train_cfg["epochs"] == 3 and train_cfg["hidden_size"] == 32


def test_config_json_holds_what_was_resolved(tiny_run, tiny_data):
    """config.json's "train" section is the resolved config of the command line, CLI-only flags left out."""
    args = build_parser().parse_args(["train", "--data", str(tiny_data), "--out", str(tiny_run), *TINY])
    saved = json.loads((tiny_run / "last" / "config.json").read_text())["train"]
    assert saved == resolve_config(train_config(args)) and "plot" not in saved and "config" not in saved


def test_toml_takes_a_bare_step_count_for_save_every(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("save_every = 2000\nepochs = 3\n")
    assert read_toml(str(f)) == {"save_every": "2000", "epochs": 3}
    f.write_text('save_every = 2.5\n')
    with pytest.raises(ConfigError, match="save_every must be a string"):
        read_toml(str(f))


# -- the options of issue 14: model shape, lr schedule, selection, time limit, kept checkpoints ----------
NEW_FLAGS = ["--encoder-layers", "2", "--decoder-layers", "3", "--bidirectional", "--attention", "additive",
             "--input-feeding", "--label-smoothing", "0.1", "--tie-embeddings", "--lr-schedule", "cosine",
             "--warmup", "100", "--plateau-factor", "0.25", "--plateau-patience", "2", "--select-by", "loss",
             "--max-minutes", "90", "--keep-last", "4"]
NEW_VALUES = dict(encoder_layers=2, decoder_layers=3, bidirectional=True, attention="additive", input_feeding=True,
                  label_smoothing=0.1, tie_embeddings=True, lr_schedule="cosine", warmup=100, plateau_factor=0.25,
                  plateau_patience=2, select_by="loss", max_minutes=90.0, keep_last=4)


def test_new_options_as_flags_and_toml(tmp_path):
    args = _train_parser().parse_args(["--data", "date", "--out", "r", *NEW_FLAGS])
    cfg = resolve_config(train_config(args))
    assert {k: cfg[k] for k in NEW_VALUES} == NEW_VALUES
    toml = "".join(f"{k.replace('_', '-')} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}\n"
                   for k, v in NEW_VALUES.items())
    assert read_toml(_toml(tmp_path, toml)) == NEW_VALUES
    date = resolve_config(dict(data="date", out="r"))
    assert (date["encoder_layers"], date["attention"], date["lr_schedule"], date["keep_last"],
            date["max_minutes"]) == (1, "dot", "constant", 0, None)


def test_select_by_defaults_per_task():
    assert {task: resolve_config(dict(data=task, out="r"))["select_by"]
            for task in ("date", "addition", "toy-en-ko")} == {"date": "exact", "addition": "exact", "toy-en-ko": "bleu"}
    assert resolve_config(dict(train="x.tsv", out="r"))["select_by"] == "bleu"         # any corpus
    assert resolve_config(dict(data="some/dir", out="r"))["select_by"] == "bleu"


@pytest.mark.parametrize("cfg, message", [
    (dict(attention="luong"), "--attention must be one of dot, general, additive, got 'luong'"),
    (dict(encoder_layers=0), "--encoder-layers must be a positive integer, got 0"),
    (dict(label_smoothing=1.0), "--label-smoothing must be in [0, 1), got 1.0"),
    (dict(lr_schedule="step"), "--lr-schedule must be one of constant, plateau, warmup-rsqrt, cosine"),
    (dict(select_by="chrf"), "--select-by must be one of bleu, exact, loss, got 'chrf'"),
    (dict(max_minutes=0), "--max-minutes must be positive, got 0"),
    (dict(keep_last=-1), "--keep-last must be >= 0, got -1"),
    (dict(plateau_factor=1.0), "--plateau-factor must be in (0, 1), got 1.0"),
    (dict(lr_schedule="warmup-rsqrt"), "--lr-schedule warmup-rsqrt needs --warmup STEPS"),
    (dict(warmup=10), "--warmup is for --lr-schedule warmup-rsqrt, cosine or plateau, not constant"),
    (dict(lr_schedule="cosine", lr_decay=0.9), "--lr-decay is for --lr-schedule constant"),
])
def test_bad_new_values_name_the_flag(cfg, message):
    with pytest.raises(ConfigError) as e:
        resolve_config({"data": "date", "out": "r", **cfg})
    assert message in str(e.value)


def test_a_tasks_own_lr_decay_does_not_block_another_schedule():
    cfg = resolve_config(dict(data="addition", out="r", lr_schedule="cosine"))
    assert cfg["lr_decay"] == 0.95 and cfg["lr_schedule"] == "cosine"             # left unused by cosine


def test_resume_rules_of_the_new_options(tmp_path):
    saved = resolve_config(dict(data="date", out="r", lr_schedule="cosine", warmup=5))
    for change, flag in ((dict(encoder_layers=2), "--encoder-layers"), (dict(attention="general"), "--attention"),
                         (dict(label_smoothing=0.1), "--label-smoothing"), (dict(tie_embeddings=True), "--tie-embeddings"),
                         (dict(lr_schedule="plateau"), "--lr-schedule"), (dict(warmup=6), "--warmup")):
        with pytest.raises(ConfigError, match=f"--resume: {flag} differ from the run"):
            resolve_config(dict(out="r", resume=True, **change), saved)
    cfg = resolve_config(dict(out="r", resume=True, select_by="loss", max_minutes=5.0, keep_last=2,
                              plateau_patience=3), saved)
    assert (cfg["select_by"], cfg["max_minutes"], cfg["keep_last"], cfg["lr_schedule"]) == ("loss", 5.0, 2, "cosine")


def model_options_of(cfg: dict) -> dict:
    """The options beyond the book's model that a config gives its model."""
    c = model_config(cfg, 5, 6)
    return {k: getattr(c, k) for k in ModelConfig.options()}


def test_a_config_that_sets_no_model_option_builds_the_books_model():
    """A run that sets none of them builds AttentionSeq2seq exactly as before they existed."""
    for task in ("date", "addition", "toy-en-ko", None):
        cfg = resolve_config(dict(data=task or "dir", out="r"))
        assert model_options_of(cfg) == ModelConfig.options()
    cfg = resolve_config(dict(data="date", out="r"))
    assert model_options_of({**cfg, "attention": "general", "warmup": 3}) == {**ModelConfig.options(),
                                                                             "attention": "general"}
    built = AttentionSeq2seq.from_config(model_config({**cfg, "hidden_size": 8, "seed": 4}, 5, 6))
    book = AttentionSeq2seq(5, 6, cfg["wordvec_size"], 8, seed=4)
    assert built.config == book.config
    for (k, a), b in zip(built.state_dict().items(), book.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_the_model_options_are_listed_once():
    """ModelConfig's fields make the table's model rows (their types, defaults and choices), the ONNX
    export's book model and the config keys it knows (without onnx installed); a name the model does not
    take is an error."""
    from attnseq.export.spec import BOOK_OPTIONS, KNOWN_MODEL_KEYS, TRAINING_ONLY
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    rows = {o.name: o for o in OPTIONS if o.model}
    assert set(rows) == set(fields) - {"src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id"}
    for name, row in rows.items():
        f = fields[name]
        assert (row.type, row.default, row.choices) == (f.type, f.default, f.metadata.get("choices")), name
    options = ModelConfig.options()
    assert list(options) == ["encoder_layers", "decoder_layers", "bidirectional", "attention", "input_feeding",
                             "label_smoothing", "tie_embeddings", "cell"]
    assert all(rows[k].group == "model" and not rows[k].resumable for k in options)
    assert {**BOOK_OPTIONS, **{k: options[k] for k in TRAINING_ONLY}} == options
    assert KNOWN_MODEL_KEYS == set(AttentionSeq2seq(5, 6, 4, 8).config.to_dict()) == set(fields)
    with pytest.raises(TypeError, match="unknown option.* heads; its options are encoder_layers, "):
        AttentionSeq2seq(5, 6, 4, 8, heads=2)
    with pytest.raises(KeyError):
        model_row("heads")


def test_model_options_reach_the_model(tiny_data, tmp_path):
    """The flags build the model they name; config.json's model and train sections both hold them."""
    wanted = dict(encoder_layers=2, decoder_layers=2, bidirectional=True, attention="general", input_feeding=True,
                  label_smoothing=0.1, tie_embeddings=True)
    out = tmp_path / "deep"
    flags = ["--encoder-layers", "2", "--decoder-layers", "2", "--bidirectional", "--attention", "general",
             "--input-feeding", "--label-smoothing", "0.1", "--tie-embeddings"]
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY, "--epochs", "1", "--hidden-size", "16",
                 "--wordvec-size", "16", *flags]) == 0
    ck = ckmod.load_checkpoint(out)
    assert {k: ck.model.config[k] for k in wanted} == wanted
    assert {k: ck.config["train"][k] for k in wanted} == wanted
    plain = AttentionSeq2seq(ck.src_tok.vocab_size, ck.tgt_tok.vocab_size, 16, 16)
    assert sorted(ck.model.state_dict()) != sorted(plain.state_dict())       # a different model, not just a label


def test_the_shipped_translation_recipe_is_valid():
    """configs/translation.toml names only real options, with values of the right type, and builds a model."""
    from pathlib import Path
    from attnseq.nn.model import AttentionSeq2seq
    recipe = read_toml(str(Path(__file__).resolve().parent.parent / "configs" / "translation.toml"))
    assert recipe["bidirectional"] and recipe["tie_embeddings"] and recipe["label_smoothing"] == 0.1
    model = AttentionSeq2seq(50, 60, recipe["wordvec_size"], recipe["hidden_size"], bidirectional=True,
                             tie_embeddings=True, label_smoothing=recipe["label_smoothing"])
    assert model.config["bidirectional"] and model.config["tie_embeddings"]
    cfg = resolve_config(dict(recipe, train="x.tsv", out="r"))        # every check of a whole config passes
    assert (cfg["keep_last"], cfg["average_last"]) == (3, 3)
    assert cfg["lr_schedule"] in ("cosine", "linear") and cfg["max_minutes"] > 0     # anneals to its budget ...
    assert cfg["patience"] >= cfg["epochs"]                                         # ... which patience never cuts
