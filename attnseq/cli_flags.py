"""The flags of ``attnseq <command>``: argparse types, the flag groups several commands share, one parser per command.

A group (decoding, output length, device, batching) is declared once, as a tuple of ``Flag`` rows, and a
command takes it whole with ``add_group``, under its own heading in ``--help``. Each row also names the
keyword of the library call its value goes to (``TranslatorBase.translate``, ``explore_file``,
``evaluate_file``), and ``decoding_options`` collects them: a new decoding flag is one row in
``DECODING``, and every decoding command then parses it and passes it on. What each command does is
in ``cli``; train's flags come from the option table (``run.config``).
"""
from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from .nn.output_length import OutputLengthRule
from .run.decoding import EVAL_BATCH_SIZE

TRAIN_HELP = """\
Train an attention seq2seq model and save checkpoints in --out (best/ and last/),
metrics in --out/metrics.jsonl, and an attention heatmap in --out/attention.png.

Each flag's help ends with its default, then what a built-in task sets instead
(date, addition, toy-en-ko; corpus: any other --data DIR or --train FILE).
Every flag can also be set in --config FILE.toml, with the flag's name as key
(batch_size = 64 or "batch-size" = 64); flags on the command line win.
"""

BY_HELP = ("exact match, BLEU and chrF per category (repeatable): length (of the source in tokens, "
           "1-10, 11-20, ...), style (a date file's style: its column 3), one-digit (column 4 of a date file) "
           "or colN (column N of a TSV file, N >= 3; files have no header line)")

MAX_OUTPUT_HELP = ("longest output: N tokens, or S*Ts+O (S tokens per source token, plus O; Ts: the longest "
                   "source in the batch). Default: the checkpoint's rule, fitted to its training split "
                   "(2*Ts+10 for checkpoints saved before rules were fitted)")

CKPT_HELP = "run dir (its best/) or checkpoint dir"
DATA_HELP = "TSV or question_answer pairs"


