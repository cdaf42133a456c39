"""``attnseq``: one command line for training, evaluation, translation, plots, data and benchmarks.

Every subcommand is a thin layer over a library function; ``scripts/*.py`` call
the same ``main``. Errors print one line on stderr and exit non-zero; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import AttnseqError, ConfigError
from .run.evaluation import EVAL_BATCH_SIZE

TRAIN_HELP = """\
Train an attention seq2seq model and save checkpoints in --out (best/ and last/),
metrics in --out/metrics.jsonl, and an attention heatmap in --out/attention.png.

Defaults (a built-in task may change some; see README):
  epochs 10, batch-size 128, wordvec-size 16, hidden-size 256, optimizer adam,
  lr 1e-3, clip 5, dropout 0, patience 3. date: epochs 6, lr 3e-3, bucket-jitter 8.
Every flag can also be set in --config FILE.toml, with the flag's name as key
(batch_size = 64 or "batch-size" = 64); flags on the command line win.
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _switch(group, name: str, help: str) -> None:
    """A --name/--no-name flag that is None unless given, so a config file or task default can decide."""
    group.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help)


def _train_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--config", metavar="FILE.toml", help="read options from a TOML file (flags given here override it)")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="NAME|DIR", help="built-in dataset (date, addition, toy-en-ko) or a "
                   "directory with train.tsv, valid.tsv and test.tsv")
    g.add_argument("--train", metavar="FILE", help="training pairs: TSV or question_answer "
                   "(or, with --source-lang/--target-lang, the prefix of FILE.SRC and FILE.TGT)")
    g.add_argument("--valid", metavar="FILE", help="validation pairs (with --train; if left out, 5%% of "
                   "--train, at most 2000 pairs, is held out)")
    g.add_argument("--test", metavar="FILE", help="test pairs (optional)")
    g.add_argument("--source-lang", metavar="EXT", help="aligned files: source suffix, e.g. en")
    g.add_argument("--target-lang", metavar="EXT", help="aligned files: target suffix, e.g. fr")
    _switch(g, "--swap-sides", help="train the reverse direction: targets become sources (e.g. Korean -> English)")
    _switch(g, "--reverse-source", help="feed each source reversed (real tokens only); default off")
    _switch(g, "--bucket", help="batch sources of similar length together; default on")
    g.add_argument("--bucket-jitter", type=float, metavar="TOKENS",
                   help="with --bucket, sort by length plus noise up to TOKENS, mixing nearby lengths (date: 8)")
    g.add_argument("--tokenizer", choices=["char", "word", "sentencepiece"],
                   help="default char for date and addition, sentencepiece for translation data")
    g.add_argument("--vocab-size", type=int, metavar="N", help="word/sentencepiece vocabulary size (8000)")
    _switch(g, "--shared-vocab", help="one vocabulary for both sides")
    g.add_argument("--max-len", type=int, metavar="N", help="leave out training pairs longer than N tokens")
    g = p.add_argument_group("model")
    g.add_argument("--wordvec-size", type=int, metavar="D", help="embedding size (16)")
    g.add_argument("--hidden-size", type=int, metavar="H", help="LSTM hidden size (256)")
    g.add_argument("--dropout", type=float, metavar="P", help="dropout on embeddings and outputs (0)")
    g.add_argument("--init", choices=["xavier", "he"], help="weight initialisation (xavier)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="float32 (default) or float64")
    g = p.add_argument_group("training")
    g.add_argument("--out", metavar="RUN_DIR", help="run directory (required)")
    g.add_argument("--epochs", type=int, metavar="N")
    g.add_argument("--batch-size", type=int, metavar="N")
    g.add_argument("--optimizer", choices=["adam", "sgd", "momentum", "nesterov", "adagrad", "rmsprop"])
    g.add_argument("--lr", type=float, metavar="LR")
    g.add_argument("--clip", type=float, metavar="NORM", help="clip gradients to this global norm (5; 0 = off)")
    g.add_argument("--weight-decay", type=float, metavar="W", help="L2 weight decay on weight matrices (0)")
    g.add_argument("--lr-decay", type=float, metavar="G", help="multiply lr by G after every epoch (1 = off)")
    g.add_argument("--patience", type=int, metavar="N", help="early stop after N epochs without a better "
                   "valid exact match (3)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", metavar="cpu|gpu[:N]", help="cpu (default) or gpu, gpu:1 ...")
    g.add_argument("--threads", type=int, metavar="N", help="CPU: train on N row shards of each batch in N "
                   "threads (0, the default: one per core, at least 32 rows each; 1: off)")
    _switch(g, "--resume", help="continue the run in --out from last/")
    _switch(g, "--quick", help="fewer epochs, for a first look (2 on date, else 3)")
    _switch(g, "--skip-nonfinite", help="skip (and count) a batch whose loss or gradient is NaN/inf instead of stopping")
    g.add_argument("--eval-batch-size", type=int, metavar="N", help=f"rows per decoding batch ({EVAL_BATCH_SIZE}; "
                   "per thread on a CPU)")
    g.add_argument("--examples", type=int, metavar="N", help="example outputs printed per epoch (3)")
    g.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="write RUN_DIR/attention.png at the end (default on)")


