"""The resume-state schema: state.json of a checkpoint, and where a mid-epoch checkpoint stands.

``TrainState`` is where a run stands after an epoch (its counters, best/'s score, the RNG and
schedule states); ``EpochProgress`` is state.json's "in_epoch", how far a mid-epoch checkpoint is
into its epoch. Both are read back field by field: a missing or malformed field is one
CheckpointError naming the file and the field. Fields added since the first format are optional,
with the value an old state.json means.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .budget import BudgetState
from .schedules import check_state
from .selection import LEGACY_METRIC, SELECT_BY


@dataclass
class TrainState:
    """state.json: where a run stands after an epoch.

    ``best`` is [primary, -valid loss] of best/ (compared as a list: the primary first), the primary
    being the valid score ``best_metric`` names (``attnseq.run.selection``: exact match, BLEU or
    -loss; state.json from before it holds exact match and no name). ``rng`` and ``dropout_rng``
    are the bit generator states of the batch order and of dropout; ``schedule`` the lr schedule's
    state (its name, and plateau's scale and count); ``budget`` the time the run had used
    (``attnseq.run.budget``; None in a state.json from before it).
    """
    epoch: int
    step: int
    best: list
    bad_epochs: int
    nonfinite_skipped: int
    rng: dict
    dropout_rng: dict
    best_metric: str = LEGACY_METRIC
    schedule: dict | None = None
    budget: BudgetState | None = None

    @classmethod
    def from_json(cls, st: dict, path: Path) -> "TrainState":
        """Checked field by field; a missing or malformed one is a CheckpointError naming it."""
        values = {}
        for name, parse in _STATE_FIELDS.items():
            if name not in st and name not in _STATE_OPTIONAL:
                raise CheckpointError(f"{path}: missing or malformed field {name!r} (not there); "
                                      "cannot resume from it")
            try:
                values[name] = parse(st.get(name, _STATE_OPTIONAL.get(name)))
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{path}: missing or malformed field {name!r} ({e}); "
                                      "cannot resume from it") from None
        return cls(**values)


def _score(value) -> list:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value)):
        raise ValueError(f"expected [score, -loss], got {value!r}")
    return list(value)


def _metric(value) -> str:
    if value not in SELECT_BY:
        raise ValueError(f"expected one of {', '.join(SELECT_BY)}, got {value!r}")
    return value


def _schedule(value) -> dict | None:
    return None if value is None else check_state(value)


def _budget(value) -> BudgetState | None:
    return None if value is None else BudgetState.from_json(value)


def _rng_state(value) -> dict:
    np.random.PCG64().state = value         # what default_rng() takes, or TypeError/ValueError
    return value


_STATE_FIELDS = dict(epoch=int, step=int, best=_score, bad_epochs=int, nonfinite_skipped=int,
                     rng=_rng_state, dropout_rng=_rng_state, best_metric=_metric, schedule=_schedule, budget=_budget)
# absent from state.json written before they existed
_STATE_OPTIONAL = dict(nonfinite_skipped=0, best_metric=LEGACY_METRIC, schedule=None, budget=None)


@dataclass
class EpochProgress:
    """state.json's "in_epoch": how far a mid-epoch checkpoint is into its epoch (absent at epoch ends).

    The epoch's batch order is the one ``batch_order`` draws from TrainState's ``rng`` (in a mid-epoch
    checkpoint, the generator's state at the epoch's start); ``batches_done`` of its ``batches`` are
    trained. ``batch_size``, ``bucket`` and ``bucket_jitter`` made that order. The rest are the
    epoch's running sums so far: the training loss summed over ``loss_batches`` batches, the pairs
    trained on, and the seconds spent.
    """
    batches_done: int = 0
    batches: int = 0
    batch_size: int = 0
    bucket: bool = True
    bucket_jitter: float = 0.0
    loss_sum: float = 0.0
    loss_batches: int = 0
    samples: int = 0
    time_s: float = 0.0

    @classmethod
    def from_json(cls, st: dict, path: Path) -> "EpochProgress | None":
        """The "in_epoch" of state.json ``st``, checked, or None at an epoch end."""
        raw = st.get("in_epoch")
        if raw is None:
            return None
        try:
            out = cls(**{name: _PROGRESS_TYPES[name](raw[name]) for name in _PROGRESS_TYPES})
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: missing or malformed field 'in_epoch' ({e!r}); "
                                  "cannot resume from it") from None
        if not 0 <= out.batches_done <= out.batches:
            raise CheckpointError(f"{path}: 'in_epoch' has {out.batches_done} of {out.batches} batches done; "
                                  "cannot resume from it")
        return out

    def order_matches(self, batches: int, cfg: dict) -> bool:
        """True when ``batches`` batches drawn under ``cfg`` make the order this progress was counted in."""
        return (self.batches, self.batch_size, self.bucket, self.bucket_jitter) == (
            batches, cfg["batch_size"], cfg["bucket"], cfg["bucket_jitter"])


def _strict_bool(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


_PROGRESS_TYPES = dict(batches_done=int, batches=int, batch_size=int, bucket=_strict_bool, bucket_jitter=float,
                       loss_sum=float, loss_batches=int, samples=int, time_s=float)
