"""``attnseq``: one command line for training, evaluation, translation, export, plots, data and benchmarks.

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
from .run.decoding import EVAL_BATCH_SIZE, OutputLengthRule

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


def _train_args(p: argparse.ArgumentParser) -> None:
    from .run.config import add_flags
    add_flags(p)


def train_config(args: argparse.Namespace) -> dict:
    """The train options given on the command line, over those of --config FILE.toml."""
    from .run.config import from_args, read_toml
    cfg = from_args(args)
    if args.config:
        cfg = {**read_toml(args.config), **{k: v for k, v in cfg.items() if v is not None}}
    return cfg


def cmd_train(args) -> int:
    from .run.training import train
    result = train(train_config(args))
    if args.plot:
        from .run.inference import Translator
        out = Path(result["run"]) / "attention.png"
        srcs, refs = zip(*result["examples"])
        tr = Translator(result["run"])
        limit = tr.ck.config["train"].get("max_output_len")            # the run's --max-output-len, if any
        limit = OutputLengthRule.parse(limit) if limit else None
        plot_translations(tr, list(srcs), out, refs=list(refs), max_len=limit)
        print(f"attention heatmap: {out}")
    return 0


def cmd_eval(args) -> int:
    from .run.evaluation import format_categories
    from .run.inference import evaluate_file
    result = evaluate_file(args.ckpt, args.data, device=args.device, batch_size=args.batch_size,
                           output=args.output, by=tuple(args.by or ()), max_len=args.max_output_len)
    for name, table in result.get("by", {}).items():       # the tables on stderr: stdout stays one JSON line
        print(format_categories(name, table), file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_explore(args) -> int:
    from .explorer import explore_file
    page = explore_file(args.ckpt, args.data, n=args.n or None, by=tuple(args.by or ()), beam=args.beam,
                        n_best=args.n_best, alpha=args.alpha, device=args.device, batch_size=args.batch_size,
                        max_len=args.max_output_len)
    s = page.data["summary"]
    print(page.save(args.out))
    if s["exact_match"] is not None:
        print(f"{s['n']} examples, exact match {100 * s['exact_match']:.2f}%, {s['wrong']} wrong", file=sys.stderr)
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
    plot_curves(read_epochs(args.run), out, title=str(args.run))
    print(out)
    return 0


def read_epochs(run) -> list[dict]:
    """The per-epoch rows of RUN/metrics.jsonl, read as the trainer reads them (``RunDir.read_metrics``)."""
    from .run.checkpoint import RunDir
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (is {run} a run directory?)")
    rows = [r for r in RunDir(run).read_metrics() if "epoch" in r]
    if not rows:
        raise ConfigError(f"{path}: no epochs recorded yet")
    return rows


def _interactive(args) -> bool:
    """translate reads from a terminal prompt: no --input, and stdin is a terminal."""
    return args.input is None and sys.stdin.isatty()


def cmd_translate(args) -> int:
    from .data.io import atomic_write_text, read_lines, split_lines
    tr = _translator(args)
    interactive = _interactive(args)
    kw = dict(beam=args.beam, n_best=args.n_best, alpha=args.alpha, batch_size=args.batch_size,
              max_len=args.max_output_len)
    if interactive:
        print("attnseq translate: type a line, Ctrl-D to quit", file=sys.stderr)
        lineno = 0
        while True:
            print("> ", end="", file=sys.stderr, flush=True)   # the prompt stays off stdout
            line = sys.stdin.readline()
            if not line:
                print(file=sys.stderr)
                return 0
            line = line.rstrip("\r\n")
            lineno += 1
            _print_translations(tr.translate([line], first_line=lineno, **kw), args, sys.stdout)
            sys.stdout.flush()
    if args.input:
        lines = read_lines(args.input, allow_empty=True)
    else:
        lines = split_lines(sys.stdin.read())
    results = tr.translate(lines, **kw)
    if args.output:
        import io
        buf = io.StringIO()
        _print_translations(results, args, buf)
        atomic_write_text(args.output, buf.getvalue())
    else:
        _print_translations(results, args, sys.stdout)
    return 0


def _translator(args):
    """The engine that runs translate's model: attnseq's own (--ckpt) or onnxruntime (--model)."""
    if args.engine == "onnxruntime":
        from .export import OnnxTranslator
        return OnnxTranslator(args.model, args.max_input_len)
    from .run.inference import Translator
    return Translator(args.ckpt, args.device, args.max_input_len)


def translate_flag_error(args) -> str | None:
    """What does not fit in translate's --engine, --ckpt, --model, --device and --output, or None."""
    if args.output and _interactive(args):
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


