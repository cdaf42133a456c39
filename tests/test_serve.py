"""attnseq serve's app through httpx's ASGI transport: every field of the API, every bad input with its
status and message (and a correct answer after each), dynamic batching (fewer model calls than requests,
each output what ``translate`` gives), the bounded queue, the timeout, OpenAPI, metrics and the page."""
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'attnseq[serve]'")
httpx = pytest.importorskip("httpx", reason="needs httpx (pip install 'attnseq[test]')")

from attnseq.data.io import read_pairs                                    # noqa: E402
from attnseq.run.inference import Translator                             # noqa: E402
from attnseq.serve import Limits, create_app                             # noqa: E402
from attnseq.serve.limits import ERROR_CLASSES                           # noqa: E402
from test_serve_batcher import parse_prometheus                          # noqa: E402

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def texts(tiny_data):
    return [s for s, _ in read_pairs(tiny_data / "test.tsv")[:64]]


@pytest.fixture(scope="module")
def reference(tiny_run):
    """What ``translate`` gives for each text alone (greedy, details)."""
    tr = Translator(str(tiny_run))
    return lambda text, **kw: tr.translate([text], details=True, **kw)[0]


def make_app(run, counted=None, slow=None, **limits):
    tr = Translator(str(run))
    if counted is not None or slow is not None:
        plain = tr.translate

        def translate(texts, **kw):
            if counted is not None:
                counted.append(list(texts))
            if slow is not None:
                slow(texts)
            return plain(texts, **kw)
        tr.translate = translate
    return create_app(tr, Limits(**limits), name="tiny")


def call(app, *requests):
    """The requests ({method, url, ...} for httpx) sent at once -> their responses, in order."""
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            return await asyncio.gather(*(c.request(**r) for r in requests))
    return asyncio.run(go())


def post(body, **kw):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return dict(method="POST", url="/v1/translate", content=content, headers={**JSON, **kw.pop("headers", {})}, **kw)


@pytest.fixture(scope="module")
def app(tiny_run):
    a = make_app(tiny_run, max_texts=8, max_input_len=40, max_beam=5, max_body_bytes=4000)
    yield a
    a.state.service.close(10)


@pytest.fixture(scope="module")
def doc(app):
    return call(app, dict(method="GET", url="/openapi.json"))[0].json()


