"""The option table: argparse, TOML, defaults, value checks and the --resume rules all come from it."""
import argparse
import json
import shutil

import pytest
from conftest import TINY

import attnseq.run.checkpoint as ckmod
from attnseq.cli import build_parser, main, train_config
from attnseq.errors import ConfigError
from attnseq.nn.layers import INIT_SCHEMES
from attnseq.nn.optim import OPTIMIZERS
from attnseq.run.config import (OPTIONS, POSITIVE_INT, TASK_DEFAULTS, Option, add_flags, config_keys, problem,
                                read_toml, resolve_config)
from attnseq.run.training import train

# config.json's "train" section as written before the table existed: old checkpoints must keep resuming
SAVED_KEYS = {
    "data", "train", "valid", "test", "source_lang", "target_lang", "out", "epochs", "batch_size", "wordvec_size",
    "hidden_size", "optimizer", "lr", "clip", "dropout", "weight_decay", "lr_decay", "patience", "seed", "device",
    "threads", "dtype", "init", "reverse_source", "bucket", "bucket_jitter", "tokenizer", "vocab_size",
    "shared_vocab", "max_len", "eval_batch_size", "examples", "skip_nonfinite", "resume", "quick", "bleu",
    "swap_sides", "save_every",
}
FAKE = Option("warmup", int, 1, group="training", metavar="N", resumable=False, check=POSITIVE_INT,
              help="epochs of linear warm-up")


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
    """A run dir whose last/config.json holds ``train`` (all resolve_config reads on --resume)."""
    last = tmp_path / "run" / "last"
    last.mkdir(parents=True)
    (last / "config.json").write_text(json.dumps({"format_version": 1, "train": train}))
    return str(tmp_path / "run")


# -- argparse --------------------------------------------------------------------------------------
def test_train_flags_are_the_table():
    assert _flags(_train_parser()) == _table_flags(OPTIONS)
    assert "--bleu" not in _flags(_train_parser())              # a config key without a flag


def test_help_shows_defaults_and_task_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())             # undo argparse's line wrapping
    assert "--epochs N passes over the training data (default 10; date 6, addition 30" in out
    assert "--hidden-size H LSTM hidden size (default 256)" in out
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
    assert "--warmup N epochs of linear warm-up (default 1)" in " ".join(parser.format_help().split())
    assert parser.parse_args(["--warmup", "2"]).warmup == 2
    assert read_toml(_toml(tmp_path, "warmup = 2\n"), options) == {"warmup": 2}
    with pytest.raises(ConfigError, match='warmup must be an integer, got "2"'):
        read_toml(_toml(tmp_path, 'warmup = "2"\n'), options)
    with pytest.raises(ConfigError, match="unknown key"):
        read_toml(_toml(tmp_path, "warmup = 2\n"))                   # not in the real table
    assert resolve_config(dict(data="date", out="r"), options=options)["warmup"] == 1
    with pytest.raises(ConfigError, match="--warmup must be a positive integer, got 0"):
        resolve_config(dict(data="date", out="r", warmup=0), options=options)
    run = _saved_run(tmp_path, data="date", out="r", warmup=3)
    with pytest.raises(ConfigError, match="--warmup differ from the run"):
        resolve_config(dict(out=run, resume=True, warmup=5), options=options)
    assert resolve_config(dict(out=run, resume=True), options=options)["warmup"] == 3


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
    assert resolve_config(dict(data="date", out="r", quick=True))["epochs"] == 2
    assert resolve_config(dict(train="x.tsv", out="r", quick=True))["epochs"] == 3
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
    cfg = resolve_config(dict(out=run, resume=True, epochs=5, lr=0.01))          # resumable: accepted
    assert (cfg["epochs"], cfg["lr"], cfg["hidden_size"], cfg["dropout"], cfg["out"]) == (5, 0.01, 64, 0.2, run)
    for change, flag in ((dict(hidden_size=32), "--hidden-size"), (dict(optimizer="sgd"), "--optimizer"),
                         (dict(tokenizer="word"), "--tokenizer"), (dict(seed=1), "--seed")):
        with pytest.raises(ConfigError, match=f"--resume: {flag} differ from the run in "):
            resolve_config(dict(out=run, resume=True, **change))
    assert resolve_config(dict(out=run, resume=True, hidden_size=64))["hidden_size"] == 64    # the same: fine


def test_resume_config_lacking_a_newer_key_takes_its_default(tmp_path):
    saved = resolve_config(dict(data="date", out="r", bucket_jitter=2.0))
    del saved["bucket_jitter"], saved["skip_nonfinite"]
    cfg = resolve_config(dict(out=_saved_run(tmp_path, **saved), resume=True))
    assert cfg["bucket_jitter"] == TASK_DEFAULTS["date"]["bucket_jitter"] and cfg["skip_nonfinite"] is False


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
    real = ckmod.load_checkpoint_config
    monkeypatch.setattr(ckmod, "load_checkpoint_config", lambda path: reads.append(path) or real(path))
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