# -- argparse types: a bad value is a usage error naming the flag ------------------------------------------
def output_len(text: str) -> OutputLengthRule:
    """The argparse type of --max-output-len."""
    try:
        return OutputLengthRule.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """The argparse type of counts and sizes (--batch-size, --beam, --n-best, --max-input-len ...):
    a usage error naming the flag for 0, a negative number or no integer at all."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """The argparse type of counts where 0 means "all" or "off" (explore --n, --seed)."""
    return _int_at_least(text, 0, "0 or a positive integer")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- the shared flag groups ----------------------------------------------------------------------------------
class Flag(NamedTuple):
    """One flag of a group: its names (the flag, then any older names), argparse's keywords, and ``param``,
    the keyword argument of the library call that takes its value."""
    names: tuple[str, ...]
    spec: dict
    param: str

    @property
    def dest(self) -> str:
        return self.names[0].lstrip("-").replace("-", "_")


# every command that searches: translate, explore, plot-attention
DECODING = (
    Flag(("--beam",), dict(type=positive_int, default=1, metavar="K", help="beam size (default 1: greedy search)"),
         "beam"),
    Flag(("--alpha",), dict(type=float, default=0.0, metavar="A",
                            help="GNMT length penalty alpha for beam search (default 0: off)"), "alpha"),
)
# the commands that keep several outputs per input; each says what it does with them, and its default
N_BEST = Flag(("--n-best",), dict(type=positive_int, metavar="N"), "n_best")
OUTPUT_LENGTH = (Flag(("--max-output-len",), dict(type=output_len, metavar="N|S*Ts+O", help=MAX_OUTPUT_HELP),
                      "max_len"),)
DEVICE = (Flag(("--device",), dict(default="cpu", metavar="cpu|gpu[:N]",
                                   help="where the model runs: cpu (default), gpu, or gpu:N"), "device"),)
BATCHING = (Flag(("--batch-size",), dict(type=positive_int, default=EVAL_BATCH_SIZE, metavar="B",
                                         help="rows per decoding batch, per thread on a CPU (default %(default)s)"),
                 "batch_size"),)
THREADS = Flag(("--threads",), dict(type=int, default=0, metavar="N",
                                    help="CPU: train on N row shards of each batch in N threads "
                                         "(default 0: one per core, at least 32 rows each; 1: off)"), "threads")


GROUPS = {"decoding": DECODING, "output length": OUTPUT_LENGTH, "batching": BATCHING, "device": DEVICE}


def add_group(p: argparse.ArgumentParser, title: str, flags, also: dict | None = None, **changes) -> None:
    """Add ``flags`` to command ``p`` under the heading ``title``. ``changes`` (param -> argparse keywords)
    fit a flag to the command (its default, or what it does there); ``also`` (param -> names): older names."""
    group = p.add_argument_group(title)
    for f in flags:
        group.add_argument(*f.names, *(also or {}).get(f.param, ()), **{**f.spec, **changes.get(f.param, {})})


def add_groups(p: argparse.ArgumentParser, *titles: str) -> None:
    """Add the ``GROUPS`` named, each as it is declared."""
    for title in titles:
        add_group(p, title, GROUPS[title])


def decoding_options(args) -> dict:
    """The decoding, n-best, batching and output-length flags the command took, as the keyword arguments
    of ``TranslatorBase.translate`` and ``explore_file`` (beam, alpha, n_best, batch_size, max_len)."""
    return {f.param: getattr(args, f.dest) for f in (*DECODING, N_BEST, *BATCHING, *OUTPUT_LENGTH)
            if hasattr(args, f.dest)}


# -- one parser per command ------------------------------------------------------------------------------
def add_train(sub) -> None:
    from .run.config import add_flags
    t = sub.add_parser("train", help="train a model", description=TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(t)


def add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint on a data file (one JSON line)")
    e.add_argument("--ckpt", required=True, metavar="RUN", help=CKPT_HELP)
    e.add_argument("--data", required=True, metavar="FILE", help=DATA_HELP)
    e.add_argument("--output", metavar="FILE", help="also write one prediction per line here")
    e.add_argument("--by", action="append", metavar="length|style|colN", help=BY_HELP + "; the tables go to stderr")
    add_groups(e, "output length", "batching", "device")


def add_explore(sub) -> None:
    x = sub.add_parser("explore", help="write one HTML page to browse a model's outputs, errors and attention")
    x.add_argument("--ckpt", required=True, metavar="RUN", help=CKPT_HELP)
    x.add_argument("--data", metavar="FILE", help=DATA_HELP + " (or --history)")
    x.add_argument("--history", action="store_true",
                   help="instead of --data: the validation examples the run tracked (RUN/attention_history.npz, "
                        "train --track-examples), with a slider through their attention across training")
    x.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write (one file, works offline)")
    x.add_argument("--n", type=non_negative_int, default=500, help="the first N pairs of --data (500; 0: all)")
    x.add_argument("--by", action="append", metavar="style|colN", help=BY_HELP + "; length is always shown")
    add_group(x, "decoding", (*DECODING, N_BEST),
              n_best=dict(help="hypotheses shown per example with --beam K (default K)"))
    add_groups(x, "output length", "batching", "device")
    x.set_defaults(check=explore_flag_error)


def add_make_data(sub) -> None:
    m = sub.add_parser("make-data", help="regenerate a built-in dataset's TSV splits")
    m.add_argument("name", choices=["date", "addition", "toy-en-ko"])
    m.add_argument("--out", metavar="DIR", help="default data/NAME")
    m.add_argument("--seed", type=non_negative_int, help="default 1234 (the shipped files)")


def add_plot_curves(sub) -> None:
    c = sub.add_parser("plot-curves", help="plot loss and the valid scores (token accuracy, exact match, BLEU) per "
                                           "epoch from RUN/metrics.jsonl, with best/ and averaged/ marked")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--out", metavar="FILE", help="default RUN/curves.png")


def add_translate(sub) -> None:
    t = sub.add_parser("translate", help="translate lines from stdin, --input FILE or a terminal prompt")
    t.add_argument("--ckpt", metavar="RUN", help=CKPT_HELP + " (--engine attnseq)")
    t.add_argument("--engine", choices=["attnseq", "onnxruntime"], default="attnseq",
                   help="what runs the model: attnseq with --ckpt (default), or onnxruntime with --model "
                        "(needs pip install 'attnseq[export]')")
    t.add_argument("--model", metavar="DIR", help="a directory written by attnseq export (--engine onnxruntime)")
    t.add_argument("--input", metavar="FILE", help="read lines from FILE (default stdin)")
    t.add_argument("--output", metavar="FILE", help="write outputs to FILE (default stdout)")
    t.add_argument("--max-input-len", type=positive_int, metavar="N",
                   help="longer inputs are truncated with a warning (default: the run's --max-len, else 200)")
    t.add_argument("--show-attention", action="store_true", help="print a text alignment per line on stderr")
    add_group(t, "decoding", (*DECODING, N_BEST),
              n_best=dict(default=1, help="print the N best per line, tab-separated, with scores (default 1)"))
    add_group(t, "output length", OUTPUT_LENGTH, also=dict(max_len=("--max-len",)),
              max_len=dict(help=MAX_OUTPUT_HELP + "; --max-len is the older name"))
    add_groups(t, "batching", "device")
    t.set_defaults(check=translate_flag_error)


def add_export(sub) -> None:
    o = sub.add_parser("export", help="export a checkpoint to ONNX, to translate without attnseq")
    o.add_argument("--ckpt", required=True, metavar="RUN", help=CKPT_HELP)
    o.add_argument("--format", choices=["onnx"], default="onnx",
                   help="onnx (default; needs pip install 'attnseq[export]'): encoder.onnx, decoder_step.onnx, "
                        "the tokenizer files and manifest.json")
    o.add_argument("--out", required=True, metavar="DIR",
                   help="a new or empty directory, or an earlier export to replace")
    o.add_argument("--float32", action="store_true",
                   help="cast a float64 checkpoint's weights to float32 (the graphs are float32)")
    add_group(o, "output length", OUTPUT_LENGTH,
              max_len=dict(help=MAX_OUTPUT_HELP + "; the manifest records it for the runtime"))


def add_average(sub) -> None:
    v = sub.add_parser("average", help="average the weights of a run's last K kept checkpoints into one checkpoint")
    v.add_argument("run", metavar="RUN", help="a run directory trained with --keep-last K (its epoch-NNNN/)")
    v.add_argument("--last", type=positive_int, required=True, metavar="K",
                   help="average the newest K kept checkpoints")
    v.add_argument("--out", required=True, metavar="CKPT",
                   help="a new or empty directory (or an earlier average, replaced): the averaged checkpoint, "
                        "for eval, translate, explore and export (--ckpt CKPT); it cannot be resumed")


def add_plot_attention(sub) -> None:
    a = sub.add_parser("plot-attention", help="draw attention heatmaps for texts or examples from a data file, "
                                              "or animate a run's attention across training")
    a.add_argument("--ckpt", metavar="RUN", help=CKPT_HELP + " (required, except with --history)")
    a.add_argument("--history", metavar="RUN", help="animate the attention of the examples RUN tracked across its "
                                                    "training (RUN/attention_history.npz): --out F.gif, or F.mp4 "
                                                    "where ffmpeg is installed; --n of them")
    a.add_argument("--fps", type=positive_int, default=4, help="--history: frames (snapshots) per second (4)")
    a.add_argument("--until", type=positive_int, metavar="STEP",
                   help="--history: the snapshots up to training step STEP, then the last one (attention forms early)")
    a.add_argument("--text", action="append", metavar="TEXT", help="a source text (repeatable)")
    a.add_argument("--data", metavar="FILE", help="take examples from a TSV/question_answer file")
    a.add_argument("--n", type=positive_int, default=6, help="how many examples from --data (6)")
    a.add_argument("--wrong-only", action="store_true", help="only examples the model gets wrong")
    a.add_argument("--out", required=True, metavar="FILE.png|.svg|.pdf|.gif|.mp4")
    add_groups(a, "decoding", "output length", "device")
    a.set_defaults(check=plot_attention_flag_error)


def add_bench(sub) -> None:
    b = sub.add_parser("bench", help="measure training and decoding speed (classic date workload)")
    b.add_argument("--hidden-size", type=positive_int, default=256)
    b.add_argument("--wordvec-size", type=positive_int, default=16)
    b.add_argument("--iters", type=positive_int, default=20, help="timed training iterations (after 3 warm-up)")
    b.add_argument("--n-greedy", type=positive_int, default=5000, metavar="N",
                   help="test sentences decoded greedily (default 5000: the whole date test split)")
    b.add_argument("--n-beam", type=positive_int, default=500, metavar="N",
                   help="the first N of those decoded with beam 5 as well (default 500)")
    b.add_argument("--bucketed", action="store_true", help="trim each batch to its own longest row instead")
    b.add_argument("--kernels", choices=("auto", "numba", "numpy", "both"), default="auto",
                   help="CPU path: fused numba kernels, plain numpy, or both one after the other "
                        "(default auto: numba when it imports; training reads ATTNSEQ_KERNELS)")
    b.add_argument("--json", action="store_true", help="one JSON line instead of a table (one per path)")
    add_group(b, "batching", (*BATCHING, THREADS),
              batch_size=dict(default=128, help="pairs per timed training batch (default %(default)s)"))
    add_groups(b, "device")


SUBPARSERS = (add_train, add_eval, add_explore, add_make_data, add_plot_curves, add_translate, add_export,
              add_average, add_plot_attention, add_bench)


def build_parser() -> Parser:
    """The parser of ``attnseq``: one subcommand per entry of ``SUBPARSERS``, in that order."""
    p = Parser(prog="attnseq", description="Sequence-to-sequence with attention on numpy/cupy.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in SUBPARSERS:
        add(sub)
    return p


# -- flag combinations argparse cannot express ----------------------------------------------------------
def at_prompt(args) -> bool:
    """translate reads from a terminal prompt: no --input, and stdin is a terminal."""
    return args.input is None and sys.stdin.isatty()


def explore_flag_error(args) -> str | None:
    """explore takes its examples from --data FILE or from the run's --history, one of the two."""
    if args.history and args.data:
        return "--data FILE and --history are alternatives: the page shows a file's examples, or the run's tracked ones"
    if args.history and args.by:
        return "--by reads the columns of --data FILE; a --history page shows the run's tracked examples"
    if not args.history and not args.data:
        return "--data FILE is required (or --history, for the examples the run tracked during training)"
    return None


