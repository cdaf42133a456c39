"""The options of ``attnseq train``: one table, and everything derived from it.

Each row of ``OPTIONS`` is one option: its config key (``batch_size``; the flag is ``--batch-size``),
type, default, choices, help, and whether ``--resume`` may change it. From the table come

- the ``attnseq train`` flags and their help, defaults shown (``add_flags``);
- the ``--config FILE.toml`` reader: unknown keys and wrong types name the key (``read_toml``);
- the full config of a run (``resolve_config``): the table's default, then the built-in task's
  (``TASK_DEFAULTS``), then the user's; each value checked; on ``--resume`` the options left out
  come from the run's config.json and the ones marked not resumable must agree with it.

Adding an option is adding a row. A config is a plain dict keyed by the rows' names; what it
holds is what config.json's "train" section holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from ..data.datasets import GENERATORS
from ..data.tokenizers import TOKENIZERS
from ..errors import ConfigError
from ..nn.backend import check_device
from ..nn.config import ModelConfig
from ..nn.optim import OPTIMIZERS
from ..nn.output_length import OutputLengthRule
from .decoding import EVAL_BATCH_SIZE
from .schedules import SCHEDULES
from .selection import LEGACY_METRIC, SELECT_BY


@dataclass(frozen=True)
class Check:
    """A value test beyond type and choices; a failure reads ``--FLAG must be {must}, got VALUE``.

    ``ok`` may raise an ``AttnseqError`` of its own instead (the device check does).
    """
    ok: Callable[[Any], bool]
    must: str


POSITIVE_INT = Check(lambda v: v >= 1, "a positive integer")
POSITIVE = Check(lambda v: v > 0, "positive")
NON_NEGATIVE = Check(lambda v: v >= 0, ">= 0")
FRACTION = Check(lambda v: 0 <= v < 1, "in [0, 1)")
DEVICE = Check(lambda v: check_device(v) is not None, "cpu, gpu or gpu:N")
_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def save_interval(text: str) -> tuple[str, float] | None:
    """``--save-every``: "2000" -> ("steps", 2000), "10m" -> ("seconds", 600.0) (also "30s", "1.5h"),
    "0" or "off" -> None (last/ at epoch ends only). ValueError for anything else."""
    text = text.strip().lower()
    if text == "off" or (text.isdigit() and int(text) == 0):
        return None
    if text.isdigit():
        return "steps", int(text)
    m = re.fullmatch(r"(\d+(?:\.\d*)?)([smh])", text)
    if m is None or float(m[1]) == 0:
        raise ValueError(f"not a step count or a time: {text!r}")
    return "seconds", float(m[1]) * _TIME_UNITS[m[2]]


def _is_interval(text: str) -> bool:
    try:
        save_interval(text)
    except ValueError:
        return False
    return True


def _is_output_len(text: str) -> bool:
    try:
        OutputLengthRule.parse(text)
    except ValueError:
        return False
    return True


OUTPUT_LEN = Check(_is_output_len, "N (tokens) or S*Ts+O (S per source token, plus O), e.g. 60 or 3*Ts+5")
SAVE_EVERY = Check(_is_interval, "a step count (2000), minutes (10m), seconds (30s) or hours (1h); 0: epoch ends only")


@dataclass(frozen=True)
class Option:
    """One row of the table.

    ``type`` is int, float, str or bool (a ``--x/--no-x`` switch). ``default`` None means unset
    (``unset`` says how that reads in the help). ``flag``: an ``attnseq train`` flag; ``saved``: a
    config key (TOML, ``train(cfg)``, config.json) -- ``--config`` and ``--plot`` are flags only,
    ``bleu`` a key only. ``resumable``: ``--resume`` may give a value other than the run's.
    ``model``: a field of the model's ``ModelConfig`` (whence its type, default and choices: see
    ``model_row``); ``model_config`` makes the model's config from these rows' values.
    """
    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    metavar: str | None = None
    group: str | None = None
    resumable: bool = True
    check: Check | None = None
    unset: str = ""
    flag: bool = True
    saved: bool = True
    model: bool = False

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")


# What a built-in task changes; "corpus" is any other data (--data DIR or --train FILE).
TASK_DEFAULTS = {
    # date: lengths track the date's style, so pure length buckets hold one style each; jitter mixes them
    "date": dict(epochs=6, lr=3e-3, tokenizer="char", bleu=False, bucket_jitter=8.0, select_by="exact"),
    "addition": dict(epochs=30, lr=3e-3, lr_decay=0.95, batch_size=64, patience=6, tokenizer="char", bleu=False,
                     select_by="exact"),
    "toy-en-ko": dict(epochs=8, tokenizer="sentencepiece", vocab_size=1000, wordvec_size=128,
                      lr=2e-3, batch_size=64, patience=3, bleu=True, max_len=60, select_by="bleu"),
    # digits to words: 8,000 numbers of at most 4 digits, tested on 5 and 6 (length generalisation)
    "numbers": dict(epochs=30, tokenizer="word", wordvec_size=32, hidden_size=128, lr=3e-3, batch_size=64,
                    patience=8, bleu=False, select_by="exact"),
    # any other parallel corpus (--data DIR or --train FILE): subwords, BLEU
    "corpus": dict(epochs=20, tokenizer="sentencepiece", vocab_size=8000, wordvec_size=128, lr=2e-3,
                   batch_size=64, patience=4, bleu=True, max_len=100, select_by="bleu"),
}
# What a run's config.json written before an option existed implies, where that is not the option's
# default (today's or --quick's): such a run resumes as it was trained (old runs chose best/ by exact
# match, at a constant lr)
LEGACY = {"select_by": LEGACY_METRIC, "lr_schedule": "constant", "warmup": 0}
# --quick: a newcomer's first look. On date, one epoch of small batches at a high lr that a cosine
# schedule brings down to 0 reaches 99.9% test exact match sooner than the 2 epochs at the task's
# lr did (three seeds: 100.00% test, 99.89-100% test-short, in about 21 s of training on 2 cores)
# A --quick schedule is one piece: the user's own --lr-schedule, --warmup or --lr-decay replaces all of it.
QUICK = {"date": dict(epochs=1, batch_size=64, lr=1e-2, lr_schedule="cosine", warmup=50)}
QUICK_OTHER = dict(epochs=3)    # --quick elsewhere
SCHEDULE_KEYS = ("lr_schedule", "warmup", "lr_decay")


def _quick_help() -> str:
    date = QUICK["date"]
    return (f"a short run for a first look: on date {date['epochs']} epoch of batch {date['batch_size']}, "
            f"lr {date['lr']:g} on a {date['lr_schedule']} schedule ({date['warmup']} warm-up steps); "
            f"elsewhere {QUICK_OTHER['epochs']} epochs")


_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def model_row(name: str, **kw) -> Option:
    """The row of a field of ``ModelConfig``: its type, default and choices are the field's (a KeyError
    for a name the model does not take); by default in the model group, and a run cannot change it
    on --resume."""
    f = _MODEL_FIELDS[name]
    kw = {"group": "model", "resumable": False, **kw}
    return Option(name, f.type, f.default, choices=f.metadata.get("choices"), model=True, **kw)


def model_config(cfg: dict, src_vocab_size: int, tgt_vocab_size: int) -> ModelConfig:
    """The model a config describes: its model rows' values, with the vocabulary sizes."""
    return ModelConfig(src_vocab_size, tgt_vocab_size, **{o.name: cfg[o.name] for o in OPTIONS if o.model})


