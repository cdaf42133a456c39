"""What a client may send: the server's limits, and the checks that turn a request body into a
``TranslateRequest`` or a ``RequestError`` (an HTTP status, an error class and one line of text).

Nothing here imports Starlette: the checks run on bytes and plain JSON values, so they are tested and
reused (the OpenAPI document quotes the same limits) without a server. A request names texts and how
to search them, never a file, a checkpoint or a device: the only fields are ``FIELDS``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import NamedTuple

from ..errors import ConfigError
from ..nn.output_length import OutputLengthRule
from .options import OPTIONS, decoding_options, prefixes
from .refusals import ERROR_CLASSES, RequestError, out_of_range, wrong_type  # noqa: F401 (the app's, the tests')

# the fields of a request: the texts, the search (the options are TranslatorBase.translate's keywords, see
# ``options``; max_output_len is its max_len, attention its details), and a target prefix per text
FIELDS = ("texts", "beam", "n_best", *OPTIONS, "prefix", "attention", "max_output_len")


def flag(name: str) -> str:
    """The ``attnseq serve`` flag of a ``Limits`` field: max_wait_ms -> --max-wait-ms, timeout_s -> --timeout."""
    return "--timeout" if name == "timeout_s" else "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Limits:
    """The server's bounds; each is a flag of ``attnseq serve`` (``--max-batch`` ...)."""
    max_batch: int = 64             # sentences in one model call
    max_wait_ms: float = 5.0        # how long a batch's first sentence waits for others to join it
    max_queue: int = 1024           # sentences waiting for the model; past it: 503 with Retry-After
    max_texts: int = 64             # texts in one request
    max_input_len: int | None = None  # tokens in one text (None: the model's own: its run's --max-len, else 200)
    max_body_bytes: int = 1 << 20   # bytes in one request body
    timeout_s: float = 30.0         # per translate request, from arrival to answer: else 504
    max_beam: int = 16              # the largest beam, n-best or number of samples a request may ask for

    def check(self) -> "Limits":
        """ConfigError naming the flag for a bound out of range; else self."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_input_len" and value is None:
                continue
            zero_ok = f.name == "max_wait_ms"
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or value < 0 or (value == 0 and not zero_ok):
                raise ConfigError(f"{flag(f.name)} must be {'0 or more' if zero_ok else 'positive'}, got {value!r}")
        if self.max_texts > self.max_queue:
            raise ConfigError(f"--max-texts {self.max_texts} is more than --max-queue {self.max_queue}: "
                              "such a request could never be queued")
        return self


class SearchKey(NamedTuple):
    """What the sentences of one model call must share: requests with equal keys may be batched together."""
    beam: int
    n_best: int
    attention: bool
    max_output_len: OutputLengthRule | None
    options: tuple          # ((keyword, value), ...): every option of ``options.OPTIONS``, defaults included
    prefixed: bool          # some text has a target prefix (every row then runs through the prefix's step)


@dataclass(frozen=True)
class TranslateRequest:
    """A checked POST /v1/translate body. ``options``: ((keyword, value), ...) of every decoding option
    of ``options.OPTIONS``, as ``TranslatorBase.translate`` takes them; ``prefix``: one per text, or None."""
    texts: tuple
    beam: int = 1
    n_best: int = 1
    attention: bool = False
    max_output_len: OutputLengthRule | None = None
    options: tuple = ()
    prefix: tuple | None = None

    @property
    def key(self) -> SearchKey:
        """The requests this one may share a model call with: the same search, options and all."""
        return SearchKey(self.beam, self.n_best, self.attention, self.max_output_len, self.options,
                         self.prefix is not None)

    @property
    def seeded(self) -> bool:
        """Sampling with a seed: decoded alone, so that its samples do not depend on other requests."""
        return dict(self.options).get("seed") is not None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _object(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def parse_body(body: bytes, content_type: str | None) -> object:
    """Bytes of a JSON body -> the value: 415 for another media type, 400 for bytes that are not UTF-8
    or text that is not strict JSON (no NaN, no duplicate keys)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError(415, "unsupported_media_type",
                           f"Content-Type must be application/json, got {content_type or 'none'!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, "invalid_utf8", f"the body is not UTF-8: byte 0x{body[e.start]:02x} at "
                                                f"offset {e.start} ({e.reason})") from None
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as e:
        raise RequestError(400, "invalid_json", f"the body is not JSON: {e.msg} at line {e.lineno} "
                                                f"column {e.colno}") from None
    except ValueError as e:
        raise RequestError(400, "invalid_json", f"the body is not JSON: {e}") from None


