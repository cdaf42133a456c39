"""What attnseq's flags take: their argparse types, where a bad value is a usage error naming the flag
(``--top-p: must be a number in (0, 1], got '1.5'``), and the decoding flags as rows (``Flag``, ``DECODING``).
The server builds its request fields from those rows and checks them with the same functions."""
from __future__ import annotations

import argparse
from typing import NamedTuple

from .nn.output_length import OutputLengthRule
from .nn.search import MAX_ALPHA


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


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None      # no nan, no inf


def positive_float(text: str) -> float:
    """The argparse type of --temperature, --repetition-penalty and --weights: a number > 0."""
    value = _number(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """The argparse type of --top-p: a number in (0, 1]."""
    value = _number(text)
    if value is None or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def penalty_alpha(text: str) -> float:
    """The argparse type of --alpha: the GNMT length penalty's exponent, from 0 to ``nn.search.MAX_ALPHA``."""
    value = _number(text)
    if value is None or not 0 <= value <= MAX_ALPHA:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_ALPHA:g}, got {text!r}")
    return value


def prefix_column(text: str) -> int:
    """The argparse type of --prefix-column: a TSV column after the source, 2 or more."""
    return _int_at_least(text, 2, "a column number of 2 or more (column 1 is the source)")


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
    Flag(("--alpha",), dict(type=penalty_alpha, default=0.0, metavar="A",
                            help="GNMT length penalty alpha for beam search, 0 to 10 (default 0: off)"), "alpha"),
    Flag(("--sample",), dict(action="store_true", default=False,
                             help="draw each token from the model's distribution instead of searching (with "
                                  "--n-best N: N samples per input, best first)"), "sample"),
    Flag(("--temperature",), dict(type=positive_float, default=1.0, metavar="T",
                                  help="with --sample: divide log-probabilities by T > 0 (default 1; near 0: greedy)"),
         "temperature"),
    Flag(("--top-k",), dict(type=non_negative_int, default=0, metavar="K",
                            help="with --sample: draw from the K most likely tokens only (default 0: all)"), "top_k"),
    Flag(("--top-p",), dict(type=probability, default=1.0, metavar="P",
                            help="with --sample: draw from the fewest most likely tokens whose probability "
                                 "reaches P, in (0, 1] (default 1: all)"), "top_p"),
    Flag(("--seed",), dict(type=non_negative_int, metavar="S",
                           help="with --sample: the random seed; the same seed, input and --batch-size give "
                                "the same samples (default: fresh entropy)"), "seed"),
    Flag(("--min-output-len",), dict(type=non_negative_int, default=0, metavar="N",
                                     help="no end of output before N tokens (default 0: off)"), "min_output_len"),
    Flag(("--no-repeat-ngram",), dict(type=non_negative_int, default=0, metavar="N",
                                      help="never output the same N-gram twice (default 0: off)"), "no_repeat_ngram"),
    Flag(("--repetition-penalty",), dict(type=positive_float, default=1.0, metavar="R",
                                         help="multiply the log-probability of tokens already output by R "
                                              "(> 1: repeat less; default 1: off)"), "repetition_penalty"),
)