O, M = Option, model_row
OPTIONS: tuple[Option, ...] = (
    O("config", str, metavar="FILE.toml", saved=False,
      help="read options from a TOML file (flags given here override it)"),
    # -- data
    O("data", str, group="data", metavar="NAME|DIR", resumable=False,
      help=f"built-in dataset ({', '.join(GENERATORS)}) or a directory with train.tsv, valid.tsv and test.tsv"),
    O("train", str, group="data", metavar="FILE", resumable=False,
      help="training pairs: TSV or question_answer (or, with --source-lang/--target-lang, the prefix of "
           "FILE.SRC and FILE.TGT)"),
    O("valid", str, group="data", metavar="FILE", resumable=False,
      help="validation pairs (with --train; if left out, 5% of --train, at most 2000 pairs, is held out)"),
    O("test", str, group="data", metavar="FILE", resumable=False, help="test pairs (optional)"),
    O("source_lang", str, group="data", metavar="EXT", help="aligned files: source suffix, e.g. en"),
    O("target_lang", str, group="data", metavar="EXT", help="aligned files: target suffix, e.g. fr"),
    O("swap_sides", bool, False, group="data", resumable=False,
      help="train the reverse direction, targets becoming sources: Korean -> English, say"),
    O("reverse_source", bool, False, group="data", resumable=False,
      help="feed each source reversed, real tokens only"),
    O("bucket", bool, True, group="data", help="batch sources of similar length together"),
    O("bucket_jitter", float, 0.0, group="data", metavar="TOKENS", check=NON_NEGATIVE,
      help="with --bucket, sort by length plus noise up to TOKENS, mixing nearby lengths"),
    O("tokenizer", str, choices=tuple(TOKENIZERS), group="data", resumable=False,
      help="how text is cut into tokens"),
    O("vocab_size", int, 8000, group="data", metavar="N", resumable=False, check=POSITIVE_INT,
      help="word/sentencepiece vocabulary size"),
    O("shared_vocab", bool, False, group="data", resumable=False, help="one vocabulary for both sides"),
    O("max_len", int, group="data", metavar="N", resumable=False, check=POSITIVE_INT, unset="no limit",
      help="leave out training pairs longer than N tokens"),
    # -- model
    M("wordvec_size", metavar="D", check=POSITIVE_INT, help="embedding size"),
    M("hidden_size", metavar="H", check=POSITIVE_INT, help="hidden size of the recurrent layers"),
    M("dropout", metavar="P", resumable=True, check=FRACTION, help="dropout on embeddings and outputs"),
    M("init", help="weight initialisation"),
    M("dtype", help="float type of the parameters and activations"),
    M("cell", help="the recurrent cell: lstm (the book's) or gru (the book's GRU, appendix C)"),
    M("encoder_layers", metavar="N", check=POSITIVE_INT, help="stacked recurrent layers in the encoder"),
    M("decoder_layers", metavar="N", check=POSITIVE_INT, help="stacked recurrent layers in the decoder"),
    M("bidirectional", help="the encoder reads the source both ways"),
    M("attention", help="attention score: dot (h·s), general (h·W s) or additive (v·tanh(W h + U s))"),
    M("input_feeding", help="feed each step's attentional output into the next decoder step (Luong)"),
    M("label_smoothing", metavar="EPS", check=FRACTION,
      help="training targets put EPS of their weight on the other tokens"),
    M("tie_embeddings", help="the decoder's output layer shares its embedding matrix"),
    # -- training
    O("out", str, group="training", metavar="RUN_DIR", help="run directory (required)"),
    O("epochs", int, 10, group="training", metavar="N", check=POSITIVE_INT, help="passes over the training data"),
    O("batch_size", int, 128, group="training", metavar="N", check=POSITIVE_INT, help="pairs per training batch"),
    O("optimizer", str, "adam", choices=tuple(OPTIMIZERS), group="training", resumable=False,
      help="update rule"),
    O("lr", float, 1e-3, group="training", metavar="LR", check=POSITIVE, help="learning rate"),
    O("clip", float, 5.0, group="training", metavar="NORM", check=NON_NEGATIVE,
      help="clip gradients to this global norm; 0 = off"),
    O("weight_decay", float, 0.0, group="training", metavar="W", check=NON_NEGATIVE,
      help="L2 weight decay on weight matrices"),
    O("lr_decay", float, 1.0, group="training", metavar="G", check=POSITIVE,
      help="multiply lr by G after every epoch (--lr-schedule constant); 1 = off"),
    O("lr_schedule", str, "constant", choices=SCHEDULES, group="training", resumable=False,
      help="lr over the run: constant (with --lr-decay), plateau (times --plateau-factor when --select-by "
           "stalls), warmup-rsqrt (lr·min(step/W, sqrt(W/step)), W = --warmup), cosine or linear (after "
           "--warmup, down to 0 at the run's last step: --epochs', or with --max-minutes the budget's)"),
    O("warmup", int, 0, group="training", metavar="STEPS", resumable=False, check=NON_NEGATIVE,
      help="steps of linear warm-up to --lr (warmup-rsqrt, cosine, plateau)"),
    O("plateau_factor", float, 0.5, group="training", metavar="F", check=Check(lambda v: 0 < v < 1, "in (0, 1)"),
      help="--lr-schedule plateau: multiply lr by F after --plateau-patience epochs without a better best/"),
    O("plateau_patience", int, 1, group="training", metavar="N", check=POSITIVE_INT,
      help="--lr-schedule plateau: epochs in a row without a better --select-by score before lr is cut"),
    O("select_by", str, "exact", choices=SELECT_BY, group="training",
      help="the valid score that picks best/ and drives --patience and the plateau schedule (ties: lower "
           "valid loss)"),
    O("patience", int, 3, group="training", metavar="N", check=POSITIVE_INT,
      help="early stop after N epochs without a better --select-by score"),
    O("max_minutes", float, group="training", metavar="M", check=POSITIVE, unset="no limit",
      help="train for M minutes: the run's last step is estimated from its speed (epoch-end validation "
           "included) and corrected at every step; the last epoch is cut short there, validated and saved, "
           "and cosine or linear lr reaches 0 there; then best/ is tested. The budget counts the whole run: "
           "on --resume the minutes its checkpoint had used count against it (a larger M extends it)"),
    O("keep_last", int, 0, group="training", metavar="K", check=NON_NEGATIVE,
      help="also keep the last K epoch-end checkpoints, RUN_DIR/epoch-NNNN/, for attnseq average; 0: none"),
    O("keep_every", int, 0, group="training", metavar="STEPS", check=NON_NEGATIVE,
      help="with --keep-last K: keep checkpoints every STEPS steps instead, RUN_DIR/step-NNNNNNN/, in the "
           "run's last K·STEPS steps and at its last step (the last by --epochs or --max-minutes, as then "
           "estimated); 0: at epoch ends"),
    O("average_last", int, 0, group="training", metavar="K", check=NON_NEGATIVE,
      help="at the end, average the last K kept checkpoints into RUN_DIR/averaged/ (as attnseq average) and "
           "score it on valid and test beside best/; needs --keep-last K or more; 0: off"),
    M("seed", group="training", check=NON_NEGATIVE, help="seeds the weights, batch order, dropout and hold-out split"),
    O("device", str, "cpu", group="training", metavar="cpu|gpu[:N]", check=DEVICE, help="cpu or gpu, gpu:1 ..."),
    O("threads", int, 0, group="training", metavar="N",
      check=Check(lambda v: v >= 0, "0 (one per core) or a positive integer"),
      help="CPU: train on N row shards of each batch in N threads; 0: one per core, at least 32 rows each; 1: off"),
    O("resume", bool, False, group="training", help="continue the run in --out from last/"),
    O("save_every", str, "10m", group="training", metavar="N|10m", check=SAVE_EVERY,
      help="also save last/ inside an epoch, every N steps or every so many minutes (10m; 30s, 1h), so a "
           "--resume continues from that step; 0: at epoch ends only"),
    O("quick", bool, False, group="training", help=_quick_help()),
    O("skip_nonfinite", bool, False, group="training",
      help="skip (and count) a batch whose loss or gradient is NaN/inf instead of stopping"),
    O("eval_batch_size", int, EVAL_BATCH_SIZE, group="training", metavar="N", check=POSITIVE_INT,
      help="rows per decoding batch, per thread on a CPU"),
    O("max_output_len", str, group="training", metavar="N|S*Ts+O", check=OUTPUT_LEN,
      unset="the checkpoint's rule, fitted to the training split",
      help="longest output when this run decodes (validation, test): N tokens, or S per source token plus O"),
    O("examples", int, 3, group="training", metavar="N", check=NON_NEGATIVE, help="example outputs printed per epoch"),
    # -- what the run records of its training (attnseq.run.tracking)
    O("track_examples", int, 8, group="tracking", metavar="N", resumable=False, check=NON_NEGATIVE,
      help="keep the attention of N validation examples at every validation (and every --track-every steps) "
           "in RUN_DIR/attention_history.npz, for explore --history and plot-attention --history; 0: off"),
    O("track_every", int, 50, group="tracking", metavar="STEPS", check=NON_NEGATIVE,
      help="with --track-examples, also every STEPS training steps; 0: at validations only"),
    O("tensorboard", bool, False, group="tracking",
      help="log to RUN_DIR/tb/ for TensorBoard: training loss and lr, valid scores, and at each validation the "
           "attention of the first tracked examples as images (needs pip install 'attnseq[tensorboard]')"),
    O("tensorboard_every", int, 10, group="tracking", metavar="STEPS", check=POSITIVE_INT,
      help="with --tensorboard, the training loss and lr every STEPS steps"),
    O("plot", bool, True, group="training", saved=False, help="write RUN_DIR/attention.png at the end"),
    O("bleu", bool, flag=False, help="validation BLEU and chrF (config key only; set by the task)"),
)
del O, M


