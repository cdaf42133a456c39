"""The API as an OpenAPI 3.1 document (GET /openapi.json), written here from the server's own limits.

Its schemas are JSON Schema (2020-12, as OpenAPI 3.1 takes it): the tests check real responses against
them, and that the request schema refuses what the server refuses.
"""
from __future__ import annotations

from .. import __version__
from ..nn.search import ENSEMBLE_MODES
from .limits import ERROR_CLASSES, FIELDS
from .options import ROWS, schema

# sampling's options only with "sample": true, and sampling only with beam 1
SAMPLING_ONLY = {"if": {"required": ["sample"], "properties": {"sample": {"const": True}}},
                 "then": {"properties": {"beam": {"const": 1}}},
                 "else": {"properties": {"temperature": {"const": 1}, "top_k": {"const": 0}, "top_p": {"const": 1},
                                         "seed": {"const": None}}}}
RULE_PATTERN = r"^\s*(\d+\s*\*\s*[Tt][Ss]\s*([+-]\s*\d+)?|\d+)\s*$"
STRINGS = {"type": "array", "items": {"type": "string"}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def request_schema(limits, output_cap: int) -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["texts"],
        "properties": {
            "texts": {"type": "array", "minItems": 1, "maxItems": limits.max_texts,
                      "items": {"type": "string"},
                      "description": f"the texts to translate; each at most {limits.max_input_len} tokens"},
            "beam": {"type": "integer", "minimum": 1, "maximum": limits.max_beam, "default": 1,
                     "description": "beam size; 1 is greedy search"},
            "n_best": {"type": "integer", "minimum": 1, "maximum": limits.max_beam, "default": 1,
                       "description": "hypotheses returned per text, best first: at most beam, or with sample "
                                      "that many samples"},
            **{f.param: schema(f) for f in ROWS},
            "prefix": {"oneOf": [{"type": "null"}, {"type": "string"},
                                 {"type": "array", "maxItems": limits.max_texts,
                                  "items": {"type": ["string", "null"]}}],
                       "default": None,
                       "description": "the target text each output starts with (every hypothesis and sample): one "
                                      "per text (null or \"\": none), or one string for every text; shorter than "
                                      "the text's output limit"},
            "attention": {"type": "boolean", "default": False,
                          "description": "also return the tokens, each token's probability and the attention"},
            "max_output_len": {
                "oneOf": [{"type": "integer", "minimum": 1, "maximum": output_cap},
                          {"type": "string", "pattern": RULE_PATTERN}, {"type": "null"}],
                "default": None,
                "description": "the longest output: N tokens, or \"S*Ts+O\" (S per token of the batch's longest "
                               f"input, plus O); at most {output_cap} tokens at the longest input. "
                               "null: the model's own rule (GET /v1/model)"}},
        **SAMPLING_ONLY, "example": {"texts": ["Tuesday, Sept 25 1984", "9/25/84"], "beam": 3, "n_best": 2}}


