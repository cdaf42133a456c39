"""Dynamic batching: the requests of many clients gathered into few model calls, on one worker thread.

A request's texts become a ``Job``; ``Batcher.submit`` queues it (or raises ``QueueFull`` when the
sentences waiting would pass ``max_queue``) and returns at once with a ``concurrent.futures.Future``,
which the event loop awaits (``asyncio.wrap_future``) while the worker thread runs the model.

The worker takes the job at the head of the queue and waits until ``max_wait_s`` after that job
arrived, or until ``max_batch`` sentences that can share its model call (the same search: ``Job.key``)
are waiting, whichever comes first. It then fills one batch of at most ``max_batch`` sentences from
those jobs, round robin (one sentence from each job in queue order, then again), calls
``run_batch(key, texts)`` once (the translator sorts them by length), and hands each job its own rows.
A job with sentences left over goes to the back of the queue, so a long request never keeps a short
one that arrived after it waiting for more than one batch; a job of another key waits for one batch at
most once it reaches the head. A ``solo`` job (seeded sampling: its draws depend on every row of its
model call) shares no call: once at the head it runs at once, whole, whatever ``max_batch`` says.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field


class QueueFull(Exception):
    """No room: ``waiting`` sentences queued, ``retry_after`` seconds until there likely is."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} sentences are waiting")
        self.waiting, self.retry_after = waiting, retry_after


class Closed(Exception):
    """The batcher is closing: it takes no new job."""


@dataclass(eq=False)
class Job:
    """One request's texts: ``taken`` of them are in a batch or done, ``done`` are done."""
    key: tuple
    texts: list
    solo: bool = False                      # run alone and whole, in one model call
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    results: list = field(init=False)
    taken: int = 0
    done: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.texts)

    @property
    def left(self) -> int:
        return len(self.texts) - self.taken


def share_round_robin(jobs: list[Job], room: int) -> list[int]:
    """How many sentences each job gives to a batch of ``room``: one each in turn while they have some."""
    give = [0] * len(jobs)
    while room > 0:
        before = room
        for k, job in enumerate(jobs):
            if room and give[k] < job.left:
                give[k] += 1
                room -= 1
        if room == before:
            break
    return give


class Batcher:
    """A bounded queue of jobs and the one thread that runs ``run_batch(key, texts) -> results``.

    ``on_batch(n_sentences, seconds)`` is told of every model call (the metrics). The thread starts
    with the first job; ``close()`` lets it finish what is queued, then stops it.
    """

    def __init__(self, run_batch, max_batch: int, max_wait_s: float, max_queue: int, on_batch=None):
        self.run_batch, self.on_batch = run_batch, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.pending: collections.deque[Job] = collections.deque()
        self.waiting = 0                            # sentences queued, not yet in a batch
        self.rate = 0.0                             # sentences per second of model time, lately
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closing = False

    # -- the event loop's side -----------------------------------------------------------------
    def submit(self, key: tuple, texts: list, solo: bool = False) -> Job:
        """Queue ``texts`` (to be run with the search ``key``; ``solo``: in a model call of their own) -> their
        Job; QueueFull, or Closed."""
        job = Job(key, list(texts), solo)
        with self.cond:
            if self.closing:
                raise Closed("the server is shutting down")
            if self.waiting + len(texts) > self.max_queue:
                raise QueueFull(self.waiting, self.retry_after())
            self.pending.append(job)
            self.waiting += len(texts)
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name="attnseq-batcher", daemon=True)
                self.thread.start()
            self.cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop what of ``job`` no batch has taken yet (its client gave up); its future is cancelled."""
        job.future.cancel()
        self._drop(job)

    def _drop(self, job: Job) -> None:
        with self.cond:
            if job in self.pending:
                self.pending.remove(job)
                self.waiting -= job.left
                job.taken = len(job.texts)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, from the recent rate: 1 to 60."""
        return int(min(60, max(1, math.ceil(self.waiting / self.rate)))) if self.rate > 0 else 1

    def depth(self) -> tuple[int, int]:
        """(sentences, requests) waiting."""
        with self.cond:
            return self.waiting, len(self.pending)

    def close(self, timeout: float | None = None) -> None:
        """Take no new job, run the queued ones, stop the thread (waiting up to ``timeout`` seconds)."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    # -- the worker thread ---------------------------------------------------------------------
    def _next_batch(self) -> list[tuple[Job, int, int]] | None:
        """Wait for a batch -> [(job, start, stop)] of texts to run together; None once closed and empty."""
        with self.cond:
            while True:
                if not self.pending:
                    if self.closing:
                        return None
                    self.cond.wait()
                    continue
                head = self.pending[0]
                same = [head] if head.solo else [j for j in self.pending if j.key == head.key and not j.solo]
                ready = sum(j.left for j in same)
                wait = head.arrived + self.max_wait_s - time.monotonic()
                if head.solo or ready >= self.max_batch or wait <= 0 or self.closing:
                    break
                self.cond.wait(wait)
            batch = []
            for job, n in zip(same, share_round_robin(same, head.left if head.solo else self.max_batch)):
                if n:
                    batch.append((job, job.taken, job.taken + n))
                    job.taken += n
                    self.waiting -= n
            for job in same:                        # served: out of the queue, or to its back
                self.pending.remove(job)
                if job.left:
                    self.pending.append(job)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            key = batch[0][0].key
            texts = [t for job, a, b in batch for t in job.texts[a:b]]
            start = time.monotonic()
            try:
                results = self.run_batch(key, texts)
            except Exception as e:                  # every job in the batch fails, rest and all; the thread goes on
                for job, _, _ in batch:
                    self._drop(job)
                    self._settle(job, error=e)
                continue
            seconds = time.monotonic() - start
            self.rate = len(texts) / max(seconds, 1e-6) if self.rate == 0 else \
                0.8 * self.rate + 0.2 * len(texts) / max(seconds, 1e-6)
            if self.on_batch is not None:
                self.on_batch(len(texts), seconds)
            k = 0
            for job, a, b in batch:
                job.results[a:b] = results[k:k + b - a]
                k += b - a
                job.done += b - a
                if job.done == len(job.texts):
                    self._settle(job)

    @staticmethod
    def _settle(job: Job, error: BaseException | None = None) -> None:
        try:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(job.results)
        except InvalidStateError:                   # cancelled meanwhile (timed out), or failed already
            pass