def conforms(doc, name, value):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(value, {"$ref": f"#/components/schemas/{name}", "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


# -- every field -------------------------------------------------------------------------------------
def test_greedy_by_default(app, doc, texts, reference):
    r, = call(app, post({"texts": texts[:5] + [""]}))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    conforms(doc, "TranslateResponse", r.json())
    got = r.json()["translations"]
    assert [t["text"] for t in got] == [reference(t).text for t in texts[:5]] + [""]
    for t in got:
        assert t["score"] is None and t["nbest"] == [{"text": t["text"], "score": None}] and "src_tokens" not in t


def test_beam_and_n_best(app, doc, texts, tiny_run):
    r, = call(app, post({"texts": texts[:4], "beam": 3, "n_best": 3}))
    conforms(doc, "TranslateResponse", r.json())
    want = Translator(str(tiny_run)).translate(texts[:4], beam=3, n_best=3)
    for t, w in zip(r.json()["translations"], want):
        assert [h["text"] for h in t["nbest"]] == [text for text, _ in w.nbest] and t["text"] == w.text
        assert [h["score"] for h in t["nbest"]] == pytest.approx([s for _, s in w.nbest], abs=1e-6)
        assert t["score"] == t["nbest"][0]["score"]
        assert [h["score"] for h in t["nbest"]] == sorted((h["score"] for h in t["nbest"]), reverse=True)


def test_attention_tokens_and_probabilities(app, doc, texts, reference):
    r, = call(app, post({"texts": texts[:3], "attention": True}))
    conforms(doc, "TranslateResponse", r.json())
    for text, t in zip(texts, r.json()["translations"]):
        want = reference(text)
        h, = t["nbest"]
        assert t["src_tokens"] == want.src_tokens and h["tokens"] == want.out_tokens
        w = np.array(h["attention"])
        assert w.shape == (len(h["tokens"]), len(t["src_tokens"]))
        np.testing.assert_allclose(w, want.weights, atol=5.1e-5)
        np.testing.assert_allclose(h["probs"], want.probs, atol=2e-6)   # 6 decimals; float32 in another batch
        assert h["logprob"] == pytest.approx(np.log(want.probs).sum(), abs=1e-5)
    beam, = call(app, post({"texts": texts[:1], "attention": True, "beam": 2, "n_best": 2}))
    for h in beam.json()["translations"][0]["nbest"]:                 # every hypothesis has its own
        assert np.array(h["attention"]).shape == (len(h["tokens"]), len(beam.json()["translations"][0]["src_tokens"]))


def test_max_output_len(app, texts, reference):
    r, = call(app, post({"texts": texts[:3], "max_output_len": 3, "attention": True}))
    for text, t in zip(texts, r.json()["translations"]):
        assert len(t["nbest"][0]["tokens"]) <= 3
        assert t["text"] == reference(text, max_len=3).text
    rule, = call(app, post({"texts": texts[:2], "max_output_len": "0*Ts+4"}))
    assert [t["text"] for t in rule.json()["translations"]] == [reference(x, max_len=4).text for x in texts[:2]]


# -- every bad input --------------------------------------------------------------------------------
async def _chunks():
    for _ in range(5):
        yield b"x" * 1000


BAD = [
    (post({"texts": ["a" * 4100]}), 413, "body_too_large", "the body is over 4000 bytes (--max-body-bytes)"),
    (dict(method="POST", url="/v1/translate", content=_chunks, headers=JSON), 413, "body_too_large", "over 4000"),
    (post({"texts": ["a"]}, headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type",
     "Content-Type must be application/json"),
    (post(b'{"texts": ['), 400, "invalid_json", "the body is not JSON"),
    (post(b'{"texts": ["\xc3\x28"]}'), 400, "invalid_utf8", "the body is not UTF-8"),
    (post(b'{"texts": ["\\udc80"]}'), 400, "invalid_utf8", "lone surrogate U+DC80"),
    (post({"texts": "9/25/84"}), 422, "wrong_type", "texts must be an array of strings, got a string"),
    (post({"texts": [None]}), 422, "wrong_type", "texts[0] must be a string, got null"),
    (post({"texts": ["a"], "beam": "3"}), 422, "wrong_type", "beam must be an integer"),
    (post({"texts": ["a"], "attention": "yes"}), 422, "wrong_type", "attention must be a boolean"),
    (post({"texts": ["a"], "ckpt": "/etc/passwd"}), 422, "unknown_field", "unknown field 'ckpt'"),
    (post({"texts": ["a"], "model": "../runs/x"}), 422, "unknown_field", "unknown field 'model'"),
    (post({"text": "a"}), 422, "unknown_field", "unknown field 'text'"),
    (post({}), 422, "missing_field", "texts is required"),
    (post({"texts": ["a"] * 9}), 422, "too_many_texts", "texts holds 9 strings; this server takes at most 8 "
                                                         "per request (--max-texts)"),
    (post({"texts": ["ok", "x" * 41]}), 422, "input_too_long", "texts[1] has 41 tokens; this server takes at most "
                                                                "40 (--max-input-len)"),
    (post({"texts": ["a"], "beam": 6}), 422, "out_of_range", "beam must be between 1 and 5 (--max-beam), got 6"),
    (post({"texts": ["a"], "beam": 0}), 422, "out_of_range", "beam must be between 1 and 5"),
    (post({"texts": ["a"], "beam": 2, "n_best": 3}), 422, "out_of_range", "n_best must be between 1 and 2"),
    (post({"texts": ["a"], "max_output_len": 10 ** 6}), 422, "out_of_range", "max_output_len 1000000 allows"),
    (dict(method="GET", url="/v1/translate"), 405, "method_not_allowed", "GET is not allowed on /v1/translate"),
    (dict(method="GET", url="/runs/tiny/best/weights.npz"), 404, "not_found", "no such path"),
    (dict(method="GET", url="/static/../../etc/passwd"), 404, "not_found", "no such path"),
]


@pytest.mark.parametrize("request_, status, code, message", BAD, ids=[f"{b[2]}-{k}" for k, b in enumerate(BAD)])
def test_bad_input_is_one_line_of_json_and_the_server_goes_on(app, texts, reference, request_, status, code,
                                                              message):
    before = app.state.service.metrics.errors.get(code)
    if callable(request_.get("content")):
        request_ = {**request_, "content": request_["content"]()}
    bad, good = call(app, request_, post({"texts": texts[:2]}))
    assert bad.status_code == status
    assert "\n" not in bad.text.strip() and bad.json() == {"error": bad.json()["error"], "code": code}
    assert message in bad.json()["error"]
    assert ERROR_CLASSES[code] == status
    assert app.state.service.metrics.errors.get(code) == before + 1
    assert good.status_code == 200
    assert [t["text"] for t in good.json()["translations"]] == [reference(t).text for t in texts[:2]]


def test_a_failing_model_is_a_500_line_and_the_next_request_works(tiny_run, texts, reference):
    def boom(batch):
        if "boom" in batch:
            raise RuntimeError("the model broke")
    app = make_app(tiny_run, slow=boom, max_wait_ms=0)
    bad, = call(app, post({"texts": ["boom"]}))
    assert bad.status_code == 500 and bad.json() == {"error": "internal error (RuntimeError); the server's log "
                                                              "has the details", "code": "internal"}
    good, = call(app, post({"texts": texts[:1]}))
    assert good.json()["translations"][0]["text"] == reference(texts[0]).text
    app.state.service.close(10)


# -- dynamic batching --------------------------------------------------------------------------------
def test_64_concurrent_requests_share_few_model_calls(tiny_run, texts, reference):
    calls = []
    app = make_app(tiny_run, counted=calls, max_wait_ms=200, max_batch=64)
    found = call(app, *(post({"texts": [t]}) for t in texts[:64]))
    assert all(r.status_code == 200 for r in found)
    assert 1 <= len(calls) < 64, f"{len(calls)} model calls for 64 requests"
    assert sorted(t for batch in calls for t in batch) == sorted(texts[:64])    # each sentence once
    for text, r in zip(texts, found):
        assert r.json()["translations"][0]["text"] == reference(text).text
    fams = parse_prometheus(call(app, dict(method="GET", url="/metrics"))[0].text)
    count = next(v for n, _, v in fams["attnseq_batch_sentences"]["samples"] if n.endswith("_count"))
    assert count == len(calls)                                                 # the metrics count the same calls
    app.state.service.close(10)


def test_different_searches_in_flight_together_each_get_their_own(tiny_run, texts, reference):
    calls = []
    app = make_app(tiny_run, counted=calls, max_wait_ms=1000)     # long enough for all four to arrive under load
    reqs = [post({"texts": texts[:3]}), post({"texts": texts[3:5], "beam": 3, "n_best": 2}),
            post({"texts": texts[5:6], "attention": True}), post({"texts": texts[6:9]})]
    greedy1, beam, att, greedy2 = call(app, *reqs)
    assert [t["text"] for t in greedy1.json()["translations"] + greedy2.json()["translations"]] == \
        [reference(t).text for t in texts[:3] + texts[6:9]]
    assert [t["text"] for t in beam.json()["translations"]] == [reference(t, beam=3, n_best=2).text for t in texts[3:5]]
    assert att.json()["translations"][0]["nbest"][0]["tokens"] == reference(texts[5]).out_tokens
    assert len(calls) == 3                                  # both greedy requests in one call; the others apart


def test_the_queue_is_bounded_503_with_retry_after(tiny_run, texts, reference):
    import threading
    gate, started = threading.Event(), threading.Event()

    def hold(batch):
        started.set()
        assert gate.wait(20)

    app = make_app(tiny_run, slow=hold, max_wait_ms=0, max_batch=1, max_queue=2, max_texts=2)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            first = asyncio.ensure_future(c.request(**post({"texts": texts[:1]})))
            while not started.is_set():
                await asyncio.sleep(0.01)                   # the model holds the first; the queue is empty
            second = asyncio.ensure_future(c.request(**post({"texts": texts[1:3]})))
            while app.state.service.batcher.depth()[0] < 2:
                await asyncio.sleep(0.01)
            full = await c.request(**post({"texts": texts[3:4]}))
            health = await c.get("/healthz")
            gate.set()
            return full, health, await first, await second
    full, health, first, second = asyncio.run(go())
    assert full.status_code == 503 and full.json()["code"] == "queue_full"
    assert "2 sentences are waiting (--max-queue 2)" in full.json()["error"]
    assert 1 <= int(full.headers["retry-after"]) <= 60
    assert health.json() == {"status": "ok", "queue_sentences": 2}
    assert [t["text"] for t in first.json()["translations"] + second.json()["translations"]] == \
        [reference(t).text for t in texts[:3]]
    again, = call(app, post({"texts": texts[3:4]}))
    assert again.json()["translations"][0]["text"] == reference(texts[3]).text
    app.state.service.close(10)


def test_a_request_past_its_timeout_gets_504_and_leaves_the_queue(tiny_run, texts, reference):
    import time
    app = make_app(tiny_run, slow=lambda batch: time.sleep(0.6) if "slow" in batch else None,
                   max_wait_ms=0, timeout_s=0.3)
    slow, late = call(app, post({"texts": ["slow"]}), post({"texts": texts[:1]}))
    assert slow.status_code == 504 and slow.json() == {"error": "no answer within 0.3 s (--timeout)", "code": "timeout"}
    assert late.status_code == 504                          # queued behind the slow one: it gave up too
    assert app.state.service.batcher.depth() == (0, 0)      # and left the queue
    time.sleep(0.5)
    good, = call(app, post({"texts": texts[:1]}))
    assert good.json()["translations"][0]["text"] == reference(texts[0]).text
    app.state.service.close(10)


def test_draining_answers_503_to_new_requests(tiny_run, texts):
    app = make_app(tiny_run)
    app.state.service.draining = True
    r, health = call(app, post({"texts": texts[:1]}), dict(method="GET", url="/healthz"))
    assert r.status_code == 503 and r.json()["code"] == "shutting_down" and r.headers["connection"] == "close"
    assert health.status_code == 503


# -- the other routes --------------------------------------------------------------------------------
def test_model_info_and_health(app, doc, tiny_run):
    info, health = call(app, dict(method="GET", url="/v1/model"), dict(method="GET", url="/healthz"))
    conforms(doc, "ModelInfo", info.json())
    conforms(doc, "Health", health.json())
    i, cfg = info.json(), json.loads((Path(tiny_run) / "best" / "config.json").read_text())
    assert i["name"] == "tiny" and i["engine"] == "attnseq" and i["options"] == cfg["model"]
    assert i["vocab_size"] == {"source": cfg["model"]["src_vocab_size"], "target": cfg["model"]["tgt_vocab_size"]}
    assert i["tokenizers"] == {"source": "char", "target": "char"}
    assert i["max_output_len"] == cfg["max_output_len"]                 # the rule fitted in training
    rule = cfg["max_output_len"]
    assert i["limits"]["max_input_len"] == 40 and i["limits"]["max_output_len"] == rule["scale"] * 40 + rule["offset"]
    assert health.json() == {"status": "ok", "queue_sentences": 0}


def test_openapi_document_matches_the_app(app, doc):
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"]
    routes = {r.path: set(r.methods or ()) - {"HEAD"} for r in app.routes}
    assert set(doc["paths"]) == set(routes)
    for path, methods in routes.items():
        assert {m.lower() for m in methods} == set(doc["paths"][path]), path
    for bad_code in ("400", "413", "415", "422", "503", "504"):
        assert bad_code in doc["paths"]["/v1/translate"]["post"]["responses"]
    request = doc["components"]["schemas"]["TranslateRequest"]
    assert request["properties"]["texts"]["maxItems"] == 8 and request["properties"]["beam"]["maximum"] == 5
    conforms(doc, "TranslateRequest", request["example"])
    conforms(doc, "TranslateRequest", {"texts": ["a"], "max_output_len": "2 * Ts + 3"})
    jsonschema = pytest.importorskip("jsonschema")
    for body in ({"texts": "a"}, {"texts": []}, {"texts": ["a"] * 9}, {"texts": ["a"], "ckpt": "x"},
                 {"texts": ["a"], "beam": 6}, {"texts": ["a"], "beam": True}, {"texts": ["a"], "max_output_len": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            conforms(doc, "TranslateRequest", body)
    error, = call(app, post({}))
    conforms(doc, "Error", error.json())


def test_metrics_count_requests_errors_and_latency(tiny_run, texts):
    app = make_app(tiny_run, max_wait_ms=0)
    call(app, post({"texts": texts[:3]}), post({"texts": texts[3:4]}), post({}), dict(method="GET", url="/nope"))
    r, = call(app, dict(method="GET", url="/metrics"))
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse_prometheus(r.text)
    reqs = {(s[1]["path"], s[1]["status"]): s[2] for s in fams["attnseq_http_requests_total"]["samples"]}
    assert reqs == {("/v1/translate", "200"): 2, ("/v1/translate", "422"): 1, ("other", "404"): 1}
    errors = {s[1]["class"]: s[2] for s in fams["attnseq_errors_total"]["samples"]}
    assert set(errors) == set(ERROR_CLASSES) and errors["missing_field"] == 1 and errors["not_found"] == 1
    assert sum(errors.values()) == 2
    lat = {s[0]: s[2] for s in fams["attnseq_request_duration_seconds"]["samples"]}
    assert lat["attnseq_request_duration_seconds_count"] == 3 and lat["attnseq_request_duration_seconds_sum"] > 0
    assert fams["attnseq_sentences_total"]["samples"][0][2] == 4
    assert fams["attnseq_in_flight_requests"]["samples"][0][2] == 1      # this request
    assert fams["attnseq_queue_sentences"]["samples"][0][2] == 0
    app.state.service.close(10)


def test_the_page_is_one_file_with_the_explorers_heatmap_code(app, tiny_run):
    from attnseq.explorer import explore
    r, = call(app, dict(method="GET", url="/"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    page = r.text
    piece = (Path(__file__).resolve().parent.parent / "attnseq" / "explorer" / "heatmap.html").read_text()
    assert piece in page and piece in explore(str(tiny_run), ["9/25/84"]).html()     # shared, not copied
    assert page.count("var AttnHeatmap") == 1 and "__ATTNSEQ" not in page
    for remote in ('src="http', "src='http", 'href="http', "@import", "url(http", "//cdn"):
        assert remote not in page
    config = json.loads(page.split('id="attnseq-config">')[1].split("</script>")[0])
    assert config == {"name": "tiny", "engine": "attnseq", "max_beam": 5, "max_texts": 8, "max_input_len": 40}


def test_create_app_from_a_run_directory_and_mounted(tiny_run, texts, reference):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    inner = create_app(str(tiny_run))
    outer = Starlette(routes=[Mount("/mt", app=inner)])
    r, page, info = call(outer, dict(method="POST", url="/mt/v1/translate", json={"texts": texts[:2]}),
                         dict(method="GET", url="/mt/"), dict(method="GET", url="/mt/v1/model"))
    assert [t["text"] for t in r.json()["translations"]] == [reference(t).text for t in texts[:2]]
    assert page.status_code == 200 and info.json()["name"] == Path(tiny_run).name
    fams = parse_prometheus(call(outer, dict(method="GET", url="/mt/metrics"))[0].text)
    paths = {s[1]["path"] for s in fams["attnseq_http_requests_total"]["samples"]}
    assert {"/v1/translate", "/", "/v1/model"} <= paths
    inner.state.service.close(10)


def test_the_onnxruntime_engine(tiny_run, texts, tmp_path):
    pytest.importorskip("onnx", reason="needs the export extra: pip install 'attnseq[export]'")
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'attnseq[export]'")
    from attnseq.export import OnnxTranslator, export_onnx
    out = export_onnx(str(tiny_run), tmp_path / "onnx")
    app = create_app(OnnxTranslator(out), Limits(max_wait_ms=20), name="onnx")
    greedy, beam, info = call(app, post({"texts": texts[:6], "attention": True}),
                              post({"texts": texts[:3], "beam": 3, "n_best": 2}), dict(method="GET", url="/v1/model"))
    want = OnnxTranslator(out)
    assert [t["text"] for t in greedy.json()["translations"]] == [t.text for t in want.translate(texts[:6])]
    assert [[h["text"] for h in t["nbest"]] for t in beam.json()["translations"]] == \
        [[x for x, _ in t.nbest] for t in want.translate(texts[:3], beam=3, n_best=2)]
    assert info.json()["engine"] == "onnxruntime" and info.json()["options"] == want.manifest["model"]
    app.state.service.close(10)


def test_readme_create_app_example_runs_as_written(tiny_run, texts, reference):
    import re
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "create_app" in b)
    ns = {}
    exec(compile(block.replace('"runs/date"', repr(str(tiny_run))), "README.md", "exec"), ns)
    r, = call(ns["app"], dict(method="POST", url="/mt/v1/translate", json={"texts": texts[:1]}))
    assert r.json()["translations"][0]["text"] == reference(texts[0]).text
    assert ns["mt"].state.service.limits.max_batch == 32
    ns["mt"].state.service.close(10)
