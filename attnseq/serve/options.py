"""The decoding options of a POST /v1/translate body: the keywords of ``TranslatorBase.translate``, judged by
the rules ``attnseq translate``'s flags follow.

Each option is a row of the CLI's ``DECODING`` group (``cli_flags``), named as the keyword it goes to
(``temperature``, ``top_p``, ``no_repeat_ngram`` ...). Its JSON type and its OpenAPI schema come from the
row's argparse type (``SCHEMAS``); its value is judged by that same type (a temperature of 0, a top_p
outside (0, 1] ...), the combinations by ``cli_checks.decoding_flag_error`` (a sampling option without
``sample``, sampling with a beam) and what is left by the library (``make_decoding``), each refusal one
422 line naming the field. A new row in ``DECODING`` is a new field here, in the OpenAPI document and in
the batcher's key. ``beam`` is the server's own field (bounded by ``--max-beam``), ``prefix`` is per text.
"""
from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

from ..cli_checks import decoding_flag_error
from ..cli_types import DECODING, Flag, non_negative_int, penalty_alpha, positive_float, positive_int, probability
from ..nn.search import MAX_ALPHA, Guards
from ..run.inference import make_decoding
from .refusals import out_of_range, wrong_type

# the JSON Schema of a value each argparse type takes
SCHEMAS = {positive_int: {"type": "integer", "minimum": 1}, non_negative_int: {"type": "integer", "minimum": 0},
           positive_float: {"type": "number", "exclusiveMinimum": 0},
           probability: {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
           penalty_alpha: {"type": "number", "minimum": 0, "maximum": MAX_ALPHA}}
# where the server's field means more than the flag's help says
SERVER_HELP = {"seed": "with sample: the random seed (null: fresh entropy). A seeded request is decoded in a model "
                       "call of its own, so the same seed and texts give the same samples whatever else is served: "
                       "those attnseq translate --sample --seed gives for the same lines"}
ROWS = tuple(f for f in DECODING if f.param != "beam")     # the options besides beam, as DECODING orders them
OPTIONS = tuple(f.param for f in ROWS)


def json_name(param: str) -> str:
    """How an error line names an option: the field, and sampling's switch as it is written."""
    return '"sample": true' if param == "sample" else param


def schema(f: Flag) -> dict:
    """The JSON Schema of option ``f``'s value, with its default and a description from its --help."""
    if f.spec.get("action") == "store_true":
        out = {"type": "boolean"}
    else:
        out = dict(SCHEMAS[f.spec["type"]])
        if f.spec.get("default") is None:                   # seed: null draws fresh entropy
            out["type"] = [out["type"], "null"]
    text = SERVER_HELP.get(f.param) or re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), f.spec["help"])
    return {**out, "default": f.spec.get("default"), "description": text}


def option_value(f: Flag, obj: dict):
    """Option ``f`` of a request body (its default when absent) -> its value, or a RequestError naming it."""
    name = f.param
    value, kind = obj.get(name, f.spec.get("default")), schema(f)["type"]
    if value is None and "null" in kind:
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise wrong_type(name, "a boolean", value)
        return value
    integer = "integer" in kind
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise wrong_type(name, "an integer" if integer else "a number", value)
    text = str(value)
    try:
        value = f.spec["type"](text)                        # the flag's own check: one line, as the CLI says it
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise out_of_range(f"{name} {str(e).replace(repr(text), text)}") from None
    return value


def decoding_options(obj: dict, beam: int) -> dict:
    """A request body's options besides beam (their defaults when absent) -> {keyword: value}, checked alone,
    together and by the library with ``beam``; RequestError (422) naming the first field that does not fit."""
    values = {f.param: option_value(f, obj) for f in ROWS}
    problem = decoding_flag_error(SimpleNamespace(beam=beam, **values), name=json_name)
    if problem:
        raise out_of_range(problem)
    guards = {k: values[k] for k in Guards.__dataclass_fields__}
    sampling = {k: v for k, v in values.items() if k not in guards}
    try:
        make_decoding(beam, 1, guards=Guards(**guards), **sampling)
    except ValueError as e:
        raise out_of_range(str(e)) from None
    return values


def prefixes(obj: dict, n: int, check_text) -> tuple | None:
    """A body's ``prefix``: null (none), one string for every text, or an array of one string (or null) per
    text -> a tuple of n strings or Nones, or None. ``check_text(name, text)`` refuses a string that is not
    valid Unicode."""
    value = obj.get("prefix")
    if value is None:
        return None
    if isinstance(value, str):
        value = [value] * n
    if not isinstance(value, list):
        raise wrong_type("prefix", "null, a string or an array of strings (one per text)", value)
    if len(value) != n:
        raise out_of_range(f"prefix holds {len(value)} entries for {n} text{'s' if n > 1 else ''}: give one per "
                           "text (null or \"\" for none)")
    for k, p in enumerate(value):
        if p is not None and not isinstance(p, str):
            raise wrong_type(f"prefix[{k}]", "a string or null", p)
        if p is not None:
            check_text(f"prefix[{k}]", p)
    return tuple(value)
