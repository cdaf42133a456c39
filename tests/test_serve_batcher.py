"""attnseq.serve's parts that need no server: the dynamic batcher (gathering, fairness, keys, the
bounded queue, cancelling, failures), the request checks and the Prometheus text."""
import inspect
import json
import re
import threading
import time

import pytest

from attnseq.errors import ConfigError
from attnseq.nn.output_length import OutputLengthRule
from attnseq.serve.batcher import Batcher, QueueFull, share_round_robin
from attnseq.run.inference import TranslatorBase
from attnseq.serve.limits import Limits, RequestError, parse_body, parse_request
from attnseq.serve.metrics import Counter, Histogram, Metrics
from attnseq.serve.options import OPTIONS


class Recorder:
    """A run_batch that records each call's key and texts and answers each text with its upper case;
    ``gate``: the first call waits for it (so the test can queue more meanwhile)."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls, self.gate, self.started = [], gate, threading.Event()

    def __call__(self, key, texts):
        self.calls.append((key, list(texts)))
        self.started.set()
        if self.gate is not None and len(self.calls) == 1:
            assert self.gate.wait(10)
        return [t.upper() for t in texts]


def results(job, timeout=10):
    return job.future.result(timeout)


def test_concurrent_jobs_share_one_call_each_gets_its_own_rows():
    run = Recorder()
    b = Batcher(run, max_batch=64, max_wait_s=0.3, max_queue=100)
    jobs = [b.submit("k", [f"s{i}a", f"s{i}b"]) for i in range(10)]
    for i, job in enumerate(jobs):
        assert results(job) == [f"S{i}A", f"S{i}B"]
    assert len(run.calls) == 1 and sorted(run.calls[0][1]) == sorted(t for j in jobs for t in j.texts)
    b.close(5)
    assert not b.thread.is_alive()


def test_a_full_batch_goes_without_waiting_for_max_wait():
    run = Recorder()
    b = Batcher(run, max_batch=4, max_wait_s=30.0, max_queue=100)
    start = time.monotonic()
    job = b.submit("k", ["a", "b", "c", "d"])
    assert results(job) == ["A", "B", "C", "D"] and time.monotonic() - start < 5
    b.close(5)


def test_a_long_request_holds_a_short_one_for_one_batch_at_most():
    gate = threading.Event()
    run = Recorder(gate)
    b = Batcher(run, max_batch=8, max_wait_s=0.0, max_queue=1000)
    long = b.submit("k", [f"long{i}" for i in range(40)])
    assert run.started.wait(10)                                  # the first batch (8 of long's) is running
    short = b.submit("k", ["short"])
    other = b.submit("beam", ["other"])                          # another search: its own call
    gate.set()
    assert results(short) == ["SHORT"] and results(other) == ["OTHER"]
    assert results(long) == [f"LONG{i}" for i in range(40)]
    batches = [texts for _, texts in run.calls]
    assert batches[0] == [f"long{i}" for i in range(8)]
    assert "short" in batches[1]                                 # the very next batch
    assert run.calls[2] == ("beam", ["other"])                   # right after, not after all of long
    assert all(len(t) <= 8 for t in batches) and sum(map(len, batches)) == 42
    b.close(5)


def test_round_robin_shares():
    class J:
        def __init__(self, left):
            self.left = left
    assert share_round_robin([J(10), J(1), J(3)], 6) == [3, 1, 2]
    assert share_round_robin([J(2), J(1)], 8) == [2, 1]
    assert share_round_robin([J(5)], 0) == [0]


def test_bounded_queue_answers_queue_full_with_a_retry_time():
    gate = threading.Event()
    run = Recorder(gate)
    b = Batcher(run, max_batch=2, max_wait_s=0.0, max_queue=3)
    first = b.submit("k", ["a"])
    assert run.started.wait(10)                                  # taken: no longer waiting
    second = b.submit("k", ["b", "c", "d"])
    with pytest.raises(QueueFull) as e:
        b.submit("k", ["e"])
    assert e.value.waiting == 3 and 1 <= e.value.retry_after <= 60
    assert b.depth() == (3, 1)
    gate.set()
    assert results(first) == ["A"] and results(second) == ["B", "C", "D"]
    assert b.depth() == (0, 0)
    assert results(b.submit("k", ["e"])) == ["E"]                # room again
    b.close(5)


def test_a_solo_job_runs_alone_whole_and_at_once():
    gate = threading.Event()
    run = Recorder(gate)
    b = Batcher(run, max_batch=2, max_wait_s=5.0, max_queue=20)
    b.submit("first", ["0"], solo=True)                          # holds the thread while the rest queue
    assert run.started.wait(10)
    plain = b.submit("k", ["a", "b"])
    solo = [b.submit("k", list("cde"), solo=True), b.submit("k", ["f"], solo=True)]   # the same key: still alone
    other = b.submit("j", ["g", "h"])
    start = time.monotonic()
    gate.set()
    assert [results(j) for j in (plain, *solo, other)] == [["A", "B"], ["C", "D", "E"], ["F"], ["G", "H"]]
    assert time.monotonic() - start < 4                          # no solo job waited max_wait_s for company
    assert [texts for _, texts in run.calls] == [["0"], ["a", "b"], ["c", "d", "e"], ["f"], ["g", "h"]]
    b.close(5)


def test_cancel_takes_a_job_out_of_the_queue():
    gate = threading.Event()
    run = Recorder(gate)
    b = Batcher(run, max_batch=1, max_wait_s=0.0, max_queue=10)
    b.submit("k", ["a"])
    assert run.started.wait(10)
    gone = b.submit("k", ["x", "y"])
    b.cancel(gone)
    assert gone.future.cancelled() and b.depth() == (0, 0)
    kept = b.submit("k", ["b"])
    gate.set()
    assert results(kept) == ["B"]
    assert all("x" not in texts for _, texts in run.calls)
    b.close(5)


def test_a_failing_call_fails_its_jobs_and_the_thread_goes_on():
    def run(key, texts):
        if "bad" in texts:
            raise RuntimeError("model broke")
        return texts
    b = Batcher(run, max_batch=8, max_wait_s=0.05, max_queue=10)
    bad = b.submit("k", ["bad", "x"])
    with pytest.raises(RuntimeError, match="model broke"):
        results(bad)
    assert results(b.submit("k", ["fine"])) == ["fine"]
    b.close(5)


def test_close_runs_what_is_queued_then_refuses():
    run = Recorder()
    b = Batcher(run, max_batch=8, max_wait_s=5.0, max_queue=10)
    job = b.submit("k", ["a"])
    b.close(10)                                                  # no 5 s wait: closing runs it now
    assert results(job, 0) == ["A"]
    from attnseq.serve.batcher import Closed
    with pytest.raises(Closed):
        b.submit("k", ["b"])


# -- the request checks ----------------------------------------------------------------------------
LIMITS = Limits(max_texts=3, max_input_len=20, max_beam=4)


def check(body: bytes, content_type="application/json"):
    return parse_request(parse_body(body, content_type), LIMITS, output_cap=50)


def test_a_good_request_with_every_field():
    req = check(b'{"texts": ["a", ""], "beam": 3, "n_best": 2, "attention": true, "max_output_len": "2*Ts+4"}')
    assert req.texts == ("a", "") and (req.beam, req.n_best, req.attention) == (3, 2, True)
    assert req.max_output_len == OutputLengthRule(2, 4)
    defaults = {k: v.default for k, v in inspect.signature(TranslatorBase.translate).parameters.items()}
    options = tuple((k, defaults[k]) for k in OPTIONS)           # translate's own defaults when not given
    assert req.key == (3, 2, True, OutputLengthRule(2, 4), options, False) and req.prefix is None
    assert check(b'{"texts": ["a"], "max_output_len": 7}').max_output_len == OutputLengthRule(0, 7)
    plain = check(b'{"texts": ["a"], "max_output_len": null}')
    assert (plain.beam, plain.n_best, plain.attention, plain.max_output_len) == (1, 1, False, None)


@pytest.mark.parametrize("body, status, code, message", [
    (b'{"texts": ["a"', 400, "invalid_json", "not JSON: Expecting"),
    (b'{"texts": [NaN]}', 400, "invalid_json", "NaN is not JSON"),
    (b'{"texts": ["a"], "texts": ["b"]}', 400, "invalid_json", "duplicate key 'texts'"),
    (b'{"texts": ["\xff"]}', 400, "invalid_utf8", "byte 0xff at offset 12"),
    (b'{"texts": ["\\ud800"]}', 400, "invalid_utf8", "texts[0] is not valid Unicode: lone surrogate U+D800"),
    (b'["a"]', 422, "wrong_type", "the body must be a JSON object, got an array"),
    (b'{"texts": "a"}', 422, "wrong_type", "texts must be an array of strings, got a string"),
    (b'{"texts": ["a", 3]}', 422, "wrong_type", "texts[1] must be a string, got an integer"),
    (b'{"texts": ["a"], "beam": "2"}', 422, "wrong_type", "beam must be an integer, got a string"),
    (b'{"texts": ["a"], "beam": true}', 422, "wrong_type", "beam must be an integer, got a boolean"),
    (b'{"texts": ["a"], "beam": 2.0}', 422, "wrong_type", "beam must be an integer, got a number"),
    (b'{"texts": ["a"], "attention": 1}', 422, "wrong_type", "attention must be a boolean, got an integer"),
    (b'{"texts": ["a"], "max_output_len": []}', 422, "wrong_type", "max_output_len must be an integer"),
    (b'{"texts": ["a"], "ckpt": "/tmp/x"}', 422, "unknown_field", "unknown field 'ckpt'"),
    (b'{"texts": ["a"], "model": "x"}', 422, "unknown_field", "unknown field 'model'"),
    (b'{"beam": 2}', 422, "missing_field", "texts is required"),
    (b'{"texts": []}', 422, "out_of_range", "texts is empty"),
    (b'{"texts": ["a", "b", "c", "d"]}', 422, "too_many_texts", "texts holds 4 strings; this server takes at most 3"),
    (b'{"texts": ["a"], "beam": 0}', 422, "out_of_range", "beam must be between 1 and 4 (--max-beam), got 0"),
    (b'{"texts": ["a"], "beam": 5}', 422, "out_of_range", "beam must be between 1 and 4 (--max-beam), got 5"),
    (b'{"texts": ["a"], "beam": 2, "n_best": 3}', 422, "out_of_range", "n_best must be between 1 and 2 (the beam)"),
    (b'{"texts": ["a"], "n_best": 0}', 422, "out_of_range", "n_best must be between 1 and 1"),
    (b'{"texts": ["a"], "max_output_len": 0}', 422, "out_of_range", "max_output_len: output length rule 0"),
    (b'{"texts": ["a"], "max_output_len": 51}', 422, "out_of_range", "allows 51 tokens for a 20-token input"),
    (b'{"texts": ["a"], "max_output_len": "3*Ts+1"}', 422, "out_of_range", "allows 61 tokens"),
    (b'{"texts": ["a"], "max_output_len": "lots"}', 422, "out_of_range", "expected N (tokens) or S*Ts+O"),
])
def test_each_bad_request_is_one_error_naming_it(body, status, code, message):
    with pytest.raises(RequestError) as e:
        check(body)
    assert (e.value.status, e.value.code) == (status, code) and message in e.value.message
    line = json.dumps(e.value.body())
    assert "\n" not in line and json.loads(line) == {"error": e.value.message, "code": code}


def test_only_json_bodies():
    for ct in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(RequestError) as e:
            parse_body(b'{"texts": ["a"]}', ct)
        assert e.value.status == 415 and "Content-Type must be application/json" in e.value.message
    assert parse_body(b'{"texts": ["a"]}', "Application/JSON; charset=utf-8") == {"texts": ["a"]}


@pytest.mark.parametrize("field, value, message", [
    ("max_batch", 0, "--max-batch must be positive, got 0"),
    ("max_wait_ms", -1, "--max-wait-ms must be 0 or more"),
    ("timeout_s", float("inf"), "--timeout must be positive"),
    ("max_texts", 2000, "--max-texts 2000 is more than --max-queue 1024"),
])
def test_limits_out_of_range_name_their_flag(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Limits(**{field: value}).check()
    assert Limits(max_wait_ms=0).check().max_wait_ms == 0


# -- Prometheus text -------------------------------------------------------------------------------
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_prometheus(text: str) -> dict:
    """The text format read strictly -> {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    families, current = {}, None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, rest = line.split(" ", 3)
            fam = families.setdefault(name, {"samples": []})
            assert kind.lower() not in fam, f"two {kind} lines for {name}"
            fam[kind.lower()] = rest
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m[1]
        base = re.sub(r"_(bucket|sum|count)$", "", name) if families[current]["type"] == "histogram" else name
        assert base == current, f"{name} outside its family {current}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        families[current]["samples"].append((name, labels, float(m[4])))
    for name, fam in families.items():
        assert fam["type"] in ("counter", "gauge", "histogram") and fam["help"], name
        if fam["type"] == "counter":
            assert name.endswith("_total")
        if fam["type"] == "histogram":
            buckets = [(s[1]["le"], s[2]) for s in fam["samples"] if s[0].endswith("_bucket")]
            counts = [v for _, v in buckets]
            assert buckets[-1][0] == "+Inf" and counts == sorted(counts)
            assert counts[-1] == next(v for n, _, v in fam["samples"] if n.endswith("_count"))
    return families


def test_metrics_text_is_prometheus_and_counts_right():
    m = Metrics(lambda: (5, 2), lambda: 3, {"engine": "attnseq", "model": 'we"ird\\name'}, ("timeout", "queue_full"))
    m.errors.inc("timeout")
    m.errors.inc("timeout")
    m.requests.inc("/v1/translate", "200")
    for n, s in ((1, 0.004), (3, 0.02), (64, 0.3)):
        m.on_batch(n, s)
    m.latency.observe(100.0)
    fams = parse_prometheus(m.render())
    errors = {s[1]["class"]: s[2] for s in fams["attnseq_errors_total"]["samples"]}
    assert errors == {"timeout": 2, "queue_full": 0}
    assert fams["attnseq_sentences_total"]["samples"] == [("attnseq_sentences_total", {}, 68.0)]
    batch = {s[1].get("le"): s[2] for s in fams["attnseq_batch_sentences"]["samples"] if "le" in s[1]}
    assert batch["1"] == 1 and batch["2"] == 1 and batch["4"] == 2 and batch["64"] == 3 and batch["+Inf"] == 3
    sums = {s[0]: s[2] for s in fams["attnseq_batch_sentences"]["samples"]}
    assert sums["attnseq_batch_sentences_sum"] == 68 and sums["attnseq_batch_sentences_count"] == 3
    lat = {s[1].get("le"): s[2] for s in fams["attnseq_request_duration_seconds"]["samples"] if "le" in s[1]}
    assert lat["30"] == 0 and lat["+Inf"] == 1                       # beyond the last bound: only +Inf
    assert fams["attnseq_queue_sentences"]["samples"][0][2] == 5
    assert fams["attnseq_queue_requests"]["samples"][0][2] == 2
    assert fams["attnseq_in_flight_requests"]["samples"][0][2] == 3
    info = fams["attnseq_model_info"]["samples"][0]
    assert info[1] == {"engine": "attnseq", "model": 'we\\"ird\\\\name'} and info[2] == 1


def test_counter_and_histogram_from_many_threads():
    c, h = Counter("x_total", "x", ("a",)), Histogram("y", "y", (1, 2))
    threads = [threading.Thread(target=lambda: [(c.inc("p"), h.observe(1.5)) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.get("p") == 4000 and h.count == 4000 and h.counts == [0, 4000, 0]
