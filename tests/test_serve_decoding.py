"""attnseq serve's decoding options and ensembles through httpx's ASGI transport: each option of a request
reaches the search (the answer is what ``TranslatorBase.translate`` gives with the same keywords, and not
what it gives without it), each bad value is one line of JSON with its status and the server goes on,
requests share a model call only when their decode is the same, seeded sampling gives the same samples
whatever else is in flight, and a server over an ensemble answers as ``translate`` with that ensemble."""
import inspect
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'attnseq[serve]'")
pytest.importorskip("httpx", reason="needs httpx (pip install 'attnseq[test]')")

from golden_decoding import case_checkpoint                               # noqa: E402
from test_serve import call, conforms, make_app, post                     # noqa: E402

from attnseq.cli_flags import build_parser, translator_from_flags         # noqa: E402
from attnseq.data.io import read_pairs                                    # noqa: E402
from attnseq.run.inference import Translator, TranslatorBase              # noqa: E402
from attnseq.serve import Limits, create_app                              # noqa: E402
from attnseq.serve.limits import ERROR_CLASSES, FIELDS                    # noqa: E402
from attnseq.serve.options import OPTIONS                                 # noqa: E402

LIMITS = dict(max_texts=8, max_input_len=40, max_beam=5)


@pytest.fixture(scope="module")
def texts(tiny_data):
    return [s for s, _ in read_pairs(tiny_data / "test.tsv")[:8]]


@pytest.fixture(scope="module")
def translator(tiny_run):
    return Translator(str(tiny_run))


@pytest.fixture(scope="module")
def app(tiny_run):
    a = make_app(tiny_run, **LIMITS)
    yield a
    a.state.service.close(10)


def answers(response) -> list:
    """Per text its n best (text, score), as the API gives them."""
    assert response.status_code == 200, response.text
    return [[(h["text"], h["score"]) for h in t["nbest"]] for t in response.json()["translations"]]


def expected(found) -> list:
    """``translate``'s Translations as ``answers`` gives the API's (scores rounded as the API rounds them)."""
    return [[(text, None if score is None else round(float(score), 6)) for text, score in t.nbest] for t in found]


# each option: (the request's fields, the same request without that option)
OPTION_CASES = {
    "alpha": (dict(beam=3, n_best=2, alpha=0.6), dict(beam=3, n_best=2)),
    "sample": (dict(sample=True, seed=3, n_best=2), dict(beam=2, n_best=2)),
    "temperature": (dict(sample=True, seed=3, n_best=3, temperature=0.4), dict(sample=True, seed=3, n_best=3)),
    "top_k": (dict(sample=True, seed=3, n_best=3, top_k=2), dict(sample=True, seed=3, n_best=3)),
    "top_p": (dict(sample=True, seed=3, n_best=3, top_p=0.5), dict(sample=True, seed=3, n_best=3)),
    "seed": (dict(sample=True, seed=3, n_best=3), dict(sample=True, seed=4, n_best=3)),
    "min_output_len": (dict(min_output_len=14), dict()),
    "no_repeat_ngram": (dict(no_repeat_ngram=1), dict()),
    "repetition_penalty": (dict(beam=2, repetition_penalty=4.0), dict(beam=2)),
}


def test_every_option_is_a_keyword_of_translate_with_its_default():
    keywords = inspect.signature(TranslatorBase.translate).parameters
    assert set(OPTIONS) <= set(keywords) and "prefix" in keywords
    assert set(OPTION_CASES) == set(OPTIONS)                         # each option has its case below
    assert set(FIELDS) == {"texts", "beam", "n_best", "prefix", "attention", "max_output_len", *OPTIONS}


@pytest.mark.parametrize("option", sorted(OPTION_CASES))
def test_each_option_reaches_the_search(app, translator, texts, option):
    given, without = OPTION_CASES[option]
    r, = call(app, post({"texts": texts, **given}))
    got = answers(r)
    assert got == expected(translator.translate(texts, **given))
    assert got != expected(translator.translate(texts, **without))          # the option changed something
    if given.get("sample"):
        assert all(len(t) == given["n_best"] for t in got)
        assert all([s for _, s in t] == sorted((s for _, s in t), reverse=True) for t in got)


def test_sampling_with_top_k_1_or_a_tiny_temperature_is_greedy(app, translator, texts):
    greedy = [t.text for t in translator.translate(texts)]
    for fields in (dict(top_k=1), dict(temperature=1e-4)):
        r, = call(app, post({"texts": texts, "sample": True, "n_best": 2, **fields}))     # no seed: fresh draws
        assert [[text for text, _ in t] for t in answers(r)] == [[g, g] for g in greedy]
        assert all(s is not None for t in answers(r) for _, s in t)                      # the samples' scores


