"""``--max-minutes``: the run's time budget, and the step it ends at.

The run trains until its budget is spent: before every step, ``TimeBudget.last_step`` estimates the
last step that fits, from the speed so far, and the Trainer gives it to the lr schedule as the run's
``total_steps``, so cosine and linear decay end at the budget's end, and stops after it, cutting its
last epoch short there (then validated and saved like any epoch's end). The estimate is corrected at
every step: the time left over the mean seconds per step, less the evaluations still to come (one
at each epoch end the remaining steps cross, and one at the last), at the mean seconds per
evaluation so far. What follows the last step, testing best/ (and averaged/), is outside the budget.

The budget counts the run's whole time, across resumes: a checkpoint's state.json holds the seconds
used by the time it was saved (``snapshot``), and ``--resume`` continues from there, so a resumed
run, given the same timings, plans and ends as an uninterrupted one and takes the same lr at every
step. The time between that checkpoint and an interruption is lost with its work, and not counted. A
larger --max-minutes on ``--resume`` extends the budget; a checkpoint saved without one (an older
run's) starts counting at the resume.

The clock is an argument (``time.perf_counter`` in use; tests pass their own).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class BudgetState:
    """What state.json keeps of the budget ("budget"): the seconds used when the checkpoint was saved,
    and of those, setting up (every process's loading and building) and validating at epoch ends; the
    evaluations and the training steps they cover."""
    used_s: float = 0.0
    setup_s: float = 0.0
    eval_s: float = 0.0
    evals: int = 0
    steps: int = 0

    @classmethod
    def from_json(cls, value) -> "BudgetState":
        """state.json's "budget", checked: ValueError or TypeError when malformed."""
        if not isinstance(value, dict) or set(value) != set(cls.__dataclass_fields__):
            raise ValueError(f"expected an object with {', '.join(cls.__dataclass_fields__)}, got {value!r}")
        out = cls(**{k: (int if k in ("evals", "steps") else float)(value[k]) for k in cls.__dataclass_fields__})
        if min(asdict(out).values()) < 0 or not all(map(math.isfinite, asdict(out).values())):
            raise ValueError(f"budget values must be finite and >= 0, got {value!r}")
        return out


class TimeBudget:
    """``minutes`` None: no budget (``last_step`` gives the cap it is told, ``ended`` is never true)."""

    def __init__(self, minutes: float | None, clock: Callable[[], float]):
        self.limit_s = None if minutes is None else 60.0 * minutes
        self.clock = clock
        self.start = clock()                            # this process's share starts here
        self.saved = BudgetState()                      # the checkpoint's, when resuming
        self.eval_start: float | None = None

    @property
    def active(self) -> bool:
        return self.limit_s is not None

    def resume(self, saved: BudgetState) -> None:
        """Continue from a checkpoint's state: its seconds count as used."""
        self.saved = saved

    def used(self) -> float:
        """Seconds of the budget used so far."""
        return self.saved.used_s + self.clock() - self.start

    def setup_done(self) -> None:
        """Setting up is over (data loaded, model built; after ``resume``): its time is counted as used,
        but left out of the seconds per step."""
        self.saved.setup_s += self.clock() - self.start

    def step_done(self) -> None:
        self.saved.steps += 1

    def eval_started(self) -> None:
        self.eval_start = self.clock()

    def eval_done(self) -> None:
        """An epoch end's validation is over: its seconds make the mean an evaluation is planned at."""
        self.saved.eval_s += self.clock() - self.eval_start
        self.saved.evals += 1

    def snapshot(self) -> BudgetState:
        """What state.json keeps now ("budget"): the seconds used up to this moment."""
        s = self.saved
        return BudgetState(self.used(), s.setup_s, s.eval_s, s.evals, s.steps)

    # -- the plan ---------------------------------------------------------------------------------
    def last_step(self, step: int, done: int, batches: int, cap: int) -> int:
        """The run's last step, as the time left allows, for the step about to be taken, ``step`` + 1.

        ``done``: batches of the current epoch already trained, ``batches`` per epoch, ``cap`` the last
        step --epochs allows. Without a budget, or before a step has been timed: ``cap``. Never below
        ``step`` + 1 (so when the time is up, the coming step is the last) nor above ``cap``.
        """
        s = self.saved
        if not self.active or s.steps == 0:
            return cap
        left = self.limit_s - self.used()
        per_step = max((self.used() - s.setup_s - s.eval_s) / s.steps, 1e-9)
        per_eval = s.eval_s / s.evals if s.evals else 0.0
        r = max(int(left / per_step), 0)                            # steps that fit, before evaluations
        for _ in range(100):                                        # fewer steps, fewer evaluations: a fixed point
            evals = math.ceil((done + r) / batches) if r else 0     # epoch ends crossed, the last one included
            fit = max(int((left - evals * per_eval) / per_step), 0)
            if fit >= r:
                break
            r = fit
        return min(max(step + r, step + 1), cap)

    def ended(self, step: int, last: int, cap: int) -> bool:
        """Whether ``step`` is the budget's last (``last`` from ``last_step``), short of ``cap``."""
        return self.active and step >= last and last < cap

    def note(self, last: int, batches: int) -> str:
        """One log line: the budget used, and where the run ends."""
        epoch, batch = divmod(last - 1, batches)
        return (f"--max-minutes {self.limit_s / 60:g}: {self.used() / 60:.1f} min used; the run ends at step "
                f"{last} (epoch {epoch + 1}, batch {batch + 1} of {batches}), as now estimated")

    def resumed_note(self, saved: bool) -> str:
        """The line a resume logs: what the checkpoint had used, or that the budget counts from now."""
        if not saved:
            return (f"--max-minutes {self.limit_s / 60:g}: the checkpoint holds no time used (saved without "
                    "a budget); it counts from this resume")
        return (f"--max-minutes {self.limit_s / 60:g}: {self.saved.used_s / 60:.1f} min used by the checkpoint "
                f"count against it; {max(self.limit_s - self.saved.used_s, 0) / 60:.1f} min left")
