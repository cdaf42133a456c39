"""How the server refuses a request: ``RequestError`` (an HTTP status, an error class and one line of text)
and the error classes with their statuses, shared by the request checks (``limits``, ``options``), the
handlers and the metrics."""
from __future__ import annotations

# every error class (RequestError.code, the metrics' label) with its status
ERROR_CLASSES = {"invalid_utf8": 400, "invalid_json": 400, "not_found": 404, "method_not_allowed": 405,
                 "body_too_large": 413, "unsupported_media_type": 415, "wrong_type": 422, "unknown_field": 422,
                 "missing_field": 422, "too_many_texts": 422, "input_too_long": 422, "out_of_range": 422,
                 "internal": 500, "queue_full": 503, "shutting_down": 503, "timeout": 504}


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503/504), ``code`` (the error class, also the
    metrics label) and a one-line ``message``; ``headers`` go on the response (Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict:
        return {"error": self.message, "code": self.code}


def type_name(value) -> str:
    """A JSON value's type, as an error line says it: "a string", "null" ..."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def wrong_type(name: str, want: str, value) -> RequestError:
    return RequestError(422, "wrong_type", f"{name} must be {want}, got {type_name(value)}")


def out_of_range(message: str) -> RequestError:
    return RequestError(422, "out_of_range", message)
