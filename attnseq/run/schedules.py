"""Learning-rate schedules: what ``opt.lr`` is at each training step (``--lr-schedule``).

A schedule sets the optimizer's ``lr`` before each update (``before_step``) from the run's base
``--lr`` and the update's number ``step`` (1 for the run's first batch, counted as the Trainer's
``step``), and may change it at an epoch's end (``epoch_end``, told whether the epoch beat best/).

- ``constant``: leaves ``opt.lr`` alone between epochs and multiplies it by ``--lr-decay`` after each
  (what attnseq always did; the lr lives in optimizer.npz);
- ``warmup-rsqrt``: lr · min(step / W, sqrt(W / step)), W = ``--warmup`` (a linear rise to lr at step
  W, then inverse square root decay);
- ``cosine``: a linear rise over the first W steps (if ``--warmup`` W > 0), then
  lr · (1 + cos(pi · p)) / 2, p = (step - 1 - W) / (T - 1 - W), from lr at step W + 1 down to 0 at
  step T, the run's last step (``--epochs`` × batches per epoch, or with ``--max-minutes`` the
  budget's last step, estimated anew before every step: ``attnseq.run.budget``);
- ``linear``: the same warm-up, then lr · (1 - p), a straight line from lr down to 0 at step T;
- ``plateau``: lr · scale (after a warm-up as cosine's), the scale multiplied by
  ``--plateau-factor`` after ``--plateau-patience`` epochs in a row that do not beat best/ (by
  ``--select-by``).

Every per-step value is a function of ``step``, the run's last step and the state ``state_dict``
returns (plateau's scale and count), which state.json holds: a resumed run, from an epoch's end or
from inside one, sets the same lr at every step as an uninterrupted one. (A cosine schedule saved
before it reached 0 at step T, whose state.json says no "ends", keeps its old p = (step - 1 - W) / (T - W).)
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "plateau", "warmup-rsqrt", "cosine", "linear")


class Schedule:
    """Base: a per-step lr, ``lr_at(step)`` for step = 1, 2, ...; nothing to do at an epoch's end."""
    name = ""
    per_step = True

    def __init__(self, lr: float, warmup: int = 0):
        self.lr, self.warmup = float(lr), int(warmup)
        self.total_steps = 0            # the run's last step: set by the Trainer (--epochs, --max-minutes)

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def warm(self, step: int) -> float:
        """The linear warm-up factor of update ``step``: step / W for the first W steps, then 1."""
        return min(1.0, step / self.warmup) if self.warmup > 0 else 1.0

    def before_step(self, opt, step: int) -> None:
        """Set ``opt.lr`` for update number ``step`` (1-based)."""
        if self.per_step:
            opt.lr = self.lr_at(step)

    def epoch_end(self, opt, improved: bool) -> str | None:
        """After an epoch's validation; ``improved``: it beat best/. -> a line for the log, or None."""
        return None

    def state_dict(self) -> dict:
        """What state.json keeps (JSON values), with the schedule's name."""
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        pass


class Constant(Schedule):
    """``opt.lr`` untouched within an epoch, times ``decay`` (``--lr-decay``) after each one."""
    name, per_step = "constant", False

    def __init__(self, lr: float, warmup: int = 0, decay: float = 1.0):
        super().__init__(lr, warmup)
        self.decay = float(decay)

    def lr_at(self, step: int) -> float:
        return self.lr

    def epoch_end(self, opt, improved: bool) -> str | None:
        opt.lr *= self.decay
        return None


class WarmupRsqrt(Schedule):
    """lr · min(step / W, sqrt(W / step)) (the Transformer's schedule, peak ``lr`` at step W)."""
    name = "warmup-rsqrt"

    def lr_at(self, step: int) -> float:
        return self.lr * min(step / self.warmup, math.sqrt(self.warmup / step))