@pytest.mark.parametrize("fields", [dict(), dict(beam=3, n_best=2), dict(sample=True, seed=5, n_best=2)],
                         ids=["greedy", "beam", "sample"])
def test_prefixes_one_per_text(app, translator, texts, fields):
    prefix = [t.text[:4] if k % 2 else None for k, t in enumerate(translator.translate(texts))]
    prefix[0] = "2001"                                                # not the model's own choice
    r, = call(app, post({"texts": texts, "prefix": prefix, **fields}))
    got = answers(r)
    assert got == expected(translator.translate(texts, prefix=prefix, **fields))
    for hyps, p in zip(got, prefix):
        assert all(text.startswith(p) for text, _ in hyps) if p else True
    assert got != expected(translator.translate(texts, **fields))
    one, = call(app, post({"texts": texts[:2], "prefix": "19", **fields}))          # one string for every text
    assert answers(one) == expected(translator.translate(texts[:2], prefix="19", **fields))


def test_requests_share_a_model_call_only_with_the_same_decode(tiny_run, tiny_data):
    pool = [s for s, _ in read_pairs(tiny_data / "test.tsv")[:20]]
    calls = []
    app = make_app(tiny_run, counted=calls, max_wait_ms=300, **LIMITS)
    sample = dict(sample=True, temperature=0.5)
    requests = [dict(), dict(), dict(prefix=["", None]), dict(**sample), dict(**sample), dict(sample=True),
                dict(no_repeat_ngram=2), dict(prefix=["1", None]), dict(**sample, seed=3), dict(**sample, seed=3)]
    found = call(app, *(post({"texts": pool[2 * k:2 * k + 2], **fields}) for k, fields in enumerate(requests)))
    assert all(r.status_code == 200 for r in found)
    groups = sorted(sorted({pool.index(t) // 2 for t in batch}) for batch in calls)
    # greedy with greedy (empty prefixes are none), unseeded sampling at one temperature together; each
    # other decode alone; each seeded request alone, even beside one just like it
    assert groups == [[0, 1, 2], [3, 4], [5], [6], [7], [8], [9]]
    app.state.service.close(10)


def test_seeded_sampling_is_reproducible_whatever_else_is_in_flight(tiny_run, translator, texts):
    app = make_app(tiny_run, max_wait_ms=200, **LIMITS)
    mine = {"texts": texts[:5], "sample": True, "seed": 11, "n_best": 3, "temperature": 0.8}
    alone, = call(app, post(mine))
    others = [post({"texts": texts[k:k + 3], "sample": True, "n_best": 3, "temperature": 0.8}) for k in range(4)]
    crowd = call(app, *others[:2], post(mine), post({**mine, "seed": 12}), *others[2:], post(mine))
    assert answers(alone) == answers(crowd[2]) == answers(crowd[6])
    assert answers(alone) == expected(translator.translate(texts[:5], sample=True, seed=11, n_best=3, temperature=0.8))
    assert answers(crowd[3]) != answers(alone)
    app.state.service.close(10)


def test_a_seeded_request_is_decoded_in_translates_batches(tiny_run, translator, tiny_data):
    many = [s for s, _ in read_pairs(tiny_data / "test.tsv")[:40]]
    app = make_app(tiny_run, max_wait_ms=0, max_texts=40, max_input_len=40)
    app.state.service.cores = 2                 # a gathered batch of 40 would be decoded in two batches of 20
    fields = dict(sample=True, seed=7, n_best=2)
    r, = call(app, post({"texts": many, **fields}))
    assert answers(r) == expected(translator.translate(many, **fields))
    app.state.service.close(10)


BAD = [
    ({"temperature": -1, "sample": True}, 422, "out_of_range", "temperature must be a number > 0, got -1"),
    ({"temperature": 0, "sample": True}, 422, "out_of_range", "temperature must be a number > 0, got 0"),
    (b'{"texts": ["9/25/84"], "sample": true, "temperature": 1e400}', 422, "out_of_range",
     "temperature must be a number > 0, got inf"),
    ({"temperature": "hot", "sample": True}, 422, "wrong_type", "temperature must be a number, got a string"),
    ({"temperature": True, "sample": True}, 422, "wrong_type", "temperature must be a number, got a boolean"),
    ({"top_p": 0, "sample": True}, 422, "out_of_range", "top_p must be a number in (0, 1], got 0"),
    ({"top_p": 1.5, "sample": True}, 422, "out_of_range", "top_p must be a number in (0, 1], got 1.5"),
    ({"top_k": -1, "sample": True}, 422, "out_of_range", "top_k must be 0 or a positive integer, got -1"),
    ({"top_k": 2.5, "sample": True}, 422, "wrong_type", "top_k must be an integer, got a number"),
    ({"seed": -3, "sample": True}, 422, "out_of_range", "seed must be 0 or a positive integer, got -3"),
    ({"seed": "abc", "sample": True}, 422, "wrong_type", "seed must be an integer, got a string"),
    ({"sample": "yes"}, 422, "wrong_type", "sample must be a boolean, got a string"),
    ({"temperature": 0.5}, 422, "out_of_range",
     'temperature is for "sample": true (add "sample": true, or leave temperature out)'),
    ({"seed": 1}, 422, "out_of_range", 'seed is for "sample": true'),
    ({"top_p": 0.9, "sample": False}, 422, "out_of_range", 'top_p is for "sample": true'),
    ({"sample": True, "beam": 3}, 422, "out_of_range",
     '"sample": true draws each token and does not go with beam 3 (n_best N draws N samples)'),
    ({"sample": True, "n_best": 6}, 422, "out_of_range", "n_best must be between 1 and 5 (--max-beam), got 6"),
    ({"alpha": -0.5, "beam": 2}, 422, "out_of_range", "alpha must be a number from 0 to 10, got -0.5"),
    ({"alpha": 1e300, "beam": 2}, 422, "out_of_range", "alpha must be a number from 0 to 10, got 1e+300"),
    (b'{"texts": ["9/25/84"], "beam": 2, "alpha": 1e400}', 422, "out_of_range", "alpha must be a number from 0 to 10, got inf"),
    ({"alpha": "high"}, 422, "wrong_type", "alpha must be a number, got a string"),
    ({"min_output_len": -1}, 422, "out_of_range", "min_output_len must be 0 or a positive integer, got -1"),
    ({"no_repeat_ngram": 1.5}, 422, "wrong_type", "no_repeat_ngram must be an integer, got a number"),
    ({"repetition_penalty": 0}, 422, "out_of_range", "repetition_penalty must be a number > 0, got 0"),
    ({"repetition_penalty": None}, 422, "wrong_type", "repetition_penalty must be a number, got null"),
    ({"prefix": 3}, 422, "wrong_type", "prefix must be null, a string or an array of strings (one per text)"),
    ({"prefix": ["1984", "19"]}, 422, "out_of_range", "prefix holds 2 entries for 1 text: give one per text"),
    ({"prefix": [7]}, 422, "wrong_type", "prefix[0] must be a string or null, got an integer"),
    (b'{"texts": ["9/25/84"], "prefix": ["\\udc80"]}', 400, "invalid_utf8", "prefix[0] is not valid Unicode"),
    ({"prefix": ["1984-"], "max_output_len": 5}, 422, "out_of_range",
     "prefix[0] has 5 tokens; an output of texts[0] may have 5 (max_output_len, else the model's rule)"),
    ({"prefix": ["1" * 99]}, 422, "out_of_range", "prefix[0] has 99 tokens; an output of texts[0] may have"),
    ({"top_q": 0.5}, 422, "unknown_field", "unknown field 'top_q'; the fields are texts, beam, n_best, alpha, sample"),
]


@pytest.mark.parametrize("fields, status, code, message", BAD, ids=[f"{b[2]}-{k}" for k, b in enumerate(BAD)])
def test_each_bad_value_is_one_line_of_json_and_the_server_goes_on(app, translator, texts, fields, status, code,
                                                                    message):
    before = app.state.service.metrics.errors.get(code)
    bad, good = call(app, post(fields if isinstance(fields, bytes) else {"texts": ["9/25/84"], **fields}),
                     post({"texts": texts[:2], "beam": 2, "n_best": 2}))
    assert bad.status_code == status and ERROR_CLASSES[code] == status
    assert "\n" not in bad.text.strip() and bad.json() == {"error": bad.json()["error"], "code": code}
    assert message in bad.json()["error"], bad.json()["error"]
    assert app.state.service.metrics.errors.get(code) == before + 1
    assert answers(good) == expected(translator.translate(texts[:2], beam=2, n_best=2))


def test_the_openapi_document_has_every_option_and_refuses_what_the_server_refuses(app):
    jsonschema = pytest.importorskip("jsonschema")
    doc, = call(app, dict(method="GET", url="/openapi.json"))
    doc = doc.json()
    props = doc["components"]["schemas"]["TranslateRequest"]["properties"]
    assert set(props) == set(FIELDS)
    defaults = inspect.signature(TranslatorBase.translate).parameters
    assert {k: props[k]["default"] for k in OPTIONS} == {k: defaults[k].default for k in OPTIONS}
    for body in ({"texts": ["a"], "sample": True, "seed": 3, "n_best": 5, "temperature": 0.5, "top_k": 4, "top_p": 0.9},
                 {"texts": ["a", "b"], "prefix": ["1", None], "beam": 2, "alpha": 0.6, "no_repeat_ngram": 2,
                  "min_output_len": 1, "repetition_penalty": 1.2}, {"texts": ["a"], "prefix": "2"}):
        conforms(doc, "TranslateRequest", body)
        r, = call(app, post(body))
        assert r.status_code == 200, r.text
    for fields, status, _, _ in BAD:
        if isinstance(fields, dict) and status == 422 and "prefix" not in fields:
            with pytest.raises(jsonschema.ValidationError):
                conforms(doc, "TranslateRequest", {"texts": ["9/25/84"], **fields})


def test_the_readme_lists_every_field():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("| `POST /v1/translate` field |", 1)[1].split("\n\n", 1)[0]
    listed = [name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(listed) == sorted(FIELDS)


# -- ensembles -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two checkpoints with the same vocabularies and different model options, and one with others."""
    d = tmp_path_factory.mktemp("serve-ensemble")
    return [case_checkpoint(name, d) for name in ("date-book", "date-all", "toy-book")]


ENSEMBLE_SEARCHES = [dict(), dict(beam=3, n_best=2, alpha=0.6), dict(sample=True, seed=2, n_best=2),
                     dict(no_repeat_ngram=2, prefix=["19", None, "2"])]


def serve_args(*argv):
    return build_parser().parse_args(["serve", *map(str, argv)])


def test_an_ensemble_server_answers_as_translate_with_that_ensemble(members, texts):
    from attnseq.serve.command import build_app
    a, b, _ = members
    args = serve_args("--ckpt", a, "--ckpt", b, "--ensemble-mode", "log_linear", "--weights", "1", "3",
                      "--max-wait-ms", "0", "--max-beam", "4")
    assert args.check(args) is None
    app = build_app(args, translator_from_flags)
    want = Translator([str(a), str(b)], ensemble_mode="log_linear", weights=[1, 3])
    alone = Translator(str(a))
    for fields in ENSEMBLE_SEARCHES:
        r, = call(app, post({"texts": texts[:3], **fields}))
        assert answers(r) == expected(want.translate(texts[:3], **fields))
        assert answers(r) != expected(alone.translate(texts[:3], **fields))        # not the first member alone
    info, = call(app, dict(method="GET", url="/v1/model"))
    doc, = call(app, dict(method="GET", url="/openapi.json"))
    conforms(doc.json(), "ModelInfo", info.json())
    i = info.json()
    assert i["name"] == "date-book+date-all"
    assert [m["name"] for m in i["members"]] == ["date-book", "date-all"]
    assert [m["options"] for m in i["members"]] == [c.model.config.to_dict() for c in want.checkpoints]
    assert i["members"][0]["options"] != i["members"][1]["options"] and i["options"] == i["members"][0]["options"]
    assert i["ensemble"] == {"mode": "log_linear", "weights": [0.25, 0.75]}
    assert i["max_output_len"] == want.engine.output_len_rule.to_json()
    app.state.service.close(10)


def test_one_model_has_one_member_and_no_ensemble(app, tiny_run):
    info, = call(app, dict(method="GET", url="/v1/model"))
    assert info.json()["ensemble"] is None
    assert [m["name"] for m in info.json()["members"]] == [f"{tiny_run.name}/best"]


# (the request's fields, the same options as translate's flags); with n_best, translate prints "text (score)"s
CLI_SEARCHES = [(dict(beam=3, n_best=2, alpha=0.6), ["--beam", "3", "--n-best", "2", "--alpha", "0.6"]),
                (dict(sample=True, seed=2, n_best=2, top_k=3), ["--sample", "--seed", "2", "--n-best", "2",
                                                                "--top-k", "3"]),
                (dict(no_repeat_ngram=2, repetition_penalty=1.5), ["--no-repeat-ngram", "2",
                                                                  "--repetition-penalty", "1.5"])]


@pytest.mark.parametrize("fields, flags", CLI_SEARCHES, ids=["beam", "sample", "guards"])
def test_an_ensemble_server_answers_as_the_translate_command(members, texts, tmp_path, fields, flags):
    from attnseq.cli import main
    from attnseq.serve.command import build_app
    a, b, _ = members
    model = ["--ckpt", str(a), "--ckpt", str(b), "--ensemble-mode", "log_linear", "--weights", "1", "3"]
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts[:4]))
    assert main(["translate", *model, *flags, "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.txt")]) == 0
    app = build_app(serve_args(*model, "--max-wait-ms", "0", "--max-beam", "4"), translator_from_flags)
    r, = call(app, post({"texts": texts[:4], **fields}))
    n = fields.get("n_best", 1)
    lines = ["\t".join(f"{text} ({score:.3f})" if n > 1 else text for text, score in t) for t in answers(r)]
    assert lines == (tmp_path / "out.txt").read_text().splitlines()
    app.state.service.close(10)


def test_create_app_takes_a_list_of_runs(members, texts):
    app = create_app([str(m) for m in members[:2]], Limits(max_wait_ms=0))
    r, info = call(app, post({"texts": texts[:2], "beam": 2}), dict(method="GET", url="/v1/model"))
    assert answers(r) == expected(Translator([str(m) for m in members[:2]]).translate(texts[:2], beam=2))
    assert info.json()["ensemble"] == {"mode": "linear", "weights": [0.5, 0.5]}
    app.state.service.close(10)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "1"], "--weights is for an ensemble: give --ckpt more than once"),
    (["--ensemble-mode", "log_linear"], "--ensemble-mode is for an ensemble: give --ckpt more than once"),
    (["--ckpt", "{b}", "--weights", "1"], "--weights: 1 given for 2 --ckpt members"),
    (["--ckpt", "{b}", "--weights", "1", "-2"], "argument --weights: must be a number > 0, got '-2'"),
    (["--ckpt", "{b}", "--ensemble-mode", "mean"], "argument --ensemble-mode: invalid choice: 'mean'"),
    (["--ckpt", "{a}"], "--ckpt {a} is given twice"),
])
def test_ensemble_flags_that_do_not_fit_are_translates_usage_errors(members, argv, message, capsys):
    from attnseq.cli import main
    names = dict(a=str(members[0]), b=str(members[1]))
    full = ["serve", "--ckpt", names["a"], *(x.format(**names) for x in argv)]
    with pytest.raises(SystemExit) as e:
        main(full)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("attnseq serve: error: ") and err.count("\n") == 1
    assert message.format(**names) in err
    with pytest.raises(SystemExit):                       # translate says the same
        main(["translate", *full[1:]])
    assert capsys.readouterr().err.replace("translate", "serve") == err


