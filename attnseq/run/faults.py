"""Fault injection for crash tests: ``ATTNSEQ_KILL_AT=name[:n]`` SIGKILLs the process at the
n-th time (default 1st) execution passes the named point. Unset, ``point`` is one dict lookup."""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str) -> None:
    target = os.environ.get("ATTNSEQ_KILL_AT")
    if not target:
        return
    want, _, nth = target.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
