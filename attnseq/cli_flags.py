"""The flags of ``attnseq <command>``: the flag groups several commands share, one parser per command.

A group (decoding, output length, device, batching) is declared once, as a tuple of ``Flag`` rows, and a
command takes it whole with ``add_group``, under its own heading in ``--help``. Each row also names the
keyword of the library call its value goes to (``TranslatorBase.translate``, ``explore_file``,
``evaluate_file``), and ``decoding_options`` collects them: a new decoding flag is one row in
``DECODING``, and every decoding command then parses it and passes it on. What each command does is
in ``cli``; train's flags come from the option table (``run.config``); the flags' types from ``cli_types``.
"""
from __future__ import annotations

import argparse
import sys

from .cli_checks import (decoding_flag_error, engine_flag_error, explore_flag_error, members_error,
                         model_flag_error, plot_attention_flag_error)
from .cli_types import (DECODING, Flag, non_negative_int, output_len, penalty_alpha, positive_float, positive_int,
                        prefix_column)
from .data.datasets import TABLES
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

CKPT_HELP = ("run dir (the checkpoint it chose by validation: averaged/ when its result.json says that scored "
             "higher than best/, else best/) or checkpoint dir (RUN/best, RUN/averaged ...)")
ENSEMBLE_CKPT_HELP = CKPT_HELP + "; repeat it for an ensemble (the same vocabularies; model options may differ)"
DATA_HELP = "TSV or question_answer pairs"
ENGINE_HELP = "what runs the model: attnseq with --ckpt (default), or onnxruntime with --model"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- the shared flag groups ----------------------------------------------------------------------------------
# commands that decode with several checkpoints at once (translate, score, explore): passed to the translator
ENSEMBLE = (
    Flag(("--ensemble-mode",), dict(choices=("linear", "log_linear"), default="linear",
                                    help="with several --ckpt: combine their probabilities linearly (default) or "
                                         "their log-probabilities (log_linear)"), "ensemble_mode"),
    Flag(("--weights",), dict(type=positive_float, nargs="+", metavar="W",
                              help="with several --ckpt: one weight > 0 per checkpoint, in order (default: equal)"),
         "weights"),
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


GROUPS = {"decoding": DECODING, "output length": OUTPUT_LENGTH, "batching": BATCHING, "device": DEVICE,
          "ensemble": ENSEMBLE}


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


def ensemble_options(args) -> dict:
    """The ensemble flags, as the keyword arguments of ``Translator``, ``OnnxTranslator`` and ``explore_file``."""
    return {f.param: getattr(args, f.dest) for f in ENSEMBLE}


def translator_from_flags(args):
    """The engine that runs translate's, score's or serve's model: attnseq's own (--ckpt) or onnxruntime (--model);
    one, or an ensemble of several."""
    def one_or_all(given):
        return given[0] if len(given) == 1 else given
    if args.engine == "onnxruntime":
        from .export import OnnxTranslator
        return OnnxTranslator(one_or_all(args.model), getattr(args, "max_input_len", None), **ensemble_options(args))
    from .run.inference import Translator
    return Translator(one_or_all(args.ckpt), args.device, getattr(args, "max_input_len", None), **ensemble_options(args))


# -- one parser per command ------------------------------------------------------------------------------
def add_model_flags(p: argparse.ArgumentParser, engine_help: str = ENGINE_HELP) -> None:
    """--ckpt, --engine and --model: the model (or ensemble) that translate, score and serve run."""
    p.add_argument("--ckpt", action="append", metavar="RUN", help=ENSEMBLE_CKPT_HELP + " (--engine attnseq)")
    p.add_argument("--engine", choices=["attnseq", "onnxruntime"], default="attnseq", help=engine_help)
    p.add_argument("--model", action="append", metavar="DIR",
                   help="a directory written by attnseq export (--engine onnxruntime); repeat it for an ensemble")


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
    x.add_argument("--ckpt", required=True, action="append", metavar="RUN", help=ENSEMBLE_CKPT_HELP)
    x.add_argument("--data", metavar="FILE", help=DATA_HELP + " (or --history)")
    x.add_argument("--history", action="store_true",
                   help="instead of --data: the validation examples the run tracked (RUN/attention_history.npz, "
                        "train --track-examples), with a slider through their attention across training")
    x.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write (one file, works offline)")
    x.add_argument("--n", type=non_negative_int, default=500, help="the first N pairs of --data (500; 0: all)")
    x.add_argument("--by", action="append", metavar="style|colN", help=BY_HELP + "; length is always shown")
    add_group(x, "decoding", (*DECODING, N_BEST),
              n_best=dict(help="hypotheses shown per example with --beam K (default K), or samples with --sample "
                               "(default 1)"))
    add_groups(x, "output length", "batching", "device", "ensemble")
    x.set_defaults(check=explore_flag_error)


def add_make_data(sub) -> None:
    m = sub.add_parser("make-data", help="regenerate a built-in dataset's TSV splits")
    m.add_argument("name", choices=list(TABLES))
    m.add_argument("--out", metavar="DIR", help="default data/NAME")
    m.add_argument("--seed", type=non_negative_int, help="default 1234 (the shipped files)")


def add_plot_curves(sub) -> None:
    c = sub.add_parser("plot-curves", help="plot loss and the valid scores (token accuracy, exact match, BLEU) per "
                                           "epoch from RUN/metrics.jsonl, with best/ and averaged/ marked")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--out", metavar="FILE", help="default RUN/curves.png")


def add_translate(sub) -> None:
    t = sub.add_parser("translate", help="translate lines from stdin, --input FILE or a terminal prompt")
    add_model_flags(t, ENGINE_HELP + " (needs pip install 'attnseq[export]')")
    t.add_argument("--input", metavar="FILE", help="read lines from FILE (default stdin)")
    t.add_argument("--prefix-column", type=prefix_column, metavar="N",
                   help="input lines are TSV: column 1 the source, column N the target text each output starts "
                        "with (empty: none); beam and --n-best outputs all start with it")
    t.add_argument("--output", metavar="FILE", help="write outputs to FILE (default stdout)")
    t.add_argument("--max-input-len", type=positive_int, metavar="N",
                   help="longer inputs are truncated with a warning (default: the run's --max-len, else 200)")
    t.add_argument("--show-attention", action="store_true", help="print a text alignment per line on stderr")
    add_group(t, "decoding", (*DECODING, N_BEST),
              n_best=dict(default=1, help="print the N best per line (beam search), or N samples (--sample), "
                                          "tab-separated, with scores (default 1)"))
    add_group(t, "output length", OUTPUT_LENGTH, also=dict(max_len=("--max-len",)),
              max_len=dict(help=MAX_OUTPUT_HELP + "; --max-len is the older name"))
    add_groups(t, "batching", "device", "ensemble")
    t.set_defaults(check=translate_flag_error)


SCORE_HELP = """\
Score given pairs with a model (forced decoding): each target's log-probability given its source,
one line per pair of --data, in order. Pairs are never skipped or truncated: a source longer than the
model's input limit (the run's --max-len, which translate truncates to) or a target longer than its
output-length rule is scored whole, flagged ("over_limit" in json output) and named in a warning on
stderr. A blank line before the last pair, a line without a tab or an empty side is an error naming
the line. Score: the log-probability over the GNMT length penalty ((5 + L) / 6) ** alpha (L target
tokens with eos), as beam search scores its outputs; higher is better.
"""


def add_score(sub) -> None:
    s = sub.add_parser("score", help="score given pairs: each target's log-probability given its source",
                       description=SCORE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(s)
    s.add_argument("--data", required=True, metavar="FILE", help=DATA_HELP + ", one pair on every line")
    s.add_argument("--output-type", choices=["score", "pair_with_score", "json"], default="json",
                   help="per pair: its score; source<TAB>target<TAB>score; or (default) a JSON object with the "
                        "line, score, logprob, n_tokens, token_logprobs, tokens and over_limit")
    s.add_argument("--alpha", type=penalty_alpha, default=1.0, metavar="A",
                   help="GNMT length penalty alpha of the score, 0 to 10 (default 1; 0: the log-probability)")
    s.add_argument("--output", metavar="FILE", help="write the lines to FILE (default stdout)")
    add_groups(s, "batching", "device", "ensemble")
    s.set_defaults(check=model_flag_error)


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
    b.add_argument("--profile", action="store_true",
                   help="time as many training steps again and print where a step goes: recurrent matmul, cell, "
                        "input projections, weight gradients, attention, output layer, gradient sum, optimizer, rest")
    add_group(b, "batching", (*BATCHING, THREADS),
              batch_size=dict(default=128, help="pairs per timed training batch (default %(default)s)"))
    add_groups(b, "device")


def add_serve(sub) -> None:
    """``attnseq serve``: the model as translate takes it, where to listen, and the limits (``serve.limits``)."""
    from .serve.limits import LIMIT_FLAGS, Limits, flag
    s = sub.add_parser("serve", help="serve a model over HTTP: a JSON API with dynamic batching, a page with the "
                                     "attention, metrics (needs pip install 'attnseq[serve]')")
    add_model_flags(s)
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1: this machine only)")
    s.add_argument("--port", type=non_negative_int, default=8080, help="8080; 0: a free port (the URL line names it)")
    for name, metavar, help_text, kind in LIMIT_FLAGS:
        s.add_argument(flag(name), dest=name, metavar=metavar, type=kind or positive_int,
                       default=getattr(Limits(), name), help=help_text)
    s.add_argument("--access-log", action="store_true", help="log each request on stderr")
    add_groups(s, "device", "ensemble")
    s.set_defaults(check=model_flag_error)             # translate's checks of the model and ensemble flags


SUBPARSERS = (add_train, add_eval, add_explore, add_make_data, add_plot_curves, add_translate, add_score, add_export,
              add_average, add_plot_attention, add_bench, add_serve)


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


def translate_flag_error(args) -> str | None:
    """What does not fit in translate's --engine, --ckpt, --model, --device, --output and decoding flags, or None."""
    if args.output and at_prompt(args):
        return ("--output FILE is for lines read from --input FILE or piped into stdin; at the terminal "
                "prompt each translation is printed (give --input, or redirect stdin)")
    return engine_flag_error(args) or decoding_flag_error(args) or members_error(args)