def test_members_that_cannot_be_one_ensemble_are_one_line(members, capsys):
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'attnseq[serve]'")
    from attnseq.cli import main
    a, _, toy = members
    assert main(["serve", "--ckpt", str(a), "--ckpt", str(toy), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "have different source tokenizers" in err and "Traceback" not in err


def test_an_ensemble_of_onnx_exports(members, texts, tmp_path):
    pytest.importorskip("onnx", reason="needs the export extra: pip install 'attnseq[export]'")
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'attnseq[export]'")
    from attnseq.export import OnnxTranslator, export_onnx
    from attnseq.serve.command import build_app
    out = [export_onnx(str(m), tmp_path / m.name, cast_float32=True) for m in members[:2]]   # float64 models
    args = serve_args("--engine", "onnxruntime", "--model", out[0], "--model", out[1], "--ensemble-mode",
                      "log_linear", "--max-wait-ms", "0")
    app = build_app(args, translator_from_flags)
    want = OnnxTranslator([str(o) for o in out], ensemble_mode="log_linear")
    for fields in ENSEMBLE_SEARCHES:
        r, = call(app, post({"texts": texts[:3], **fields}))
        assert answers(r) == expected(want.translate(texts[:3], **fields))
    info, = call(app, dict(method="GET", url="/v1/model"))
    assert info.json()["engine"] == "onnxruntime" and [m["name"] for m in info.json()["members"]] == \
        ["date-book", "date-all"] and info.json()["ensemble"]["mode"] == "log_linear"
    app.state.service.close(10)