def _int_field(obj: dict, name: str, default: int, high: int, high_text: str) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(name, "an integer", value)
    if not 1 <= value <= high:
        raise RequestError(422, "out_of_range", f"{name} must be between 1 and {high} ({high_text}), got {value}")
    return value


def _texts(obj: dict, limits: Limits) -> tuple:
    if "texts" not in obj:
        raise RequestError(422, "missing_field", "texts is required: a list of strings to translate")
    texts = obj["texts"]
    if not isinstance(texts, list):
        raise wrong_type("texts", "an array of strings", texts)
    if not texts:
        raise RequestError(422, "out_of_range", "texts is empty: give at least one string")
    if len(texts) > limits.max_texts:
        raise RequestError(422, "too_many_texts", f"texts holds {len(texts)} strings; this server takes at "
                                                  f"most {limits.max_texts} per request (--max-texts)")
    for k, t in enumerate(texts):
        if not isinstance(t, str):
            raise wrong_type(f"texts[{k}]", "a string", t)
        unicode_text(f"texts[{k}]", t)
    return tuple(texts)


def unicode_text(name: str, text: str) -> None:
    """RequestError (400) for a string that is not valid Unicode (a lone surrogate escaped as \\ud800 in the JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(400, "invalid_utf8", f"{name} is not valid Unicode: lone surrogate "
                                                f"U+{ord(text[e.start]):04X} at character {e.start}") from None


def _rule(value, cap: int, longest_input: int) -> OutputLengthRule | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise wrong_type("max_output_len", "an integer (tokens), a string \"S*Ts+O\" or null", value)
    try:
        rule = OutputLengthRule.parse(value)
    except ValueError as e:
        raise out_of_range(f"max_output_len: {e}") from None
    if rule(longest_input) > cap:
        raise RequestError(422, "out_of_range", f"max_output_len {rule.text} allows {rule(longest_input)} tokens "
                                                f"for a {longest_input}-token input; this server allows at most "
                                                f"{cap} (the model's own rule there)")
    return rule


def parse_request(value, limits: Limits, output_cap: int) -> TranslateRequest:
    """A parsed JSON body -> TranslateRequest, or RequestError (422) naming the field. ``output_cap``: the
    most output tokens a request may allow, checked at the longest input (``limits.max_input_len``)."""
    if not isinstance(value, dict):
        raise wrong_type("the body", "a JSON object", value)
    unknown = [k for k in value if k not in FIELDS]
    if unknown:
        raise RequestError(422, "unknown_field", f"unknown field {unknown[0]!r}; the fields are "
                                                 f"{', '.join(FIELDS)}")
    texts = _texts(value, limits)
    beam = _int_field(value, "beam", 1, limits.max_beam, "--max-beam")
    options = decoding_options(value, beam)
    # n_best: hypotheses of the beam, or samples (as many as --max-beam allows a beam)
    n_best = _int_field(value, "n_best", 1, *((limits.max_beam, "--max-beam") if options["sample"] else
                                              (beam, "the beam")))
    attention = value.get("attention", False)
    if not isinstance(attention, bool):
        raise wrong_type("attention", "a boolean", attention)
    rule = _rule(value.get("max_output_len"), output_cap, limits.max_input_len or 1)
    return TranslateRequest(texts, beam, n_best, attention, rule, tuple(options.items()),
                            prefixes(value, len(texts), unicode_text))


def _number_type(least: float, inclusive: bool):
    """An argparse type: a finite number >= ``least`` (or > it), else a usage error naming the flag."""
    def parse(text: str) -> float:
        import argparse
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < least or (value == least and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a number {'>=' if inclusive else '>'} {least:g}, got {text!r}")
        return value
    return parse


# attnseq serve's flags for the limits: (Limits field, metavar, help, argparse type; None: a positive integer)
LIMIT_FLAGS = (
    ("max_batch", "N", "sentences in one model call: concurrent requests are gathered up to this (64)", None),
    ("max_wait_ms", "MS", "how long a batch's first request waits for others to join it (5; 0: never)",
     _number_type(0.0, True)),
    ("max_queue", "N", "sentences waiting for the model; a request that would pass it gets 503 with "
                       "Retry-After (1024)", None),
    ("max_texts", "N", "texts in one request (64)", None),
    ("max_input_len", "N", "tokens in one text; longer ones get 422 (default: the run's --max-len, else 200)", None),
    ("max_body_bytes", "N", "bytes in one request body; more get 413 (1048576)", None),
    ("timeout_s", "S", "seconds from a translate request's arrival to its answer; later: 504 (30)",
     _number_type(0.0, False)),
    ("max_beam", "K", "the largest beam, n-best or number of samples a request may ask for (16)", None),
)