def config_keys(options=OPTIONS) -> dict[str, Option]:
    """Name -> row, for the rows a config holds (TOML keys, ``train(cfg)`` keys, config.json)."""
    return {o.name: o for o in options if o.saved}


# -- help --------------------------------------------------------------------------------------
def _show(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def default_text(opt: Option, tasks: dict = TASK_DEFAULTS) -> str:
    """"(default 10; date 6, addition 30 ...)": the row's default, then each task's own."""
    parts = []
    if opt.default is not None or opt.unset:
        parts.append("default " + (_show(opt.default) if opt.default is not None else opt.unset))
    per_task = [f"{task} {_show(d[opt.name])}" for task, d in tasks.items()
                if opt.name in d and d[opt.name] != opt.default]
    if per_task:
        parts.append(", ".join(per_task))
    return f"({'; '.join(parts)})" if parts else ""


def add_flags(parser: argparse.ArgumentParser, options=OPTIONS) -> None:
    """One argparse flag per row, in the table's groups and order. A config option's flag is None
    unless given, so a config file, the run being resumed or a task default can decide."""
    groups: dict[str | None, Any] = {None: parser}
    for opt in options:
        if not opt.flag:
            continue
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group)
        help = " ".join(filter(None, (opt.help, default_text(opt)))).replace("%", "%%")
        default = None if opt.saved else opt.default
        if opt.type is bool:
            groups[opt.group].add_argument(opt.flag_name, action=argparse.BooleanOptionalAction,
                                           default=default, help=help)
        else:
            groups[opt.group].add_argument(opt.flag_name, type=None if opt.type is str else opt.type,
                                           choices=opt.choices, metavar=opt.metavar, default=default, help=help)