def plot_attention_flag_error(args) -> str | None:
    """plot-attention draws a checkpoint's attention (--ckpt, with --text or --data), or animates --history."""
    if args.history:
        given = [f for f, v in (("--ckpt", args.ckpt), ("--text", args.text), ("--data", args.data),
                                ("--wrong-only", args.wrong_only)) if v]
        if given:
            return f"--history RUN animates the run's tracked examples; {', '.join(given)} do not apply"
        return None
    if args.until is not None:
        return "--until STEP is for --history RUN"
    if not args.ckpt:
        return "--ckpt RUN is required (or --history RUN, to animate a run's attention across training)"
    return None


def translate_flag_error(args) -> str | None:
    """What does not fit in translate's --engine, --ckpt, --model, --device and --output, or None."""
    if args.output and at_prompt(args):
        return ("--output FILE is for lines read from --input FILE or piped into stdin; at the terminal "
                "prompt each translation is printed (give --input, or redirect stdin)")
    if args.engine == "onnxruntime":
        if args.ckpt:
            return "--ckpt is for --engine attnseq; --engine onnxruntime takes --model DIR (an attnseq export)"
        if not args.model:
            return "--engine onnxruntime needs --model DIR (a directory written by attnseq export)"
        if args.device != "cpu":
            return f"--device {args.device}: --engine onnxruntime runs on the CPU"
        return None
    if args.model:
        return "--model DIR is an ONNX export: add --engine onnxruntime (the default engine, attnseq, takes --ckpt RUN)"
    if not args.ckpt:
        return "--ckpt RUN is required (or --engine onnxruntime --model DIR)"
    return None
