"""Why a run stops before its last epoch, besides --patience (``attnseq.run.selection``).

``StopSignals``: SIGINT or SIGTERM while training sets a flag, so the loop finishes the current step,
saves ``last/`` and raises ``TrainingStopped``; a second signal raises KeyboardInterrupt at once.
(``--max-minutes``, the time budget that ends a run at its last step, is ``attnseq.run.budget``.)
"""
from __future__ import annotations

import signal
import threading


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
