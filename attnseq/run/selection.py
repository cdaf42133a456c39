"""Which epoch is best (``--select-by``): it becomes best/, and drives early stopping and the plateau schedule.

An epoch's score is the list [primary, -valid loss], compared as a list, higher better: the primary
is valid BLEU (``bleu``), valid exact match (``exact``) or -valid loss (``loss``); equal primaries
are broken by the lower valid loss. state.json keeps best/'s score as "best" and the metric it was
taken with as "best_metric" (absent in runs from before the option: those are ``exact``).

``Best`` is what the trainer keeps: best/'s score, updated by each epoch's valid scores, and the epochs
since one beat it (``--patience``).
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


def score_of_epoch(rows: list[dict], epoch: int | None, by: str) -> list[float] | None:
    """The score by ``by`` of the metrics.jsonl row of ``epoch`` among ``rows``, or None when there is no
    such row or it lacks the metric (a run resumed with another --select-by scores its best/ so)."""
    row = next((r for r in rows if r.get("epoch") == epoch), None)
    return score_of_row(row, by) if row is not None else None


class Best:
    """best/ so far: its ``score`` by metric ``by`` (one of ``SELECT_BY``) and the epochs since one beat
    it (``bad_epochs``), which drive ``--patience``; state.json keeps all three."""

    def __init__(self, by: str, score: list[float] | None = None, bad_epochs: int = 0):
        if by not in _KEY:
            raise ValueError(f"--select-by {by!r}: one of {', '.join(SELECT_BY)}")
        self.by, self.bad_epochs = by, bad_epochs
        self.score = list(score) if score is not None else initial_best()

    def beaten_by(self, valid: dict) -> bool:
        """Whether the valid scores ``valid`` (``evaluate``'s dict) beat best/'s."""
        return score(valid, self.by) > self.score

    def update(self, valid: dict) -> bool:
        """An epoch's valid scores: True when they beat best/ (and become its score, the count of bad
        epochs starting over), else False and one more bad epoch."""
        if self.beaten_by(valid):
            self.score, self.bad_epochs = score(valid, self.by), 0
            return True
        self.bad_epochs += 1
        return False

    def rechoose(self, old: str, rows: list[dict], epoch: int | None) -> str:
        """A run resumed with this --select-by, best/ chosen by ``old``: best/'s score by this one, from its
        metrics.jsonl row (among ``rows``, of best/'s ``epoch``); when that row lacks the score, the next
        epoch replaces best/. -> the note that says so, for the log."""
        found = score_of_epoch(rows, epoch, self.by)
        self.score = found if found is not None else initial_best()
        return (f"note: best/ was chosen by {NAMES[old]}; from now on by {NAMES[self.by]}"
                + ("" if found is not None else " (best/'s is not recorded: the next epoch replaces it)"))

    def value(self) -> dict:
        """result.json's entry for best/'s score (``best_value``)."""
        return best_value(self.score, self.by)