def cmd_average(args) -> int:
    from .run.averaging import average_run
    out = average_run(args.run, args.last, args.out)
    print(out)
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx
    print(export_onnx(args.ckpt, args.out, cast_float32=args.float32, max_output_len=args.max_output_len))
    return 0


def _print_translations(results, args, f) -> None:
    from .run.inference import format_alignment
    for r in results:
        if args.n_best > 1:
            f.write("\t".join(f"{text} ({score:.3f})" if score is not None else text for text, score in r.nbest) + "\n")
        else:
            f.write(r.text + "\n")
        if args.show_attention:
            print(format_alignment(r), file=sys.stderr)


def cmd_plot_attention(args) -> int:
    from .data.io import read_pairs
    from .run.evaluation import normalized_refs
    from .run.inference import Translator
    texts, refs, tr = list(args.text or []), None, None
    if args.data:
        pairs = read_pairs(args.data)
        if args.wrong_only:
            tr = Translator(args.ckpt, args.device)
            outs = tr.translate([s for s, _ in pairs], beam=args.beam, max_len=args.max_output_len)
            wanted = normalized_refs(tr.tgt_tok, [t for _, t in pairs])
            pairs = [p for p, o, want in zip(pairs, outs, wanted) if o.text != want]
            if not pairs:
                print(f"attnseq plot-attention: every example in {args.data} is right; nothing to plot")
                return 0
        pairs = pairs[:args.n]
        texts += [s for s, _ in pairs]
        refs = None if args.text else [t for _, t in pairs]
    if not texts:
        raise ConfigError("give --text \"...\" (repeatable) or --data FILE")
    out = plot_translations(tr or Translator(args.ckpt, args.device), texts, args.out, refs, args.beam,
                            args.max_output_len)
    print(out)
    return 0


def plot_translations(tr, texts: list[str], out, refs: list[str] | None = None, beam: int = 1,
                      max_len=None) -> Path:
    """Translate texts with a ``Translator`` (outputs up to ``max_len``: see ``Translator.translate``) and save
    their attention heatmaps as one grid figure; with refs, each title marks the output right (✓: equal to
    the reference as the tokenizer reads it back, as eval counts it) or wrong (✗, with the wanted text)."""
    from .plotting import plot_attention_grid, readable, save_figure
    from .run.evaluation import normalized_refs
    wanted = None if refs is None else normalized_refs(tr.tgt_tok, refs)
    examples = []
    for k, (text, r) in enumerate(zip(texts, tr.translate(texts, beam=beam, max_len=max_len))):
        mark = "" if refs is None else "  ✓" if r.text == wanted[k] else f"  ✗ (want {refs[k]})"
        examples.append(dict(weights=r.weights, src_tokens=r.src_tokens, tgt_tokens=r.out_tokens,
                             title=f"{readable(text)} → {readable(r.text)}{mark}"))
    return save_figure(plot_attention_grid(examples), out)


def cmd_bench(args) -> int:
    from .bench import format_table, run_bench
    paths = ("numpy", "numba") if args.kernels == "both" else (args.kernels,)
    for k, path in enumerate(paths):
        r = run_bench(args.device, args.batch_size, args.hidden_size, args.wordvec_size, args.iters,
                      padded=not args.bucketed, threads=args.threads, kernels=path)
        print(json.dumps(r) if args.json else ("\n" if k else "") + format_table(r), flush=True)
    return 0


def cmd_serve(args) -> int:
    from .serve.command import serve
    return serve(args)


