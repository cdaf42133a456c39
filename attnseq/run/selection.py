"""Which epoch is best (``--select-by``): it becomes best/, and drives early stopping and the plateau schedule.

An epoch's score is the list [primary, -valid loss], compared as a list, higher better: the primary
is valid BLEU (``bleu``), valid exact match (``exact``) or -valid loss (``loss``); equal primaries
are broken by the lower valid loss. state.json keeps best/'s score as "best" and the metric it was
taken with as "best_metric" (absent in runs from before the option: those are ``exact``).
"""
from __future__ import annotations

import math

SELECT_BY = ("bleu", "exact", "loss")
LEGACY_METRIC = "exact"                     # state.json without "best_metric"
_KEY = {"bleu": "bleu", "exact": "exact_match", "loss": "loss"}
NAMES = {"bleu": "valid BLEU", "exact": "valid exact match", "loss": "valid loss"}


def initial_best() -> list[float]:
    """The score before any epoch: every real score beats it."""
    return [-math.inf, -math.inf]


def score(valid: dict, by: str) -> list[float]:
    """[primary, -loss] of one evaluation (``evaluate``'s dict: exact_match, loss, bleu ...)."""
    if by not in _KEY:
        raise ValueError(f"--select-by {by!r}: one of {', '.join(SELECT_BY)}")
    loss = float(valid["loss"])
    primary = -loss if by == "loss" else float(valid[_KEY[by]])
    return [primary, -loss]


def score_of_row(row: dict, by: str) -> list[float] | None:
    """The score of a metrics.jsonl row (keys valid_loss, valid_bleu ...), or None when it lacks the metric."""
    try:
        return score({k[len("valid_"):]: v for k, v in row.items() if k.startswith("valid_")}, by)
    except (KeyError, TypeError, ValueError):
        return None


def best_value(best: list[float], by: str) -> dict:
    """result.json's entry for best/'s score: {"best_valid_exact_match": ...}, best_valid_bleu or best_valid_loss."""
    return {f"best_valid_{_KEY[by]}": -best[0] if by == "loss" else best[0]}