def load_toml(path: str) -> dict:
    import tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None
    return {k.replace("-", "_"): v for k, v in raw.items()}


def train_config(args: argparse.Namespace) -> dict:
    from .run.training import DEFAULTS
    cfg = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    if args.config:
        file_cfg = load_toml(args.config)
        unknown = sorted(set(file_cfg) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"--config {args.config}: unknown key(s) {', '.join(unknown)}")
        cfg = {**file_cfg, **{k: v for k, v in cfg.items() if v is not None}}
    return cfg


def cmd_train(args) -> int:
    from .run.training import train
    result = train(train_config(args))
    if args.plot:
        from .plotting import plot_texts
        out = Path(result["run"]) / "attention.png"
        srcs, refs = zip(*result["examples"])
        plot_texts(result["run"], list(srcs), out, refs=list(refs))
        print(f"attention heatmap: {out}")
    return 0


def cmd_eval(args) -> int:
    from .run.inference import evaluate_file
    result = evaluate_file(args.ckpt, args.data, device=args.device, batch_size=args.batch_size,
                           output=args.output)
    print(json.dumps(result))
    return 0


def cmd_make_data(args) -> int:
    from .data.datasets import DEFAULT_SEED, write_splits
    out = args.out or Path("data") / args.name
    paths = write_splits(args.name, out, args.seed if args.seed is not None else DEFAULT_SEED)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def cmd_plot_curves(args) -> int:
    from .plotting import plot_curves
    out = args.out or Path(args.run) / "curves.png"
    plot_curves(args.run, out)
    print(out)
    return 0


def build_parser() -> Parser:
    p = Parser(prog="attnseq", description="Sequence-to-sequence with attention on numpy/cupy.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model", description=TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _train_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a data file (one JSON line)")
    e.add_argument("--ckpt", required=True, metavar="RUN", help="run dir (its best/) or checkpoint dir")
    e.add_argument("--data", required=True, metavar="FILE", help="TSV or question_answer pairs")
    e.add_argument("--output", metavar="FILE", help="also write one prediction per line here")
    e.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE)
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("make-data", help="regenerate a built-in dataset's TSV splits")
    m.add_argument("name", choices=["date", "addition", "toy-en-ko"])
    m.add_argument("--out", metavar="DIR", help="default data/NAME")
    m.add_argument("--seed", type=int, help="default 1234 (the shipped files)")
    m.set_defaults(func=cmd_make_data)

    c = sub.add_parser("plot-curves", help="plot loss and accuracy per epoch from RUN/metrics.jsonl")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--out", metavar="FILE", help="default RUN/curves.png")
    c.set_defaults(func=cmd_plot_curves)
    _add_later_commands(sub)
    return p


def _add_later_commands(sub) -> None:
    """translate, plot-attention and bench define their own flags, beside their code."""
    from . import bench, plotting
    from .run import inference
    inference.add_translate_command(sub)
    plotting.add_plot_attention_command(sub)
    bench.add_bench_command(sub)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"attnseq {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():          # restores the caller's warning handling afterwards
            warnings.simplefilter("always")
            warnings.showwarning = show
            return args.func(args)
    except KeyboardInterrupt:
        print("attnseq: interrupted", file=sys.stderr)
        return 130
    except (AttnseqError, OSError, ValueError) as e:
        if args.debug:
            raise
        msg = str(e) if isinstance(e, (AttnseqError, ValueError)) else f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}"
        print(f"attnseq {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