def add_serve_parser(sub) -> None:
    """``attnseq serve``: the model as translate takes it, where to listen, and the limits (``serve.limits``)."""
    from .serve.limits import LIMIT_FLAGS, Limits, flag
    s = sub.add_parser("serve", help="serve a model over HTTP: a JSON API with dynamic batching, a page with the "
                                     "attention, metrics (needs pip install 'attnseq[serve]')")
    s.add_argument("--ckpt", metavar="RUN", help="run dir (its best/) or checkpoint dir (--engine attnseq)")
    s.add_argument("--engine", choices=["attnseq", "onnxruntime"], default="attnseq",
                   help="what runs the model: attnseq with --ckpt (default), or onnxruntime with --model")
    s.add_argument("--model", metavar="DIR", help="a directory written by attnseq export (--engine onnxruntime)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1: this machine only)")
    s.add_argument("--port", type=non_negative_int, default=8080, help="8080; 0: a free port (the URL line names it)")
    for name, metavar, help_text, kind in LIMIT_FLAGS:
        s.add_argument(flag(name), dest=name, metavar=metavar, type=kind or positive_int,
                       default=getattr(Limits(), name), help=help_text)
    s.add_argument("--access-log", action="store_true", help="log each request on stderr")
    # translate's check of --engine, --ckpt, --model and --device; serve has no --output
    s.set_defaults(func=cmd_serve, check=translate_flag_error, output=None)


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
    e.add_argument("--batch-size", type=positive_int, default=EVAL_BATCH_SIZE)
    e.add_argument("--device", default="cpu")
    e.add_argument("--by", action="append", metavar="length|style|colN", help=BY_HELP + "; the tables go to stderr")
    e.add_argument("--max-output-len", type=output_len, metavar="N|S*Ts+O", help=MAX_OUTPUT_HELP)
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("explore", help="write one HTML page to browse a model's outputs, errors and attention")
    x.add_argument("--ckpt", required=True, metavar="RUN", help="run dir (its best/) or checkpoint dir")
    x.add_argument("--data", required=True, metavar="FILE", help="TSV or question_answer pairs")
    x.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write (one file, works offline)")
    x.add_argument("--n", type=non_negative_int, default=500, help="the first N pairs of --data (500; 0: all)")
    x.add_argument("--beam", type=positive_int, default=1, metavar="K", help="beam size (1 = greedy); shows the n best")
    x.add_argument("--n-best", type=positive_int, metavar="N",
                   help="hypotheses kept per example with --beam (default K)")
    x.add_argument("--alpha", type=float, default=0.0, help="GNMT length penalty alpha for beam search (0 = off)")
    x.add_argument("--by", action="append", metavar="style|colN", help=BY_HELP + "; length is always shown")
    x.add_argument("--batch-size", type=positive_int, default=EVAL_BATCH_SIZE, metavar="B")
    x.add_argument("--max-output-len", type=output_len, metavar="N|S*Ts+O", help=MAX_OUTPUT_HELP)
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=cmd_explore)

    m = sub.add_parser("make-data", help="regenerate a built-in dataset's TSV splits")
    m.add_argument("name", choices=["date", "addition", "toy-en-ko"])
    m.add_argument("--out", metavar="DIR", help="default data/NAME")
    m.add_argument("--seed", type=non_negative_int, help="default 1234 (the shipped files)")
    m.set_defaults(func=cmd_make_data)

    c = sub.add_parser("plot-curves", help="plot loss and accuracy per epoch from RUN/metrics.jsonl")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--out", metavar="FILE", help="default RUN/curves.png")
    c.set_defaults(func=cmd_plot_curves)

    t = sub.add_parser("translate", help="translate lines from stdin, --input FILE or a terminal prompt")
    t.add_argument("--ckpt", metavar="RUN", help="run dir (its best/) or checkpoint dir (--engine attnseq)")
    t.add_argument("--engine", choices=["attnseq", "onnxruntime"], default="attnseq",
                   help="what runs the model: attnseq with --ckpt (default), or onnxruntime with --model "
                        "(needs pip install 'attnseq[export]')")
    t.add_argument("--model", metavar="DIR", help="a directory written by attnseq export (--engine onnxruntime)")
    t.add_argument("--input", metavar="FILE", help="read lines from FILE (default stdin)")
    t.add_argument("--output", metavar="FILE", help="write outputs to FILE (default stdout)")
    t.add_argument("--beam", type=positive_int, default=1, metavar="K", help="beam size (1 = greedy)")
    t.add_argument("--n-best", type=positive_int, default=1, metavar="N",
                   help="print the N best, tab-separated, with scores")
    t.add_argument("--alpha", type=float, default=0.0, help="GNMT length penalty alpha for beam search (0 = off)")
    t.add_argument("--batch-size", type=positive_int, default=EVAL_BATCH_SIZE, metavar="B")
    t.add_argument("--max-output-len", "--max-len", type=output_len, metavar="N|S*Ts+O",
                   help=MAX_OUTPUT_HELP + "; --max-len is the older name")
    t.add_argument("--max-input-len", type=positive_int, metavar="N",
                   help="longer inputs are truncated with a warning (default: the run's --max-len, else 200)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--show-attention", action="store_true", help="print a text alignment per line on stderr")
    t.set_defaults(func=cmd_translate, check=translate_flag_error)

    o = sub.add_parser("export", help="export a checkpoint to ONNX, to translate without attnseq")
    o.add_argument("--ckpt", required=True, metavar="RUN", help="run dir (its best/) or checkpoint dir")
    o.add_argument("--format", choices=["onnx"], default="onnx",
                   help="onnx (default; needs pip install 'attnseq[export]'): encoder.onnx, decoder_step.onnx, "
                        "the tokenizer files and manifest.json")
    o.add_argument("--out", required=True, metavar="DIR",
                   help="a new or empty directory, or an earlier export to replace")
    o.add_argument("--float32", action="store_true",
                   help="cast a float64 checkpoint's weights to float32 (the graphs are float32)")
    o.add_argument("--max-output-len", type=output_len, metavar="N|S*Ts+O",
                   help="the longest output the manifest records: N tokens, or S*Ts+O "
                        "(default: the checkpoint's rule)")
    o.set_defaults(func=cmd_export)

    v = sub.add_parser("average", help="average the weights of a run's last K kept checkpoints into one checkpoint")
    v.add_argument("run", metavar="RUN", help="a run directory trained with --keep-last K (its epoch-NNNN/)")
    v.add_argument("--last", type=positive_int, required=True, metavar="K",
                   help="average the newest K kept checkpoints")
    v.add_argument("--out", required=True, metavar="CKPT",
                   help="a new or empty directory (or an earlier average, replaced): the averaged checkpoint, "
                        "for eval, translate, explore and export (--ckpt CKPT); it cannot be resumed")
    v.set_defaults(func=cmd_average)

    a = sub.add_parser("plot-attention", help="draw attention heatmaps for texts or examples from a data file")
    a.add_argument("--ckpt", required=True, metavar="RUN")
    a.add_argument("--text", action="append", metavar="TEXT", help="a source text (repeatable)")
    a.add_argument("--data", metavar="FILE", help="take examples from a TSV/question_answer file")
    a.add_argument("--n", type=positive_int, default=6, help="how many examples from --data (6)")
    a.add_argument("--wrong-only", action="store_true", help="only examples the model gets wrong")
    a.add_argument("--out", required=True, metavar="FILE.png|.svg|.pdf")
    a.add_argument("--beam", type=positive_int, default=1, metavar="K", help="beam size (1 = greedy)")
    a.add_argument("--max-output-len", type=output_len, metavar="N|S*Ts+O", help=MAX_OUTPUT_HELP)
    a.add_argument("--device", default="cpu")
    a.set_defaults(func=cmd_plot_attention)

    b = sub.add_parser("bench", help="measure training and decoding speed (classic date workload)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--batch-size", type=positive_int, default=128)
    b.add_argument("--hidden-size", type=positive_int, default=256)
    b.add_argument("--wordvec-size", type=positive_int, default=16)
    b.add_argument("--iters", type=positive_int, default=20, help="timed training iterations (after 3 warm-up)")
    b.add_argument("--threads", type=int, default=0, help="CPU training threads (0: one per core, >= 32 rows each)")
    b.add_argument("--bucketed", action="store_true", help="trim each batch to its own longest row instead")
    b.add_argument("--kernels", choices=("auto", "numba", "numpy", "both"), default="auto",
                   help="CPU path: fused numba kernels, plain numpy, or both one after the other "
                        "(default auto: numba when it imports; training reads ATTNSEQ_KERNELS)")
    b.add_argument("--json", action="store_true", help="one JSON line instead of a table (one per path)")
    b.set_defaults(func=cmd_bench)

    add_serve_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args.check(args) if getattr(args, "check", None) else None
    if problem:                                   # a flag combination argparse cannot express: a usage error
        parser.exit(2, f"attnseq {args.command}: error: {problem} (see attnseq {args.command} --help)\n")

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
        if getattr(e, "exit_code", None):         # a graceful stop (SIGINT/SIGTERM): where it stopped; 130 or 143
            print(f"attnseq {args.command}: {e}", file=sys.stderr)
            return e.exit_code
        if args.debug:
            raise
        msg = str(e) if isinstance(e, (AttnseqError, ValueError)) else f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}"
        print(f"attnseq {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