def from_args(args: argparse.Namespace, options=OPTIONS) -> dict:
    """The config options given as flags (None where not given)."""
    return {o.name: getattr(args, o.name) for o in options if o.flag and o.saved}


# -- checking values -----------------------------------------------------------------------------
def problem(opt: Option, value) -> str | None:
    """What is wrong with ``value`` for ``opt`` ("must be an integer"), or None."""
    if opt.type is bool:
        ok, need = isinstance(value, bool), "true or false"
    elif opt.type is int:
        ok, need = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif opt.type is float:
        ok, need = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, need = isinstance(value, str), "a string"
    if not ok:
        return f"must be {need}"
    if opt.choices is not None and value not in opt.choices:
        return f"must be one of {', '.join(opt.choices)}"
    if opt.check is not None and not opt.check.ok(value):
        return f"must be {opt.check.must}"
    return None


def _check_values(cfg: dict, keys: dict[str, Option]) -> None:
    for name, value in cfg.items():
        if value is not None:
            msg = problem(keys[name], value)
            if msg:
                raise ConfigError(f"{keys[name].flag_name} {msg}, got {value!r}")


def _check_combination(cfg: dict) -> None:
    if cfg["out"] is None:
        raise ConfigError("--out RUN_DIR is required")
    if cfg.get("keep_every") and not cfg["keep_last"]:
        raise ConfigError(f"--keep-every {cfg['keep_every']} needs --keep-last K (how many to keep)")
    if cfg["average_last"] > cfg["keep_last"]:
        raise ConfigError(f"--average-last {cfg['average_last']} needs --keep-last {cfg['average_last']} or more "
                          f"(got {cfg['keep_last']})")
    if cfg["data"] is None and cfg["train"] is None:
        raise ConfigError("give --data NAME|DIR, or --train FILE (with --valid FILE)")
    if cfg["data"] is not None and cfg["train"] is not None:
        raise ConfigError("--data and --train are alternatives; give one")