def schemas(limits, output_cap: int) -> dict:
    number_or_null = {"type": ["number", "null"]}
    return {
        "TranslateRequest": request_schema(limits, output_cap),
        "Hypothesis": {
            "type": "object", "required": ["text", "score"],
            "properties": {
                "text": {"type": "string"},
                "score": {**number_or_null, "description": "the beam's or the sample's score (log-probability "
                                                           "over the length penalty); null for greedy"},
                "tokens": {**STRINGS, "description": "output tokens, ending in </s> when the model finished"},
                "probs": {"type": "array", "items": {"type": "number"},
                          "description": "the model's probability of each token"},
                "logprob": {"type": "number"},
                "attention": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                              "description": "one row per output token, one column per source token"}}},
        "Translation": {
            "type": "object", "required": ["text", "score", "nbest"],
            "properties": {"text": {"type": "string"}, "score": number_or_null,
                           "nbest": {"type": "array", "minItems": 1, "items": _ref("Hypothesis")},
                           "src_tokens": {**STRINGS, "description": "the source as the model saw it (attention)"}}},
        "TranslateResponse": {
            "type": "object", "required": ["translations"],
            "properties": {"translations": {"type": "array", "items": _ref("Translation")}}},
        "Error": {
            "type": "object", "required": ["error", "code"], "additionalProperties": False,
            "properties": {"error": {"type": "string", "description": "one line for people"},
                           "code": {"type": "string", "enum": list(ERROR_CLASSES)}}},
        "Health": {
            "type": "object", "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok", "draining"]},
                           "queue_sentences": {"type": "integer", "minimum": 0}}},
        "ModelInfo": {
            "type": "object",
            "required": ["name", "engine", "options", "members", "ensemble", "vocab_size", "tokenizers",
                         "max_output_len", "limits"],
            "properties": {
                "name": {"type": "string"}, "engine": {"type": "string", "enum": ["attnseq", "onnxruntime"]},
                "attnseq_version": {"type": "string"},
                "options": {"type": "object", "description": "the model's options (an ensemble's first member's)"},
                "members": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "options", "max_output_len"],
                    "properties": {"name": {"type": "string"}, "options": {"type": "object"},
                                   "max_output_len": {"type": "object"}}},
                    "description": "the checkpoints (or exports) served: one, or an ensemble's in order"},
                "ensemble": {"oneOf": [{"type": "null"}, {
                    "type": "object", "required": ["mode", "weights"],
                    "properties": {"mode": {"type": "string", "enum": list(ENSEMBLE_MODES)},
                                   "weights": {"type": "array", "items": {"type": "number"}}}}],
                    "description": "how an ensemble combines its members (weights sum to 1); null for one model"},
                "reverse_source": {"type": "boolean"},
                "vocab_size": {"type": "object", "required": ["source", "target"],
                               "properties": {"source": {"type": "integer"}, "target": {"type": "integer"}}},
                "tokenizers": {"type": "object", "properties": {"source": {"type": "string"},
                                                                "target": {"type": "string"}}},
                "max_output_len": {"type": "object", "required": ["scale", "offset", "rule"],
                                   "properties": {"scale": {"type": "integer"}, "offset": {"type": "integer"},
                                                  "rule": {"type": "string"}}},
                "limits": {"type": "object"}}},
    }


def _errors(*codes: int) -> dict:
    what = {400: "the body is not UTF-8 or not JSON", 413: "the body is over --max-body-bytes",
            415: "the Content-Type is not application/json",
            422: "a field is unknown, missing, of the wrong type or out of range; too many texts; a text too long",
            503: "the queue is full (retry after Retry-After seconds), or the server is shutting down",
            504: "no answer within --timeout"}
    out = {}
    for code in codes:
        headers = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}} if code == 503 else None
        out[str(code)] = _json(_ref("Error"), what[code], headers)
    return out


def openapi_document(service) -> dict:
    """The document for ``service`` (its limits go into the request schema)."""
    limits = service.limits
    get = lambda summary, response: {"get": {"summary": summary, "responses": {"200": response}}}  # noqa: E731
    paths = {
        "/": get("the page: type text, see the translation and its attention",
                 {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}),
        "/healthz": {"get": {"summary": "liveness and readiness", "responses": {
            "200": _json(_ref("Health"), "serving"), "503": _json(_ref("Health"), "shutting down")}}},
        "/v1/model": get("the model: its options, vocabularies, output-length rule and the server's limits",
                         _json(_ref("ModelInfo"), "the model")),
        "/v1/translate": {"post": {
            "summary": "translate texts (requests arriving together share one model call)",
            "description": f"Fields: {', '.join(FIELDS)}; any other is refused (422). The decoding options are "
                           "attnseq.translate's keywords, judged as attnseq translate judges its flags. Requests "
                           "share a model call only with requests of the same options; a seeded sampling request "
                           "has one of its own.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TranslateRequest")}}},
            "responses": {"200": _json(_ref("TranslateResponse"), "one translation per text, in order"),
                          **_errors(400, 413, 415, 422, 503, 504)}}},
        "/metrics": get("metrics in Prometheus' text format", {"description": "Prometheus text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}),
        "/openapi.json": get("this document", {"description": "OpenAPI 3.1",
                             "content": {"application/json": {"schema": {"type": "object"}}}}),
    }
    return {"openapi": "3.1.0",
            "info": {"title": "attnseq translation service", "version": __version__,
                     "description": f"Model {service.name!r} ({service.info()['engine']} engine). Errors are "
                                    "one line of JSON: {\"error\": text, \"code\": class}."},
            "paths": paths, "components": {"schemas": schemas(limits, service.output_cap)}}
