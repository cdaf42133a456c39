"""Why a run stops before its last epoch, besides --patience (``attnseq.run.selection``).

``StopSignals``: SIGINT or SIGTERM while training sets a flag, so the loop finishes the current step,
saves ``last/`` and raises ``TrainingStopped``; a second signal raises KeyboardInterrupt at once.
``TimeLimit``: ``--max-minutes``, which stops before an epoch that would end too late.
"""
from __future__ import annotations

import signal
import threading
import time


class StopSignals:
    """While entered (in the main thread only): SIGINT and SIGTERM set ``signum`` and nothing else,
    so the training loop can stop between steps; a second signal raises KeyboardInterrupt at once.
    On exit the previous handlers come back."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


class TimeLimit:
    """``--max-minutes``: stop before an epoch that would end past ``minutes`` after ``start`` (a
    ``time.perf_counter()`` value), by the mean wall time of the epochs this process ran (``walls``,
    evaluation and saving included); never before one has. The clock starts when the Trainer is
    built, so a resumed run gets the whole budget again. ``minutes`` None: no limit."""

    def __init__(self, minutes: float | None, start: float):
        self.minutes, self.start = minutes, start
        self.walls: list[float] = []                # seconds per epoch run here

    def too_late(self, epoch: int) -> str | None:
        """The log line saying why epoch ``epoch`` is not started, or None when it may run."""
        if self.minutes is None or not self.walls:
            return None
        per_epoch = sum(self.walls) / len(self.walls)
        elapsed = time.perf_counter() - self.start
        if elapsed + per_epoch <= 60.0 * self.minutes:
            return None
        return (f"stopping before epoch {epoch}: it would end past --max-minutes {self.minutes:g} "
                f"({elapsed / 60:.1f} min so far, about {per_epoch / 60:.1f} min an epoch)")