def _check_schedule(cfg: dict, given: dict) -> None:
    """--warmup and --lr-decay against --lr-schedule; ``given``: what the user set (a task's own
    --lr-decay is left unused by the other schedules, one the user gives is an error)."""
    schedule = cfg["lr_schedule"]
    if schedule == "warmup-rsqrt" and cfg["warmup"] == 0:
        raise ConfigError("--lr-schedule warmup-rsqrt needs --warmup STEPS (a positive integer)")
    if schedule == "constant" and cfg["warmup"] > 0:
        raise ConfigError("--warmup is for --lr-schedule warmup-rsqrt, cosine or plateau, not constant")
    if schedule != "constant" and given.get("lr_decay", 1.0) != 1.0:
        raise ConfigError(f"--lr-decay is for --lr-schedule constant; --lr-schedule {schedule} sets the lr itself")


# -- TOML ----------------------------------------------------------------------------------------
def _toml_repr(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def read_toml(path: str, options=OPTIONS) -> dict:
    """The options in a TOML file, keyed by flag name (``batch-size`` or ``batch_size``). An unknown
    key, a key given twice or a bad value is one ConfigError naming the file and the key."""
    import tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None
    keys = config_keys(options)
    unknown = sorted(k for k in raw if k.replace("-", "_") not in keys)
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {', '.join(unknown)}")
    out, spelt = {}, {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in out:
            raise ConfigError(f"--config {path}: {spelt[name]} and {key} are the same option; give it once")
        if keys[name].type is str and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)                              # save_every = 2000 means "2000", as on the command line
        msg = problem(keys[name], value)
        if msg:
            raise ConfigError(f"--config {path}: {key} {msg}, got {_toml_repr(value)}")
        out[name], spelt[name] = value, key
    return out


# -- the full config -------------------------------------------------------------------------
def defaults(task: str | None = None, quick: bool = False, options=OPTIONS, given=()) -> dict:
    """Every config key: the table's default, then the task's (``TASK_DEFAULTS``; any other data is
    "corpus"), then with ``quick`` the task's ``QUICK`` settings, less its schedule when the keys
    ``given`` (set by the user, or saved by the run) name one of ``SCHEDULE_KEYS``."""
    out = {name: opt.default for name, opt in config_keys(options).items()}
    out.update(TASK_DEFAULTS[task if task in TASK_DEFAULTS else "corpus"])
    if quick:
        own_schedule = any(k in given for k in SCHEDULE_KEYS)
        out.update({k: v for k, v in QUICK.get(task, QUICK_OTHER).items()
                    if not (own_schedule and k in SCHEDULE_KEYS)})
    return out


def resolve_config(cfg: dict, saved: dict | None = None, options=OPTIONS) -> dict:
    """The full config: defaults, then the built-in task's defaults, then what the user set (keys not None).

    With ``resume``, what the user left out comes from ``saved``, the options of the run in ``out``
    (its config.json's "train" section, which the caller reads: ``RunDir.saved_options()``; None when
    there is no run there yet), and the options the table marks not resumable must agree with it. A
    key missing there (an option added since) takes its ``LEGACY`` value, else its default. Raises
    ConfigError naming the option.
    """
    keys = config_keys(options)
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    user = given = {k: v for k, v in cfg.items() if v is not None}
    _check_values(user, keys)
    if user.get("resume") and user.get("out") and saved is not None:
        user = _with_saved_config(user, saved, keys)
    out = defaults(user.get("data"), bool(user.get("quick")), options, given=user)
    out.update(user)
    _check_combination(out)
    _check_values(out, keys)
    if {"lr_schedule", "warmup", "lr_decay"} <= set(out):
        _check_schedule(out, given)
    return out


def _with_saved_config(user: dict, saved: dict, keys: dict[str, Option]) -> dict:
    """For --resume: options not given now come from the run being resumed; non-resumable ones must agree."""
    saved = {**{k: v for k, v in LEGACY.items() if k in keys}, **saved}
    changed = [name for name, opt in keys.items()
               if not opt.resumable and name in user and name in saved and user[name] != saved[name]]
    if changed:
        raise ConfigError(f"--resume: {', '.join(keys[k].flag_name for k in changed)} differ from the run "
                          f"in {user['out']}; resume with the same options or start a new --out")
    return {**{k: v for k, v in saved.items() if k in keys and v is not None}, **user}