class Annealing(Schedule):
    """Warm-up over W steps, then from lr down to 0 at step ``total_steps``, the run's last, along
    ``shape``(p) for p = (step - 1 - W) / (T - 1 - W) going from 0 to 1."""
    ENDS = "last_step"                  # state.json's "ends": p reaches 1 at step T itself

    def __init__(self, lr: float, warmup: int = 0):
        super().__init__(lr, warmup)
        self.legacy = False             # a state.json of before "ends": p = (step - 1 - W) / (T - W)

    def shape(self, p: float) -> float:
        raise NotImplementedError

    def lr_at(self, step: int) -> float:
        if step <= self.warmup:
            return self.lr * self.warm(step)
        span = max(self.total_steps - self.warmup - (0 if self.legacy else 1), 1)
        return self.lr * self.shape(min((step - 1 - self.warmup) / span, 1.0))

    def state_dict(self) -> dict:
        return {"name": self.name} if self.legacy else {"name": self.name, "ends": self.ENDS}

    def load_state_dict(self, state: dict) -> None:
        self.legacy = state.get("ends") != self.ENDS


class Cosine(Annealing):
    """Warm-up over W steps, then half a cosine from lr down to 0 at step ``total_steps``."""
    name = "cosine"

    def shape(self, p: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * p))


class Linear(Annealing):
    """Warm-up over W steps, then a straight line from lr down to 0 at step ``total_steps``."""
    name = "linear"

    def shape(self, p: float) -> float:
        return 1.0 - p


class Plateau(Schedule):
    """lr · scale after warm-up; ``scale`` *= factor once ``patience`` epochs in a row miss best/."""
    name = "plateau"

    def __init__(self, lr: float, warmup: int = 0, factor: float = 0.5, patience: int = 1):
        super().__init__(lr, warmup)
        self.factor, self.patience = float(factor), int(patience)
        self.scale, self.bad_epochs = 1.0, 0

    def lr_at(self, step: int) -> float:
        return self.lr * self.scale * self.warm(step)

    def epoch_end(self, opt, improved: bool) -> str | None:
        if improved:
            self.bad_epochs = 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return None
        self.scale *= self.factor
        self.bad_epochs = 0
        return (f"lr schedule: {self.patience} epoch(s) without a better best/; lr now {self.lr * self.scale:g} "
                f"(--lr × {self.scale:g})")

    def state_dict(self) -> dict:
        return {"name": self.name, "scale": self.scale, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.bad_epochs = float(state["scale"]), int(state["bad_epochs"])


def build_schedule(cfg: dict) -> Schedule:
    """The schedule a resolved config names (keys ``lr_schedule``, ``lr``, ``warmup``, ``lr_decay``,
    ``plateau_factor``, ``plateau_patience``)."""
    name, lr, warmup = cfg["lr_schedule"], cfg["lr"], cfg["warmup"]
    if name == "constant":
        return Constant(lr, warmup, cfg["lr_decay"])
    if name == "plateau":
        return Plateau(lr, warmup, cfg["plateau_factor"], cfg["plateau_patience"])
    if name == "cosine":
        return Cosine(lr, warmup)
    if name == "linear":
        return Linear(lr, warmup)
    if name == "warmup-rsqrt":
        return WarmupRsqrt(lr, warmup)
    raise ValueError(f"unknown lr schedule {name!r}; one of {', '.join(SCHEDULES)}")


def check_state(state: dict) -> dict:
    """state.json's "schedule", checked (ValueError/TypeError otherwise): a dict with a known name."""
    if not isinstance(state, dict):
        raise TypeError(f"expected an object, got {state!r}")
    if state and state.get("name") not in SCHEDULES:
        raise ValueError(f"unknown schedule {state.get('name')!r}")
    if state.get("name") == "plateau":
        if not isinstance(state.get("scale"), (int, float)) or not isinstance(state.get("bad_epochs"), int):
            raise ValueError(f"plateau needs a numeric scale and an integer bad_epochs, got {state!r}")
    return dict(state)
