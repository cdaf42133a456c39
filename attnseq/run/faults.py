"""Fault injection for crash tests: ``ATTNSEQ_KILL_AT=name[:n][:SIGNAL]`` sends the process SIGNAL
(KILL, INT, TERM or STOP; default KILL) the n-th time (default 1st) execution passes the named point.
Several targets are separated by commas: ``train-step:5:INT,save-weights-written:1:INT`` is a
Ctrl-C at step 5 and a second one inside the save it causes. STOP pauses the process there, so a
test can send it a signal at a known point and then SIGCONT. Unset, ``point`` is one dict lookup."""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP}


def _parse(spec: str) -> tuple[str, int, int]:
    """"name[:n][:SIGNAL]" -> (name, n, signal number)."""
    name, *rest = spec.strip().split(":")
    nth = int(rest[0]) if rest and rest[0] else 1
    sig = SIGNALS[rest[1].upper()] if len(rest) > 1 else signal.SIGKILL
    return name, nth, sig


def point(name: str) -> None:
    target = os.environ.get("ATTNSEQ_KILL_AT")
    if not target:
        return
    specs = [_parse(s) for s in target.split(",") if s.strip()]
    if not any(want == name for want, _, _ in specs):
        return
    _counts[name] = _counts.get(name, 0) + 1
    for want, nth, sig in specs:
        if want == name and _counts[name] == nth:
            os.kill(os.getpid(), sig)
