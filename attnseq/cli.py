"""``attnseq``: one command line for training, evaluation, translation, export, plots, data and benchmarks.

Every subcommand is a thin layer over a library function; ``scripts/*.py`` call
the same ``main``. Errors print one line on stderr and exit non-zero; ``--debug``
shows the traceback instead. The flags, and the groups of them that several
commands share, are declared in ``cli_flags``.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .cli_flags import at_prompt, build_parser, decoding_options, ensemble_options, translator_from_flags
from .errors import AttnseqError, ConfigError, QuietExit
from .nn.output_length import OutputLengthRule


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
    if result is None:                      # an MPI rank other than 0: rank 0 reports and plots
        return 0
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
    result = evaluate_file(args.ckpt, args.data, device=args.device, output=args.output, by=tuple(args.by or ()),
                           **decoding_options(args))
    for name, table in result.get("by", {}).items():       # the tables on stderr: stdout stays one JSON line
        print(format_categories(name, table), file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_explore(args) -> int:
    if args.history:
        from .explorer.history import explore_history
        page = explore_history(args.ckpt[0], device=args.device, **decoding_options(args))
    else:
        from .explorer import explore_file
        ckpt = args.ckpt[0] if len(args.ckpt) == 1 else args.ckpt
        page = explore_file(ckpt, args.data, n=args.n or None, by=tuple(args.by or ()), device=args.device,
                            **ensemble_options(args), **decoding_options(args))
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
    from .run.rundir import RunDir
    out = args.out or Path(args.run) / "curves.png"
    rows = read_epochs(args.run)
    plot_curves(rows, out, title=str(args.run), best_epoch=RunDir(args.run).best_epoch(),
                averaged=_result(args.run).get("averaged"))
    print(out)
    return 0


def _result(run) -> dict:
    """RUN/result.json, or {} while the run has not ended (or the file does not read)."""
    try:
        result = json.loads((Path(run) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) else {}


def read_epochs(run) -> list[dict]:
    """The per-epoch rows of RUN/metrics.jsonl, read as the trainer reads them (``RunDir.read_metrics``)."""
    from .run.rundir import RunDir
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (is {run} a run directory?)")
    rows = [r for r in RunDir(run).read_metrics() if "epoch" in r]
    if not rows:
        raise ConfigError(f"{path}: no epochs recorded yet")
    return rows


def cmd_translate(args) -> int:
    from .data.io import read_lines, split_lines
    tr = translator_from_flags(args)
    kw = decoding_options(args)
    if args.sample:
        import numpy as np
        kw["seed"] = np.random.default_rng(args.seed)          # one generator for every line and batch
    if at_prompt(args):
        print("attnseq translate: type a line, Ctrl-D to quit", file=sys.stderr)
        lineno = 0
        while True:
            print("> ", end="", file=sys.stderr, flush=True)   # the prompt stays off stdout
            line = sys.stdin.readline()
            if not line:
                print(file=sys.stderr)
                return 0
            lineno += 1
            texts, prefixes = _split_prefixes([line.rstrip("\r\n")], args.prefix_column, lineno)
            _print_translations(tr.translate(texts, first_line=lineno, prefix=prefixes, **kw), args, sys.stdout)
            sys.stdout.flush()
    lines = read_lines(args.input, allow_empty=True) if args.input else split_lines(sys.stdin.read())
    texts, prefixes = _split_prefixes(lines, args.prefix_column)
    _write_lines(args.output, lambda f: _print_translations(tr.translate(texts, prefix=prefixes, **kw), args, f))
    return 0


def _split_prefixes(lines: list[str], column: int | None, first_line: int = 1):
    """translate's input lines -> (sources, prefixes): with --prefix-column N, each line's column 1 and
    column N (DataError naming the line when it has no column N); without it, the lines and None."""
    if column is None:
        return lines, None
    from .errors import DataError
    texts, prefixes = [], []
    for lineno, line in enumerate(lines, first_line):
        fields = line.split("\t")
        if line.strip() and len(fields) < column:
            raise DataError(f"input line {lineno}: no column {column} for --prefix-column (the line has {len(fields)})")
        texts.append(fields[0])
        prefixes.append(fields[column - 1].strip() if len(fields) >= column else None)
    return texts, prefixes


def _write_lines(output, write) -> None:
    """``write(f)`` into --output FILE (whole, atomically) or stdout."""
    if output:
        import io
        from .data.io import atomic_write_text
        buf = io.StringIO()
        write(buf)
        atomic_write_text(output, buf.getvalue())
    else:
        write(sys.stdout)


def cmd_score(args) -> int:
    from .run.scoring import format_scores, read_score_pairs, score_texts
    pairs, lines = read_score_pairs(args.data)                  # a bad line fails before the model loads
    tr = translator_from_flags(args)
    scored = score_texts(tr, [s for s, _ in pairs], [t for _, t in pairs], args.alpha, args.batch_size, lines)
    _write_lines(args.output, lambda f: f.write(format_scores(pairs, scored, args.output_type, lines)))
    return 0


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
    if args.history:
        print(animate_history(args.history, args.out, args.n, args.fps, args.until))
        return 0
    from .data.io import read_pairs
    from .run.evaluation import normalized_refs
    from .run.inference import Translator
    texts, refs, tr = list(args.text or []), None, None
    if args.data:
        pairs = read_pairs(args.data)
        if args.wrong_only:
            tr = Translator(args.ckpt, args.device)
            outs = tr.translate([s for s, _ in pairs], **decoding_options(args))
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
    out = plot_translations(tr or Translator(args.ckpt, args.device), texts, args.out, refs, **decoding_options(args))
    print(out)
    return 0


def plot_translations(tr, texts: list[str], out, refs: list[str] | None = None, **decoding) -> Path:
    """Translate texts with a ``Translator`` (``decoding``: the search, as ``Translator.translate`` takes it:
    beam, alpha, max_len ...) and save their attention heatmaps as one grid figure; with refs, each title marks
    the output right (✓: equal to the reference as the tokenizer reads it back, as eval counts it) or wrong
    (✗, with the wanted text)."""
    from .plotting import plot_attention_grid, readable, save_figure
    from .run.evaluation import normalized_refs
    wanted = None if refs is None else normalized_refs(tr.tgt_tok, refs)
    examples = []
    for k, (text, r) in enumerate(zip(texts, tr.translate(texts, **decoding))):
        mark = "" if refs is None else "  ✓" if r.text == wanted[k] else f"  ✗ (want {refs[k]})"
        examples.append(dict(weights=r.weights, src_tokens=r.src_tokens, tgt_tokens=r.out_tokens,
                             title=f"{readable(text)} → {readable(r.text)}{mark}"))
    return save_figure(plot_attention_grid(examples), out)


def animate_history(run, out, n: int, fps: int, until: int | None = None) -> Path:
    """The attention of the first ``n`` examples ``run`` tracked, one frame per snapshot (GIF or MP4); with
    ``until``, the snapshots up to that training step and the last one."""
    from .plotting import save_attention_animation
    from .run.history import AttentionHistory, history_path
    from .run.tracking import example_title
    history = AttentionHistory.load(history_path(run))
    if not history.entries:
        raise ConfigError(f"{history_path(run)}: no snapshots yet")
    examples, entries = history.examples[:n], history.entries
    if until is not None:
        entries = [e for e in entries[:-1] if e.step <= until] + entries[-1:]
    frames = [dict(caption=f"{Path(str(run)).name}: {history.label(e)}", weights=e.weights[:n],
                   titles=[example_title(ex, text) for ex, text in zip(examples, e.outputs)]) for e in entries]
    return save_attention_animation(examples, frames, out, fps=fps)


def cmd_bench(args) -> int:
    from .bench import format_table, run_bench
    paths = ("numpy", "numba") if args.kernels == "both" else (args.kernels,)
    for k, path in enumerate(paths):
        r = run_bench(args.device, args.batch_size, args.hidden_size, args.wordvec_size, args.iters,
                      padded=not args.bucketed, n_greedy=args.n_greedy, n_beam=args.n_beam, threads=args.threads,
                      kernels=path, profile=args.profile)
        print(json.dumps(r) if args.json else ("\n" if k else "") + format_table(r), flush=True)
    return 0


def cmd_serve(args) -> int:
    from .serve.command import serve
    return serve(args, translator_from_flags)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "explore": cmd_explore, "make-data": cmd_make_data,
            "plot-curves": cmd_plot_curves, "translate": cmd_translate, "score": cmd_score, "export": cmd_export,
            "average": cmd_average, "plot-attention": cmd_plot_attention, "bench": cmd_bench, "serve": cmd_serve}


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
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("attnseq: interrupted", file=sys.stderr)
        return 130
    except QuietExit as e:                        # another MPI rank says why
        return e.exit_code
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
