"""The argparse types of attnseq's flags: a bad value is a usage error naming the flag (``--top-p: must be a
number in (0, 1], got '1.5'``). The server checks its request fields with the same functions."""
from __future__ import annotations

import argparse

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
