"""Flag combinations argparse cannot express, for the commands that decode (``cli_flags`` declares the flags):
each check gives one line saying what does not fit, or None. Values argparse can judge alone (a negative
temperature, a top-p outside (0, 1]) are refused by the flags' types. ``attnseq serve`` judges the decoding
fields of a request with the same types and ``decoding_flag_error`` (``serve.options``).
"""
from __future__ import annotations

from pathlib import Path


def engine_flag_error(args) -> str | None:
    """What does not fit in --engine, --ckpt, --model and --device (translate, score), or None."""
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


def cli_name(param: str) -> str:
    """How the command line names a decoding keyword: top_p -> --top-p."""
    return "--" + param.replace("_", "-")


def decoding_flag_error(args, name=cli_name) -> str | None:
    """Sampling's options without sample, or sample with a beam, or None. ``name(param)``: how the line names
    an option (the flags by default; ``attnseq serve`` names its JSON fields)."""
    sample = name("sample")
    if not args.sample:
        for param, off in (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("seed", None)):
            if getattr(args, param) != off:
                return f"{name(param)} is for {sample} (add {sample}, or leave {name(param)} out)"
    elif args.beam > 1:
        return (f"{sample} draws each token and does not go with {name('beam')} {args.beam} "
                f"({name('n_best')} N draws N samples)")
    return None


def ensemble_flag_error(args, members: list | None, flag: str = "--ckpt") -> str | None:
    """--weights and --ensemble-mode without an ensemble, a weight count that is not the member count, or a
    member given twice (as the same path), or None."""
    members = members or []
    if len(members) < 2:
        if args.weights is not None or args.ensemble_mode != "linear":
            given = "--weights" if args.weights is not None else "--ensemble-mode"
            return f"{given} is for an ensemble: give {flag} more than once"
        return None
    if args.weights is not None and len(args.weights) != len(members):
        return f"--weights: {len(args.weights)} given for {len(members)} {flag} members"
    seen = {}
    for m in members:
        key = Path(m).resolve()
        if key in seen:
            also = "" if seen[key] == m else f" (as {seen[key]} too)"
            return (f"{flag} {m} is given twice{also}: an ensemble of a model with itself is that model; "
                    "give each member once")
        seen[key] = m
    return None


def model_flag_error(args) -> str | None:
    """What does not fit in the flags naming the model or ensemble: --engine, --ckpt, --model, --device,
    --ensemble-mode and --weights (score, serve), or None."""
    return engine_flag_error(args) or members_error(args)


def explore_flag_error(args) -> str | None:
    return _examples_flag_error(args) or decoding_flag_error(args) or ensemble_flag_error(args, args.ckpt)


def _examples_flag_error(args) -> str | None:
    """explore takes its examples from --data FILE or from the run's --history, one of the two."""
    if args.history and args.data:
        return "--data FILE and --history are alternatives: the page shows a file's examples, or the run's tracked ones"
    if args.history and args.by:
        return "--by reads the columns of --data FILE; a --history page shows the run's tracked examples"
    if not args.history and not args.data:
        return "--data FILE is required (or --history, for the examples the run tracked during training)"
    if args.history and len(args.ckpt) > 1:
        return "--history shows one run's tracked examples: give one --ckpt RUN, not an ensemble"
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
    return decoding_flag_error(args)


def members_error(args) -> str | None:
    if args.engine == "onnxruntime":
        return ensemble_flag_error(args, args.model, "--model")
    return ensemble_flag_error(args, args.ckpt)
