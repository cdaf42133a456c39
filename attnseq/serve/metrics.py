"""The server's metrics in Prometheus' text format (version 0.0.4), written here without a client library.

Three kinds, as Prometheus names them: a ``Counter`` (only goes up; per label set), a ``Gauge`` (read
when scraped, from a function) and a ``Histogram`` (cumulative ``_bucket{le=...}`` counts, ``_sum``,
``_count``). ``Metrics`` holds the server's own and renders them all. Counters and histograms are
updated from the event loop and the batcher's thread, so each takes a lock.
"""
from __future__ import annotations

import math
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


class Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help.replace(chr(92), chr(92) * 2)}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    kind = "counter"

    def __init__(self, name, help_text, labels=(), initial: tuple = ()):
        super().__init__(name, help_text, labels)
        self.values = {tuple(v): 0.0 for v in initial}            # label sets shown at 0 before they happen

    def inc(self, *labels, by: float = 1.0) -> None:
        with self.lock:
            self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels) -> float:
        with self.lock:
            return self.values.get(labels, 0.0)

    def lines(self) -> list[str]:
        with self.lock:
            items = sorted(self.values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Metric):
    kind = "gauge"

    def __init__(self, name, help_text, read, labels=()):
        super().__init__(name, help_text, labels)
        self.read = read                                            # () -> value, or {label values: value}

    def lines(self) -> list[str]:
        got = self.read()
        items = sorted(got.items()) if isinstance(got, dict) else [((), got)]
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name, help_text, buckets):
        super().__init__(name, help_text)
        self.bounds = tuple(float(b) for b in buckets) + (math.inf,)
        self.counts = [0] * len(self.bounds)                        # per bucket, not yet cumulative
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        k = next(i for i, b in enumerate(self.bounds) if value <= b)
        with self.lock:
            self.counts[k] += 1
            self.sum += value
            self.count += 1

    def lines(self) -> list[str]:
        with self.lock:
            counts, total, n = list(self.counts), self.sum, self.count
        out, running = [], 0
        for bound, c in zip(self.bounds, counts):
            running += c
            out.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        return out + [f"{self.name}_sum {_number(total)}", f"{self.name}_count {n}"]


class Metrics:
    """The server's metrics. ``queue`` () -> (sentences, requests) waiting; ``in_flight`` () -> requests
    being answered; ``info``: the model's labels (engine, model) for ``attnseq_model_info``;
    ``error_classes``: shown at 0 until they happen."""

    def __init__(self, queue, in_flight, info: dict, error_classes=()):
        self.requests = Counter("attnseq_http_requests_total", "HTTP requests answered, by path and status code",
                                ("path", "status"))
        self.errors = Counter("attnseq_errors_total", "requests refused or failed, by error class", ("class",),
                              [(c,) for c in error_classes])
        self.sentences = Counter("attnseq_sentences_total", "sentences translated")
        self.batch_size = Histogram("attnseq_batch_sentences", "sentences per model call (one length-sorted "
                                    "decode of the gathered requests)", BATCH_BUCKETS)
        self.batch_seconds = Histogram("attnseq_batch_duration_seconds", "seconds per model call",
                                       LATENCY_BUCKETS)
        self.latency = Histogram("attnseq_request_duration_seconds", "seconds from a translate request's "
                                 "arrival to its answer, any status", LATENCY_BUCKETS)
        self.all = [
            self.requests, self.errors, self.sentences, self.batch_size, self.batch_seconds, self.latency,
            Gauge("attnseq_queue_sentences", "sentences waiting for the model", lambda: queue()[0]),
            Gauge("attnseq_queue_requests", "translate requests with sentences waiting", lambda: queue()[1]),
            Gauge("attnseq_in_flight_requests", "HTTP requests being answered", in_flight),
            Gauge("attnseq_model_info", "the model served (always 1)", lambda: {tuple(info.values()): 1},
                  tuple(info)),
        ]

    def on_batch(self, n: int, seconds: float) -> None:
        """The batcher's report of one model call."""
        self.sentences.inc(by=n)
        self.batch_size.observe(n)
        self.batch_seconds.observe(seconds)

    def render(self) -> str:
        return "".join(line + "\n" for m in self.all for line in m.header() + m.lines())
